"""The transaction layer: owns every transaction of an endpoint, matches messages to them and
runs all their timers from one heap (RFC 3261 §17).

Driving it (what a transport adapter does)::

    layer = TransactionLayer(TimerConfig())
    # a message arrived (parsed by gateway.sip.message.parse_message):
    events = layer.receive(message, source, now)      # -> TU
    for tx in layer.take_outgoing(): transport.send(tx.data, tx.destination)
    # the timer handle (one per layer) is (re)armed after every call:
    deadline = layer.next_deadline()                  # None: nothing pending
    # ...when it fires:
    events = layer.handle_timers(loop.time())
    # the TU sends through the layer (send_response and cancel return events too):
    client_tx = layer.send_request(request, destination, now)
    events = layer.send_response(server_tx, response, now)
    # a send failed / a connection broke:
    events = layer.transport_error(destination_or_transaction, now)

Every call may queue bytes: drain :meth:`TransactionLayer.take_outgoing` after each one, then
re-read :meth:`TransactionLayer.next_deadline`. Network input never raises (bad or unexpected
messages are dropped and counted); TU input that the state machine has no row for raises
:class:`~gateway.sip.transactions.machines.ProtocolError`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace

from gateway.sip.address import Address
from gateway.sip.errors import SipParseError
from gateway.sip.message import Request, Response
from gateway.sip.timers import TimerConfig, TimerHeap
from gateway.sip.transactions.builders import build_cancel
from gateway.sip.transactions.machines import (
    AckMatch,
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Context,
    Counters,
    RequestReceived,
    ServerTransaction,
    Transaction,
    TransactionEvent,
    TransactionTerminated,
    Transmit,
)
from gateway.sip.transactions.matching import (
    ClientKey,
    LegacyKey,
    ServerKey,
    client_key,
    is_rfc3261_branch,
    new_branch,
    replace_top_via,
    response_destination,
    server_key,
    stamp_received,
)
from gateway.sip.transactions.tables import Input, classify

log = logging.getLogger(__name__)



class TransactionLayer:
    """All client and server transactions of one SIP endpoint (sans-I/O).

    ``config`` sets T1/T2/T4 and the other durations; ``rng`` is the source of branch values
    (inject ``random.Random(seed)`` for deterministic tests; the default is the OS's CSPRNG).
    """

    def __init__(
        self, config: TimerConfig | None = None, *, rng: random.Random | None = None, branch_marker: str = ""
    ) -> None:
        self._ctx = Context(config or TimerConfig(), TimerHeap())
        self._rng = rng or random.SystemRandom()
        self._branch_marker = branch_marker  # names the owning worker (gateway.sip.ownership)
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        # INVITE server transactions in Accepted, by what the ACK of their 2xx carries (§13.3.1.4)
        self._accepted: dict[AckMatch, ServerTransaction] = {}

    # -- introspection ------------------------------------------------------------------------

    @property
    def config(self) -> TimerConfig:
        return self._ctx.config

    @property
    def counters(self) -> Counters:
        """Retransmissions sent / absorbed, timeouts, transport errors, strays, protocol errors."""
        return self._ctx.counters

    @property
    def transaction_count(self) -> int:
        """Live transactions (client + server); terminated ones are removed at once."""
        return len(self._clients) + len(self._servers)

    @property
    def server_count(self) -> int:
        """Live server transactions (the resource a request flood consumes)."""
        return len(self._servers)

    def matches_server(self, request: Request) -> bool:
        """Does ``request`` belong to a live server transaction (a retransmission, §17.2.3)?"""
        try:
            key = server_key(request)
        except SipParseError:
            return False
        return self._find_server(key, request.to.tag, ack=request.method == "ACK") is not None

    @property
    def timer_entries(self) -> int:
        """Entries in the timer heap, cancelled ones not yet dropped included (diagnostics)."""
        return len(self._ctx.heap)

    def new_branch(self) -> str:
        """A fresh ``z9hG4bK`` branch (§8.1.1.7) from the layer's random source."""
        return new_branch(self._rng, self._branch_marker)

    # -- output -------------------------------------------------------------------------------

    def take_outgoing(self) -> list[Transmit]:
        """Bytes queued by any call since the last drain, in order."""
        out, self._ctx.outgoing = self._ctx.outgoing, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` must next be called (None: no timer armed)."""
        heap = self._ctx.heap
        while (top := heap.peek()) is not None:
            _deadline, token, owner, timer = top
            if owner.is_armed(timer, token):
                return top[0]
            heap.pop()  # cancelled or superseded entry
            heap.stale -= 1
        return None

    # -- network input ------------------------------------------------------------------------

    def receive(self, message: Request | Response, source: Address, now: float) -> list[TransactionEvent]:
        """Feed one parsed message that arrived from ``source``; returns the TU's events.

        Requests get ``received``/``rport`` stamped on their top Via (§18.2.1, RFC 3581).
        Retransmissions are absorbed (counted, no event); input a transaction has no row for,
        and responses matching no transaction, are dropped and counted.
        """
        try:
            if isinstance(message, Response):
                self._receive_response(message, now)
            else:
                self._receive_request(message, source, now)
        except SipParseError as exc:  # the codec parses header fields lazily
            # A message the codec let through but that cannot be matched (no Via, no CSeq ...):
            # nothing can be answered, so drop it (§18.1.2, §18.2.1) and count it.
            log.debug("dropping unusable SIP message from %s: %s", source, exc)
            self._ctx.counters.protocol_errors += 1
        return self._collect(now)

    def receive_retransmission(self, transaction: ServerTransaction, now: float) -> list[TransactionEvent]:
        """The request that created the live ``transaction`` arrived again byte for byte from
        the same source (the transport adapter recognised the datagram, §17.2.3): what
        :meth:`receive` of it would do, without parsing, stamping or matching it again."""
        if transaction.terminated:
            self._ctx.counters.protocol_errors += 1
        else:
            self._fire_network(transaction, Input.REQUEST, now, None)
        return self._collect(now)

    def _receive_response(self, response: Response, now: float) -> None:
        key = client_key(response)
        tx = self._clients.get(key) if key is not None else None
        if tx is None:
            self._ctx.counters.stray_responses += 1  # a UA discards strays (RFC 6026 §8 on §18.1.2)
            return
        self._fire_network(tx, classify(response.status), now, response)

    def _receive_request(self, request: Request, source: Address, now: float) -> None:
        # Everything a transaction reads from the request, parsed before anything changes.
        key = server_key(request)
        to_tag, call_id, seq = request.to.tag, request.call_id, request.cseq.seq
        request.from_  # noqa: B018 -- parsed for its check
        stamp_received(request, source)
        if request.method == "ACK":
            tx = self._find_server(key, to_tag, ack=True)
            if tx is None:  # the ACK of a 2xx has its own branch: match it as the UAS core would
                tx = self._accepted.get((call_id, seq, to_tag))
            if tx is None:
                self._ctx.events.append(AckReceived(request, source, None))
            else:
                self._fire_network(tx, Input.ACK, now, request, source)
            return
        tx = self._find_server(key, to_tag, ack=False)
        if tx is not None:
            self._fire_network(tx, Input.REQUEST, now, request)
            return
        tx = ServerTransaction(self._ctx, request, source, key, response_destination(request.top_via, source))
        self._servers[key] = tx
        self._ctx.counters.transactions_created += 1
        if request.method == "CANCEL":
            self._ctx.events.append(CancelReceived(tx, request, self.find_cancel_target(request)))
        else:
            self._ctx.events.append(RequestReceived(tx, request))
        tx.fire(Input.START, now)

    def _fire_network(
        self,
        tx: Transaction,
        trigger: Input,
        now: float,
        message: Request | Response | None,
        source: Address | None = None,
    ) -> None:
        if tx.accepts(trigger):
            tx.fire(trigger, now, message, source)
        else:
            log.debug("%r: no transition for %s, dropped", tx, trigger.value)
            self._ctx.counters.protocol_errors += 1

    def _find_server(self, key: ServerKey, to_tag: str | None, *, ack: bool) -> ServerTransaction | None:
        tx = self._servers.get(key)
        if ack and isinstance(key, LegacyKey):
            # RFC 2543 ACK (§17.2.3): its To tag must be the one of the response we sent; the
            # INVITE it acknowledges had that tag (re-INVITE) or none (initial INVITE).
            if tx is None:
                tx = self._servers.get(replace(key, to_tag=None))
            if tx is not None and tx.response_to_tag != to_tag:
                return None
        return tx

    def find_cancel_target(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL targets (§9.2: §17.2.3 matching, method INVITE)."""
        try:
            key = server_key(cancel, method="INVITE")
        except SipParseError:
            return None
        return self._find_server(key, cancel.to.tag, ack=False)

    # -- TU input -----------------------------------------------------------------------------

    def send_request(self, request: Request, destination: Address, now: float) -> ClientTransaction:
        """Start a client transaction for ``request`` (not ACK) towards ``destination``.

        The request must carry its top Via (sent-by is the transport's business); a branch
        without the magic cookie, or none, is replaced by :meth:`new_branch`. Raises ValueError
        for an ACK (the ACK for a 2xx is sent with :meth:`send_ack`) or a branch already
        in use for this method.
        """
        if request.method == "ACK":
            raise ValueError("ACK creates no client transaction: use send_ack (RFC 3261 §17)")
        if "Via" not in request.headers:
            raise ValueError("request has no Via: the TU adds the top Via before sending")
        top = request.top_via
        if not is_rfc3261_branch(top.branch):
            replace_top_via(request, replace(top, params={**top.params, "branch": self.new_branch()}))
        key = ClientKey(str(request.top_via.branch), request.cseq.method)
        if key in self._clients:
            raise ValueError(f"branch {key.branch} already has a {key.method} client transaction")
        tx = ClientTransaction(self._ctx, request, destination, key)
        self._clients[key] = tx
        self._ctx.counters.transactions_created += 1
        tx.fire(Input.START, now)  # sends and arms timers; emits no event
        return tx

    def send_response(
        self, transaction: ServerTransaction, response: Response, now: float
    ) -> list[TransactionEvent]:
        """Send the TU's ``response`` on ``transaction`` (its retransmissions are the layer's).

        Raises ProtocolError when the state has no row for it (e.g. a 1xx after the final
        response, anything after Terminated) and ValueError for a status outside 100–699.
        """
        transaction.fire(classify(response.status), now, response)
        if transaction.ack_match is not None:
            self._accepted.setdefault(transaction.ack_match, transaction)
        return self._collect(now)

    def cancel(
        self, transaction: ClientTransaction, now: float, headers: Sequence[tuple[str, str]] = ()
    ) -> list[TransactionEvent]:
        """CANCEL an INVITE client transaction (§9.1).

        Sent at once in Proceeding, after the first provisional response in Calling, not at all
        once a final response arrived. The CANCEL runs its own client transaction
        (``transaction.cancel_transaction``, whose responses come as ResponseReceived); if the
        INVITE gets no final response within 64*T1 it ends with TimeoutEvent(CANCEL_GUARD).
        ``headers`` (name, value) are added to the CANCEL, e.g. a Reason (RFC 3326); until the
        CANCEL is sent (Calling defers it), the latest call's headers are the ones it carries.
        """
        if not transaction.terminated:
            transaction.fire(Input.CANCEL, now)
        if transaction.cancel_transaction is None:  # _collect builds the CANCEL with them
            transaction.cancel_headers = tuple(headers)
        return self._collect(now)

    def send_ack(self, transaction: ClientTransaction, ack: Request, destination: Address) -> None:
        """Send the TU's ACK for a 2xx to the INVITE of ``transaction`` (§13.2.2.4).

        While the transaction is in Accepted (64*T1 after the first 2xx) every retransmission of
        that 2xx (same To tag) is answered with this ACK again and not passed to the TU; a 2xx
        from another fork still reaches the TU, which ACKs it (and usually BYEs it) the same way.
        """
        data = ack.to_bytes()
        transaction.remember_ack(ack.to.tag, data)
        self._ctx.outgoing.append(Transmit(data, destination))

    def send_stateless(self, message: Request | Response, destination: Address) -> None:
        """Queue a message outside any transaction: a response to a request no transaction can
        take (a 400 for an unparsable one, §8.2), a 2xx re-sent after its transaction ended."""
        self._ctx.outgoing.append(Transmit(message.to_bytes(), destination))

    # -- timers and transport errors ----------------------------------------------------------

    def handle_timers(self, now: float) -> list[TransactionEvent]:
        """Fire every timer due at ``now``; returns the TU's events (timeouts, terminations)."""
        heap = self._ctx.heap
        while (top := heap.peek()) is not None and top[0] <= now:
            _deadline, token, owner, timer = heap.pop()
            if not owner.timer_fired(timer, token, now):
                heap.stale -= 1
        return self._collect(now)

    def transport_error(self, target: Address | Transaction, now: float) -> list[TransactionEvent]:
        """The transport could not deliver to ``target`` (a destination, or one transaction).

        Every live transaction sending there, in a state where the figures allow it, is told
        (§17.1.1.2, §17.1.2.2, §17.1.4, §17.2.4); the others are unaffected.
        """
        if isinstance(target, Transaction):
            targets: list[Transaction] = [target]
        else:
            targets = [tx for tx in self._clients.values() if tx.destination == target]
            targets += [tx for tx in self._servers.values() if tx.response_destination == target]
        for tx in targets:
            if not tx.terminated and tx.accepts(Input.TRANSPORT_ERROR):
                tx.fire(Input.TRANSPORT_ERROR, now)
        return self._collect(now)

    # -- bookkeeping --------------------------------------------------------------------------

    def _collect(self, now: float) -> list[TransactionEvent]:
        """Start the CANCELs asked for, reap terminated transactions, drain the TU's events."""
        self._start_cancels(now)
        self._reap()
        self._ctx.heap.compact(lambda entry: entry[2].is_armed(entry[3], entry[1]))
        events, self._ctx.events = self._ctx.events, []
        return events

    def _start_cancels(self, now: float) -> None:
        ctx = self._ctx
        while ctx.cancels:
            invite = ctx.cancels.pop(0)
            request = build_cancel(invite.request, invite.cancel_headers)
            key = ClientKey(invite.branch, "CANCEL")
            if key in self._clients:
                continue
            tx = ClientTransaction(ctx, request, invite.destination, key)
            self._clients[key] = tx
            ctx.counters.transactions_created += 1
            invite.cancel_transaction = tx
            tx.fire(Input.START, now)

    def _reap(self) -> None:
        ctx = self._ctx
        while ctx.terminated:
            tx = ctx.terminated.pop(0)
            if isinstance(tx, ClientTransaction):
                if self._clients.get(tx.key) is tx:
                    del self._clients[tx.key]
            elif isinstance(tx, ServerTransaction):
                if self._servers.get(tx.key) is tx:
                    del self._servers[tx.key]
                if tx.ack_match is not None and self._accepted.get(tx.ack_match) is tx:
                    del self._accepted[tx.ack_match]
            ctx.events.append(TransactionTerminated(tx))  # type: ignore[arg-type]

