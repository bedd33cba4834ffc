"""``gateway ctl ...``: the operations API for scripts and terminals.

    export GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_TOKEN=...     # or --url / --token
    gateway ctl registrations [--group acme] [--number 6288]
    gateway ctl registrations remove 62880001 [--key KEY]
    gateway ctl trunks | trunk enable|disable NAME
    gateway ctl calls | calls show ID | calls hangup ID
    gateway ctl dialplan list | get NAME | versions
    gateway ctl dialplan validate NAME FILE
    gateway ctl dialplan explain --from 62880001 --to 60002 --group acme [--at T] [--draft NAME=FILE]
    gateway ctl dialplan apply NAME FILE [--comment TEXT]
    gateway ctl dialplan rollback VERSION [--comment TEXT]
    gateway ctl account list | get number|group KEY | set number|group KEY STATE
    gateway ctl charging | stats | health
    gateway ctl edge push SITE FILE | edge cmd SITE COMMAND   (signed, over MQTT: gateway.edge.cli)
    gateway ctl bans [list] | bans add ADDRESS [--seconds N] | bans lift ADDRESS

``--json`` prints the API's JSON answer as it is. Exit codes: 0 done; 1 the gateway refused
(an error answer, or a draft that does not validate); 2 usage error or unreadable file;
3 the gateway could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.edge.cli import register_ctl

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT = 30.0
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class CtlError(Exception):
    def __init__(self, code: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = body


@dataclass(frozen=True)
class Client:
    url: str
    token: str | None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"null")
                message = answer["error"]["message"]
            except (ValueError, KeyError, TypeError):
                answer, message = None, f"HTTP {exc.code}"
            raise CtlError(EXIT_REFUSED, f"{exc.code}: {message}", answer) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CtlError(EXIT_UNREACHABLE, f"cannot reach {self.url}: {reason}") from None


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8") if path != "-" else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CtlError(EXIT_USAGE, f"cannot read {path}: {exc}") from None


# -- rendering --------------------------------------------------------------------------------------
def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _problems(problems: list[dict[str, Any]], kind: str) -> list[str]:
    return [
        f"{kind}: {p['file']}:{p['line'] if p['line'] is not None else '?'}: "
        f"{p['field'] or '(top level)'}: {p['message']}"
        for p in problems
    ]


def _decision(result: dict[str, Any]) -> str:
    req, decision = result["request"], result["decision"]
    lines = [
        f"call: {req['origin']} {req['calling']} -> {req['called']} at {req['at']} ({result['against']} plan)"
    ]
    lines += [f"  {i}. {s['step']}: {s['detail']}" for i, s in enumerate(result["trace"], 1)]
    if decision["result"] == "refused":
        lines.append(f"decision: REFUSE {decision['status']} - {decision['reason']}")
    else:
        lines.append(f"decision: ROUTE as {decision['call_class']} to {decision['called']}")
        lines.append(f"  presented {decision['presented_calling']}, asserted {decision['asserted_calling']}")
        lines += [
            f"  - {t['kind']} {t['user']}" + (f" trunk={t['trunk']}" if t.get("trunk") else "")
            for t in decision["targets"]
        ]
    return "\n".join(lines)


Render = Callable[[Any], str]


# -- commands: each returns (method, path, body, renderer) -----------------------------------------
Request = tuple[str, str, Any, Render]


def cmd_health(args: argparse.Namespace) -> Request:
    return (
        "GET",
        "/api/ready",
        None,
        lambda r: "\n".join(
            [f"ready: {r['ready']}"]
            + [f"  {k}: {'ok' if v['ok'] else 'FAIL'} ({v['detail']})" for k, v in r["checks"].items()]
        ),
    )


def cmd_registrations(args: argparse.Namespace) -> Request:
    if args.action == "remove":
        if not args.aor:
            raise CtlError(EXIT_USAGE, "registrations remove needs the number (AOR)")
        query = f"?key={_q(args.key)}" if args.key else ""
        return (
            "DELETE",
            f"/api/registrations/{_q(args.aor)}{query}",
            None,
            lambda r: f"removed {r['removed']} binding(s) of {r['aor']}",
        )
    params = {k: v for k, v in (("group", args.group), ("number", args.number), ("trunk", args.trunk)) if v}
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return (
        "GET",
        f"/api/registrations{query}",
        None,
        lambda r: _table(
            [
                [b["aor"], b["contact"], b["source"], b["expires_in"], b["trunk"], b["group"]]
                for b in r["registrations"]
            ],
            ["number", "contact", "source", "expires", "trunk", "group"],
        ),
    )


def cmd_trunks(args: argparse.Namespace) -> Request:
    return (
        "GET",
        "/api/trunks",
        None,
        lambda r: _table(
            [
                [
                    t["name"],
                    t["kind"],
                    t["group"],
                    "yes" if t["enabled"] else "NO",
                    f"{t['active_calls']}/{t['max_calls']}",
                    " ".join(
                        f"{d['address']}={(d['qualify'] or {}).get('state', '-')}" for d in t["destinations"]
                    ),
                ]
                for t in r["trunks"]
            ],
            ["trunk", "kind", "group", "enabled", "calls", "destinations"],
        ),
    )


def cmd_trunk(args: argparse.Namespace) -> Request:
    enabled = args.action == "enable"
    return (
        "PATCH",
        f"/api/trunks/{_q(args.name)}",
        {"enabled": enabled},
        lambda r: f"trunk {r['name']}: {'enabled' if r['enabled'] else 'disabled'}",
    )


def cmd_calls(args: argparse.Namespace) -> Request:
    if args.action in ("show", "hangup"):
        if not args.id:
            raise CtlError(EXIT_USAGE, f"calls {args.action} needs the call id")
        if args.action == "hangup":
            return "DELETE", f"/api/calls/{_q(args.id)}", None, lambda r: f"call {r['id']}: hanging up"
        return (
            "GET",
            f"/api/calls/{_q(args.id)}",
            None,
            lambda r: "\n".join(f"{k}: {v}" for k, v in r.items()),
        )
    return (
        "GET",
        "/api/calls",
        None,
        lambda r: (
            _table(
                [
                    [
                        c["id"],
                        c["state"],
                        c["from"],
                        c["to"],
                        c["inbound_trunk"],
                        c["outbound_trunk"],
                        c["age_s"],
                    ]
                    for c in r["calls"]
                ],
                ["id", "state", "from", "to", "in", "out", "age"],
            )
            + f"\n{r['count']} active, {r['completed']} completed, {r['failed']} failed"
        ),
    )


def cmd_dialplan(args: argparse.Namespace) -> Request:
    action = args.action
    if action == "list":
        return (
            "GET",
            "/api/dialplans",
            None,
            lambda r: (
                f"version {r['version'] if r['version'] is not None else '(seed)'}, "
                f"plan {r['plan_digest'][:12]}\n"
                + _table(
                    [[d["name"], d["kind"], d["group"], d["bytes"]] for d in r["dialplans"]],
                    ["name", "kind", "group", "bytes"],
                )
            ),
        )
    if action == "get":
        return "GET", f"/api/dialplans/{_q(args.name)}", None, lambda r: str(r["text"]).rstrip("\n")
    if action == "versions":
        return (
            "GET",
            "/api/dialplan-versions",
            None,
            lambda r: _table(
                [
                    [
                        ("*" if v["number"] == r["current"] else "") + str(v["number"]),
                        v["source"],
                        v["applied_by"],
                        v["applied_at"],
                        v["plan_digest"][:12],
                        v["comment"],
                    ]
                    for v in r["versions"]
                ],
                ["version", "source", "by", "at", "plan", "comment"],
            ),
        )
    if action == "validate":
        return (
            "POST",
            f"/api/dialplans/{_q(args.name)}/validate",
            {"text": _read(args.file)},
            lambda r: "\n".join(
                _problems(r["errors"], "error")
                + _problems(r["warnings"], "warning")
                + ["OK" if r["ok"] else f"FAILED: {len(r['errors'])} error(s)"]
            ),
        )
    if action == "apply":
        draft = {"text": _read(args.file), "comment": args.comment or ""}
        return (
            "PUT",
            f"/api/dialplans/{_q(args.name)}",
            draft,
            lambda r: f"applied: version {r['version']['number']} (plan {r['version']['plan_digest'][:12]})",
        )
    if action == "rollback":
        return (
            "POST",
            f"/api/dialplan-versions/{_q(args.version)}/rollback",
            {"comment": args.comment or ""},
            lambda r: f"rolled back to {args.version}: now version {r['version']['number']}",
        )
    body: dict[str, Any] = {"from": args.calling, "to": args.called}
    for key in ("at", "group", "trunk", "origin"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.draft:
        name, sep, path = args.draft.partition("=")
        if not sep:
            raise CtlError(EXIT_USAGE, "--draft takes NAME=FILE")
        body["draft"] = {"name": name, "text": _read(path)}
    return "POST", "/api/explain", body, _decision


def cmd_account(args: argparse.Namespace) -> Request:
    if args.action == "list":
        return (
            "GET",
            "/api/accounts",
            None,
            lambda r: _table(
                [["number", k, v] for k, v in r["numbers"].items()]
                + [["group", k, v] for k, v in r["groups"].items()],
                ["scope", "key", "state"],
            ),
        )
    path = f"/api/accounts/{_q(args.scope)}/{_q(args.key)}"
    if args.action == "get":
        return "GET", path, None, lambda r: f"{r['scope']} {r['key']}: {r['state']}"
    return (
        "PUT",
        path,
        {"state": args.state},
        lambda r: f"{r['scope']} {r['key']}: {r['previous']} -> {r['state']}",
    )


def cmd_fraud(args: argparse.Namespace) -> Request:
    if args.action == "alarms":
        return (
            "GET",
            "/api/fraud/alarms",
            None,
            lambda r: _table(
                [[a["key"], a["fen"], a["limit"], "yes" if a["bars_international"] else "no"]
                 for a in r["alarms"]],
                ["alarm", "fen", "limit", "international barred"],
            ),
        )
    return "DELETE", f"/api/fraud/alarms/{_q(args.key)}", None, lambda r: f"{r['key']}: cleared"


def cmd_charging(args: argparse.Namespace) -> Request:
    return "GET", "/api/charging", None, lambda r: "\n".join(f"{k}: {v}" for k, v in r.items())


def cmd_stats(args: argparse.Namespace) -> Request:
    return (
        "GET",
        "/api/stats?seconds=60",
        None,
        lambda r: (
            f"registrations {r['registrations']}, active calls {r['active_calls']}, "
            f"cps {(r['last'] or {}).get('cps', 0)}, "
            f"failure rate {(r['last'] or {}).get('failure_rate', 0)}, "
            f"loop lag {r['loop_lag_ms']} ms"
        ),
    )


def cmd_bans(args: argparse.Namespace) -> Request:
    if args.action in ("add", "lift"):
        if not args.address:
            raise CtlError(EXIT_USAGE, f"bans {args.action} needs the IP address")
        if args.action == "lift":
            return "DELETE", f"/api/bans/{_q(args.address)}", None, lambda r: f"ban of {r['host']} lifted"
        body: dict[str, Any] = {"host": args.address}
        if args.seconds is not None:
            body["seconds"] = args.seconds
        return "POST", "/api/bans", body, lambda r: f"banned {r['host']} for {r['remaining']} s"
    return (
        "GET",
        "/api/bans",
        None,
        lambda r: _table(
            [[b["host"], b["reason"], b["remaining"], b["by"]] for b in r["bans"]],
            ["address", "reason", "remaining_s", "by"],
        ) + "".join(f"\nlocked user {u['username']}" for u in r["locked_users"]),
    )


# -- parser ---------------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ctl = subparsers.add_parser(
        "ctl",
        help="the operations API from the command line (gateway ctl --help)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ctl.add_argument("--url", default=None, help=f"API base URL (default: $GATEWAY_URL, then {DEFAULT_URL})")
    ctl.add_argument("--token", default=None, help="bearer token (default: $GATEWAY_TOKEN)")
    ctl.add_argument("--json", action="store_true", help="print the API's JSON answer")
    commands = ctl.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")

    commands.add_parser("health", help="readiness checks").set_defaults(build=cmd_health)
    regs = commands.add_parser("registrations", help="list (filter) or remove registrations")
    regs.add_argument("action", nargs="?", choices=["list", "remove"], default="list")
    regs.add_argument("aor", nargs="?", help="the number, for remove")
    regs.add_argument("--group")
    regs.add_argument("--number", help="part of the number")
    regs.add_argument("--trunk")
    regs.add_argument("--key", help="remove only this binding")
    regs.set_defaults(build=cmd_registrations)
    commands.add_parser("trunks", help="trunks, destinations, qualify").set_defaults(build=cmd_trunks)
    trunk = commands.add_parser("trunk", help="enable or disable a trunk")
    trunk.add_argument("action", choices=["enable", "disable"])
    trunk.add_argument("name")
    trunk.set_defaults(build=cmd_trunk)
    calls = commands.add_parser("calls", help="active calls; show or hang up one")
    calls.add_argument("action", nargs="?", choices=["list", "show", "hangup"], default="list")
    calls.add_argument("id", nargs="?")
    calls.set_defaults(build=cmd_calls)

    dialplan = commands.add_parser("dialplan", help="list, get, validate, explain, apply, versions, rollback")
    actions = dialplan.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list").set_defaults(build=cmd_dialplan)
    actions.add_parser("versions").set_defaults(build=cmd_dialplan)
    get = actions.add_parser("get")
    get.add_argument("name")
    get.set_defaults(build=cmd_dialplan)
    for name in ("validate", "apply"):
        sub = actions.add_parser(name)
        sub.add_argument("name", help="dialplan name (file name without .yaml)")
        sub.add_argument("file", help="the YAML file (- for stdin)")
        if name == "apply":
            sub.add_argument("--comment")
        sub.set_defaults(build=cmd_dialplan)
    rollback = actions.add_parser("rollback")
    rollback.add_argument("version")
    rollback.add_argument("--comment")
    rollback.set_defaults(build=cmd_dialplan)
    explain = actions.add_parser("explain")
    explain.add_argument("--from", dest="calling", required=True)
    explain.add_argument("--to", dest="called", required=True)
    explain.add_argument("--at", help="ISO 8601; without offset: the group's time zone")
    explain.add_argument("--group")
    explain.add_argument("--trunk", help="the PBX trunk the call arrives on")
    explain.add_argument("--origin", choices=["member", "pbx", "carrier"])
    explain.add_argument("--draft", help="NAME=FILE: explain against this draft of one dialplan file")
    explain.set_defaults(build=cmd_dialplan)

    account = commands.add_parser("account", help="account states")
    account_actions = account.add_subparsers(dest="action", required=True, metavar="ACTION")
    account_actions.add_parser("list").set_defaults(build=cmd_account)
    for name in ("get", "set"):
        sub = account_actions.add_parser(name)
        sub.add_argument("scope", choices=["number", "group"])
        sub.add_argument("key")
        if name == "set":
            sub.add_argument(
                "state", choices=["normal", "arrears", "suspended", "pre_cancelled", "cancelled"]
            )
        sub.set_defaults(build=cmd_account)
    fraud = commands.add_parser("fraud", help="spend-velocity alarms: list, clear")
    fraud_actions = fraud.add_subparsers(dest="action", required=True, metavar="ACTION")
    fraud_actions.add_parser("alarms").set_defaults(build=cmd_fraud)
    clear = fraud_actions.add_parser("clear")
    clear.add_argument("key", help="line:NUMBER, group:ID or a line number")
    clear.set_defaults(build=cmd_fraud)
    commands.add_parser("charging", help="charging sink health and backlog").set_defaults(build=cmd_charging)
    commands.add_parser("stats", help="registrations, calls, CPS, lag").set_defaults(build=cmd_stats)
    register_ctl(commands)  # gateway ctl edge push|cmd: signed MQTT, not this API
    bans = commands.add_parser("bans", help="banned source addresses: list, add, lift")
    bans.add_argument("action", nargs="?", choices=["list", "add", "lift"], default="list")
    bans.add_argument("address", nargs="?", help="IPv4 or IPv6 address, for add and lift")
    bans.add_argument("--seconds", type=float, help="ban duration (default: security.ban_time)")
    bans.set_defaults(build=cmd_bans)
    ctl.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    client = Client(
        args.url or os.environ.get("GATEWAY_URL") or DEFAULT_URL,
        args.token or os.environ.get("GATEWAY_TOKEN"),
    )
    build: Callable[[argparse.Namespace], Request] = args.build
    try:
        method, path, body, render = build(args)
        answer = client.call(method, path, body)
    except CtlError as exc:
        if args.json and exc.body is not None:
            sys.stdout.write(json.dumps(exc.body, ensure_ascii=False, indent=2) + "\n")
        elif isinstance(exc.body, dict) and _is_problem_list(exc.body):
            for line in _problems(exc.body["error"]["details"]["errors"], "error"):
                sys.stderr.write(line + "\n")
        sys.stderr.write(f"gateway ctl: {exc}\n")
        return exc.code
    sys.stdout.write(
        (json.dumps(answer, ensure_ascii=False, indent=2) if args.json else render(answer)) + "\n"
    )
    if isinstance(answer, dict) and answer.get("ok") is False:
        return EXIT_REFUSED  # a draft that does not validate
    return 0


def _is_problem_list(body: dict[str, Any]) -> bool:
    errors = body.get("error", {}).get("details", {}).get("errors")
    return isinstance(errors, list) and all(isinstance(e, dict) and "file" in e for e in errors)
