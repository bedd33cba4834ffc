"""How the gateway's processes reach Redis.

:class:`Breaker` keeps Redis off the call path while it is unreachable. A call must never wait
for a shared store that is down or hung: SIP transactions run on short timers (Timer B and F
are 64*T1, RFC 3261 §17.1.1.2 / §17.1.2.2) and a caller's 100 Trying does not stop the next
hop's clock. A user on the call path bounds each Redis round trip by a short deadline and,
after a failure, skips Redis (its local fall-back serves) until ``retry_after`` has passed;
then one call probes again. Pure: the caller passes ``now`` (a monotonic clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Breaker:
    """Open (skip Redis) for ``retry_after`` seconds after a failure; closed after a success."""

    retry_after: float = 1.0
    _open_until: float | None = field(default=None, init=False)

    def allows(self, now: float) -> bool:
        """True when Redis may be tried now (closed, or the probe after ``retry_after``)."""
        return self._open_until is None or now >= self._open_until

    def failed(self, now: float) -> bool:
        """Record a failure; True when this one opened the breaker (log once per outage)."""
        opened = self._open_until is None
        self._open_until = now + self.retry_after
        return opened

    def succeeded(self) -> bool:
        """Record a success; True when this one closed the breaker (Redis is back)."""
        closed = self._open_until is not None
        self._open_until = None
        return closed

    @property
    def is_open(self) -> bool:
        return self._open_until is not None
