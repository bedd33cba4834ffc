"""``gateway dialplan check`` and ``gateway dialplan explain``.

``check [PATH...]`` validates dialplan files (default: ``dialplans``), lists errors and warnings
with file, line and field, and exits 0 when the plan compiles, 1 when it does not.
``explain --group G --from N --to N [--at T]`` decides one call against the plan and prints the
decision with every step that led to it. Both take ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import zoneinfo
from pathlib import Path
from typing import Any

from gateway.datafile import DataFileError, Problem
from gateway.routing.compiler import load_dialplan, problems_as_dicts
from gateway.routing.decision import CallRequest, Decision, Origin, Refusal, Trace, outcome_to_dict
from gateway.routing.plan import CompiledPlan, PartyKind
from gateway.routing.schema import write as write_schemas
from gateway.routing.timecond import Coverage, statutory_warning

DEFAULT_PATHS = ("dialplans",)
CALENDAR_LOOKAHEAD = dt.timedelta(days=60)


def register(subparsers: Any) -> None:
    """Add the ``dialplan`` command to the ``gateway`` parser."""
    parser = subparsers.add_parser("dialplan", help="check dialplans and explain routing decisions")
    commands = parser.add_subparsers(dest="dialplan_command", required=True, metavar="SUBCOMMAND")

    check = commands.add_parser("check", help="validate dialplan files; exit 1 on errors")
    check.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default: dialplans)")
    check.add_argument(
        "--trunk",
        action="append",
        dest="trunks",
        metavar="NAME",
        help="a known trunk name; when given, every trunk the dialplan names must be known",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=run_check)

    explain = commands.add_parser("explain", help="decide one call and show every step")
    explain.add_argument(
        "--dialplan",
        action="append",
        dest="paths",
        metavar="PATH",
        help="dialplan files or directories (default: dialplans)",
    )
    explain.add_argument("--group", help="the caller's group (members and PBXs)")
    explain.add_argument("--from", dest="calling", required=True, help="calling number (or PBX extension)")
    explain.add_argument("--to", dest="called", required=True, help="dialled number")
    explain.add_argument(
        "--at", help="call time, ISO 8601 (default: now); without offset: the group's time zone"
    )
    explain.add_argument(
        "--origin",
        choices=[o.value for o in Origin],
        help="where the call enters (default: pbx with --trunk, member when --from is a line "
        "of --group, carrier otherwise)",
    )
    explain.add_argument("--trunk", help="the PBX trunk the call arrives on")
    explain.add_argument(
        "--preferred", help="the identity the caller asks to present (P-Preferred-Identity, RFC 3325)"
    )
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(handler=run_explain)

    schema = commands.add_parser("schema", help="write the JSON Schema of the dialplan files")
    schema.add_argument("--out", default="dialplans/schema", help="directory (default: dialplans/schema)")
    schema.set_defaults(handler=run_schema)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")


def _load(paths: list[str] | None, trunks: list[str] | None = None) -> CompiledPlan:
    return load_dialplan([Path(p) for p in (paths or DEFAULT_PATHS)], known_trunks=trunks)


def calendar_warnings(plan: CompiledPlan, today: dt.date) -> list[Problem]:
    """Warn when a time condition needs, within the look-ahead, a year whose official calendar
    (调休 included) nobody has supplied yet."""
    users = [
        f"{g.id}.{name}"
        for g in plan.groups.values()
        for name, c in g.time_conditions.items()
        if c.uses_calendar
    ]
    if not users:
        return []
    years = range(today.year, (today + CALENDAR_LOOKAHEAD).year + 1)
    problems = []
    for year in years:
        coverage = plan.calendar.coverage(year)
        if coverage is Coverage.OFFICIAL:
            continue
        if coverage is Coverage.STATUTORY:
            why = statutory_warning(year)
        else:
            why = (
                f"no China holiday calendar for {year}; its days will be taken as a plain "
                "Monday-Friday week until it is added"
            )
        problems.append(
            Problem(
                plan.sources[0] if plan.sources else "",
                None,
                "calendar.years",
                f"{why} (within {CALENDAR_LOOKAHEAD.days} days; used by {', '.join(users)})",
            )
        )
    return problems


def run_check(args: argparse.Namespace) -> int:
    try:
        plan = _load(args.paths, args.trunks)
    except DataFileError as exc:
        if args.json:
            _write(
                json.dumps(
                    {"ok": False, "errors": problems_as_dicts(exc.problems), "warnings": []},
                    ensure_ascii=False,
                    indent=2,
                )
            )
        else:
            for problem in exc.problems:
                _write(f"error: {problem}")
            _write(f"FAILED: {len(exc.problems)} error(s)")
        return 1
    warnings = [*plan.warnings, *calendar_warnings(plan, dt.date.today())]
    summary = {
        "files": list(plan.sources),
        "groups": len(plan.groups),
        "short_numbers": sum(len(g.short) for g in plan.groups.values()),
    }
    if args.json:
        _write(
            json.dumps(
                {"ok": True, "errors": [], "warnings": problems_as_dicts(warnings), **summary},
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for problem in warnings:
            _write(f"warning: {problem}")
        _write(
            f"OK: {len(plan.sources)} file(s), {summary['groups']} group(s), "
            f"{summary['short_numbers']} short number(s), {len(warnings)} warning(s)"
        )
    return 0


def run_schema(args: argparse.Namespace) -> int:
    for path in write_schemas(Path(args.out)):
        _write(f"wrote {path}")
    return 0


def _origin(args: argparse.Namespace, plan: CompiledPlan) -> Origin:
    if args.origin:
        return Origin(args.origin)
    if args.trunk:
        return Origin.PBX
    if args.group:
        party = plan.owner(args.calling, args.group)
        if party is not None and party.group == args.group and party.kind is PartyKind.LINE:
            return Origin.MEMBER
    return Origin.CARRIER


def _when(text: str | None, plan: CompiledPlan, group: str | None) -> dt.datetime:
    g = plan.group(group) if group else None
    tz = g.tz if g is not None else zoneinfo.ZoneInfo("Asia/Shanghai")
    if text is None:
        return dt.datetime.now(tz)
    at = dt.datetime.fromisoformat(text)
    return at.replace(tzinfo=tz) if at.tzinfo is None else at


def run_explain(args: argparse.Namespace) -> int:
    try:
        plan = _load(args.paths)
    except DataFileError as exc:
        for problem in exc.problems:
            _write(f"error: {problem}")
        return 1
    try:
        at = _when(args.at, plan, args.group)
    except ValueError as exc:
        _write(f"error: --at: {exc}")
        return 2
    origin = _origin(args, plan)
    request = CallRequest(
        origin, args.calling, args.called, at, group=args.group, trunk=args.trunk, preferred=args.preferred
    )
    trace = Trace()
    outcome = plan.decide(request, trace)
    if args.json:
        _write(
            json.dumps(
                {
                    "request": {
                        "origin": origin.value,
                        "calling": args.calling,
                        "called": args.called,
                        "at": at.isoformat(),
                        "group": args.group,
                        "trunk": args.trunk,
                    },
                    "trace": [{"step": step, "detail": detail} for step, detail in trace.steps],
                    "decision": outcome_to_dict(outcome),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    where = f" (group {args.group})" if args.group else ""
    via = f" via trunk {args.trunk}" if args.trunk else ""
    _write(f"call: {origin.value} {args.calling} -> {args.called}{via} at {at.isoformat()}{where}")
    for i, (step, detail) in enumerate(trace.steps, 1):
        _write(f"  {i}. {step}: {detail}")
    _write(_render(outcome))
    return 0


def _render(outcome: Decision | Refusal) -> str:
    lines: list[str] = []
    if isinstance(outcome, Refusal):
        lines.append(f"decision: REFUSE {outcome.status} - {outcome.reason}")
    else:
        ch = outcome.charging
        lines += [
            f"decision: ROUTE as {outcome.call_class.value}",
            f"  called:            {outcome.called}"
            + (f" (phone-context {outcome.phone_context})" if outcome.phone_context else ""),
            f"  presented calling: {outcome.presented_calling}",
            f"  asserted calling:  {outcome.asserted_calling}",
            "  targets (in order):",
        ]
        for target in outcome.targets:
            extra = " ".join(
                f"{k}={v}"
                for k, v in (
                    ("trunk", target.trunk),
                    ("member", target.member),
                    ("service", target.service),
                    ("mode", target.mode),
                    ("hunt", target.hunt),
                )
                if v
            )
            lines.append(f"    - {target.kind.value} {target.user} {extra}".rstrip())
        lines.append(
            f"  charging: class={ch.call_class.value} direction={ch.direction.value} group={ch.group} "
            f"member={ch.member} on_net={ch.on_net} short_dialled={ch.short_dialled} "
            f"off_net_group={ch.off_net_group}"
            + (f" terminating_group={ch.terminating_group}" if ch.terminating_group else "")
            + (f" product={ch.product} service_number={ch.service_number}" if ch.product else "")
        )
    lines += [f"warning: {w}" for w in outcome.warnings]
    return "\n".join(lines)
