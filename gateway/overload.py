"""Graceful overload: refuse new calls early instead of collapsing under them.

A SIP server past its capacity that still accepts every INVITE collapses: setup delays grow to
seconds, callers and far ends retransmit (RFC 3261 §17.1.1.2 Timer A), retransmissions cost
more work, and calls already admitted break because their ACKs and BYEs queue behind new
INVITEs. The remedy RFC 7339 §3 describes (and Kamailio users build with ``ratelimit`` and
load checks) is to shed new work at the entrance, cheaply, and keep serving what was admitted.

What is shed: a NEW INVITE (no To tag, not a retransmission of a live transaction), before
routing, Redis, dialplans or limits spend anything on it. It gets 503 with Retry-After (RFC
3261 §21.5.4, §20.33), or with ``action: drop`` no answer at all over UDP (a reliable transport
always gets the 503: its sender does not retransmit and would wait for Timer B). In-dialog
requests, ACK, CANCEL, BYE, REGISTER, OPTIONS and every response are never shed here.

When: the gateway is *overloaded* when one signal reaches its ``*_high`` bound:

* event-loop lag: how late a periodic probe on the loop's monotonic clock fires, sustained over
  ``lag_samples`` readings in a row (the smallest of them counts), so one pause (a scheduled
  garbage collection, a slow disk write) does not shed calls but a loop that stays behind does.
  A probe that is overdue is a reading of how overdue it is, so a loop buried under a burst is
  seen before the probe gets to run. Every received datagram waits that long to be read;
* live server transactions in the transaction layer;
* live dialogs (two per B2BUA call).

It stays overloaded until every signal is below its ``*_low`` bound AND ``hold`` seconds have
passed since a signal was last at or above its high bound: hysteresis, so the gate does not
flap on every INVITE around one threshold.

:class:`OverloadGate` is the pure decision (a state enum plus one transition table, fed
``now``); :class:`OverloadControl` runs the lag probe on the loop and exports the metrics
``sip_overload_shed_total{reason}``, ``sip_event_loop_lag_seconds`` and ``sip_overload_state``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)


class OverloadSettings(BaseModel):
    """The ``overload`` section of the configuration file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # reject: 503 + Retry-After; drop: no answer over UDP (the caller's retransmissions are
    # dropped too, until its Timer B), 503 over TCP/TLS.
    action: Literal["reject", "drop"] = "reject"
    retry_after: int = Field(default=5, ge=1, le=3600)  # seconds, in the 503 (RFC 3261 §20.33)
    probe_interval: float = Field(default=0.05, ge=0.005, le=1.0)  # seconds between lag probes
    lag_high: float = Field(default=0.25, gt=0, le=60)  # seconds of event-loop lag: overloaded
    lag_low: float = Field(default=0.05, ge=0, le=60)  # ... and below this: may leave overload
    lag_samples: int = Field(default=3, ge=1, le=100)  # probe readings in a row that must be high
    # Live server transactions. Each call over UDP holds two for 64*T1 after its answer (the
    # INVITE's Accepted state, RFC 6026 §7.1; the BYE's Timer J): ~64 per call/s with T1 0.5 s.
    # Keep high below sip.max_server_transactions, the hard cap on every request.
    transactions_high: int = Field(default=80_000, ge=2)
    transactions_low: int = Field(default=60_000, ge=1)
    # Live dialogs (two per call); keep high below sip.max_dialogs, the hard cap.
    dialogs_high: int = Field(default=80_000, ge=2)
    dialogs_low: int = Field(default=60_000, ge=1)
    hold: float = Field(default=2.0, ge=0, le=600)  # seconds overloaded after the last high signal

    @model_validator(mode="after")
    def _low_below_high(self) -> OverloadSettings:
        for name in ("lag", "transactions", "dialogs"):
            low, high = getattr(self, f"{name}_low"), getattr(self, f"{name}_high")
            if low >= high:
                raise ValueError(f"{name}_low ({low}) must be smaller than {name}_high ({high})")
        return self


class ShedReason(enum.StrEnum):
    """Why new INVITEs are shed (the ``reason`` label of ``sip_overload_shed_total``)."""

    LAG = "loop_lag"
    TRANSACTIONS = "transactions"
    DIALOGS = "dialogs"


class OverloadState(enum.Enum):
    NORMAL = 0
    OVERLOADED = 1


class Level(enum.Enum):
    """Where the load signals stand against their bounds (the gate's input)."""

    HIGH = "high"  # some signal at or above its high bound
    BETWEEN = "between"  # none high, but not all low (or low for less than ``hold``)
    LOW = "low"  # every signal below its low bound for ``hold`` seconds


TRANSITIONS: dict[tuple[OverloadState, Level], OverloadState] = {
    (OverloadState.NORMAL, Level.HIGH): OverloadState.OVERLOADED,
    (OverloadState.NORMAL, Level.BETWEEN): OverloadState.NORMAL,
    (OverloadState.NORMAL, Level.LOW): OverloadState.NORMAL,
    (OverloadState.OVERLOADED, Level.HIGH): OverloadState.OVERLOADED,
    (OverloadState.OVERLOADED, Level.BETWEEN): OverloadState.OVERLOADED,
    (OverloadState.OVERLOADED, Level.LOW): OverloadState.NORMAL,
}


@dataclass(frozen=True, slots=True)
class Load:
    """One reading of the signals."""

    lag: float
    transactions: int
    dialogs: int


class OverloadGate:
    """The pure decision: fed readings and ``now`` (monotonic seconds), says whether to shed."""

    def __init__(self, settings: OverloadSettings) -> None:
        self._settings = settings
        self.state = OverloadState.NORMAL
        self.reason: ShedReason | None = None
        """While overloaded: the latest signal seen at its high bound."""
        self._last_high: float | None = None

    def _above(self, load: Load) -> ShedReason | None:
        s = self._settings
        if load.lag >= s.lag_high:
            return ShedReason.LAG
        if load.transactions >= s.transactions_high:
            return ShedReason.TRANSACTIONS
        if load.dialogs >= s.dialogs_high:
            return ShedReason.DIALOGS
        return None

    def _level(self, load: Load, now: float) -> Level:
        above = self._above(load)
        if above is not None:
            self.reason = above
            self._last_high = now
            return Level.HIGH
        s = self._settings
        low = load.lag < s.lag_low and load.transactions < s.transactions_low and load.dialogs < s.dialogs_low
        held = self._last_high is None or now - self._last_high >= s.hold
        return Level.LOW if low and held else Level.BETWEEN

    def update(self, load: Load, now: float) -> ShedReason | None:
        """Take a reading; the reason to shed a new INVITE now, or None to admit it."""
        state = TRANSITIONS[self.state, self._level(load, now)]
        if state is OverloadState.NORMAL:
            self.reason = None
        self.state = state
        return self.reason


class OverloadControl:
    """The gate on the running loop: the lag probe, the readings, the metrics and the log."""

    def __init__(
        self,
        settings: OverloadSettings,
        registry: CollectorRegistry,
        *,
        transactions: Callable[[], int],
        dialogs: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.gate = OverloadGate(settings)
        self._transactions = transactions
        self._dialogs = dialogs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the probe is scheduled to fire
        # How late it fired, the last lag_samples times; the sustained lag is their minimum, or
        # with an overdue probe the minimum of that overdue time and the last lag_samples - 1.
        self._lags: deque[float] = deque(maxlen=settings.lag_samples)
        self._sustained = 0.0
        self._sustained_before = float("inf")
        self.shed_count = Counter(
            "sip_overload_shed",
            "New INVITEs refused (503) or dropped because the gateway was overloaded, by reason "
            "(loop_lag, transactions, dialogs).",
            ["reason"],
            registry=registry,
        )
        self._shed = {reason: self.shed_count.labels(reason.value) for reason in ShedReason}
        self.lag_gauge = Gauge(
            "sip_event_loop_lag_seconds", "How late the last event-loop probe fired.", registry=registry
        )
        self.state_gauge = Gauge(
            "sip_overload_state", "1 while new INVITEs are shed (overloaded), else 0.", registry=registry
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._schedule(loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self.settings.probe_interval
        self._handle = self._loop.call_at(self._due, self._probe)

    def _probe(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = max(0.0, now - self._due)  # asyncio may run a handle a clock tick early
        self.lag_gauge.set(lag)
        lags = self._lags
        lags.append(lag)
        self._sustained = min(lags)
        # What an overdue probe is compared with: the readings it would keep (none: itself alone).
        kept = list(lags)[1:] if len(lags) == lags.maxlen else lags
        self._sustained_before = min(kept, default=float("inf"))
        self.check(now)  # also how the state goes back to normal when no INVITE comes
        self._schedule(now)

    def check(self, now: float) -> ShedReason | None:
        """For a new INVITE (and each probe): the reason to shed it now, or None to admit it."""
        before = self.gate.state
        # An overdue probe already tells how late the loop is, before it gets to run.
        overdue = now - self._due
        lag = min(overdue, self._sustained_before) if overdue > 0 else self._sustained
        load = Load(lag, self._transactions(), self._dialogs())
        reason = self.gate.update(load, now)
        if self.gate.state is not before:
            self.state_gauge.set(self.gate.state.value)
            if reason is not None:
                log.warning("overloaded (%s: lag %.3f s, %d server transactions, %d dialogs): "
                            "shedding new INVITEs", reason.value, load.lag, load.transactions, load.dialogs)
            else:
                log.warning("overload over: admitting new INVITEs again")
        return reason

    def shed(self, reason: ShedReason) -> None:
        """Count one INVITE shed for ``reason``."""
        self._shed[reason].inc()
