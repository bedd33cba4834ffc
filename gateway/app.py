"""The running gateway: transports ↔ codec ↔ transaction layer ↔ request handlers.

:class:`Gateway` is built from its sections only (``sip``, ``node``, ``overload``; see
:mod:`gateway.node_settings`); ``await start()`` opens every listener of ``sip.listen``
(UDP / TCP, IPv4 / IPv6), ``await stop()`` shuts down in order.

Pipeline of one received message (everything runs on the event loop, no per-message task)
-----------------------------------------------------------------------------------------
1. The transport delivers a datagram or a framed stream message (:mod:`gateway.transport`).
   A CRLF-only datagram is a keep-alive: counted, ignored.
2. The codec parses it. A request that is malformed but answerable gets its error status
   (400, 505, 513 ...) with a Reason-Phrase saying what was wrong, sent *statelessly* (RFC 3261
   §8.2, before any transaction exists) to the RFC 3581 / §18.2.2 destination; anything that
   cannot be answered (garbage, a broken response) is dropped and counted in
   ``sip_messages_dropped_total{reason=...}``.
3. Requests pass :mod:`gateway.sip.validation` (416, 420, 483, 505 ... stateless as well);
   ACK is never answered.
4. The :class:`~gateway.sip.transactions.TransactionLayer` absorbs retransmissions and reports
   new requests, which are dispatched by method to the request handlers. Its single next
   deadline is driven by ONE ``loop.call_at`` handle (the loop's monotonic clock is the clock).
   A UDP datagram byte-identical to the one that created a live server transaction (a
   retransmission, RFC 3261 §17.2) skips steps 2-3: it goes straight to that transaction,
   so retransmission storms under overload stay cheap.

Request handler API (how the registrar and call control plug in)
-----------------------------------------------------------------
``gateway.add_request_handler(method, handler)`` with::

    handler(request: Request, source: Address) -> Response | None | Awaitable[Response | None]

* ``method`` is case-sensitive (RFC 3261 §7.1); ACK and CANCEL cannot be registered: the
  gateway handles them (ACK is never answered; CANCEL is answered 481 when it matches no
  transaction, otherwise 200, and the cancelled request gets 487 — its handler task, if still
  running, is cancelled so it can tear down what it started).
* Returning a :class:`Response` sends it through the request's server transaction
  (retransmissions and timers handled). Build it with ``make_response(request, status)``; the
  gateway adds a To tag when the handler did not (RFC 3261 §8.2.6.2).
* Returning ``None`` means "I answer later": call ``gateway.respond(request, response)`` any
  number of times (provisionals, then one final) while the transaction is alive. Whatever is
  still unanswered when the gateway stops gets 503: a request never meets silence.
* A plain function is called inline (the fast path, no task); a coroutine function runs as a
  tracked task. An exception in a handler is logged and answered 500.
* Methods without a handler get 501 Not Implemented with ``Allow`` (RFC 3261 §8.2.1).

Built in: ``OPTIONS`` → 200 with Allow, Accept, Supported (RFC 3261 §11.2).

UAC API (requests we originate: call control, outbound REGISTER, OPTIONS qualify)
--------------------------------------------------------------------------------
* ``gateway.send_request(request, destination, on_response=None) -> ClientRequest``: a client
  transaction; without a Via the gateway adds ours (``local_address``, ``rport``, branch from the
  layer). Every response (1xx and final, and RFC 6026 2xx retransmissions of an INVITE not ACKed
  through ``send_ack``) goes to ``on_response``; Timer B/F becomes a synthesized 408, a transport
  error a 503, a CANCELled INVITE that never got its final response a 487 (RFC 3261 §8.1.3.1,
  §9.1), with ``ClientRequest.synthesized`` set. ``await client.wait()`` gives the final response.
* ``await gateway.request(request, destination) -> Response``: the same, awaited.
* ``gateway.cancel(client, headers=())``: CANCEL a pending INVITE (§9.1), with extra header
  fields such as a Reason (RFC 3326).
* ``gateway.send_ack(client, ack)``: the ACK for a 2xx (the layer re-sends it for retransmitted
  2xx); ``gateway.send_stateless(message, destination)`` for anything outside a transaction.
* ``gateway.set_dialog_hooks(on_ack=..., on_cancel=...)``: ACKs for 2xx (``AckReceived``) and
  INVITEs answered 487 after a CANCEL (with that CANCEL) go to call control; in-dialog requests
  reach the method's request handler. ``gateway.accept_bodies(types)`` sets the body types
  requests may carry.
* ``gateway.local_address(transport, destination=None)``, ``gateway.our_via(destination)``:
  our address for Via / Contact; ``gateway.transaction_count`` for leak checks.

Dialogs and requests we originate (call control, qualify pings)
---------------------------------------------------------------
``set_dialog_hooks(on_ack=..., on_cancel=...)`` receives ACKs for 2xx and CANCELled INVITEs;
``send_request(request, destination, on_response)`` runs a client transaction and returns a
:class:`ClientRequest` (``await client.wait()`` for the final response; silence and transport
failures come back as a synthesized 408 / 503); ``cancel``, ``send_ack``, ``send_stateless``;
``local_address`` / ``our_via`` give our sent-by (``sip.advertised_host`` when configured).

Shutdown (:meth:`Gateway.stop`): stop accepting TCP connections, answer new requests 503, let
handlers and open server transactions finish for ``sip.shutdown_grace`` seconds, answer what is
left 503, flush, close every socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from gateway.metrics import DropReason, Metrics
from gateway.node_settings import NodeConfig, SipConfig
from gateway.overload import OverloadControl, OverloadSettings, ShedReason
from gateway.sip import entropy
from gateway.sip.address import Address
from gateway.sip.errors import SipParseError
from gateway.sip.framing import FramingError
from gateway.sip.headers import Via, header_key, parse_via
from gateway.sip.message import AnswerableParseError, Request, Response, make_response, parse_message
from gateway.sip.ownership import branch_marker
from gateway.sip.timers import TimerName
from gateway.sip.transactions import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Counters,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimeoutEvent,
    TimerConfig,
    TransactionEvent,
    TransactionLayer,
    TransactionTerminated,
    TransportErrorEvent,
    response_destination,
    stamp_received,
)
from gateway.sip.validation import Policy, validate_request
from gateway.transport import PacketFilter
from gateway.transport.handoff import Handoff
from gateway.transport.manager import Listen, TransportSet
from gateway.transport.tls import client_context, server_context

log = logging.getLogger(__name__)

RequestHandler = Callable[[Request, Address], Response | Awaitable[Response | None] | None]
"""What :meth:`Gateway.add_request_handler` accepts; see the module docstring."""

ResponseCallback = Callable[[Response], None]
"""What :meth:`Gateway.send_request` delivers every response of a client transaction to."""

AckHandler = Callable[[Request, Address], None]
"""Receives each ACK for a 2xx (an end-to-end request of its own, RFC 3261 §13.3.1.4)."""

CancelHandler = Callable[[Request, Request], None]
"""Told about an INVITE the gateway just answered 487 because a CANCEL matched it (§9.2), and
that CANCEL (its Reason, RFC 3326, says why the caller gave up)."""

TIMER_SLACK = 0.005
"""The timer handle fires this late, so that timers due close together (one Timer J per
transaction under load) run in one batch instead of one loop wake-up each; SIP timers are
hundreds of milliseconds, 5 ms is noise to them."""

OVERLOAD_RETRY_AFTER = 5
"""Seconds in the Retry-After of a 503 for a resource cap (transactions, dialogs)."""

ACCEPT = "application/sdp"
"""Bodies we understand (RFC 3261 §11.2: Accept in the OPTIONS answer)."""


@dataclass(slots=True, eq=False)
class _Pending:
    """A request whose handler has not sent a final response yet; ``to_tag`` is the tag its
    responses get (the same on provisional and final ones, RFC 3261 §8.2.6.2)."""

    transaction: ServerTransaction
    to_tag: str
    task: asyncio.Task[None] | None = None


@dataclass(slots=True, eq=False)
class ClientRequest:
    """A request sent by :meth:`Gateway.send_request`: its client transaction and outcome.

    ``final`` is the first final response (None while pending); ``synthesized`` says the gateway
    made it up (408 after Timer B/F, 503 after a transport error, 487 when a CANCELled INVITE
    never got its final response: RFC 3261 §8.1.3.1, §9.1), so a caller that must tell silence
    from an answer (OPTIONS qualify) can.
    """

    request: Request
    destination: Address
    transaction: ClientTransaction
    on_response: ResponseCallback | None
    final: Response | None = None
    synthesized: bool = False
    waiter: asyncio.Future[Response] | None = None
    claimed: bool = False  # worker mode: a dialog-creating INVITE whose Call-ID routes to us

    async def wait(self) -> Response:
        """The final response (real or synthesized)."""
        if self.final is not None:
            return self.final
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self.waiter)


def new_tag() -> str:
    """A To tag: 64 random bits (RFC 3261 §19.3 asks for at least 32, cryptographically random)."""
    return entropy.token_hex(8)


def _top_via(request: Request) -> Via:
    """The top Via after stamping, even when a later Via value is malformed (badinv01.dat)."""
    try:
        return request.top_via
    except SipParseError:
        # stamp_received wrote the stamped top Via as a field line of its own.
        return parse_via(request.headers.get("Via") or "", strict=False)


def _has_to_tag(response: Response) -> bool:
    raw = response.headers.get("To")
    # Fast path for the form make_response writes; otherwise parse (LWS may surround the "=").
    return raw is not None and (";tag=" in raw or response.to.tag is not None)


class Gateway:
    """The SIP side of the gateway process; see the module docstring."""

    def __init__(
        self, sip: SipConfig, node: NodeConfig, overload: OverloadSettings | None = None, *,
        metrics: Metrics | None = None,
    ) -> None:
        self.sip = sip
        self.node = node
        self.metrics = metrics if metrics is not None else Metrics()
        overload = overload if overload is not None else OverloadSettings()
        worker = node.worker_index
        self._layer = TransactionLayer(
            TimerConfig(t1=sip.timers.t1, t2=sip.timers.t2, t4=sip.timers.t4, timer_d=sip.timers.timer_d),
            # Responses find the worker that sent the request by its branch (gateway.sip.ownership).
            branch_marker=branch_marker(worker) if worker is not None else "",
        )
        tls = sip.tls
        # SIP over TLS (RFC 3261 §26.2.1): files loaded once here; a bad one is an OSError naming it.
        server_ssl = server_context(tls.certificate, tls.private_key, ca_certificates=tls.ca_certificates,
                                    verify_clients=tls.verify_clients) \
            if tls.certificate is not None and tls.private_key is not None else None
        client_ssl = client_context(certificate=tls.certificate, private_key=tls.private_key,
                                    ca_certificates=tls.ca_certificates, verify_server=tls.verify_server)
        self._transports = TransportSet(
            self,
            self.metrics,
            server_ssl=server_ssl,
            client_ssl=client_ssl,
            max_message=sip.max_message_size,
            tcp_idle_timeout=sip.tcp_idle_timeout,
            tcp_max_connections=sip.tcp_max_connections,
            tcp_max_per_source=sip.tcp_max_connections_per_source,
            tcp_outgoing_reserve=sip.tcp_outgoing_reserve,
            tcp_message_timeout=sip.tcp_message_timeout,
            on_unreachable=self._unreachable,
        )
        self._max_message = sip.max_message_size
        self._max_server_transactions = sip.max_server_transactions
        self._max_dialogs = sip.max_dialogs
        self._dialog_counter: Callable[[], int] | None = None
        # Graceful overload (gateway.overload): new INVITEs shed before any work is spent on them.
        self._overload = OverloadControl(
            overload, self.metrics.registry,
            transactions=lambda: self._layer.server_count, dialogs=self._dialogs,
            queue=self._transports.receive_queue,
        ) if overload.enabled else None
        self._handlers: dict[str, RequestHandler] = {"OPTIONS": self._answer_options}
        self._policy = Policy()
        self._allow = ""
        self._refresh_allow()
        self.supported: tuple[str, ...] = ()
        """Option tags listed in Supported (RFC 3261 §20.37); extensions add theirs at start-up."""
        self._pending: dict[int, _Pending] = {}  # id(request) -> awaiting a final response
        self._tasks: set[asyncio.Task[None]] = set()
        # Live UDP server transactions by a digest of the datagram that created them (and back):
        # 16 bytes per transaction instead of the datagram itself.
        self._by_datagram: dict[bytes, ServerTransaction] = {}
        self._datagram_of: dict[int, bytes] = {}
        self._tag_secret = secrets.token_bytes(16)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopping = False
        self._drained: asyncio.Event | None = None  # set once nothing awaits an answer (stop())
        # UAC side: live client transactions started by send_request, by id(transaction).
        self._clients: dict[int, ClientRequest] = {}
        self._ack_handler: AckHandler | None = None
        self._cancel_handler: CancelHandler | None = None
        self._received = {
            (t, k): self.metrics.messages_received.labels(t, k)
            for t in ("udp", "tcp", "tls")
            for k in ("request", "response", "keepalive")
        }

    # -- public API ------------------------------------------------------------------------------
    @property
    def local_addresses(self) -> list[Address]:
        """The bound listening addresses (ports resolved when the config said 0)."""
        return list(self._transports.locals)

    @property
    def allow(self) -> str:
        """The Allow header value: every method we answer (RFC 3261 §20.5)."""
        return self._allow

    def set_dialog_counter(self, counter: Callable[[], int]) -> None:
        """How many dialogs the applications hold: at ``sip.max_dialogs`` a new INVITE gets 503
        (and at ``overload.dialogs_high`` new INVITEs are shed)."""
        self._dialog_counter = counter

    def _dialogs(self) -> int:
        counter = self._dialog_counter
        return 0 if counter is None else counter()

    @property
    def overload(self) -> OverloadControl | None:
        """The overload gate (None when ``overload.enabled`` is false): state, metrics."""
        return self._overload

    def set_certificate_check(self, check: Callable[[Address, frozenset[str]], bool]) -> None:
        """Asked about each accepted TLS connection with its verified certificate's names; False
        closes it (gateway.security.guard.TlsPeerPolicy)."""
        self._transports.tls.certificate_check = check

    def set_packet_filter(self, packet_filter: PacketFilter | None) -> None:
        """The edge guard (gateway.security.guard), asked on raw input before any parsing."""
        self._transports.set_filter(packet_filter)

    def add_request_handler(self, method: str, handler: RequestHandler) -> None:
        """Serve ``method`` with ``handler`` (replacing any previous one); see the module docstring."""
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} is handled by the gateway itself, not by a request handler")
        self._handlers[method] = handler
        self._refresh_allow()

    def respond(self, request: Request, response: Response) -> None:
        """Send ``response`` to ``request`` (received by a handler) through its server transaction.

        Raises KeyError when the request already got its final response or its transaction
        ended (a late answer has nowhere to go).
        """
        pending = self._pending[id(request)]
        self._send_response(pending.transaction, response, pending.to_tag)
        self._after_layer_call()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sip, node = self.sip, self.node
        # Worker processes share every UDP datagram through the supervisor's hand-off channels.
        handoff = Handoff.from_environment(node.worker_index, node.workers, self.metrics) \
            if node.worker_index is not None else None
        await self._transports.start(
            [Listen(item.transport, item.host, item.port) for item in sip.listen], worker_port=node.own_port,
            handoff=handoff,
        )
        own = self._transports.own
        log.info(
            "gateway %s listening on %s%s (event loop: %s)",
            node.id,
            ", ".join(f"{a.transport}:{a.hostport()}" for a in self._transports.locals),
            f", own {', '.join(f'{a.transport}:{a.hostport()}' for a in own)}" if own else "",
            type(self._loop).__module__.partition(".")[0],
        )

    def watch_load(self) -> None:
        """Start the overload probes (gateway.overload). The composition root calls it once the
        whole process has started: the event loop is busy while subsystems start (imports,
        files read, connections opened), and that is not overload."""
        if self._overload is not None:
            self._overload.start(asyncio.get_running_loop())

    async def stop(self) -> None:
        """Ordered shutdown: stop accepting, drain for ``sip.shutdown_grace`` s, answer the rest, close."""
        self._stopping = True
        self._transports.stop_accepting()
        self._drained = asyncio.Event()
        self._check_drained()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), self.sip.shutdown_grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for pending in list(self._pending.values()):
            self._send_response(pending.transaction, Response(503, "Shutting Down"), pending.to_tag)
        self._after_layer_call()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._overload is not None:
            self._overload.stop()
        await self._transports.close()
        log.info("gateway %s stopped", self.node.id)

    # -- transport side (MessageSink) --------------------------------------------------------------
    def message_received(self, data: bytes, source: Address) -> None:
        try:
            self._message_received(data, source)
        except Exception:
            # A bug, not bad input (the codec turns bad input into SipParseError); keep serving.
            log.exception("internal error on a message from %s", source.hostport())
            self.metrics.dropped(DropReason.INTERNAL_ERROR)

    def _message_received(self, data: bytes, source: Address) -> None:
        if data[:1] in b"\r\n" and not data.strip(b"\r\n"):
            # A CRLF keep-alive sent as a datagram (RFC 5626 §3.5.1 style); nothing to answer.
            self._received[source.transport, "keepalive"].inc()
            return
        digest = None if source.reliable else hashlib.blake2b(data, digest_size=16).digest()
        known = self._by_datagram.get(digest) if digest is not None else None
        if known is not None and known.source == source:
            # RFC 3261 §17.2: a UDP retransmission is byte-identical. Hand it to its transaction
            # (which re-sends the last response or absorbs it) instead of parsing and validating
            # it again: under overload, when retransmissions pile up, they stay cheap instead of
            # collapsing throughput.
            self._received[source.transport, "request"].inc()
            self._retransmitted(known)
            return
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._parse_failed(exc, data, source)
            return
        if isinstance(message, Response):
            self._received[source.transport, "response"].inc()
            self._receive(message, source)
            return
        self._received[source.transport, "request"].inc()
        if len(data) > self._max_message:
            self._reply_statelessly(message, source, 513, "Message Too Large")
            return
        if message.method == "INVITE" and self._overload is not None and self._shedding(message, source):
            return
        rejection = validate_request(message, self._policy)
        if rejection is not None:
            if message.method != "ACK":
                self._send_stateless(message, rejection, source)
            return
        if self._stopping and message.method not in ("ACK", "CANCEL"):
            self._reply_statelessly(message, source, 503, "Shutting Down")
            return
        if self._layer.server_count >= self._max_server_transactions \
                and message.method not in ("ACK", "CANCEL") and not self._layer.matches_server(message):
            # A cap on live server transactions (memory under a request flood): new requests get
            # 503 with Retry-After (RFC 3261 §21.5.4) statelessly; retransmissions still reach
            # theirs, and a CANCEL still ends a call being set up (it frees what it holds).
            self._overloaded("server_transactions", message, source)
            return
        self._receive(message, source, digest)

    def _overloaded(self, resource: str, request: Request, source: Address,
                    transaction: ServerTransaction | None = None) -> None:
        self.metrics.overload_refusals.labels(resource).inc()
        self._unavailable(request, source, OVERLOAD_RETRY_AFTER, transaction)

    def _shedding(self, request: Request, source: Address) -> bool:
        """Graceful overload (RFC 7339 §3): is this INVITE a new call to shed (then answered)?

        Asked before validation, routing, Redis or dialplans cost anything: refusing must stay
        far cheaper than serving (validation alone is a third of a refusal's cost). Under
        overload a malformed new INVITE gets the 503 rather than its 4xx, an answer just as
        valid (RFC 3261 §21.5.4). A retransmission of an admitted INVITE still goes through."""
        overload = self._overload
        assert overload is not None
        try:
            if request.to.tag is not None:
                return False  # in-dialog: never shed
        except SipParseError:
            return False  # validation answers it
        reason = overload.check(self._now())
        if reason is None or self._layer.matches_server(request):
            return False
        self._shed(request, source, reason)
        return True

    def _shed(self, request: Request, source: Address, reason: ShedReason) -> None:
        """A new INVITE refused by the overload gate: 503, or silence over UDP with ``action: drop``
        (its retransmissions meet the same gate; over TCP/TLS nothing would come until Timer B)."""
        overload = self._overload
        assert overload is not None
        overload.shed(reason)
        if overload.settings.action == "reject" or source.reliable:
            self._unavailable(request, source, overload.settings.retry_after)

    def _unavailable(self, request: Request, source: Address, retry_after: int,
                     transaction: ServerTransaction | None = None) -> None:
        """503 with Retry-After (RFC 3261 §21.5.4, §20.33): statelessly without a transaction."""
        answer = Response(503, "Service Unavailable")
        answer.headers.add("Retry-After", str(retry_after))
        if transaction is None:
            self._send_stateless(request, answer, source)
        else:
            self._send_response(transaction, answer)

    def _receive(self, message: Request | Response, source: Address, datagram: bytes | None = None) -> None:
        """Into the transaction layer; what it drops (strays, unmatched input) is counted here.

        ``datagram``: the digest of the request's datagram, remembered with the server
        transaction it creates so that retransmissions skip parsing (see ``_message_received``)."""
        counters = self._layer.counters
        strays, errors = counters.stray_responses, counters.protocol_errors
        events = self._layer.receive(message, source, self._now())
        if datagram is not None:
            for event in events:
                if isinstance(event, RequestReceived | CancelReceived) and event.request is message:
                    self._by_datagram[datagram] = event.transaction
                    self._datagram_of[id(event.transaction)] = datagram
        self._handle_events(events)
        if counters.stray_responses != strays:
            self.metrics.dropped(DropReason.STRAY_RESPONSE)
        elif counters.protocol_errors != errors:
            self.metrics.dropped(DropReason.TRANSACTION_MISMATCH)
        self._after_layer_call()

    def _retransmitted(self, transaction: ServerTransaction) -> None:
        """A datagram byte-identical to the one that created ``transaction`` (see above)."""
        counters = self._layer.counters
        errors = counters.protocol_errors
        self._handle_events(self._layer.receive_retransmission(transaction, self._now()))
        if counters.protocol_errors != errors:
            self.metrics.dropped(DropReason.TRANSACTION_MISMATCH)
        self._after_layer_call()

    def framing_failed(self, error: FramingError, source: Address) -> bytes | None:
        """A TCP stream lost its framing: answer the request whose head we have, if we can."""
        try:
            return self._framing_answer(error, source)
        except Exception:
            log.exception("internal error answering a framing error from %s", source.hostport())
            return None

    def _framing_answer(self, error: FramingError, source: Address) -> bytes | None:
        message: Request | Response
        try:
            message = parse_message(error.head + b"\r\n\r\n")
        except AnswerableParseError as exc:
            message = exc.request
        except SipParseError:
            return None
        if not isinstance(message, Request) or message.method == "ACK":
            return None
        try:
            stamp_received(message, source)
            answer = Response(error.status, error.reason)
            data = self._complete(message, answer, self._stateless_tag(message)).to_bytes()
        except SipParseError:
            return None
        self.metrics.stateless_responses.labels(str(error.status)).inc()
        return data

    # -- stateless answers ---------------------------------------------------------------------------
    def _parse_failed(self, exc: SipParseError, data: bytes, source: Address) -> None:
        if not isinstance(exc, AnswerableParseError):
            reason = DropReason.INVALID_RESPONSE if data.startswith(b"SIP/") else DropReason.UNPARSEABLE
            self.metrics.dropped(reason)
            log.debug("dropped %s from %s: %s %s", reason, source.hostport(), exc.status, exc.reason)
            return
        request = exc.request
        self._received[source.transport, "request"].inc()
        if request.method == "ACK":
            self.metrics.dropped(DropReason.UNPARSEABLE)  # an ACK is never answered (RFC 3261 §17)
            return
        self._reply_statelessly(request, source, exc.status, exc.reason)

    def _reply_statelessly(self, request: Request, source: Address, status: int, reason: str) -> None:
        self._send_stateless(request, Response(status, reason), source)

    def _send_stateless(self, request: Request, answer: Response, source: Address) -> None:
        """RFC 3261 §8.2.7 stateless UAS: Via stamped per RFC 3581, sent per §18.2.2."""
        try:
            stamp_received(request, source)
            destination = response_destination(_top_via(request), source)
            response = self._complete(request, answer, self._stateless_tag(request))
        except SipParseError as exc:
            self.metrics.dropped(DropReason.UNPARSEABLE)
            log.debug("cannot answer %s from %s: %s", request.method, source.hostport(), exc.reason)
            return
        self.metrics.stateless_responses.labels(str(response.status)).inc()
        self._transports.send(response.to_bytes(), destination)

    @staticmethod
    def _complete(request: Request, answer: Response, to_tag: str) -> Response:
        """``answer`` rebuilt on ``request`` as it is now (stamped Vias) with ``to_tag`` when To has
        none (RFC 3261 §8.2.6.2), keeping the answer's own extra headers (Allow, Unsupported ...)."""
        response = make_response(request, answer.status, answer.reason, to_tag=to_tag)
        for name, value in answer.headers:
            if header_key(name) not in _COPIED_FROM_REQUEST:
                response.headers.add(name, value)
        response.body = answer.body
        return response

    def _stateless_tag(self, request: Request) -> str:
        """A To tag that is the same for retransmissions of one request (RFC 3261 §8.2.7).

        Built from the raw header text, which exists even when a field does not parse."""
        headers = request.headers
        key = "|".join(headers.get(name) or "" for name in ("Via", "Call-ID", "From", "CSeq"))
        digest = hashlib.blake2s(key.encode("utf-8", "surrogateescape"), digest_size=8, key=self._tag_secret)
        return digest.hexdigest()

    # -- transaction layer side ------------------------------------------------------------------------
    def _now(self) -> float:
        loop = self._loop
        assert loop is not None, "Gateway.start() was not called"
        return loop.time()

    def _handle_events(self, events: list[TransactionEvent]) -> None:
        for event in events:
            if isinstance(event, RequestReceived):
                self._dispatch(event.transaction, event.request, event.transaction.source)
            elif isinstance(event, CancelReceived):
                self._cancel(event)
            elif isinstance(event, ResponseReceived):
                self._client_response(event.transaction, event.response)
            elif isinstance(event, AckReceived):
                if self._ack_handler is not None:
                    self._ack_handler(event.request, event.source)
            elif isinstance(event.transaction, ClientTransaction):
                self._client_ended(event)
            elif isinstance(event, TimeoutEvent | TransportErrorEvent | TransactionTerminated):
                datagram = self._datagram_of.pop(id(event.transaction), None)
                if datagram is not None and self._by_datagram.get(datagram) is event.transaction:
                    del self._by_datagram[datagram]
                pending = self._pending.pop(id(event.transaction.request), None)
                if pending is not None:
                    if pending.task is not None:
                        pending.task.cancel()
                    self._check_drained()

    def _dispatch(self, transaction: ServerTransaction, request: Request, source: Address) -> None:
        # Validation answered methods without a handler (501 with Allow, RFC 3261 §8.2.1).
        handler = self._handlers[request.method]
        handoff = self._transports.handoff
        if handoff is not None and request.method == "BYE":
            handoff.release(request.call_id)  # the dialog ends: its Call-ID need not route to us
        counter = self._dialog_counter
        if counter is not None and request.method == "INVITE" and request.to.tag is None \
                and counter() >= self._max_dialogs:
            self._overloaded("dialogs", request, source, transaction)  # a new call: no room
            return
        try:
            result = handler(request, source)
        except Exception:
            log.exception("%s handler failed on %s", request.method, request.call_id)
            self._send_response(transaction, Response(500, "Server Internal Error"))
            return
        if result is None:
            self._pending[id(request)] = _Pending(transaction, new_tag())
        elif isinstance(result, Response):
            self._send_response(transaction, result)
        else:
            pending = _Pending(transaction, new_tag())
            self._pending[id(request)] = pending
            task = asyncio.ensure_future(self._await_handler(result, request, pending))
            pending.task = task
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    async def _await_handler(
        self, result: Awaitable[Response | None], request: Request, pending: _Pending
    ) -> None:
        try:
            response = await result
        except asyncio.CancelledError:
            return  # CANCEL, timeout or shutdown: whoever cancelled answers
        except Exception:
            log.exception("%s handler failed on %s", request.method, request.call_id)
            response = Response(500, "Server Internal Error")
        pending.task = None
        if response is not None and self._pending.get(id(request)) is pending:
            self._send_response(pending.transaction, response, pending.to_tag)
            self._after_layer_call()

    def _cancel(self, event: CancelReceived) -> None:
        """RFC 3261 §9.2: 481 without a match; else 200, and 487 for a request not yet answered."""
        target = event.target
        if target is None:
            self._send_response(event.transaction, Response(481, "Call/Transaction Does Not Exist"))
            return
        self._send_response(event.transaction, Response(200, "OK"))
        pending = self._pending.get(id(target.request))
        if pending is not None:
            if pending.task is not None:
                pending.task.cancel()
            self._send_response(target, Response(487, "Request Terminated"), pending.to_tag)
            if self._cancel_handler is not None:
                self._cancel_handler(target.request, event.request)

    def _send_response(
        self, transaction: ServerTransaction, response: Response, to_tag: str | None = None
    ) -> None:
        """Through the layer; a response without Via/To tag is completed from the request."""
        request = transaction.request
        if response.status > 100 and not _has_to_tag(response):
            response = self._complete(request, response, to_tag or new_tag())
        if response.status >= 200 and self._pending.pop(id(request), None) is not None:
            self._check_drained()
        self._layer.send_response(transaction, response, self._now())

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._drained is not None and not self._pending and not self._tasks:
            self._drained.set()

    def _after_layer_call(self) -> None:
        """Send what the layer produced and keep the one timer handle on its next deadline."""
        send = self._transports.send
        for transmit in self._layer.take_outgoing():
            send(transmit.data, transmit.destination)
        deadline = self._layer.next_deadline()
        if deadline is None:
            return
        when = deadline + TIMER_SLACK
        if self._timer_at is not None and self._timer_at <= when:
            return  # a handle firing early just finds nothing due and re-arms
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop
        assert loop is not None
        self._timer = loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._handle_events(self._layer.handle_timers(self._now()))
        self._after_layer_call()

    def _unreachable(self, destination: Address) -> None:
        self._handle_events(self._layer.transport_error(destination, self._now()))
        self._after_layer_call()

    # -- UAC side: requests we originate (call control, outbound REGISTER, OPTIONS qualify) ----------
    @property
    def t1(self) -> float:
        """RFC 3261 T1 (``sip.timers.t1``): the unit of the transaction timers, and of the
        64*T1 a transaction user waits for the ACK of its 2xx (§13.3.1.4)."""
        return self.sip.timers.t1

    def local_address(
        self, transport: str, destination: Address | None = None, *, shared: bool = False
    ) -> Address:
        """Our address for Via sent-by and Contact on ``transport``: the first listener of that
        transport (of ``destination``'s address family when given), with ``sip.advertised_host``
        replacing the bound host when configured. A worker names the shared UDP port, and its own
        TCP/TLS listener (see :mod:`gateway.transport.manager`) unless ``shared``: the port all
        workers share, for a Contact that new requests should reach (the one registered with a
        carrier)."""
        chosen: Address | None = None
        want_v6 = destination is not None and ":" in destination.host
        own = self._transports.own
        listeners = own if own and not shared and transport != "udp" else self._transports.locals
        for local in listeners:
            if local.transport != transport:
                continue
            if destination is None or (":" in local.host) == want_v6:
                chosen = local
                break
            chosen = chosen or local
        if chosen is None:
            raise ValueError(f"no {transport} listener")
        advertised = self.sip.advertised_host
        return replace(chosen, host=advertised) if advertised else chosen

    def our_via(self, destination: Address, *, branch: bool = True) -> str:
        """Our Via value toward ``destination``: sent-by, ``rport`` (RFC 3581) and, unless the
        transaction layer will draw it, a fresh branch (§8.1.1.7)."""
        local = self.local_address(destination.transport, destination)
        via = f"SIP/2.0/{destination.transport.upper()} {local.hostport()}"
        return f"{via};branch={self._layer.new_branch()};rport" if branch else f"{via};rport"

    def send_request(
        self, request: Request, destination: Address, on_response: ResponseCallback | None = None
    ) -> ClientRequest:
        """Send ``request`` (not ACK) to ``destination`` in a new client transaction.

        Without a Via the gateway adds ours (sent-by :meth:`local_address`, ``rport`` per RFC
        3581; the layer draws the branch); a TU-built top Via is kept (its branch filled in when
        missing). Every response (provisional and final, and RFC 6026 2xx retransmissions of an
        INVITE not yet ACKed through :meth:`send_ack`) goes to ``on_response``; silence and
        transport failures arrive there as a synthesized 408 / 503 (RFC 3261 §8.1.3.1).
        """
        if "Via" not in request.headers:
            request.headers.prepend("Via", self.our_via(destination, branch=False))
        handoff = self._transports.handoff
        claimed = False
        if handoff is not None and request.method in ("INVITE", "BYE") and destination.transport == "udp":
            # Worker mode: the peer's UDP requests inside a dialog we create must find us
            # (gateway.transport.handoff); a BYE ends the dialog.
            if request.method == "BYE":
                handoff.release(request.call_id)
            elif request.to.tag is None:
                handoff.claim(request.call_id)
                claimed = True
        transaction = self._layer.send_request(request, destination, self._now())
        client = ClientRequest(request, destination, transaction, on_response, claimed=claimed)
        self._clients[id(transaction)] = client
        self._after_layer_call()
        return client

    async def request(self, request: Request, destination: Address) -> Response:
        """:meth:`send_request` and wait for the final response (real or synthesized)."""
        return await self.send_request(request, destination).wait()

    def cancel(self, client: ClientRequest, headers: Sequence[tuple[str, str]] = ()) -> None:
        """CANCEL a pending INVITE (RFC 3261 §9.1): at once in Proceeding, after the first
        provisional in Calling, not at all after a final response. Its 487 (or the 2xx that
        won the race) arrives through the INVITE's ``on_response``. ``headers`` (name, value)
        go on the CANCEL: a Reason saying why (RFC 3326 §2)."""
        self._handle_events(self._layer.cancel(client.transaction, self._now(), headers))
        self._after_layer_call()

    def send_ack(self, client: ClientRequest, ack: Request) -> None:
        """Send the ACK for a 2xx to the INVITE of ``client`` (§13.2.2.4); the layer re-sends it
        for every retransmission of that 2xx (RFC 6026 §7.2) while the transaction lives."""
        if "Via" not in ack.headers:
            ack.headers.prepend("Via", self.our_via(client.destination))
        self._layer.send_ack(client.transaction, ack, client.destination)
        self._after_layer_call()

    def send_stateless(self, message: Request | Response, destination: Address) -> None:
        """Send ``message`` outside any transaction (an ACK for a stray 2xx, a 2xx re-sent by a UAS
        core). A request without Via gets ours with a fresh branch."""
        if isinstance(message, Request) and "Via" not in message.headers:
            message.headers.prepend("Via", self.our_via(destination))
        self._layer.send_stateless(message, destination)
        self._after_layer_call()

    @property
    def accepted_bodies(self) -> frozenset[str] | None:
        """The body types requests may carry now (None: any); see :meth:`accept_bodies`."""
        return self._policy.content_types

    def accept_bodies(self, content_types: frozenset[str] | None) -> None:
        """Body types requests may carry (others get 415, RFC 3261 §8.2.3); None accepts any:
        a B2BUA passing bodies end to end (INFO with DTMF, multipart) does not interpret them."""
        self._policy = replace(self._policy, content_types=content_types)

    def set_dialog_hooks(
        self, *, on_ack: AckHandler | None = None, on_cancel: CancelHandler | None = None
    ) -> None:
        """Where ACKs for 2xx go (call control owns dialogs) and who hears of a CANCELled INVITE
        (answered 487 by the gateway; the handler tears down what it started)."""
        self._ack_handler = on_ack
        self._cancel_handler = on_cancel

    @property
    def transaction_count(self) -> int:
        """Live transactions in the layer (client and server): for status and leak checks."""
        return self._layer.transaction_count

    @property
    def transaction_counters(self) -> Counters:
        """The transaction layer's counters (retransmissions, timeouts ...): for metrics."""
        return self._layer.counters

    def _client_response(self, transaction: ClientTransaction, response: Response) -> None:
        client = self._clients.get(id(transaction))
        if client is None:
            return  # the CANCEL's own transaction (its 200 means nothing to the TU) or a stray
        if response.status >= 200 and client.final is None:
            client.final = response
            if client.claimed and response.status >= 300:  # no dialog was made (RFC 3261 §12.1)
                handoff = self._transports.handoff
                if handoff is not None:
                    handoff.release(client.request.call_id)
            if client.waiter is not None and not client.waiter.done():
                client.waiter.set_result(response)
        if client.on_response is not None:
            try:
                client.on_response(response)
            except Exception:
                log.exception("response callback failed for %s %s", client.request.method, response.status)

    def _client_ended(self, event: TimeoutEvent | TransportErrorEvent | TransactionTerminated) -> None:
        """Timeout / transport error without a final response: the TU gets a synthesized one."""
        transaction = event.transaction
        assert isinstance(transaction, ClientTransaction)
        client = self._clients.get(id(transaction))
        if client is None:
            return
        if isinstance(event, TransactionTerminated):
            del self._clients[id(transaction)]
            if client.final is not None:
                client.on_response = None  # nothing more can come; drop the TU's closure (cycles)
                return
        if client.final is not None:
            return
        if isinstance(event, TransportErrorEvent):
            status = 503
        elif isinstance(event, TimeoutEvent) and event.timer is TimerName.CANCEL_GUARD:
            status = 487
        else:
            status = 408
        client.synthesized = True
        try:
            synthesized = make_response(client.request, status)
        except SipParseError:
            synthesized = Response(status)
        self._client_response(transaction, synthesized)

    # -- built-in handlers ---------------------------------------------------------------------------
    def _refresh_allow(self) -> None:
        """Allow and the validation policy follow the handlers: served methods plus ACK and
        CANCEL, which the gateway itself handles (RFC 3261 §8.2.1: 501 lists them in Allow)."""
        methods = frozenset(self._handlers) | {"ACK", "CANCEL"}
        self._policy = replace(self._policy, methods=methods)
        self._allow = ", ".join(sorted(methods))

    def _answer_options(self, request: Request, source: Address) -> Response:
        """RFC 3261 §11.2: what we support, in Allow, Accept and Supported."""
        response = make_response(request, 200, "OK", to_tag=new_tag())
        response.headers.add("Allow", self._allow)
        response.headers.add("Accept", ACCEPT)
        response.headers.add("Supported", ", ".join(self.supported))
        return response


# Headers make_response copies from the request (RFC 3261 §8.2.6.2); _complete keeps the others.
_COPIED_FROM_REQUEST = frozenset({"via", "from", "to", "call-id", "cseq", "timestamp", "content-length"})
