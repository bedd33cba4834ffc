"""RFC 3261 §17 transaction layer (sans-I/O) with the RFC 6026 corrections.

Import from here; the submodules are the implementation. A transport adapter feeds
``TransactionLayer.receive(message, source, now)`` and ``handle_timers(now)`` (at
``next_deadline()``) and ``transport_error(address_or_transaction, now)``; after every call it
sends ``take_outgoing()`` and re-arms its one timer handle. The TU gets the returned events and
calls ``send_request`` / ``send_response`` / ``cancel`` / ``send_ack`` / ``send_stateless``.


* :mod:`.layer` — :class:`TransactionLayer`, the object a transport adapter drives;
* :mod:`.tables` — the four state machines as data, each one transition table;
* :mod:`.machines` — the transactions that walk those tables, :class:`Transmit` and the TU events;
* :mod:`.matching` — §17.1.3 / §17.2.3 keys, ``received``/``rport`` stamping, response routing;
* :mod:`.builders` — the ACK for non-2xx finals and CANCEL.
"""

from gateway.sip.timers import TimerConfig, TimerName
from gateway.sip.transactions.builders import build_ack, build_cancel
from gateway.sip.transactions.layer import TransactionLayer
from gateway.sip.transactions.machines import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Counters,
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimeoutEvent,
    Transaction,
    TransactionEvent,
    TransactionTerminated,
    Transmit,
    TransportErrorEvent,
)
from gateway.sip.transactions.matching import (
    MAGIC_COOKIE,
    response_destination,
    stamp_received,
)
from gateway.sip.transactions.tables import TransactionKind, TransactionState

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "CancelReceived",
    "ClientTransaction",
    "Counters",
    "ProtocolError",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "TimeoutEvent",
    "TimerConfig",
    "TimerName",
    "Transaction",
    "TransactionEvent",
    "TransactionKind",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "Transmit",
    "TransportErrorEvent",
    "build_ack",
    "build_cancel",
    "response_destination",
    "stamp_received",
]
