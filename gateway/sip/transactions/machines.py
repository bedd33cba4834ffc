"""The RFC 3261 §17 transactions: objects that walk their machine's transition table
(:mod:`.tables`), and what they hand out.

Triggers are messages (a response received by a client transaction, a request retransmission /
ACK received by a server transaction, a response the TU passes down), TU requests (CANCEL),
transport errors and timers (:class:`~gateway.sip.timers.TimerName`). A trigger with no row for
the current state is a protocol error (:class:`ProtocolError`); the layer drops and counts such
network input and raises it to the TU for TU input.

Timers: a timer armed in one state survives a state change only when the new state has a row
for it (so "Timer E keeps running in Proceeding" is read from the table, not coded twice).
Zero-length wait timers (D, I, J, K on reliable transports) fire before the input returns.

The INVITE client moves to Accepted on a 2xx (Timer M) and passes every 2xx to the TU; the
INVITE server moves to Accepted when the TU sends a 2xx (Timer L) and absorbs INVITE
retransmissions there (RFC 6026). The INVITE server also runs the §13.3.1.4 2xx retransmission
that RFC 3261 gives the UAS core: T1 doubling to T2 until the ACK arrives (the layer matches the
2xx's ACK to it by Call-ID, CSeq and To tag), and a TimeoutEvent(L) when 64*T1 pass without one
(the TU then ends the session with BYE).

What the layer hands out comes in two streams, kept apart on purpose (the aioquic pattern):

* :class:`Transmit` — bytes for the transport, drained with
  :meth:`~gateway.sip.transactions.TransactionLayer.take_outgoing` after *any* call into the
  layer (receive, send_request, send_response, handle_timers, transport_error, cancel).
* :data:`TransactionEvent` — returned by ``receive``, ``handle_timers`` and
  ``transport_error``; these are for the TU (UA core, B2BUA, registrar). The events carry the
  transactions, and the transactions make them: both live in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.sip.address import Address
from gateway.sip.message import Request, Response, make_response, parse_message
from gateway.sip.timers import TimerConfig, TimerHeap, TimerName
from gateway.sip.transactions.builders import build_ack
from gateway.sip.transactions.matching import ClientKey, ServerKey
from gateway.sip.transactions.tables import (
    TABLES,
    Action,
    TransactionKind,
    TransactionState,
    Trigger,
)

T = TimerName


# --- what the layer hands out -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes to hand to the transport for ``destination``.

    For a response on a reliable transport ``destination`` is the source of the request: the
    adapter sends on the connection that request arrived on (RFC 3261 §18.2.2).
    """

    data: bytes
    destination: Address


@dataclass(frozen=True, slots=True, eq=False)
class RequestReceived:
    """A new request (not ACK, not CANCEL) created ``transaction``; the TU must answer it."""

    transaction: ServerTransaction
    request: Request


@dataclass(frozen=True, slots=True, eq=False)
class CancelReceived:
    """A CANCEL created its own server ``transaction`` (RFC 3261 §9.2).

    ``target`` is the INVITE server transaction it cancels, or None (the TU answers the CANCEL
    481 then). With a target still in Proceeding the TU answers the CANCEL 200 and the INVITE 487.
    """

    transaction: ServerTransaction
    request: Request
    target: ServerTransaction | None


@dataclass(frozen=True, slots=True, eq=False)
class AckReceived:
    """The ACK for a 2xx, for the TU (an end-to-end request of its own, RFC 3261 §13.3.1.4,
    §17.2.3). ``transaction`` is the INVITE server transaction whose 2xx it acknowledges (found
    by Call-ID, CSeq number and To tag while it is in Accepted, RFC 6026 §7.1; its 2xx
    retransmissions stop and later copies of the ACK are absorbed), or None for an ACK that
    matches nothing (it arrived after Timer L, or is stray).
    """

    request: Request
    source: Address
    transaction: ServerTransaction | None


@dataclass(frozen=True, slots=True, eq=False)
class ResponseReceived:
    """A response for the TU on a client ``transaction``. Retransmissions are absorbed, except
    a 2xx to INVITE (RFC 6026 §7.2): that reaches the TU again so it re-sends its ACK, unless
    the ACK went through ``TransactionLayer.send_ack``, which the layer then re-sends itself."""

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True, slots=True, eq=False)
class TimeoutEvent:
    """``transaction`` gave up: Timer B / F (no final response), H (no ACK for a non-2xx final,
    RFC 3261 §17.2.1) or CANCEL_GUARD (no final response 64*T1 after CANCEL, §9.1)."""

    transaction: ClientTransaction | ServerTransaction
    timer: TimerName


@dataclass(frozen=True, slots=True, eq=False)
class TransportErrorEvent:
    """The transport failed to deliver for ``transaction`` (RFC 3261 §17.1.1.2, §17.1.4, §17.2.4)."""

    transaction: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True, eq=False)
class TransactionTerminated:
    """``transaction`` reached Terminated and left the layer; the TU may drop its references."""

    transaction: ClientTransaction | ServerTransaction


TransactionEvent = (
    RequestReceived
    | CancelReceived
    | AckReceived
    | ResponseReceived
    | TimeoutEvent
    | TransportErrorEvent
    | TransactionTerminated
)
"""Every event the layer returns to the TU."""


# --- the transactions -------------------------------------------------------------------------------


class ProtocolError(Exception):
    """An input the transaction's table has no row for in its current state.

    Raised to the TU for TU input (e.g. a provisional response after the final one); network
    input that would raise it is dropped and counted in ``Counters.protocol_errors`` instead.
    """

    def __init__(self, transaction: Transaction, trigger: Trigger) -> None:
        self.transaction = transaction
        self.trigger = trigger
        super().__init__(
            f"{transaction.kind.value} transaction in {transaction.state.value}: "
            f"no transition for {trigger.value}"
        )


@dataclass(slots=True)
class Counters:
    """Plain counters the application exports as metrics; they only ever grow."""

    transactions_created: int = 0
    retransmissions_sent: int = 0  # requests (A, E), responses (G, on request retransmission), ACKs
    retransmissions_absorbed: int = 0  # duplicate requests/responses/ACKs not passed to the TU
    timeouts: int = 0  # Timers B, F, H and CANCEL_GUARD
    transport_errors: int = 0
    stray_responses: int = 0  # matching no client transaction: dropped (RFC 6026 §8 on §18.1.2)
    protocol_errors: int = 0  # network input with no row in the table, or unusable (no Via ...)


@dataclass(slots=True)
class Context:
    """What the transactions of one layer share: timers, output queues and counters."""

    config: TimerConfig
    heap: TimerHeap[Transaction] = field(default_factory=TimerHeap)
    outgoing: list[Transmit] = field(default_factory=list)
    events: list[TransactionEvent] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    terminated: list[Transaction] = field(default_factory=list)
    cancels: list[ClientTransaction] = field(default_factory=list)  # INVITEs to send a CANCEL for


class Transaction:
    """What client and server transactions share: the table walk and the timers.

    Public attributes: ``kind``, ``state``, ``request`` (the request that created it),
    ``reliable`` (True: no retransmissions, zero-length wait timers).
    """

    __slots__ = ("_ctx", "_table", "_timers", "_zero", "kind", "reliable", "request", "state")

    def __init__(self, ctx: Context, kind: TransactionKind, request: Request, reliable: bool) -> None:
        self._ctx = ctx
        self._table = TABLES[kind]
        self._timers: dict[TimerName, int] = {}  # armed timer -> its heap token
        self._zero: list[TimerName] = []  # zero-length timers, fired before the input returns
        self.kind = kind
        self.request = request
        self.reliable = reliable
        self.state = next(iter(self._table))[0]  # the state of the START row

    def __repr__(self) -> str:
        return f"<{self.kind.value} transaction {self.request.method} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    @property
    def armed_timers(self) -> frozenset[TimerName]:
        """Timers currently armed (for tests and diagnostics)."""
        return frozenset(self._timers)

    def is_armed(self, timer: TimerName, token: int) -> bool:
        """True when heap entry ``token`` is the live arming of ``timer`` (not stale)."""
        return self._timers.get(timer) == token

    def accepts(self, trigger: Trigger) -> bool:
        """True when the table has a row for ``trigger`` in the current state."""
        return (self.state, trigger) in self._table

    def fire(
        self,
        trigger: Trigger,
        now: float,
        message: Request | Response | None = None,
        source: Address | None = None,
    ) -> None:
        """Run the transition for ``trigger`` (``message`` / ``source``: the input message and
        where it came from); raises :class:`ProtocolError` when there is no row for it."""
        row = self._table.get((self.state, trigger))
        if row is None:
            raise ProtocolError(self, trigger)
        new_state, actions = row
        if new_state is not self.state:
            self.state = new_state
            # A timer survives a state change only if the new state has a row for it.
            for timer in [t for t in self._timers if (new_state, t) not in self._table]:
                self._disarm(timer)
        for action in actions:
            self._act(action, trigger, now, message, source)
        if new_state is TransactionState.TERMINATED:
            for timer in list(self._timers):
                self._disarm(timer)
            self._zero.clear()
            self._ctx.terminated.append(self)
            return
        while self._zero and not self.terminated:
            self.fire(self._zero.pop(0), now)

    def timer_fired(self, timer: TimerName, token: int, now: float) -> bool:
        """Heap callback: fire ``timer`` if ``token`` is still its armed one; False if stale."""
        if self._timers.get(timer) != token:
            return False
        del self._timers[timer]
        self.fire(timer, now)
        return True

    def _arm(self, timer: TimerName, delay: float, now: float) -> None:
        self._disarm(timer)
        if delay <= 0:
            self._zero.append(timer)
        else:
            self._timers[timer] = self._ctx.heap.schedule(now + delay, self, timer)

    def _disarm(self, timer: TimerName) -> None:
        """Cancel ``timer`` if armed; its heap entry is left behind, stale (counted)."""
        if self._timers.pop(timer, None) is not None:
            self._ctx.heap.stale += 1

    def _send(self, data: bytes, destination: Address, *, retransmission: bool) -> None:
        self._ctx.outgoing.append(Transmit(data, destination))
        if retransmission:
            self._ctx.counters.retransmissions_sent += 1

    def _act_common(self, action: Action, trigger: Trigger) -> None:
        """Actions both sides share."""
        ctx = self._ctx
        if action is Action.ABSORB:
            ctx.counters.retransmissions_absorbed += 1
        elif action is Action.REPORT_TIMEOUT and isinstance(trigger, TimerName):
            ctx.counters.timeouts += 1
            ctx.events.append(TimeoutEvent(self, trigger))  # type: ignore[arg-type]
        elif action is Action.REPORT_TRANSPORT_ERROR:
            ctx.counters.transport_errors += 1
            ctx.events.append(TransportErrorEvent(self))  # type: ignore[arg-type]
        else:
            raise AssertionError(f"{action} is not valid in a {self.kind.value} table")

    def _act(
        self,
        action: Action,
        trigger: Trigger,
        now: float,
        message: Request | Response | None,
        source: Address | None,
    ) -> None:
        raise NotImplementedError


class ClientTransaction(Transaction):
    """An INVITE or non-INVITE client transaction (RFC 3261 §17.1).

    Public attributes besides :class:`Transaction`'s: ``destination``, ``key`` (branch and
    method), ``last_response`` (the latest response passed to the TU) and
    ``cancel_transaction`` (the CANCEL sent for this INVITE, once sent) and ``cancel_headers``
    (the TU's extra header fields for that CANCEL, e.g. Reason, RFC 3326).
    """

    __slots__ = (
        "_ack",
        "_acks",
        "_cancel_deferred",
        "_data",
        "_interval",
        "cancel_headers",
        "cancel_transaction",
        "destination",
        "key",
        "last_response",
    )

    def __init__(self, ctx: Context, request: Request, destination: Address, key: ClientKey) -> None:
        invite = request.method == "INVITE"
        kind = TransactionKind.INVITE_CLIENT if invite else TransactionKind.NON_INVITE_CLIENT
        super().__init__(ctx, kind, request, destination.reliable)
        self.destination = destination
        self.key = key
        self.last_response: Response | None = None
        self.cancel_transaction: ClientTransaction | None = None
        self.cancel_headers: tuple[tuple[str, str], ...] = ()
        self._data = request.to_bytes()
        self._interval = ctx.config.t1  # current A / E interval
        self._ack: bytes | None = None
        self._cancel_deferred = False
        self._acks: dict[str | None, bytes] = {}  # 2xx To tag -> the TU's ACK for it

    @property
    def branch(self) -> str:
        return self.key.branch

    def remember_ack(self, to_tag: str | None, ack: bytes) -> None:
        """Keep the TU's ACK for the 2xx with ``to_tag``, to re-send for its retransmissions."""
        if self.state is TransactionState.ACCEPTED:
            self._acks[to_tag] = ack

    def _act(
        self,
        action: Action,
        trigger: Trigger,
        now: float,
        message: Request | Response | None,
        source: Address | None,
    ) -> None:
        ctx, cfg = self._ctx, self._ctx.config
        match action:
            case Action.SEND_REQUEST:
                self._send(self._data, self.destination, retransmission=False)
            case Action.ARM_A:
                if not self.reliable:  # §17.1.1.2: no retransmissions on reliable transports
                    self._arm(T.A, self._interval, now)
            case Action.ARM_E:
                if not self.reliable:  # §17.1.2.2
                    self._arm(T.E, self._interval, now)
            case Action.RETRANSMIT_A:
                self._send(self._data, self.destination, retransmission=True)
                self._interval *= 2
                self._arm(T.A, self._interval, now)
            case Action.RETRANSMIT_E_BACKOFF | Action.RETRANSMIT_E_T2:
                self._send(self._data, self.destination, retransmission=True)
                backoff = action is Action.RETRANSMIT_E_BACKOFF
                self._interval = min(2 * self._interval, cfg.t2) if backoff else cfg.t2
                self._arm(T.E, self._interval, now)
            case Action.ARM_B | Action.ARM_F | Action.ARM_M:
                timer = {Action.ARM_B: T.B, Action.ARM_F: T.F, Action.ARM_M: T.M}[action]
                self._arm(timer, cfg.transaction_timeout, now)
            case Action.ARM_D:
                self._arm(T.D, cfg.wait_duration(T.D, self.reliable), now)
            case Action.ARM_K:
                self._arm(T.K, cfg.wait_duration(T.K, self.reliable), now)
            case Action.PASS_RESPONSE:
                if isinstance(message, Response):
                    self.last_response = message
                    ctx.events.append(ResponseReceived(self, message))
            case Action.PASS_2XX:
                ack = self._acks.get(message.to.tag) if isinstance(message, Response) else None
                if ack is None:
                    self._act(Action.PASS_RESPONSE, trigger, now, message, source)
                else:
                    ctx.counters.retransmissions_absorbed += 1
                    self._send(ack, self.destination, retransmission=True)
            case Action.SEND_ACK:
                if self._ack is None and isinstance(message, Response):
                    self._ack = build_ack(self.request, message).to_bytes()
                    self._send(self._ack, self.destination, retransmission=False)
                elif self._ack is not None:
                    self._send(self._ack, self.destination, retransmission=True)
            case Action.DEFER_CANCEL:
                self._cancel_deferred = True
            case Action.SEND_DEFERRED_CANCEL:
                if self._cancel_deferred:
                    self._act(Action.SEND_CANCEL, trigger, now, message, source)
            case Action.SEND_CANCEL:
                self._cancel_deferred = False
                if T.CANCEL_GUARD not in self._timers and self.cancel_transaction is None:
                    ctx.cancels.append(self)  # the layer creates the CANCEL client transaction
                    self._arm(T.CANCEL_GUARD, cfg.transaction_timeout, now)
            case _:
                self._act_common(action, trigger)


AckMatch = tuple[str, int, str | None]
"""Call-ID, CSeq number and To tag: what the ACK of a 2xx shares with it (§13.2.2.4, §13.3.1.4)."""


class ServerTransaction(Transaction):
    """An INVITE or non-INVITE server transaction (RFC 3261 §17.2).

    Public attributes besides :class:`Transaction`'s: ``source`` (where the request came from),
    ``response_destination`` (where responses go, §18.2.2), ``key``, ``last_response``
    (the latest response sent), ``acked`` (Accepted: the ACK for the 2xx arrived) and
    ``ack_match`` (Accepted: Call-ID, CSeq number and To tag the 2xx's ACK carries).

    A non-INVITE transaction Completed on an unreliable transport waits 64*T1 for nothing but
    request retransmissions (Timer J, §17.2.2), so it keeps only what answers them: its key and
    the encoded response. The typed views parsed from its request and the response object are
    dropped (about half of its memory); ``last_response`` is parsed again from the bytes if asked.
    """

    __slots__ = (
        "_data",
        "_interval",
        "_last_response",
        "ack_match",
        "acked",
        "key",
        "response_destination",
        "source",
    )

    def __init__(
        self,
        ctx: Context,
        request: Request,
        source: Address,
        key: ServerKey,
        response_destination: Address,
    ) -> None:
        invite = request.method == "INVITE"
        kind = TransactionKind.INVITE_SERVER if invite else TransactionKind.NON_INVITE_SERVER
        super().__init__(ctx, kind, request, source.reliable)
        self.source = source
        self.key = key
        self.response_destination = response_destination
        self._last_response: Response | None = None
        self._data: bytes | None = None  # encoded last response
        self._interval = ctx.config.t1  # current G / 2xx retransmission interval
        self.acked = False  # Accepted: the ACK for our 2xx arrived
        self.ack_match: AckMatch | None = None  # Accepted: how the ACK of our 2xx is recognised

    @property
    def last_response(self) -> Response | None:
        """The latest response sent (None before the first)."""
        response = self._last_response
        if response is None and self._data is not None:  # released in Completed (see the class)
            parsed = parse_message(self._data)
            assert isinstance(parsed, Response)
            response = self._last_response = parsed
        return response

    def _release(self) -> None:
        """Drop what a Completed non-INVITE transaction no longer needs (see the class)."""
        self._last_response = None
        cache = self.request.headers._cache
        # Every view is parsed again on demand, except a top Via parsed without the others
        # (``parse_message`` with several Vias): parsing them all might fail on a lower one.
        top = None if "via" in cache else cache.get("top-via")
        cache.clear()
        if top is not None:
            cache["top-via"] = top

    @property
    def response_to_tag(self) -> str | None:
        """To tag of the last response sent: an RFC 2543 ACK must carry it (§17.2.3)."""
        return self.last_response.to.tag if self.last_response is not None else None

    def _resend(self) -> None:
        if self._data is not None:
            self._send(self._data, self.response_destination, retransmission=True)

    def _act(
        self,
        action: Action,
        trigger: Trigger,
        now: float,
        message: Request | Response | None,
        source: Address | None,
    ) -> None:
        ctx, cfg = self._ctx, self._ctx.config
        match action:
            case Action.SEND_RESPONSE:
                if isinstance(message, Response):
                    self._last_response = message
                    self._data = message.to_bytes()
                    self._send(self._data, self.response_destination, retransmission=False)
            case Action.ARM_TRYING:
                self._arm(T.TRYING, cfg.trying_delay, now)
            case Action.STOP_TRYING:
                self._disarm(T.TRYING)
            case Action.SEND_TRYING:
                if self.last_response is None:  # §17.2.1: only when the TU has not answered
                    self._act(Action.SEND_RESPONSE, trigger, now, make_response(self.request, 100), None)
            case Action.RESEND_RESPONSE:
                self._resend()
            case Action.RESEND_OR_TRYING:
                if self._data is None:
                    self._disarm(T.TRYING)
                    self._act(Action.SEND_TRYING, trigger, now, message, None)
                else:
                    self._resend()
            case Action.ARM_G:
                if not self.reliable:  # §17.2.1: no retransmissions on reliable transports
                    self._arm(T.G, self._interval, now)
            case Action.RETRANSMIT_G:
                self._resend()
                self._interval = min(2 * self._interval, cfg.t2)
                self._arm(T.G, self._interval, now)
            case Action.ARM_H | Action.ARM_L:
                self._arm(T.H if action is Action.ARM_H else T.L, cfg.transaction_timeout, now)
            case Action.ARM_I:
                self._arm(T.I, cfg.wait_duration(T.I, self.reliable), now)
            case Action.ARM_J:
                self._arm(T.J, cfg.wait_duration(T.J, self.reliable), now)
                if not self.reliable:
                    self._release()
            case Action.ARM_2XX:
                if self.last_response is not None:
                    self.ack_match = (self.request.call_id, self.request.cseq.seq, self.last_response.to.tag)
                self._arm(T.RETRANSMIT_2XX, self._interval, now)
            case Action.RETRANSMIT_2XX:
                self._resend()
                self._interval = min(2 * self._interval, cfg.t2)
                self._arm(T.RETRANSMIT_2XX, self._interval, now)
            case Action.PASS_ACK:
                if self.acked:
                    ctx.counters.retransmissions_absorbed += 1
                elif isinstance(message, Request):
                    self.acked = True
                    self._disarm(T.RETRANSMIT_2XX)
                    ctx.events.append(AckReceived(message, source or self.source, self))
            case Action.REPORT_UNACKED:
                if not self.acked:
                    self._act_common(Action.REPORT_TIMEOUT, trigger)
            case _:
                self._act_common(action, trigger)
