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

* the receive queue: bytes the kernel holds in the UDP sockets' receive buffers that the loop
  has not read yet (SO_MEMINFO). A saturated loop still turns quickly, so its own lag stays
  small, while datagrams wait in a 4 MiB socket buffer for seconds: that queue is where
  overload shows first (measured: 2.5 s setup delay with a 50 ms loop lag);
* event-loop lag: how late a periodic probe on the loop's monotonic clock fires. A probe that
  is overdue is a reading of how overdue it is, so a loop held by one long task is seen before
  the probe gets to run;
* live server transactions in the transaction layer;
* live dialogs (two per B2BUA call).

Both are sustained over ``samples`` probe readings in a row (the smallest of them counts), so
one pause (a scheduled garbage collection, a burst arriving within a millisecond) does not
shed calls but a gateway that stays behind does.

How much: on entering overload every new INVITE is shed. Then, once per probe, the share of new
INVITEs admitted follows the signals (additive increase, multiplicative decrease, the loss-based
control of RFC 7339 §5 applied at the entrance): halved when a signal is above its high bound
(at most once per ``samples`` probes, the time a decrease needs to show in the readings),
raised by ``probe_interval / recovery`` while none is. (Keeping the share while a high queue
shrinks was tried: on the loaded bench machine it let the queue stay seconds long and broke
far legs.) So the gateway settles near the rate it
can carry instead of alternating between admitting everything and nothing. Admitted INVITEs are
spread evenly (a credit counter, not chance).

It stays overloaded until the share is back to all, every signal is below its ``*_low`` bound
AND ``hold`` seconds have passed since a signal was last at or above its high bound:
hysteresis, so the gate does not flap on every INVITE around one threshold.

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
    samples: int = Field(default=3, ge=1, le=100)  # probe readings in a row that must be high
    # Bytes unread in the UDP receive buffers (about 1.3 KiB per queued message): 256 KiB is
    # some 200 messages, tens of milliseconds of work at full load.
    queue_high: int = Field(default=262_144, ge=2)
    queue_low: int = Field(default=65_536, ge=1)
    lag_high: float = Field(default=0.25, gt=0, le=60)  # seconds of event-loop lag: overloaded
    lag_low: float = Field(default=0.05, ge=0, le=60)  # ... and below this: may leave overload
    # Live server transactions. Each call over UDP holds two for 64*T1 after its answer (the
    # INVITE's Accepted state, RFC 6026 §7.1; the BYE's Timer J): ~64 per call/s with T1 0.5 s.
    # Keep high below sip.max_server_transactions, the hard cap on every request.
    transactions_high: int = Field(default=80_000, ge=2)
    transactions_low: int = Field(default=60_000, ge=1)
    # Live dialogs (two per call); keep high below sip.max_dialogs, the hard cap.
    dialogs_high: int = Field(default=80_000, ge=2)
    dialogs_low: int = Field(default=60_000, ge=1)
    hold: float = Field(default=2.0, ge=0, le=600)  # seconds overloaded after the last high signal
    # Seconds for the admitted share of new INVITEs to climb from none to all while no signal is high.
    recovery: float = Field(default=2.0, gt=0, le=600)

    @model_validator(mode="after")
    def _low_below_high(self) -> OverloadSettings:
        for name in ("queue", "lag", "transactions", "dialogs"):
            low, high = getattr(self, f"{name}_low"), getattr(self, f"{name}_high")
            if low >= high:
                raise ValueError(f"{name}_low ({low}) must be smaller than {name}_high ({high})")
        return self


class ShedReason(enum.StrEnum):
    """Why new INVITEs are shed (the ``reason`` label of ``sip_overload_shed_total``)."""

    QUEUE = "receive_queue"
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
    queue: int = 0


class OverloadGate:
    """The pure decision: fed readings and ``now`` (monotonic seconds), says whether to shed."""

    def __init__(self, settings: OverloadSettings) -> None:
        self._settings = settings
        self.state = OverloadState.NORMAL
        self.reason: ShedReason | None = None
        """While overloaded: the latest signal seen at its high bound."""
        self._last_high: float | None = None
        self.admit_ratio = 1.0
        """The share of new INVITEs admitted (1.0 when not overloaded)."""
        self._credit = 0.0
        self._since_decrease = 0  # probes since the admitted share was last halved

    def _above(self, load: Load) -> ShedReason | None:
        s = self._settings
        if load.queue >= s.queue_high:
            return ShedReason.QUEUE
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
        low = load.queue < s.queue_low and load.lag < s.lag_low \
            and load.transactions < s.transactions_low and load.dialogs < s.dialogs_low
        held = self._last_high is None or now - self._last_high >= s.hold
        return Level.LOW if low and held and self.admit_ratio >= 1.0 else Level.BETWEEN

    def update(self, load: Load, now: float) -> ShedReason | None:
        """Take a reading (sustained signals); while overloaded, the reason (else None)."""
        state = TRANSITIONS[self.state, self._level(load, now)]
        if state is OverloadState.NORMAL:
            self.reason = None
            self.admit_ratio = 1.0
        elif self.state is OverloadState.NORMAL:
            self.admit_ratio = 0.0  # entering: shed everything new until the signals say more
            self._credit = 0.0
        self.state = state
        return self.reason

    def adjust(self, load: Load, interval: float) -> None:
        """Once per probe (``interval`` seconds apart), with the latest readings: while
        overloaded, halve the admitted share when a signal is high, else raise it."""
        if self.state is OverloadState.NORMAL:
            return
        self._since_decrease += 1
        if self._above(load) is not None:
            if self._since_decrease >= self._settings.samples:
                self.admit_ratio /= 2
                self._since_decrease = 0
        else:
            self.admit_ratio = min(1.0, self.admit_ratio + interval / self._settings.recovery)

    def decide(self, load: Load, now: float) -> ShedReason | None:
        """For a new INVITE: the reason to shed it, or None to admit it (while overloaded, an
        ``admit_ratio`` share of them, evenly spread)."""
        reason = self.update(load, now)
        if reason is None:
            return None
        self._credit += self.admit_ratio
        if self._credit >= 1.0 - 1e-9:  # sums of probe steps (0.025 ...) fall a rounding short
            self._credit -= 1.0
            return None
        return reason


class OverloadControl:
    """The gate on the running loop: the lag probe, the readings, the metrics and the log."""

    def __init__(
        self,
        settings: OverloadSettings,
        registry: CollectorRegistry,
        *,
        transactions: Callable[[], int],
        dialogs: Callable[[], int],
        queue: Callable[[], int] = lambda: 0,
    ) -> None:
        self.settings = settings
        self.gate = OverloadGate(settings)
        self._transactions = transactions
        self._dialogs = dialogs
        self._queue = queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0  # when the probe is scheduled to fire
        # How late it fired, the last ``samples`` times; the sustained lag is their minimum, or
        # with an overdue probe the minimum of that overdue time and the last samples - 1.
        self._lags: deque[float] = deque(maxlen=settings.samples)
        self._sustained = 0.0
        self._sustained_before = float("inf")
        self._queues: deque[int] = deque(maxlen=settings.samples)  # receive queue at each probe
        self._queue_sustained = 0
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
        self.queue_gauge = Gauge(
            "sip_receive_queue_bytes", "Bytes unread in the UDP receive buffers at the last probe.",
            registry=registry,
        )
        self.state_gauge = Gauge(
            "sip_overload_state", "1 while new INVITEs are shed (overloaded), else 0.", registry=registry
        )
        self.ratio_gauge = Gauge(
            "sip_overload_admit_ratio", "Share of new INVITEs admitted (1 when not overloaded).",
            registry=registry,
        )
        self.ratio_gauge.set(1.0)

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
        queued = self._queue()
        self.queue_gauge.set(queued)
        self._queues.append(queued)
        self._queue_sustained = min(self._queues)
        before = self.gate.state
        load = self._load(now)
        self._logged(before, self.gate.update(load, now), load)  # back to normal without INVITEs too
        self.gate.adjust(Load(lag, load.transactions, load.dialogs, queued), self.settings.probe_interval)
        self.ratio_gauge.set(self.gate.admit_ratio)
        self._schedule(now)

    def _load(self, now: float) -> Load:
        """The sustained readings now."""
        # An overdue probe already tells how late the loop is, before it gets to run. Before
        # the probes start (the process still starting) there is no lag reading at all.
        overdue = now - self._due if self._handle is not None else 0.0
        lag = min(overdue, self._sustained_before) if overdue > 0 else self._sustained
        return Load(lag, self._transactions(), self._dialogs(), self._queue_sustained)

    def check(self, now: float) -> ShedReason | None:
        """For a new INVITE: the reason to shed it now, or None to admit it."""
        before = self.gate.state
        load = self._load(now)
        reason = self.gate.decide(load, now)
        self._logged(before, self.gate.reason, load)
        return reason

    def _logged(self, before: OverloadState, reason: ShedReason | None, load: Load) -> None:
        if self.gate.state is not before:
            self.state_gauge.set(self.gate.state.value)
            if reason is not None:
                log.warning("overloaded (%s: receive queue %d bytes, lag %.3f s, %d server transactions, "
                            "%d dialogs): shedding new INVITEs", reason.value, load.queue, load.lag,
                            load.transactions, load.dialogs)
            else:
                log.warning("overload over: admitting new INVITEs again")

    def shed(self, reason: ShedReason) -> None:
        """Count one INVITE shed for ``reason``."""
        self._shed[reason].inc()
