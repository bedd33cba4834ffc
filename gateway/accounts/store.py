"""Where account states live: per number and per group, in memory or in Redis.

Redis layout: two hashes, ``{prefix}:number`` (number → state) and ``{prefix}:group``
(group → state); a missing field is ``normal`` (setting ``normal`` deletes the field). A call
check reads all the states it needs in one pipelined round trip, on every new call, so a
change (CLI now, operations API later) applies to the next call with no cache to invalidate.

An unknown value in Redis (written by hand) is logged and read as ``normal``: a typo must not
cut off a paying customer; the operator sees the error in the log.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import get_args

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.accounts.policy import (
    AccountPolicy,
    AccountsSettings,
    AccountState,
    AccountStoreName,
    Party,
    Refusal,
    most_restrictive,
)
from gateway.plugins import Registry, needed_url
from gateway.redis_client import connect

log = logging.getLogger(__name__)


class Scope(StrEnum):
    NUMBER = "number"
    GROUP = "group"


class AccountStore(abc.ABC):
    """Account states by number and by group."""

    name: str

    @abc.abstractmethod
    async def lookup(
        self, numbers: Sequence[str], groups: Sequence[str]
    ) -> tuple[list[AccountState], list[AccountState]]:
        """The states of several numbers and groups at once (one round trip)."""

    @abc.abstractmethod
    async def set(self, scope: Scope, key: str, state: AccountState) -> None: ...

    @abc.abstractmethod
    async def all(self, scope: Scope) -> dict[str, AccountState]:
        """Every key of the scope not in the normal state."""

    async def get(self, scope: Scope, key: str) -> AccountState:
        if scope is Scope.NUMBER:
            return (await self.lookup([key], []))[0][0]
        return (await self.lookup([], [key]))[1][0]

    async def close(self) -> None:
        return


@dataclass
class MemoryAccountStore(AccountStore):
    """The embedded default (one process, states set at run time are not persisted)."""

    name = "memory"
    states: dict[Scope, dict[str, AccountState]] = field(
        default_factory=lambda: {Scope.NUMBER: {}, Scope.GROUP: {}}
    )

    async def lookup(
        self, numbers: Sequence[str], groups: Sequence[str]
    ) -> tuple[list[AccountState], list[AccountState]]:
        by_number, by_group = self.states[Scope.NUMBER], self.states[Scope.GROUP]
        return (
            [by_number.get(n, AccountState.NORMAL) for n in numbers],
            [by_group.get(g, AccountState.NORMAL) for g in groups],
        )

    async def set(self, scope: Scope, key: str, state: AccountState) -> None:
        if state is AccountState.NORMAL:
            self.states[scope].pop(key, None)
        else:
            self.states[scope][key] = state

    async def all(self, scope: Scope) -> dict[str, AccountState]:
        return dict(self.states[scope])


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _parse(raw: bytes | str | None, scope: Scope, key: str) -> AccountState:
    if raw is None:
        return AccountState.NORMAL
    try:
        return AccountState(_text(raw))
    except ValueError:
        log.error("accounts: unknown state %r for %s %s in Redis; treated as normal", raw, scope.value, key)
        return AccountState.NORMAL


class RedisAccountStore(AccountStore):
    """States in two Redis hashes, shared by every gateway process."""

    name = "redis"

    def __init__(self, client: aioredis.Redis, prefix: str = "accounts") -> None:
        self.client = client
        self.prefix = prefix

    def key(self, scope: Scope) -> str:
        return f"{self.prefix}:{scope.value}"

    async def lookup(
        self, numbers: Sequence[str], groups: Sequence[str]
    ) -> tuple[list[AccountState], list[AccountState]]:
        pipe = self.client.pipeline(transaction=False)
        if numbers:
            pipe.hmget(self.key(Scope.NUMBER), list(numbers))
        if groups:
            pipe.hmget(self.key(Scope.GROUP), list(groups))
        replies: list[list[bytes | None]] = await pipe.execute() if numbers or groups else []
        number_raw = replies.pop(0) if numbers else []
        group_raw = replies.pop(0) if groups else []
        return (
            [_parse(raw, Scope.NUMBER, n) for raw, n in zip(number_raw, numbers, strict=True)],
            [_parse(raw, Scope.GROUP, g) for raw, g in zip(group_raw, groups, strict=True)],
        )

    async def set(self, scope: Scope, key: str, state: AccountState) -> None:
        if state is AccountState.NORMAL:
            await self.client.hdel(self.key(scope), key)
        else:
            await self.client.hset(self.key(scope), key, state.value)

    async def all(self, scope: Scope) -> dict[str, AccountState]:
        raw = await self.client.hgetall(self.key(scope))
        return {_text(k): _parse(v, scope, _text(k)) for k, v in raw.items()}

    async def close(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True, slots=True)
class AccountStoreContext:
    """What an account store factory may need (:mod:`gateway.plugins`)."""

    redis_url: str | None
    key_prefix: str = "accounts"
    timeout_s: float = 0.5


ACCOUNT_STORES: Registry[AccountStoreContext, AccountStore] = Registry(
    "accounts store", "accounts.store", names=get_args(AccountStoreName)
)


@ACCOUNT_STORES.register("memory")
def _memory_store(context: AccountStoreContext) -> AccountStore:
    return MemoryAccountStore()


@ACCOUNT_STORES.register("redis", needs_redis=True)
def _redis_store(context: AccountStoreContext) -> AccountStore:
    return RedisAccountStore(connect(needed_url(context), timeout=context.timeout_s), context.key_prefix)


def account_store(settings: AccountsSettings, redis_url: str | None) -> AccountStore:
    """The store the ``accounts`` section names (close it when done)."""
    context = AccountStoreContext(redis_url, settings.key_prefix, settings.timeout_s)
    return ACCOUNT_STORES.create(settings.store, context)


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A party of a call as the account check sees it: a number and, for members, its group."""

    number: str
    group: str | None = None


STORE_UNAVAILABLE = Refusal(503, "Account Check Unavailable", 41, None, "calling")
"""Answer when the store cannot be read and ``on_store_error`` is ``refuse``."""


class AccountGate:
    """Store + policy: the checks call control and the registrar make, one Redis round trip each.

    When the store cannot answer (Redis down or slow), the check logs and lets the call or
    registration through (``fail_open``, the default: an outage of the state store must not
    become an outage of telephony), or refuses it with 503; emergency calls always pass.
    """

    def __init__(
        self, store: AccountStore, policy: AccountPolicy | None = None, *, fail_open: bool = False
    ) -> None:
        self.store = store
        self.policy = policy or AccountPolicy()
        self.fail_open = fail_open
        self.store_errors = 0

    @classmethod
    def from_settings(cls, settings: AccountsSettings, redis_url: str | None) -> AccountGate:
        """The gate the ``accounts`` config section describes (close it with ``store.close()``)."""
        fail_open = settings.on_store_error == "allow"
        return cls(account_store(settings, redis_url), AccountPolicy(settings.policy), fail_open=fail_open)

    def _store_failed(self, exc: Exception, *, is_emergency: bool, party: Party) -> Refusal | None:
        self.store_errors += 1
        log.warning("accounts: state store unavailable (%s); %s", exc,
                    "allowing" if self.fail_open or is_emergency else "refusing")
        if self.fail_open or is_emergency:
            return None
        return replace(STORE_UNAVAILABLE, party=party)

    async def _states(self, *parties: Subscriber | None) -> list[AccountState]:
        present = [p for p in parties if p is not None]
        groups = [p.group for p in present if p.group is not None]
        numbers, group_states = await self.store.lookup([p.number for p in present], groups)
        by_group = dict(zip(groups, group_states, strict=True))
        effective = iter(
            most_restrictive(state, by_group[p.group]) if p.group is not None else state
            for p, state in zip(present, numbers, strict=True)
        )
        return [next(effective) if p is not None else AccountState.NORMAL for p in parties]

    async def check_call(
        self, calling: Subscriber | None, called: Subscriber | None, *, is_emergency: bool = False
    ) -> Refusal | None:
        """Pass the parties that are the gateway's own subscribers (None for PSTN / carrier parties)."""
        try:
            calling_state, called_state = await self._states(calling, called)
        except (RedisError, OSError) as exc:
            return self._store_failed(exc, is_emergency=is_emergency, party="calling")
        return self.policy.check_call(calling_state, called_state, is_emergency=is_emergency)

    async def check_registration(self, subscriber: Subscriber) -> Refusal | None:
        try:
            (state,) = await self._states(subscriber)
        except (RedisError, OSError) as exc:
            return self._store_failed(exc, is_emergency=False, party="registration")
        return self.policy.check_registration(state)
