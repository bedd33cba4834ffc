"""What the transaction layer hands out: bytes to send and events for the Transaction User (TU).

Two streams, kept apart on purpose (the aioquic pattern):

* :class:`Transmit` — bytes for the transport, drained with
  :meth:`~gateway.sip.transactions.TransactionLayer.take_outgoing` after *any* call into the
  layer (receive, send_request, send_response, handle_timers, transport_error, cancel).
* :data:`TransactionEvent` — returned by ``receive``, ``handle_timers`` and
  ``transport_error``; these are for the TU (UA core, B2BUA, registrar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.sip.address import Address
from gateway.sip.timers import TimerName

if TYPE_CHECKING:
    from gateway.sip.message import Request, Response
    from gateway.sip.transactions.machines import ClientTransaction, ServerTransaction


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
