"""The state of one call (both legs together): an enum and one transition table.

``ROUTING`` (INVITE received: routing, limits) → ``CALLING`` (outbound INVITE sent) →
``EARLY`` (a provisional with a To tag relayed) → ``CONFIRMED`` (2xx relayed) → ``ENDED``.
``CANCELLING``: the caller cancelled, or the no-answer timer fired, and the outbound INVITE
waits for its final response (a 2xx that wins the race is ACKed and BYEd, RFC 3261 §15).
An input without a row is a bug in call control (:class:`CallStateError`).
"""

from __future__ import annotations

from enum import Enum


class CallState(Enum):
    ROUTING = "routing"
    CALLING = "calling"
    EARLY = "early"
    CONFIRMED = "confirmed"
    CANCELLING = "cancelling"
    ENDED = "ended"


class CallInput(Enum):
    DIALLED = "an outbound INVITE was sent (first destination or failover)"
    PROVISIONAL = "a provisional response with a To tag was relayed"
    ANSWERED = "a 2xx was relayed to the caller"
    CANCEL = "the caller cancelled, or the no-answer timer fired"
    FAILED = "the call ends before answer (refusal, final failure, 487 after CANCEL)"
    HANGUP = "BYE from either side, a timer or shutdown ended an answered call"


class CallStateError(Exception):
    """Call control fed an input the current state has no row for."""


_S = CallState
_I = CallInput
CALL_TABLE: dict[tuple[CallState, CallInput], CallState] = {
    (_S.ROUTING, _I.DIALLED): _S.CALLING,
    (_S.ROUTING, _I.CANCEL): _S.ENDED,
    (_S.ROUTING, _I.FAILED): _S.ENDED,
    (_S.CALLING, _I.DIALLED): _S.CALLING,
    (_S.CALLING, _I.PROVISIONAL): _S.EARLY,
    (_S.CALLING, _I.ANSWERED): _S.CONFIRMED,
    (_S.CALLING, _I.CANCEL): _S.CANCELLING,
    (_S.CALLING, _I.FAILED): _S.ENDED,
    (_S.EARLY, _I.DIALLED): _S.CALLING,  # failover after an early dialog ended (RFC 3261 §13.2.2.4)
    (_S.EARLY, _I.PROVISIONAL): _S.EARLY,
    (_S.EARLY, _I.ANSWERED): _S.CONFIRMED,
    (_S.EARLY, _I.CANCEL): _S.CANCELLING,
    (_S.EARLY, _I.FAILED): _S.ENDED,
    (_S.CANCELLING, _I.PROVISIONAL): _S.CANCELLING,
    (_S.CANCELLING, _I.CANCEL): _S.CANCELLING,
    (_S.CANCELLING, _I.FAILED): _S.ENDED,
    (_S.CONFIRMED, _I.HANGUP): _S.ENDED,
}


def transition(state: CallState, event: CallInput) -> CallState:
    """The next state, or CallStateError."""
    try:
        return CALL_TABLE[state, event]
    except KeyError:
        raise CallStateError(f"call {state.value}: no transition for {event.name}") from None
