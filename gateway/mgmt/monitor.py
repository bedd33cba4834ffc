"""What operations watch: event-loop lag, call counters, rates, and the last minutes of them.

:class:`Monitor` runs two tracked tasks while the API runs:

* the **lag probe** sleeps ``LAG_INTERVAL`` and measures how late the loop woke it up: the
  scheduling delay every SIP message and timer of this process also suffers
  (``gateway_event_loop_lag_seconds``, and its maximum over the last sample);
* the **sampler** once a second reads the services (location store count, active calls by
  state, qualify states, charging backlog, limiter slots), sets the Prometheus gauges and
  appends one point to a ring of ``HISTORY`` seconds that the console charts (calls per
  second, failure rate, active calls, registrations).

:class:`CallMetrics` is a :class:`gateway.call.model.CallObserver`: attempts, answers and
failures by final status. Status labels are SIP status codes (100-699): a closed set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.registrar.location import LocationStoreError

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.call.model import Call, CallObserver, EndCause, Side
    from gateway.call.service import CallService
    from gateway.charging.service import ChargingService
    from gateway.registrar.service import RegistrarService

log = logging.getLogger(__name__)

LAG_INTERVAL = 0.25
SAMPLE_INTERVAL = 1.0
HISTORY = 600  # seconds of points kept for the console (ten minutes)


class Watched(Protocol):
    """What the monitor reads (the API's ``Services`` is one): the monitor defines it, so it
    needs nothing of the API."""

    @property
    def gateway(self) -> Gateway | None: ...

    @property
    def registrar(self) -> RegistrarService | None: ...

    @property
    def calls(self) -> CallService | None: ...

    @property
    def charging(self) -> ChargingService | None: ...

    async def registration_count(self) -> int | None: ...


def call_class(call: Call) -> str:
    """The dialplan's class of a call (``local``, ``intra_group_short`` ...); ``none``: static route."""
    charge = call.route.charge
    return str(charge.call_class.value) if charge is not None else "none"


class CallMetrics:
    """Call outcomes as Prometheus counters; a :class:`gateway.call.model.CallObserver`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "gateway_call_attempts", "Calls admitted by call control, by dialplan call class.",
            ["call_class"],
            registry=registry,
        )
        self.answers = Counter("gateway_calls_answered", "Calls answered (2xx relayed).", registry=registry)
        self.endings = Counter(
            "gateway_calls_ended", "Calls ended, by outcome (completed / failed).", ["outcome"],
            registry=registry,
        )
        self.failures = Counter(
            "gateway_call_failures", "Calls that failed before answer, by final status.", ["status"],
            registry=registry,
        )

    def attempt(self, call: Call) -> None:
        self.attempts.labels(call_class(call)).inc()

    def ringing(self, call: Call) -> None:
        return

    def answered(self, call: Call) -> None:
        self.answers.inc()

    def ended(self, call: Call, status: int | None, released_by: Side | None, cause: EndCause) -> None:
        if call.answered_at is not None:
            self.endings.labels("completed").inc()
            return
        self.endings.labels("failed").inc()
        code = status if status is not None and 100 <= status <= 699 else 0
        self.failures.labels(str(code)).inc()


class TransactionCollector(Collector):
    """The transaction layer's own counters, read at scrape time: retransmissions sent and
    absorbed, timeouts, transport errors, stray responses, protocol errors
    (``sip_transaction_<field>_total``)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[CounterMetricFamily]:
        counters = self._gateway.transaction_counters
        for field in dataclasses.fields(counters):
            yield CounterMetricFamily(
                f"sip_transaction_{field.name}", f"Transaction layer: {field.name.replace('_', ' ')}.",
                value=getattr(counters, field.name),
            )


@dataclass(frozen=True, slots=True)
class Point:
    """One second of the dashboard's history."""

    t: float  # wall clock, seconds since the epoch
    cps: float
    failures_per_s: float
    failure_rate: float  # failed / ended in that second (0 when nothing ended)
    active_calls: int
    registrations: int | None
    loop_lag_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3), "cps": round(self.cps, 3), "failures_per_s": round(self.failures_per_s, 3),
            "failure_rate": round(self.failure_rate, 4), "active_calls": self.active_calls,
            "registrations": self.registrations, "loop_lag_ms": round(self.loop_lag_ms, 3),
        }


class Monitor:
    """Gauges, the lag probe and the sampler; see the module docstring."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._transactions: TransactionCollector | None = None
        self.calls = CallMetrics(registry)
        self.loop_lag = Gauge("gateway_event_loop_lag_seconds",
                              "Scheduling delay of the event loop (last probe).", registry=registry)
        self.loop_lag_max = Gauge("gateway_event_loop_lag_max_seconds",
                                  "Largest event-loop scheduling delay over the last second.",
                                  registry=registry)
        self.registrations = Gauge("gateway_registrations",
                                   "Addresses of record with at least one live binding.", registry=registry)
        self.active_calls = Gauge("gateway_calls_active", "Calls in progress, by state.", ["state"],
                                  registry=registry)
        self.active_by_class = Gauge("gateway_calls_active_by_class",
                                     "Calls in progress, by dialplan call class (none: static route).",
                                     ["call_class"], registry=registry)
        self.cps = Gauge("gateway_calls_per_second", "New calls (admitted or refused) over the last second.",
                         registry=registry)
        self.calls_refused = Gauge(
            "gateway_calls_failed_cumulative",
            "Calls that failed or were refused (routing, limits) since start.",
            registry=registry,
        )
        self.qualify = Gauge("gateway_qualify_up", "OPTIONS qualify: 1 up, 0 down, -1 not probed yet.",
                             ["target"], registry=registry)
        self.limit_slots = Gauge("gateway_limit_slots", "Concurrent-call slots held, by limit scope.",
                                 ["scope"], registry=registry)
        self.charging_backlog = Gauge("gateway_charging_backlog",
                                      "Charging events accepted but not yet durable.", registry=registry)
        self.charging_degraded = Gauge("gateway_charging_degraded",
                                       "1 while charging events go to the local spool instead of Redis.",
                                       registry=registry)
        self.charging_spool_segments = Gauge("gateway_charging_spool_segments",
                                             "Sealed spool segments waiting for replay.", registry=registry)
        self.history: deque[Point] = deque(maxlen=HISTORY)
        self.lag_last = 0.0
        self._lag_window = 0.0
        self._events_per_s = 0.0
        self._last_events: int | None = None
        self._last_totals: tuple[int, int, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def events_per_second(self) -> float:
        return self._events_per_s

    def start(self, services: Watched) -> None:
        if services.gateway is not None and self._transactions is None:
            self._transactions = TransactionCollector(services.gateway)
            self._registry.register(self._transactions)
        loop = asyncio.get_running_loop()
        for coro, name in ((self._probe_lag(), "mgmt-loop-lag"),
                           (self._sample_forever(services), "mgmt-sampler")):
            task = loop.create_task(coro, name=name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _probe_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            lag = max(0.0, loop.time() - started - LAG_INTERVAL)
            self.lag_last = lag
            self._lag_window = max(self._lag_window, lag)
            self.loop_lag.set(lag)

    async def _sample_forever(self, services: Watched) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            try:
                await self.sample(services, SAMPLE_INTERVAL)
            except Exception:
                log.exception("operations sampler failed; trying again in a second")

    async def sample(self, services: Watched, elapsed: float) -> Point:
        """Read every service once, set the gauges, append a history point."""
        registrations = await _guard(services.registration_count)
        if registrations is not None:
            self.registrations.set(registrations)
        active = 0
        totals = (0, 0, 0)
        calls = services.calls
        if calls is not None:
            b2bua = calls.b2bua
            by_state: dict[str, int] = {}
            by_class: dict[str, int] = {}
            for call in list(b2bua.calls.values()):
                by_state[call.state.value] = by_state.get(call.state.value, 0) + 1
                kind = call_class(call)
                by_class[kind] = by_class.get(kind, 0) + 1
            self.active_by_class.clear()
            for kind, count in by_class.items():
                self.active_by_class.labels(kind).set(count)
            for state in ("routing", "calling", "early", "confirmed", "cancelling"):
                self.active_calls.labels(state).set(by_state.get(state, 0))
            active = sum(by_state.values())
            totals = (b2bua.completed, b2bua.failed, active)
            self.calls_refused.set(b2bua.failed)
            self.limit_slots.clear()
            for scope, held in calls.limiter.snapshot().items():
                self.limit_slots.labels(scope).set(held)
        if services.registrar is not None and services.registrar.qualifier is not None:
            for row in services.registrar.qualifier.snapshot():
                value = {"up": 1, "down": 0}.get(str(row["state"]), -1)
                self.qualify.labels(str(row["name"])).set(value)
        charging = services.charging
        if charging is not None:
            sink = charging.sink
            self.charging_backlog.set(sink.backlog)
            self.charging_degraded.set(1 if getattr(sink, "degraded", False) else 0)
            accepted = sink.accepted
            if self._last_events is not None:
                self._events_per_s = max(0, accepted - self._last_events) / elapsed
            self._last_events = accepted
        cps = failures = rate = 0.0
        if self._last_totals is not None:
            completed, failed, live = totals
            prev_completed, prev_failed, prev_live = self._last_totals
            # Every call ends completed or failed (refusals count as failed without being live):
            # new calls = growth of (completed + failed + live).
            started = (completed + failed + live) - (prev_completed + prev_failed + prev_live)
            ended_failed = failed - prev_failed
            ended = ended_failed + (completed - prev_completed)
            cps = max(0, started) / elapsed
            failures = max(0, ended_failed) / elapsed
            rate = ended_failed / ended if ended > 0 else 0.0
        self._last_totals = totals
        self.cps.set(cps)
        self.loop_lag_max.set(self._lag_window)
        point = Point(time.time(), cps, failures, rate, active, registrations, self._lag_window * 1000)
        self._lag_window = self.lag_last
        self.history.append(point)
        return point


async def _guard(read: Callable[[], Awaitable[int | None]]) -> int | None:
    """A store read for a gauge: an outage leaves the gauge as it was (logged by the store)."""
    with contextlib.suppress(LocationStoreError, OSError, TimeoutError):
        return await read()
    return None


class CallObservers:
    """Several call observers as one (call control takes one): each is told in turn; one that
    fails is logged and does not keep the others from hearing about the call."""

    def __init__(self, *observers: CallObserver | None) -> None:
        self._observers = [o for o in observers if o is not None]

    def _each(self, what: str, notify: Callable[[CallObserver], None]) -> None:
        for observer in self._observers:
            try:
                notify(observer)
            except Exception:
                log.exception("call observer %s failed on %s", type(observer).__name__, what)

    def attempt(self, call: Call) -> None:
        self._each("attempt", lambda o: o.attempt(call))

    def ringing(self, call: Call) -> None:
        self._each("ringing", lambda o: o.ringing(call))

    def answered(self, call: Call) -> None:
        self._each("answered", lambda o: o.answered(call))

    def ended(self, call: Call, status: int | None, released_by: Side | None, cause: EndCause) -> None:
        self._each("ended", lambda o: o.ended(call, status, released_by, cause))
