"""Pure logic of the pre-parse defence: per-source budgets, the ban list, the scanner search.

Nothing here does I/O or reads a clock: callers pass ``now`` (seconds, any monotonic origin
shared by the values they pass) and raw message bytes.

Budget (in the spirit of Kamailio's ``pike``): each source host owns a token bucket holding at
most ``requests`` tokens and refilled at ``requests / window`` tokens a second; every message
from the host takes one token, a message finding less than one token is over budget. So a
source sending steadily at up to ``requests`` per ``window`` is never refused, a burst of up to
``requests`` messages from a quiet source passes, and over any span of ``t`` seconds at most
``requests + requests * t / window`` messages pass. Sources whose bucket is full carry no
information and are the first forgotten when the table reaches its size cap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple


class Budget(NamedTuple):
    """At most ``requests`` messages in a burst, refilled over ``window`` seconds."""

    requests: int
    window: float


class _Bucket:
    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, budget: Budget, now: float) -> None:
        self.capacity = float(budget.requests)
        self.rate = budget.requests / budget.window
        self.tokens = self.capacity
        self.last = now


_UNSEEN: Final = object()


class SourceBudgets:
    """A token bucket per source host; ``limit_for(host)`` gives a host's budget (None: no
    limit, e.g. a configured trunk), asked once per host while its state is kept."""

    def __init__(self, limit_for: Callable[[str], Budget | None], *, max_sources: int = 100_000) -> None:
        self._limit_for = limit_for
        self._max_sources = max_sources
        self._buckets: dict[str, _Bucket | None] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def charge(self, host: str, now: float) -> bool:
        """Take one message's token from ``host``; False when it is over budget."""
        bucket = self._buckets.get(host, _UNSEEN)
        if bucket is _UNSEEN:
            if len(self._buckets) >= self._max_sources:
                self._prune(now)
            budget = self._limit_for(host)
            bucket = self._buckets[host] = None if budget is None else _Bucket(budget, now)
        if bucket is None:
            return True
        assert isinstance(bucket, _Bucket)
        tokens = bucket.tokens + (now - bucket.last) * bucket.rate
        tokens = min(tokens, bucket.capacity)
        bucket.last = now
        if tokens < 1.0:
            bucket.tokens = tokens
            return False
        bucket.tokens = tokens - 1.0
        return True

    def forget(self, host: str) -> None:
        """Drop ``host``'s state (it was banned: its next messages never reach the budget)."""
        self._buckets.pop(host, None)

    def reset(self) -> None:
        """Forget every host (the trusted sources changed: budgets are asked again)."""
        self._buckets.clear()

    def _prune(self, now: float) -> None:
        # Full buckets are indistinguishable from unseen hosts. When the table is still over
        # half full after dropping them (a spoofed-source flood: per-source budgets cannot stop
        # that anyway), start again rather than grow without bound.
        self._buckets = {
            host: bucket for host, bucket in self._buckets.items()
            if bucket is not None and bucket.tokens + (now - bucket.last) * bucket.rate < bucket.capacity
        }
        if len(self._buckets) > self._max_sources // 2:
            self._buckets.clear()


class BanReason(StrEnum):
    """Why a source was banned (the ``reason`` label of ``security_bans_added_total``)."""

    FLOOD = "flood"
    SCANNER = "scanner"
    AUTH_FAILURES = "auth_failures"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Ban:
    """A banned source host until ``until`` (wall-clock seconds), and why, by whom, since when."""

    host: str
    until: float
    reason: BanReason
    by: str
    added: float

    def to_dict(self, now: float) -> dict[str, object]:
        return {
            "host": self.host, "until": round(self.until, 3), "remaining": max(0, round(self.until - now, 1)),
            "reason": self.reason.value, "by": self.by, "added": round(self.added, 3),
        }


class BanList:
    """The bans this process enforces: host → expiry, read on every packet."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._bans: dict[str, Ban] = {}

    def __len__(self) -> int:
        return len(self._until)

    def banned(self, host: str, now: float) -> bool:
        until = self._until.get(host)
        if until is None:
            return False
        if until > now:
            return True
        del self._until[host]
        self._bans.pop(host, None)
        return False

    def add(self, ban: Ban) -> None:
        """Add or extend a ban (a shorter one never shortens a longer one already in force)."""
        current = self._bans.get(ban.host)
        if current is not None and current.until >= ban.until:
            return
        self._until[ban.host] = ban.until
        self._bans[ban.host] = ban

    def lift(self, host: str) -> Ban | None:
        self._until.pop(host, None)
        return self._bans.pop(host, None)

    def get(self, host: str) -> Ban | None:
        return self._bans.get(host)

    def active(self, now: float) -> list[Ban]:
        """The bans in force at ``now`` (expired ones are dropped), soonest expiry last."""
        for host in [h for h, until in self._until.items() if until <= now]:
            self.lift(host)
        return sorted(self._bans.values(), key=lambda b: -b.until)

    def replace(self, bans: Iterable[Ban]) -> None:
        """Enforce exactly ``bans`` (the shared store's view)."""
        self._until = {}
        self._bans = {}
        for ban in bans:
            self.add(ban)


class ScannerMatcher:
    """Finds a known scanner's User-Agent in a raw message, without parsing it.

    The header name is matched case-insensitively (RFC 3261 §7.3.1); the tool names as well,
    since scanners vary their spelling. Only the User-Agent field line counts, so a number or
    a display name that happens to contain a tool name is not mistaken for a scanner.
    """

    def __init__(self, names: Iterable[str]) -> None:
        alternatives = b"|".join(re.escape(name.encode()) for name in names if name)
        pattern = rb"(?im)^user-agent[ \t]*:[^\r\n]*?(?:" + alternatives + rb")"
        self._pattern = re.compile(pattern) if alternatives else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def search(self, data: bytes) -> bool:
        return self._pattern is not None and self._pattern.search(data) is not None
