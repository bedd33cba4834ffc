"""The operations HTTP API and the console, in the gateway process (aiohttp).

``server = await start_api(gateway, settings, node_id=..., accounts=..., registrar=...)`` serves
``api.host:api.port`` (its ``api`` section; the rest it needs comes in as collaborators from
the composition root, :mod:`gateway.node`) until ``await server.close()``; :func:`create_app`
is the application factory (typed :class:`web.AppKey`, ``cleanup_ctx`` for the monitor and the Redis client).

Conventions
-----------
* Authentication: ``Authorization: Bearer <token>`` (:mod:`gateway.mgmt.auth`). Reading needs
  the ``read`` role, changing needs ``admin``; ``/api/health``, ``/api/ready``,
  ``/api/openapi.json``, ``/metrics`` and the console's static files are public (the console
  itself holds no data: it calls the API with the operator's token).
* Errors always have the shape ``{"error": {"code", "message", "details"}}``; a request body
  that fails validation gets 422 with ``details.errors`` = ``[{"field", "message"}]``.
* Every change is audited (:mod:`gateway.mgmt.audit`) with who, what, before and after.
* The OpenAPI document (:mod:`gateway.mgmt.openapi`) lists every route; a test keeps them equal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from gateway.accounts.policy import AccountState
from gateway.accounts.store import AccountStore, Scope
from gateway.billing import statement as billing_statement
from gateway.billing.store import StoreError, open_store
from gateway.call.model import EndCause
from gateway.call.registry import ActiveCall
from gateway.charging.rating import load_tariffs
from gateway.datafile import DataFileError
from gateway.edge.config import EdgeOpsConfig
from gateway.edge.sites import SiteDirectory, SiteFollower
from gateway.mgmt.audit import AuditLog
from gateway.mgmt.auth import Principal, Role, TokenTable, bearer_token
from gateway.mgmt.dialplans import (
    NAME_PATTERN,
    DialplanConflictError,
    DialplanNotFoundError,
    DialplanVersions,
    DraftInvalidError,
    explain,
    problems_json,
)
from gateway.mgmt.monitor import Monitor
from gateway.mgmt.openapi import document
from gateway.mgmt.settings import ApiConfig
from gateway.redis_client import connect
from gateway.registrar.location import Binding, ContactChange, LocationStoreError, RegisterUpdate
from gateway.registrar.trunks import CarrierTrunk, PeerTrunk, RegisteringTrunk
from gateway.routing.decision import Origin
from gateway.routing.directory import search as search_directory
from gateway.routing.reload import DialplanHolder
from gateway.security.bans import BanStoreError
from gateway.sip.address import Address

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.call.fraud import SpendVelocity
    from gateway.call.service import CallService
    from gateway.charging.service import ChargingService
    from gateway.registrar.service import RegistrarService
    from gateway.security.guard import EdgeGuard

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY = 4 << 20
NUMBER_PATTERN = r"^\+?[0-9]{1,32}$"
GROUP_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


# -- services ------------------------------------------------------------------------------------
@dataclass
class Services:
    """Everything the API reads and changes, through each subsystem's own interface."""

    node_id: str
    billing_database: str
    """Where issued statements are kept (``charging.billing_database``, SQLite by default)."""
    tariffs: Path
    """The tariff file, for draft statements when charging does not run."""
    gateway: Gateway | None
    registrar: RegistrarService | None
    calls: CallService | None
    dialplans: DialplanVersions | None
    accounts: AccountStore
    charging: ChargingService | None
    monitor: Monitor
    audit: AuditLog
    tokens: TokenTable
    started: float = dataclasses.field(default_factory=time.time)
    sites: SiteFollower | None = None  # the edge: section's sites (gateway.edge.sites)
    guard: EdgeGuard | None = None

    async def registration_count(self) -> int | None:
        if self.registrar is None:
            return None
        return await self.registrar.store.count(self.registrar.registrar.clock())


SERVICES = web.AppKey("services", Services)
PRINCIPAL_KEY = "principal"


# -- errors --------------------------------------------------------------------------------------
class ApiError(Exception):
    """An answer with the stable error shape."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return web.json_response(body, status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, headers={
            k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")
        })
    except Exception:
        log.exception("operations API: %s %s failed", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the gateway log")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


# -- authentication ------------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)


def requires(role: Role | None) -> Callable[[H], H]:
    """Mark a handler with the role it needs (None: public). Unmarked handlers need admin."""

    def mark(handler: H) -> H:
        handler.required_role = role  # type: ignore[attr-defined]
        return handler

    return mark


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_handler = getattr(request.match_info, "handler", None)
    role: Role | None = getattr(route_handler, "required_role", Role.ADMIN)
    if isinstance(request.match_info, web.UrlMappingMatchInfo) and request.match_info.http_exception:
        role = None  # 404 / 405 are answered as such, whoever asks
    if role is None:
        return await handler(request)
    token = bearer_token(request.headers.get("Authorization"))
    challenge = {"WWW-Authenticate": 'Bearer realm="gateway"'}
    if token is None:
        return error_response(401, "unauthorized", "a bearer token is required (Authorization: Bearer ...)",
                              headers=challenge)
    principal = request.app[SERVICES].tokens.authenticate(token)
    if principal is None:
        return error_response(401, "unauthorized", "unknown token", headers=challenge)
    if principal.role < role:
        return error_response(403, "forbidden", f"the {role.name.lower()} role is required; "
                              f"token {principal.name!r} has {principal.role.name.lower()}")
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL_KEY]
    return principal


# -- request bodies ------------------------------------------------------------------------------
class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DialplanText(Body):
    text: str = Field(min_length=1, max_length=2 << 20)
    comment: str = Field(default="", max_length=500)


class DraftFile(Body):
    name: str = Field(pattern=NAME_PATTERN.pattern)
    text: str = Field(min_length=1, max_length=2 << 20)


class ExplainBody(Body):
    calling: str = Field(alias="from", min_length=1, max_length=64)
    called: str = Field(alias="to", min_length=1, max_length=64)
    at: dt.datetime | None = None
    group: str | None = Field(default=None, pattern=GROUP_PATTERN)
    origin: Origin | None = None
    trunk: str | None = Field(default=None, pattern=GROUP_PATTERN)
    draft: DraftFile | None = None


class RollbackBody(Body):
    comment: str = Field(default="", max_length=500)


class TrunkPatch(Body):
    enabled: bool


class AccountStateBody(Body):
    state: AccountState


class BanBody(Body):
    host: str = Field(min_length=1, max_length=64)
    seconds: float | None = Field(default=None, gt=0, le=30 * 86_400)  # default: security.ban_time


B = TypeVar("B", bound=Body)


async def parse_body(request: web.Request, model: type[B]) -> B:
    if not request.can_read_body:
        data: Any = {}
    else:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object",
                       {"errors": [{"field": "", "message": "must be a JSON object"}]})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in item["loc"]) or "(body)", "message": item["msg"]}
            for item in exc.errors(include_url=False)
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise ApiError(422, "invalid_request", message, {"errors": errors}) from None


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(422, "invalid_request", f"{name}: must be an integer from {low} to {high}",
                       {"errors": [{"field": name, "message": f"must be an integer from {low} to {high}"}]})
    return value


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


async def audit(request: web.Request, action: str, target: str, before: Any, after: Any, *,
                details: dict[str, Any] | None = None) -> None:
    who = principal_of(request)
    await services(request).audit.record(
        who=who.name, role=who.role.name.lower(), action=action, target=target, before=before, after=after,
        details=details,
    )


# -- health --------------------------------------------------------------------------------------
@requires(None)
async def health(request: web.Request) -> web.Response:
    svc = services(request)
    return web.json_response({
        "status": "ok", "node": svc.node_id, "uptime_s": round(time.time() - svc.started, 3),
    })


@requires(None)
async def ready(request: web.Request) -> web.Response:
    svc = services(request)
    checks: dict[str, dict[str, Any]] = {}
    listening = bool(svc.gateway and svc.gateway.local_addresses)
    checks["sip"] = {"ok": listening, "detail": "listening" if listening else "not listening"}
    if svc.dialplans is not None:
        checks["dialplan"] = {"ok": True, "detail": svc.dialplans.holder.plan.digest()[:12]}
    if svc.registrar is not None:
        try:
            count = await svc.registration_count()
            checks["location_store"] = {"ok": True, "detail": f"{count} registered"}
        except (LocationStoreError, OSError) as exc:
            checks["location_store"] = {"ok": False, "detail": str(exc)}
    if svc.charging is not None:
        # Spooling while Redis is away loses nothing: ready, but say so. Neither Redis nor the
        # spool taking events (disk full, spool unwritable): not ready, calls would go unbilled.
        sink = svc.charging.sink
        degraded = bool(getattr(sink, "degraded", False))
        if sink.failing:
            checks["charging"] = {"ok": False, "detail": f"{sink.name} sink failing: {sink.backlog} events "
                                  "held in memory (Redis and the spool both refuse)"}
        else:
            checks["charging"] = {"ok": True, "detail": "spooling locally (Redis unreachable)" if degraded
                                  else f"{sink.name} sink"}
    ok = all(c["ok"] for c in checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


@requires(Role.READ)
async def whoami(request: web.Request) -> web.Response:
    who = principal_of(request)
    return web.json_response({"name": who.name, "role": who.role.name.lower()})


@requires(None)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


@requires(None)
async def metrics(request: web.Request) -> web.Response:
    svc = services(request)
    registry = svc.gateway.metrics.registry if svc.gateway is not None else None
    payload = generate_latest(registry) if registry is not None else b""
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- registrations -------------------------------------------------------------------------------
def binding_json(binding: Binding, now: float, group: str | None) -> dict[str, Any]:
    return {
        "aor": binding.aor, "key": binding.key, "contact": binding.contact,
        "source": f"{binding.source.transport}:{binding.source.hostport()}",
        "expires_in": binding.expires_in(now), "user_agent": binding.user_agent,
        "trunk": binding.trunk, "group": group, "call_id": binding.call_id, "cseq": binding.cseq,
        "q": binding.q, "instance": binding.instance, "reg_id": binding.reg_id,
        "registered_at": binding.registered_at or None,
    }


def _registrar(request: web.Request) -> RegistrarService:
    registrar = services(request).registrar
    if registrar is None:
        raise ApiError(404, "not_found", "this gateway runs no registrar")
    return registrar


def _group_of(registrar: RegistrarService, binding: Binding) -> str | None:
    table = registrar.trunks
    trunk = table.trunks.get(binding.trunk) if binding.trunk else table.owner_of(binding.aor)
    return trunk.group if trunk is not None else None


@requires(Role.READ)
async def list_registrations(request: web.Request) -> web.Response:
    registrar = _registrar(request)
    group = request.query.get("group") or None
    number = request.query.get("number") or None
    trunk = request.query.get("trunk") or None
    limit = query_int(request, "limit", 1000, 1, 10_000)
    now = registrar.registrar.clock()
    rows: list[dict[str, Any]] = []
    truncated = False
    try:
        async for aor in registrar.store.aors(now):
            if number is not None and number not in aor:
                continue
            for binding in await registrar.store.lookup(aor, now):
                g = _group_of(registrar, binding)
                if (group is not None and g != group) or (trunk is not None and binding.trunk != trunk):
                    continue
                if len(rows) >= limit:
                    truncated = True
                    break
                rows.append(binding_json(binding, now, g))
            if truncated:
                break
    except LocationStoreError as exc:
        raise ApiError(503, "store_unavailable", f"location store: {exc}") from None
    rows.sort(key=lambda r: (r["aor"], r["key"]))
    return web.json_response({"registrations": rows, "count": len(rows), "truncated": truncated})


@requires(Role.ADMIN)
async def delete_registration(request: web.Request) -> web.Response:
    registrar = _registrar(request)
    aor = request.match_info["aor"]
    key = request.query.get("key") or None
    now = registrar.registrar.clock()
    try:
        before = await registrar.store.lookup(aor, now)
        if not before or (key is not None and all(b.key != key for b in before)):
            what = f"binding {key!r} of {aor}" if key else f"registration {aor}"
            raise ApiError(404, "not_found", f"no {what}")
        changes = tuple(ContactChange(b.key, b.contact, 0) for b in before if key is None or b.key == key)
        # A Call-ID of our own: RFC 3261 §10.3 ordering only compares requests of one Call-ID.
        update = RegisterUpdate(aor, f"mgmt-{secrets.token_hex(8)}", 1, Address("udp", "127.0.0.1", 0),
                                changes=changes)
        after = await registrar.store.update(update, now)
    except LocationStoreError as exc:
        raise ApiError(503, "store_unavailable", f"location store: {exc}") from None
    await audit(request, "registration.remove", aor, [b.contact for b in before], [b.contact for b in after],
                details={"key": key})
    return web.json_response({"aor": aor, "removed": len(before) - len(after),
                              "remaining": [binding_json(b, now, _group_of(registrar, b)) for b in after]})


# -- trunks --------------------------------------------------------------------------------------
def _trunk_json(svc: Services, trunk: RegisteringTrunk | PeerTrunk | CarrierTrunk) -> dict[str, Any]:
    registrar = svc.registrar
    qualifier = registrar.qualifier if registrar is not None else None
    slots = svc.calls.limiter.snapshot() if svc.calls is not None else {}

    def qualify(address: Address) -> dict[str, Any] | None:
        if qualifier is None:
            return None
        target = qualifier.targets.get(address)
        if target is None:
            return None
        return {"state": target.reach.state.value, "streak": target.reach.streak,
                "changed_at": target.reach.changed_at}

    data: dict[str, Any] = {
        "name": trunk.name, "kind": trunk.kind, "group": trunk.group, "enabled": trunk.enabled,
        "transport": trunk.transport, "max_calls": trunk.max_calls, "max_cps": trunk.max_cps,
        "active_calls": slots.get(f"trunk:{trunk.name}", 0), "destinations": [],
    }
    if isinstance(trunk, CarrierTrunk):
        for d in trunk.destinations:
            address = Address(d.transport or trunk.transport, d.host, d.port)
            data["destinations"].append({
                "address": f"{address.transport}:{address.hostport()}", "priority": d.priority,
                "weight": d.weight, "registers": d.registration is not None, "qualify": qualify(address),
            })
    elif isinstance(trunk, PeerTrunk):
        for m in trunk.match:
            if m.host is not None and m.port is not None:
                address = Address(m.transport or trunk.transport, m.host, m.port)
                data["destinations"].append({
                    "address": f"{address.transport}:{address.hostport()}", "priority": 0, "weight": 0,
                    "registers": False, "qualify": qualify(address),
                })
    else:
        data["lines"] = sum(len(r) for line in trunk.lines for r in line.numbers)
    return data


@requires(Role.READ)
async def list_trunks(request: web.Request) -> web.Response:
    svc = services(request)
    registrar = _registrar(request)
    return web.json_response({"trunks": [_trunk_json(svc, t) for t in registrar.trunks.trunks.values()]})


def _trunk(request: web.Request) -> RegisteringTrunk | PeerTrunk | CarrierTrunk:
    name = request.match_info["name"]
    trunk = _registrar(request).trunks.trunks.get(name)
    if trunk is None:
        raise ApiError(404, "not_found", f"no trunk named {name!r}")
    return trunk


@requires(Role.READ)
async def get_trunk(request: web.Request) -> web.Response:
    return web.json_response(_trunk_json(services(request), _trunk(request)))


@requires(Role.ADMIN)
async def patch_trunk(request: web.Request) -> web.Response:
    trunk = _trunk(request)
    body = await parse_body(request, TrunkPatch)
    registrar = _registrar(request)
    before = trunk.enabled
    if before != body.enabled:
        # Through the holder: kept in state_dir (survives a restart and a SIGHUP) and swapped in
        # whole, so the registrar, call control and the guard all read the new table.
        try:
            registrar.trunks.set_enabled(trunk.name, body.enabled)
        except OSError as exc:
            raise ApiError(503, "not_kept", f"the change cannot be kept: {exc}") from None
    await audit(request, "trunk.enable" if body.enabled else "trunk.disable", trunk.name,
                {"enabled": before}, {"enabled": body.enabled})
    return web.json_response(_trunk_json(services(request), registrar.trunks.trunks[trunk.name]))


@requires(Role.READ)
async def qualify_status(request: web.Request) -> web.Response:
    registrar = _registrar(request)
    rows = registrar.qualifier.snapshot() if registrar.qualifier is not None else []
    return web.json_response({"enabled": registrar.qualifier is not None, "targets": rows})


# -- calls ---------------------------------------------------------------------------------------
def _call_service(request: web.Request) -> CallService:
    calls = services(request).calls
    if calls is None:
        raise ApiError(404, "not_found", "this gateway runs no call control")
    return calls


@requires(Role.READ)
async def list_calls(request: web.Request) -> web.Response:
    """Every active call, call control's and the switchboard's (the core's registry)."""
    b2bua = _call_service(request).b2bua
    limit = query_int(request, "limit", 1000, 1, 10_000)
    now = asyncio.get_running_loop().time()
    calls = list(b2bua.registry)
    return web.json_response({
        "calls": [c.snapshot(now) for c in calls[:limit]], "count": len(calls),
        "completed": b2bua.completed, "failed": b2bua.failed,
    })


def _call(request: web.Request) -> ActiveCall:
    uid = request.match_info["id"]
    call = _call_service(request).b2bua.registry.get(uid)
    if call is None:
        raise ApiError(404, "not_found", f"no active call {uid!r}")
    return call


@requires(Role.READ)
async def get_call(request: web.Request) -> web.Response:
    return web.json_response(_call(request).snapshot(asyncio.get_running_loop().time()))


@requires(Role.ADMIN)
async def hangup_call(request: web.Request) -> web.Response:
    call = _call(request)
    before = call.snapshot(asyncio.get_running_loop().time())
    # The application's own teardown: BYE on every leg of an answered call (billed as a
    # normal clearing), CANCEL and 480 for a B2BUA call still ringing.
    call.hangup(EndCause.OPERATOR)
    after = call.snapshot(asyncio.get_running_loop().time())
    await audit(request, "call.hangup", call.uid, before, None)
    return web.json_response({"id": call.uid, "kind": call.kind.value, "state": after["state"]}, status=202)


# -- dialplans -----------------------------------------------------------------------------------
def _dialplans(request: web.Request) -> DialplanVersions:
    versions = services(request).dialplans
    if versions is None:
        raise ApiError(404, "not_found", "this gateway serves no dialplan (static routes only)")
    return versions


def _invalid(exc: DraftInvalidError) -> ApiError:
    problems = problems_json(exc.problems)
    first = exc.problems[0] if exc.problems else None
    message = f"the dialplan does not compile: {first}" if first else "the dialplan does not compile"
    if len(exc.problems) > 1:
        message += f" (and {len(exc.problems) - 1} more)"
    return ApiError(422, "dialplan_invalid", message, {"errors": problems})


def _current_version(versions: DialplanVersions) -> dict[str, Any]:
    current = versions.current()
    plan = versions.holder.plan
    return {
        "version": current.number if current is not None else None,
        "source": current.source if current is not None else "seed",
        "applied_at": current.applied_at if current is not None else None,
        "applied_by": current.applied_by if current is not None else None,
        "plan_digest": plan.digest(),
        "groups": sorted(plan.groups),
    }


@requires(Role.READ)
async def list_dialplans(request: web.Request) -> web.Response:
    versions = _dialplans(request)
    try:
        files = versions.summary()
    except DialplanConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return web.json_response({**_current_version(versions), "dialplans": files})


@requires(Role.READ)
async def get_dialplan(request: web.Request) -> web.Response:
    versions = _dialplans(request)
    name = request.match_info["name"]
    try:
        text = versions.get(name)
    except DialplanNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except DialplanConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return web.json_response({"name": name, "text": text, **_current_version(versions)})


@requires(Role.READ)
async def validate_dialplan(request: web.Request) -> web.Response:
    versions = _dialplans(request)
    body = await parse_body(request, DialplanText)
    try:
        result = await versions.validate(request.match_info["name"], body.text)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc),
                       {"errors": [{"field": str(exc).partition(":")[0], "message": str(exc)}]}) from None
    except DialplanConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return web.json_response({
        "ok": result.ok, "errors": problems_json(result.errors), "warnings": problems_json(result.warnings),
        "plan_digest": result.plan.digest() if result.plan is not None else None,
    })


@requires(Role.ADMIN)
async def replace_dialplan(request: web.Request) -> web.Response:
    versions = _dialplans(request)
    name = request.match_info["name"]
    body = await parse_body(request, DialplanText)
    who = principal_of(request)
    before_version = versions.current()
    before_digest = versions.holder.plan.digest()
    try:
        old_text: str | None = versions.get(name)
    except DialplanNotFoundError:
        old_text = None
    try:
        version = await versions.replace(name, body.text, who=who.name, comment=body.comment)
    except DraftInvalidError as exc:
        await audit(request, "dialplan.replace.refused", name, None, None,
                    details={"errors": problems_json(exc.problems)})
        raise _invalid(exc) from None
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc),
                       {"errors": [{"field": str(exc).partition(":")[0], "message": str(exc)}]}) from None
    except DialplanConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    await audit(
        request, "dialplan.replace", name,
        {"version": before_version.number if before_version else None, "plan_digest": before_digest,
         "text": old_text},
        {"version": version.number, "plan_digest": version.plan_digest, "text": body.text},
        details={"comment": body.comment},
    )
    warnings = [{**p, "file": Path(p["file"]).name} for p in problems_json(versions.holder.plan.warnings)]
    return web.json_response({"version": version.to_dict(), "warnings": warnings})


@requires(Role.READ)
async def explain_call(request: web.Request) -> web.Response:
    versions = _dialplans(request)
    body = await parse_body(request, ExplainBody)
    plan = versions.holder.plan
    against = "live"
    if body.draft is not None:
        try:
            result = await versions.validate(body.draft.name, body.draft.text)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        except DialplanConflictError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        if not result.ok or result.plan is None:
            raise _invalid(DraftInvalidError(result.errors))
        plan, against = result.plan, "draft"
    if body.group is not None and plan.group(body.group) is None:
        raise ApiError(422, "invalid_request", f"group: no group {body.group!r} in the {against} dialplan",
                       {"errors": [{"field": "group", "message": f"no group {body.group!r}"}]})
    outcome = explain(plan, calling=body.calling, called=body.called, at=body.at, group=body.group,
                      origin=body.origin, trunk=body.trunk)
    return web.json_response({"against": against, **outcome})


@requires(Role.READ)
async def directory(request: web.Request) -> web.Response:
    """企业通信录 / 电话号码查询: members by name, department, title or part of a number."""
    plan = _dialplans(request).holder.plan
    group = request.query.get("group") or None
    if group is not None and plan.group(group) is None:
        raise ApiError(404, "not_found", f"no group {group!r}")
    limit = query_int(request, "limit", 50, 1, 1000)
    found = search_directory(plan.directory, request.query.get("q", ""), group=group, limit=limit + 1)
    entries = [entry.to_dict() for entry in found[:limit]]
    return web.json_response({"entries": entries, "count": len(entries), "truncated": len(found) > limit})


@requires(Role.READ)
async def list_versions(request: web.Request) -> web.Response:
    versions = _dialplans(request)
    current = versions.current()
    return web.json_response({
        "current": current.number if current is not None else None,
        "versions": [v.to_dict() for v in versions.history()],
    })


def _version_number(request: web.Request) -> int:
    raw = request.match_info["number"]
    if not raw.isdigit() or not 0 < int(raw) < 10**6:
        raise ApiError(422, "invalid_request", "number: must be a version number (1-999999)",
                       {"errors": [{"field": "number", "message": "must be a version number"}]})
    return int(raw)


@requires(Role.READ)
async def get_version(request: web.Request) -> web.Response:
    versions = _dialplans(request)
    number = _version_number(request)
    meta = next((v for v in versions.history() if v.number == number), None)
    if meta is None:
        raise ApiError(404, "not_found", f"no dialplan version {number}")
    return web.json_response({**meta.to_dict(), "texts": versions.version_files(number)})


@requires(Role.ADMIN)
async def rollback_version(request: web.Request) -> web.Response:
    versions = _dialplans(request)
    number = _version_number(request)
    body = await parse_body(request, RollbackBody)
    who = principal_of(request)
    before = versions.current()
    before_digest = versions.holder.plan.digest()
    try:
        version = await versions.rollback(number, who=who.name, comment=body.comment)
    except DialplanNotFoundError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except DraftInvalidError as exc:
        raise _invalid(exc) from None
    await audit(request, "dialplan.rollback", f"version {number}",
                {"version": before.number if before else None, "plan_digest": before_digest},
                {"version": version.number, "plan_digest": version.plan_digest},
                details={"comment": body.comment})
    return web.json_response({"version": version.to_dict()})


# -- account states ------------------------------------------------------------------------------
def _scope(request: web.Request) -> tuple[Scope, str]:
    raw, key = request.match_info["scope"], request.match_info["key"]
    try:
        scope = Scope(raw)
    except ValueError:
        raise ApiError(404, "not_found", f"no account scope {raw!r} (number or group)") from None
    pattern = NUMBER_PATTERN if scope is Scope.NUMBER else GROUP_PATTERN
    if not re.match(pattern, key):
        what = "a number (digits, optional leading +)" if scope is Scope.NUMBER else "a group name"
        raise ApiError(422, "invalid_request", f"key: must be {what}",
                       {"errors": [{"field": "key", "message": f"must be {what}"}]})
    return scope, key


@requires(Role.READ)
async def list_accounts(request: web.Request) -> web.Response:
    store = services(request).accounts
    try:
        numbers = await store.all(Scope.NUMBER)
        groups = await store.all(Scope.GROUP)
    except (RedisError, OSError) as exc:
        raise ApiError(503, "store_unavailable", f"account store: {exc}") from None
    return web.json_response({
        "store": store.name, "states": [s.value for s in AccountState],
        "numbers": {k: v.value for k, v in sorted(numbers.items())},
        "groups": {k: v.value for k, v in sorted(groups.items())},
    })


@requires(Role.READ)
async def get_account(request: web.Request) -> web.Response:
    scope, key = _scope(request)
    try:
        state = await services(request).accounts.get(scope, key)
    except (RedisError, OSError) as exc:
        raise ApiError(503, "store_unavailable", f"account store: {exc}") from None
    return web.json_response({"scope": scope.value, "key": key, "state": state.value})


@requires(Role.ADMIN)
async def set_account(request: web.Request) -> web.Response:
    scope, key = _scope(request)
    body = await parse_body(request, AccountStateBody)
    store = services(request).accounts
    try:
        before = await store.get(scope, key)
        await store.set(scope, key, body.state)
    except (RedisError, OSError) as exc:
        raise ApiError(503, "store_unavailable", f"account store: {exc}") from None
    await audit(request, "account.set", f"{scope.value}:{key}", before.value, body.state.value)
    return web.json_response({"scope": scope.value, "key": key, "state": body.state.value,
                              "previous": before.value})


# -- bans (gateway.security) ---------------------------------------------------------------------
def _guard(request: web.Request) -> EdgeGuard:
    guard = services(request).guard
    if guard is None:
        raise ApiError(404, "not_found", "the edge guard is disabled (security.enabled: false)")
    return guard


def _ban_host(raw: str, field: str) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))  # the spelling the transports see
    except ValueError:
        raise ApiError(422, "invalid_request", f"{field}: must be an IPv4 or IPv6 address",
                       {"errors": [{"field": field, "message": "must be an IPv4 or IPv6 address"}]}) from None


@requires(Role.READ)
async def list_bans(request: web.Request) -> web.Response:
    guard = _guard(request)
    try:
        bans = await guard.active()
    except BanStoreError as exc:
        raise ApiError(503, "store_unavailable", f"ban store: {exc}") from None
    now = guard.clock()
    locked = sorted(guard.locked_users(now).items())
    return web.json_response({
        "store": guard.store.name, "bans": [b.to_dict(now) for b in bans],
        "locked_users": [{"username": user, "until": round(until, 3)} for user, until in locked],
    })


@requires(Role.ADMIN)
async def add_ban(request: web.Request) -> web.Response:
    guard = _guard(request)
    body = await parse_body(request, BanBody)
    host = _ban_host(body.host, "host")
    seconds = body.seconds if body.seconds is not None else guard.settings.ban_time
    try:
        ban = await guard.add_ban(host, seconds, by=principal_of(request).name)
    except BanStoreError as exc:
        raise ApiError(503, "store_unavailable", f"ban store: {exc} (the ban holds on this worker)") from None
    await audit(request, "ban.add", host, None, {"seconds": seconds})
    return web.json_response(ban.to_dict(guard.clock()), status=201)


@requires(Role.ADMIN)
async def lift_ban(request: web.Request) -> web.Response:
    guard = _guard(request)
    host = _ban_host(request.match_info["host"], "host")
    try:
        lifted = await guard.lift(host)
    except BanStoreError as exc:
        raise ApiError(503, "store_unavailable", f"ban store: {exc}") from None
    if not lifted:
        raise ApiError(404, "not_found", f"{host} is not banned")
    await audit(request, "ban.lift", host, "banned", None)
    return web.json_response({"host": host, "lifted": True})


# -- charging, stats, audit ----------------------------------------------------------------------
# -- toll-fraud guard: spend-velocity alarms ------------------------------------------------------
def _spend_alarms(request: web.Request) -> SpendVelocity:
    calls = services(request).calls
    if calls is None or calls.velocity is None:
        raise ApiError(404, "not_found", "no spend-velocity alarm is configured (call.fraud)")
    return calls.velocity


@requires(Role.READ)
async def list_spend_alarms(request: web.Request) -> web.Response:
    alarms = _spend_alarms(request).alarms()
    return web.json_response({"alarms": [dataclasses.asdict(a) for a in alarms]})


@requires(Role.ADMIN)
async def clear_spend_alarm(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    velocity = _spend_alarms(request)
    before = next((dataclasses.asdict(a) for a in velocity.alarms() if a.key in (key, f"line:{key}")), None)
    if not velocity.clear(key):
        raise ApiError(404, "not_found", f"no spend alarm for {key!r}")
    await audit(request, "spend_alarm.clear", key, before, None)
    return web.json_response({"key": key, "cleared": True})


@requires(Role.READ)
async def charging_status(request: web.Request) -> web.Response:
    svc = services(request)
    charging = svc.charging
    if charging is None:
        return web.json_response({"enabled": False, "sink": None, "healthy": None, "degraded": None,
                                  "backlog": 0, "spool_segments": 0, "open_calls": 0,
                                  "events_per_second": 0.0})
    sink = charging.sink
    degraded = bool(getattr(sink, "degraded", False))
    spool = getattr(sink, "spool", None)
    segments = len(spool.sealed_segments()) if spool is not None and spool.directory.is_dir() else 0
    return web.json_response({
        "enabled": True, "sink": sink.name, "healthy": not degraded, "degraded": degraded,
        "backlog": sink.backlog, "spool_segments": segments, "open_calls": charging.open_calls,
        "events_per_second": round(svc.monitor.events_per_second, 3),
    })


@requires(Role.READ)
async def stats(request: web.Request) -> web.Response:
    svc = services(request)
    seconds = query_int(request, "seconds", 300, 1, 600)
    history = list(svc.monitor.history)[-seconds:]
    last = history[-1].to_dict() if history else None
    trunks = []
    if svc.registrar is not None:
        for trunk in svc.registrar.trunks.trunks.values():
            row = _trunk_json(svc, trunk)
            states = [d["qualify"]["state"] for d in row["destinations"] if d["qualify"] is not None]
            health = "disabled" if not trunk.enabled else (
                "down" if states and all(s == "down" for s in states)
                else "degraded" if "down" in states else "up" if "up" in states else "unknown")
            trunks.append({"name": trunk.name, "kind": trunk.kind, "enabled": trunk.enabled, "health": health,
                           "active_calls": row["active_calls"], "max_calls": trunk.max_calls})
    return web.json_response({
        "node": svc.node_id,
        "registrations": await _safe_count(svc),
        "active_calls": len(svc.calls.b2bua.registry) if svc.calls is not None else 0,
        "transactions": svc.gateway.transaction_count if svc.gateway is not None else 0,
        "loop_lag_ms": round(svc.monitor.lag_last * 1000, 3),
        "last": last,
        "history": [p.to_dict() for p in history],
        "trunks": trunks,
    })


async def _safe_count(svc: Services) -> int | None:
    try:
        return await svc.registration_count()
    except (LocationStoreError, OSError):
        return None


@requires(Role.READ)
async def audit_trail(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    records = await asyncio.to_thread(services(request).audit.tail, limit)
    return web.json_response({"records": records})


# -- edge sites ----------------------------------------------------------------------------------
@requires(Role.READ)
async def list_sites(request: web.Request) -> web.Response:
    follower = request.app[SERVICES].sites
    if follower is None:
        return web.json_response({"following": False, "broker_connected": False, "sites": []})
    return web.json_response({
        "following": True,
        "broker_connected": follower.connected.is_set(),
        "sites": follower.directory.rows(time.time()),
    })


# -- billing -------------------------------------------------------------------------------------
def _statement(svc: Services, group: str, month: str, version: int | None) -> dict[str, Any]:
    """The kept statement (latest, or ``version``); a draft computed now when none is kept yet
    (reading never issues a statement: ``gateway billing statement`` does)."""
    store = open_store(svc.billing_database)
    try:
        if version is not None:
            rows = store.query("SELECT body FROM statements WHERE group_id = ? AND month = ? AND version = ?",
                               [group, month, version])
            if not rows:
                raise ApiError(404, "not_found", f"no statement version {version} of {group} {month}")
            kept: dict[str, Any] = json.loads(rows[0][0])
            return kept
        latest = billing_statement.latest(store, group, month)
        if latest is not None:
            return latest
        rater = svc.charging.rater if svc.charging is not None else load_tariffs(svc.tariffs)
        draft = billing_statement.StatementBuilder(store, rater).compute(group, month)
        return {**draft, "version": None, "created_at": None, "reason": "draft (not issued)"}
    finally:
        store.close()


@requires(Role.READ)
async def billing_statement_view(request: web.Request) -> web.Response:
    group = request.query.get("group", "")
    month = request.query.get("month", "")
    version = query_int(request, "version", 0, 0, 1_000_000) or None
    if not group:
        raise ApiError(422, "invalid", "group is required")
    try:
        billing_statement.parse_month(month)
        body = await asyncio.to_thread(_statement, services(request), group, month, version)
    except billing_statement.StatementError as exc:
        raise ApiError(422, "invalid", str(exc)) from exc
    except (StoreError, DataFileError) as exc:
        raise ApiError(503, "unavailable", f"billing database: {exc}") from exc
    if request.query.get("format") == "csv":
        return web.Response(text=billing_statement.to_csv(body), content_type="text/csv")
    return web.json_response(body)


# -- console -------------------------------------------------------------------------------------
CONSOLE_FILES = {"console.js": "text/javascript", "console.css": "text/css"}


@requires(None)
async def console_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={
        "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": CONSOLE_CSP,
        "Cache-Control": "no-cache",
    })


@requires(None)
async def console_static(request: web.Request) -> web.FileResponse:
    name = request.match_info["file"]
    kind = CONSOLE_FILES.get(name)
    if kind is None:
        raise ApiError(404, "not_found", f"no console file {name!r}")
    return web.FileResponse(STATIC_DIR / name, headers={
        "Content-Type": f"{kind}; charset=utf-8", "Cache-Control": "no-cache",
    })


# -- the application -----------------------------------------------------------------------------
ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/", console_index),
    ("GET", "/static/{file}", console_static),
    ("GET", "/metrics", metrics),
    ("GET", "/api/openapi.json", openapi),
    ("GET", "/api/health", health),
    ("GET", "/api/ready", ready),
    ("GET", "/api/whoami", whoami),
    ("GET", "/api/registrations", list_registrations),
    ("DELETE", "/api/registrations/{aor}", delete_registration),
    ("GET", "/api/trunks", list_trunks),
    ("GET", "/api/trunks/{name}", get_trunk),
    ("PATCH", "/api/trunks/{name}", patch_trunk),
    ("GET", "/api/qualify", qualify_status),
    ("GET", "/api/calls", list_calls),
    ("GET", "/api/calls/{id}", get_call),
    ("DELETE", "/api/calls/{id}", hangup_call),
    ("GET", "/api/dialplans", list_dialplans),
    ("GET", "/api/dialplans/{name}", get_dialplan),
    ("PUT", "/api/dialplans/{name}", replace_dialplan),
    ("POST", "/api/dialplans/{name}/validate", validate_dialplan),
    ("POST", "/api/explain", explain_call),
    ("GET", "/api/directory", directory),
    ("GET", "/api/dialplan-versions", list_versions),
    ("GET", "/api/dialplan-versions/{number}", get_version),
    ("POST", "/api/dialplan-versions/{number}/rollback", rollback_version),
    ("GET", "/api/accounts", list_accounts),
    ("GET", "/api/accounts/{scope}/{key}", get_account),
    ("PUT", "/api/accounts/{scope}/{key}", set_account),
    ("GET", "/api/charging", charging_status),
    ("GET", "/api/billing/statement", billing_statement_view),
    ("GET", "/api/fraud/alarms", list_spend_alarms),
    ("DELETE", "/api/fraud/alarms/{key}", clear_spend_alarm),
    ("GET", "/api/stats", stats),
    ("GET", "/api/audit", audit_trail),
    ("GET", "/api/sites", list_sites),
    ("GET", "/api/bans", list_bans),
    ("POST", "/api/bans", add_ban),
    ("DELETE", "/api/bans/{host}", lift_ban),
]


def create_app(svc: Services, *, redis: aioredis.Redis | None = None) -> web.Application:
    """The API application over ``svc``; the monitor runs while the app runs."""
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY)
    app[SERVICES] = svc
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def background(app: web.Application) -> AsyncIterator[None]:
        svc.monitor.start(svc)
        if svc.sites is not None:
            svc.sites.start()
        yield
        if svc.sites is not None:
            await svc.sites.stop()
        await svc.monitor.stop()
        await svc.audit.close()
        if redis is not None:
            await redis.aclose()

    app.cleanup_ctx.append(background)
    return app


@dataclass
class ApiServer:
    runner: web.AppRunner
    services: Services

    @property
    def port(self) -> int:
        for site in self.runner.sites:
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            for sock in sockets:
                port: int = sock.getsockname()[1]
                return port
        return 0

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_api(
    gateway: Gateway,
    settings: ApiConfig,
    *,
    node_id: str,
    state_dir: Path,
    accounts: AccountStore,
    billing_database: str,
    tariffs: Path,
    redis_url: str | None = None,
    edge: EdgeOpsConfig | None = None,
    registrar: RegistrarService | None = None,
    calls: CallService | None = None,
    dialplan: DialplanHolder | None = None,
    charging: ChargingService | None = None,
    monitor: Monitor | None = None,
    guard: EdgeGuard | None = None,
) -> ApiServer:
    """Start the API on ``api.host:api.port`` (see the module docstring); close with ``close()``.
    ``state_dir``: dialplan versions and the audit log; ``accounts``: the account store of the
    root's gate; ``edge``: the ``edge`` section (sites followed over MQTT)."""
    redis = connect(redis_url) if redis_url else None
    versions = None
    if dialplan is not None:
        versions = DialplanVersions(dialplan, state_dir, keep=settings.dialplan_versions, redis=redis)
        versions.adopt_active()
    audit_path = state_dir / settings.audit_log  # an absolute audit_log stays as it is
    svc = Services(
        node_id=node_id, billing_database=billing_database, tariffs=tariffs,
        gateway=gateway, registrar=registrar, calls=calls, dialplans=versions,
        accounts=accounts, charging=charging,
        monitor=monitor or Monitor(gateway.metrics.registry),
        audit=AuditLog(audit_path, node=node_id, redis=redis, stream=settings.audit_stream,
                       maxlen=settings.audit_stream_maxlen),
        tokens=TokenTable(settings.tokens), guard=guard,
    )
    if edge is not None and edge.follow:
        svc.sites = SiteFollower(edge, SiteDirectory(edge.stale_after_s))
    if not settings.tokens:
        log.warning("operations API: no api.tokens configured; every call but health is refused")
    app = create_app(svc, redis=redis)
    runner = web.AppRunner(app, access_log=logging.getLogger("gateway.mgmt.access"),
                           access_log_format='%a "%r" %s %b %Tfs')
    await runner.setup()  # starts the cleanup contexts: the monitor's tasks, the Redis client
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()  # the port is taken: stop what setup started
        raise
    server = ApiServer(runner, svc)
    log.info("operations API and console on http://%s:%d/", settings.host, server.port)
    return server

