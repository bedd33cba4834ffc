"""Location service (RFC 3261 §10.3): bindings of an address-of-record to contacts.

One interface, :class:`LocationStore`, and two plug-ins registered by name in
:data:`LOCATION_STORES` (:mod:`gateway.plugins`; unset or ``auto``: redis with a Redis URL):

``memory``
    :class:`MemoryLocationStore`, the embedded default (one process).
``redis``
    :class:`RedisLocationStore`: one Redis hash per AOR (field = binding key, value = the binding
    as JSON, plus a version field) whose key TTL follows its longest-lived binding, and a sorted
    set indexing AORs by that expiry. Every gateway process sharing the Redis sees the same
    bindings, and a gateway restart loses none. An update is one Lua script (EVALSHA): read,
    merge and write in one round trip, atomic on the server, so two processes registering the
    same AOR cannot lose each other's changes (Redis 7.0 commands only; the keys of one store
    are not cluster-sharded).

The RFC 3261 §10.3 step 6-7 rules (Call-ID / CSeq ordering, ``*`` removal, all-or-nothing commit)
live in one pure function, :func:`merge`; the Redis store's script is its Lua rendering
(``tests/registrar/test_location.py`` checks the two agree).

Times are wall-clock seconds passed in as ``now``: bindings are shared between processes and
across restarts, and wall-clock time is the clock those share.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import Any, ClassVar, get_args

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.plugins import Registry, needed_url
from gateway.redis_client import connect
from gateway.registrar.settings import StoreName
from gateway.sip.address import Address


class OutOfOrderError(Exception):
    """A REGISTER older than the binding it would change (RFC 3261 §10.3 step 7): the request fails."""

    status = 500

    def __init__(self, contact: str) -> None:
        super().__init__(f"out-of-order REGISTER for {contact}")
        self.contact = contact


class LocationStoreError(Exception):
    """The store is unreachable or failed; the REGISTER is answered 500 with Retry-After."""

    status = 500


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an address-of-record."""

    aor: str
    key: str  # identifies the binding inside its AOR (RFC 5626 instance + reg-id, else the contact URI)
    contact: str  # the Contact URI as registered
    expires_at: float
    call_id: str
    cseq: int
    source: Address  # where the REGISTER came from (received / rport): requests go there (NAT)
    q: float | None = None
    instance: str | None = None  # +sip.instance (RFC 5626 §4.2), kept as sent
    reg_id: int | None = None
    user_agent: str | None = None
    trunk: str | None = None
    registered_at: float = 0.0

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def to_json(self) -> str:
        # Built field by field: dataclasses.asdict deep-copies and is the slow part here.
        data = {name: getattr(self, name) for name in _BINDING_FIELDS}
        data["source"] = [self.source.transport, self.source.host, self.source.port]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Binding:
        data: dict[str, Any] = json.loads(text)
        transport, host, port = data.pop("source")
        return cls(source=Address(transport, host, int(port)), **data)


_BINDING_FIELDS = tuple(f.name for f in fields(Binding))


@dataclass(frozen=True, slots=True)
class ContactChange:
    """One Contact of a REGISTER after expiry clamping; ``expires == 0`` removes the binding."""

    key: str
    contact: str
    expires: int
    q: float | None = None
    instance: str | None = None
    reg_id: int | None = None


@dataclass(frozen=True, slots=True)
class RegisterUpdate:
    """Everything one REGISTER asks of the location service."""

    aor: str
    call_id: str
    cseq: int
    source: Address
    changes: tuple[ContactChange, ...] = ()
    remove_all: bool = False  # Contact: * with Expires: 0
    max_contacts: int = 10
    user_agent: str | None = None
    trunk: str | None = None


def merge(existing: list[Binding], update: RegisterUpdate, now: float) -> list[Binding]:
    """The AOR's bindings after ``update`` (RFC 3261 §10.3 steps 6-7); raises OutOfOrderError.

    All-or-nothing: on error nothing is to be written. Expired bindings are dropped. When the
    result exceeds ``max_contacts`` the bindings not refreshed by this request that expire
    soonest are dropped (a rebooted IAD re-registers under a new Call-ID without unregistering).
    """
    live = {b.key: b for b in existing if b.expires_at > now}
    stored = dict(live)  # ordering is checked against what was stored, not this request's own changes
    if update.remove_all:
        for b in live.values():
            if b.call_id == update.call_id and update.cseq <= b.cseq:
                raise OutOfOrderError(b.contact)
        return []
    touched: set[str] = set()
    for change in update.changes:
        old = stored.get(change.key)
        if old is not None and old.call_id == update.call_id and update.cseq <= old.cseq:
            raise OutOfOrderError(change.contact)
        touched.add(change.key)
        if change.expires == 0:
            live.pop(change.key, None)
            continue
        live[change.key] = Binding(
            aor=update.aor,
            key=change.key,
            contact=change.contact,
            expires_at=now + change.expires,
            call_id=update.call_id,
            cseq=update.cseq,
            source=update.source,
            q=change.q,
            instance=change.instance,
            reg_id=change.reg_id,
            user_agent=update.user_agent,
            trunk=update.trunk,
            registered_at=old.registered_at if old is not None else now,
        )
    result = sorted(live.values(), key=lambda b: (b.key not in touched, -b.expires_at))
    return result[: update.max_contacts] if len(result) > update.max_contacts else result


def ordered(bindings: list[Binding]) -> list[Binding]:
    """Bindings in the order to try them: highest q first (RFC 3261 §16.6), then most recent."""
    return sorted(bindings, key=lambda b: (-(b.q if b.q is not None else 1.0), -b.registered_at))


class LocationStore(abc.ABC):
    """The location service's storage. Implementations register by name (:data:`LOCATION_STORES`)."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor``, in the order to try them."""

    @abc.abstractmethod
    async def update(self, update: RegisterUpdate, now: float) -> list[Binding]:
        """Apply a REGISTER atomically (see :func:`merge`); return the AOR's bindings after it."""

    @abc.abstractmethod
    async def aors(self, now: float) -> AsyncIterator[str]:
        """Every AOR with at least one live binding (for the operations API and qualify)."""
        yield ""  # pragma: no cover - abstract

    @abc.abstractmethod
    async def count(self, now: float) -> int:
        """Number of AORs with live bindings."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True, slots=True)
class LocationContext:
    """What a location store factory may need (:mod:`gateway.plugins`)."""

    redis_url: str | None


LOCATION_STORES: Registry[LocationContext, LocationStore] = Registry(
    "location store", "registrar.location_store", names=get_args(StoreName)
)


class MemoryLocationStore(LocationStore):
    """Bindings in a dict; expired ones are dropped when their AOR is touched or by :meth:`purge`."""

    name = "memory"

    def __init__(self) -> None:
        self._aors: dict[str, list[Binding]] = {}

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        return ordered([b for b in self._aors.get(aor, ()) if b.expires_at > now])

    async def update(self, update: RegisterUpdate, now: float) -> list[Binding]:
        result = merge(self._aors.get(update.aor, []), update, now)
        if result:
            self._aors[update.aor] = result
        else:
            self._aors.pop(update.aor, None)
        return ordered(result)

    async def aors(self, now: float) -> AsyncIterator[str]:
        for aor, bindings in list(self._aors.items()):
            if any(b.expires_at > now for b in bindings):
                yield aor

    async def count(self, now: float) -> int:
        return sum(1 for bindings in self._aors.values() if any(b.expires_at > now for b in bindings))

    async def close(self) -> None:
        self._aors.clear()

    def purge(self, now: float) -> int:
        """Drop expired bindings everywhere; returns how many AORs went empty."""
        gone = 0
        for aor in list(self._aors):
            live = [b for b in self._aors[aor] if b.expires_at > now]
            if live:
                self._aors[aor] = live
            else:
                del self._aors[aor]
                gone += 1
        return gone


class KeyedLocks:
    """One asyncio lock per key, existing only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# The hash field holding an AOR's version, drawn from one counter so a version never repeats
# (no ABA when an AOR empties and fills again). The update script is atomic and needs no
# version; it still bumps it so the hash keeps one format for every reader.
_VERSION_FIELD = b"\x00v"

# :func:`merge` on the server: read, merge and write an AOR in one round trip, atomically.
# KEYS: AOR hash, index zset, version counter. ARGV: now, AOR, Call-ID, CSeq, "1" for
# ``Contact: *``, max contacts, then per change: key, expires_at ("" = remove), binding JSON.
# Returns {"ok", JSON...}, {"change", n} (change n, from 1, is out of order) or
# {"stored", contact} (``*`` met a newer stored binding).
# Numbers that end up in the JSON, the TTL or the index (expires_at, registered_at) are carried
# as the text Python wrote (``repr``) and compared after ``tonumber`` (both strtod: the same
# double), never re-formatted by Lua (which would keep only 14 digits).
_UPDATE_SCRIPT = """
local now, call_id, cseq = tonumber(ARGV[1]), ARGV[3], tonumber(ARGV[4])
local raw = redis.call('HGETALL', KEYS[1])
local live, stored = {}, {}
for i = 1, #raw, 2 do
  if raw[i] ~= '\\0v' then
    local at = string.match(raw[i + 1], '"expires_at":([^,]+),')
    local exp = tonumber(at)
    if exp > now then
      local b = {key = raw[i], json = raw[i + 1], at = at, exp = exp}
      live[b.key], stored[b.key] = b, b
    end
  end
end
local function newer(b)
  local d = cjson.decode(b.json)
  return d.call_id == call_id and cseq <= d.cseq, d.contact
end
local touched, result = {}, {}
if ARGV[5] == '1' then
  for _, b in pairs(stored) do
    local stale, contact = newer(b)
    if stale then return {'stored', contact} end
  end
else
  local n = 0
  for i = 7, #ARGV, 3 do
    n = n + 1
    local key, at, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local old = stored[key]
    if old ~= nil and newer(old) then return {'change', n} end
    touched[key] = true
    if at == '' then
      live[key] = nil
    else
      if old ~= nil then  -- a refresh keeps the first registration time (the JSON's last field)
        json = string.match(json, '^(.*"registered_at":)') ..
          string.match(old.json, '"registered_at":([^,}]*)}$') .. '}'
      end
      live[key] = {key = key, json = json, at = at, exp = tonumber(at)}
    end
  end
  for _, b in pairs(live) do result[#result + 1] = b end
  table.sort(result, function(a, b)
    if touched[a.key] ~= touched[b.key] then return touched[a.key] ~= nil end
    if a.exp ~= b.exp then return a.exp > b.exp end
    return a.key < b.key
  end)
  for i = #result, tonumber(ARGV[6]) + 1, -1 do result[i] = nil end
end
redis.call('DEL', KEYS[1])
if #result == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return {'ok'}
end
local reply, pairs_, last = {'ok'}, {}, result[1]
for _, b in ipairs(result) do
  reply[#reply + 1] = b.json
  pairs_[#pairs_ + 1] = b.key
  pairs_[#pairs_ + 1] = b.json
  if b.exp > last.exp then last = b end
end
redis.call('HSET', KEYS[1], '\\0v', redis.call('INCR', KEYS[3]), unpack(pairs_))
-- Relative TTL: correct whatever clock ``now`` comes from.
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.max(1, math.floor((last.exp - now) * 1000))))
redis.call('ZADD', KEYS[2], last.at, ARGV[2])
return reply
"""


class RedisLocationStore(LocationStore):
    """Bindings in Redis, shared by every gateway process using the same Redis and ``prefix``."""

    name = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "gw:loc:",
        client: Any = None,
        max_connections: int = 64,
    ) -> None:
        if client is None:
            # A blocking pool: a burst of REGISTERs waits for a free connection instead of
            # failing with "Too many connections" (the plain pool's behaviour at its limit).
            client = connect(
                url,
                max_connections=max_connections,
                pool_timeout=2.0,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 3),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
        self._redis: Any = client
        self._prefix = prefix
        self._index = f"{prefix}index"
        self._version = f"{prefix}version"
        self._script = self._redis.register_script(_UPDATE_SCRIPT)
        self._locks = KeyedLocks()

    def _key(self, aor: str) -> str:
        return f"{self._prefix}aor:{aor}"

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        try:
            raw: dict[bytes, bytes] = await self._redis.hgetall(self._key(aor))
        except RedisError as exc:
            raise LocationStoreError(f"location lookup failed: {exc}") from exc
        raw.pop(_VERSION_FIELD, None)
        return ordered([b for b in map(Binding.from_json, raw.values()) if b.expires_at > now])

    async def update(self, update: RegisterUpdate, now: float) -> list[Binding]:
        """Apply :func:`merge` inside one Lua script: one round trip, atomic on the server."""
        # Updates of one AOR from this process queue behind each other, so they reach Redis in
        # the order they arrived (the connection pool would otherwise be free to reorder them).
        async with self._locks.hold(update.aor):
            return await self._update(update, now)

    async def _update(self, update: RegisterUpdate, now: float) -> list[Binding]:
        args: list[Any] = [
            repr(now), update.aor, update.call_id, update.cseq, int(update.remove_all), update.max_contacts,
        ]
        if not update.remove_all:  # merge() ignores the Contacts of a "Contact: *" request
            for change in update.changes:
                if change.expires == 0:
                    args += [change.key, "", ""]
                    continue
                # Built as merge() builds it; the script swaps in the stored registered_at on a refresh.
                binding = Binding(
                    aor=update.aor,
                    key=change.key,
                    contact=change.contact,
                    expires_at=now + change.expires,
                    call_id=update.call_id,
                    cseq=update.cseq,
                    source=update.source,
                    q=change.q,
                    instance=change.instance,
                    reg_id=change.reg_id,
                    user_agent=update.user_agent,
                    trunk=update.trunk,
                    registered_at=now,
                )
                args += [change.key, repr(binding.expires_at), binding.to_json()]
        try:
            # redis-py's Script: EVALSHA, and on NOSCRIPT (a restarted Redis) SCRIPT LOAD and again.
            keys = [self._key(update.aor), self._index, self._version]
            reply: list[Any] = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise LocationStoreError(f"location update failed: {exc}") from exc
        status, *rest = reply
        if status == b"change":
            raise OutOfOrderError(update.changes[int(rest[0]) - 1].contact)
        if status == b"stored":
            raise OutOfOrderError(rest[0].decode())
        return ordered([Binding.from_json(text) for text in rest])

    async def aors(self, now: float) -> AsyncIterator[str]:
        try:
            await self._redis.zremrangebyscore(self._index, "-inf", now)
            async for member, _ in self._redis.zscan_iter(self._index):
                yield member.decode() if isinstance(member, bytes) else str(member)
        except RedisError as exc:
            raise LocationStoreError(f"location listing failed: {exc}") from exc

    async def count(self, now: float) -> int:
        try:
            n: int = await self._redis.zcount(self._index, f"({now}", "+inf")
        except RedisError as exc:
            raise LocationStoreError(f"location count failed: {exc}") from exc
        return n

    async def close(self) -> None:
        await self._redis.aclose()


@LOCATION_STORES.register("memory")
def _memory_store(context: LocationContext) -> LocationStore:
    return MemoryLocationStore()


@LOCATION_STORES.register("redis", needs_redis=True)
def _redis_store(context: LocationContext) -> LocationStore:
    return RedisLocationStore(needed_url(context))
