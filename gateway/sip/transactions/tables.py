"""The four RFC 3261 §17 transaction state machines as data: states, triggers, actions and one
transition table per machine (RFC 3261 Figures 5–8 with the RFC 6026 changes).

A table maps ``(state, trigger)`` to ``(next state, actions)``; a trigger with no row for the
current state is a protocol error. :mod:`.machines` walks these tables; nothing here acts.
"""

from __future__ import annotations

from enum import Enum

from gateway.sip.timers import TimerName


class TransactionState(Enum):
    """States of Figures 5–8 plus RFC 6026 Accepted."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class TransactionKind(Enum):
    """Which of the four machines a transaction runs."""

    INVITE_CLIENT = "INVITE client"
    NON_INVITE_CLIENT = "non-INVITE client"
    INVITE_SERVER = "INVITE server"
    NON_INVITE_SERVER = "non-INVITE server"


class Input(Enum):
    """Non-timer triggers."""

    START = "start"  # the transaction was created
    PROVISIONAL = "1xx"  # response received (client) or passed down by the TU (server)
    SUCCESS = "2xx"
    FAILURE = "300-699"
    REQUEST = "request retransmission"  # server: the request that created it, again
    ACK = "ACK"  # INVITE server: ACK matching the transaction
    CANCEL = "TU cancels"  # INVITE client: the TU asks for a CANCEL (§9.1)
    TRANSPORT_ERROR = "transport error"


Trigger = Input | TimerName


class Action(Enum):
    """What a transition does, in table order."""

    SEND_REQUEST = "send request"
    RETRANSMIT_A = "retransmit, Timer A doubled"
    RETRANSMIT_E_BACKOFF = "retransmit, Timer E = min(2E, T2)"
    RETRANSMIT_E_T2 = "retransmit, Timer E = T2"
    ARM_A = "arm A (unreliable)"
    ARM_B = "arm B"
    ARM_D = "arm D"
    ARM_E = "arm E (unreliable)"
    ARM_F = "arm F"
    ARM_K = "arm K"
    ARM_M = "arm M"
    PASS_RESPONSE = "response to TU"
    PASS_2XX = "re-send the TU's ACK for a 2xx it already acknowledged, else 2xx to TU"
    SEND_ACK = "send ACK (built once, re-sent for retransmitted finals)"
    DEFER_CANCEL = "remember CANCEL until a provisional arrives"
    SEND_CANCEL = "send CANCEL, arm CANCEL_GUARD"
    SEND_DEFERRED_CANCEL = "send a remembered CANCEL"
    ARM_TRYING = "arm TRYING"
    SEND_TRYING = "send 100 Trying"
    STOP_TRYING = "disarm TRYING"
    SEND_RESPONSE = "send the TU's response"
    RESEND_RESPONSE = "re-send the last response"
    RESEND_OR_TRYING = "re-send the last provisional, or 100 Trying"
    RETRANSMIT_G = "re-send final, Timer G = min(2G, T2)"
    ARM_G = "arm G (unreliable)"
    ARM_H = "arm H"
    ARM_I = "arm I"
    ARM_J = "arm J"
    ARM_L = "arm L"
    ARM_2XX = "arm RETRANSMIT_2XX"
    RETRANSMIT_2XX = "re-send 2xx, interval = min(2i, T2)"
    PASS_ACK = "first ACK to TU, stop 2xx retransmissions; later ones absorbed"
    REPORT_UNACKED = "timeout to TU if no ACK came for the 2xx"
    ABSORB = "count an absorbed retransmission"
    REPORT_TIMEOUT = "timeout to TU"
    REPORT_TRANSPORT_ERROR = "transport error to TU"


S = TransactionState
I = Input  # noqa: E741
T = TimerName
A = Action
Row = tuple[TransactionState, tuple[Action, ...]]
Table = dict[tuple[TransactionState, Trigger], Row]

_TIMEOUT: Row = (S.TERMINATED, (A.REPORT_TIMEOUT,))
_TRANSPORT_ERROR: Row = (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,))
_DONE: Row = (S.TERMINATED, ())

INVITE_CLIENT_TABLE: Table = {
    # RFC 3261 Figure 5, RFC 6026 Figure 3
    (S.CALLING, I.START): (S.CALLING, (A.SEND_REQUEST, A.ARM_A, A.ARM_B)),
    (S.CALLING, T.A): (S.CALLING, (A.RETRANSMIT_A,)),
    (S.CALLING, T.B): _TIMEOUT,
    (S.CALLING, I.TRANSPORT_ERROR): _TRANSPORT_ERROR,
    (S.CALLING, I.PROVISIONAL): (S.PROCEEDING, (A.PASS_RESPONSE, A.SEND_DEFERRED_CANCEL)),
    (S.CALLING, I.SUCCESS): (S.ACCEPTED, (A.PASS_RESPONSE, A.ARM_M)),
    (S.CALLING, I.FAILURE): (S.COMPLETED, (A.SEND_ACK, A.PASS_RESPONSE, A.ARM_D)),
    (S.CALLING, I.CANCEL): (S.CALLING, (A.DEFER_CANCEL,)),  # §9.1: wait for a provisional
    (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, I.SUCCESS): (S.ACCEPTED, (A.PASS_RESPONSE, A.ARM_M)),
    (S.PROCEEDING, I.FAILURE): (S.COMPLETED, (A.SEND_ACK, A.PASS_RESPONSE, A.ARM_D)),
    (S.PROCEEDING, I.CANCEL): (S.PROCEEDING, (A.SEND_CANCEL,)),
    (S.PROCEEDING, T.CANCEL_GUARD): _TIMEOUT,
    (S.COMPLETED, I.FAILURE): (S.COMPLETED, (A.ABSORB, A.SEND_ACK)),
    (S.COMPLETED, I.TRANSPORT_ERROR): _TRANSPORT_ERROR,
    (S.COMPLETED, I.CANCEL): (S.COMPLETED, ()),  # too late: the final response won the race
    (S.COMPLETED, T.D): _DONE,
    # RFC 6026 §7.2: every 2xx, retransmitted or from another fork, is the TU's; a retransmission
    # of one the TU acknowledged through the layer is answered with that ACK again (§13.2.2.4)
    (S.ACCEPTED, I.SUCCESS): (S.ACCEPTED, (A.PASS_2XX,)),
    (S.ACCEPTED, I.CANCEL): (S.ACCEPTED, ()),
    (S.ACCEPTED, T.M): _DONE,
}

NON_INVITE_CLIENT_TABLE: Table = {
    # RFC 3261 Figure 6
    (S.TRYING, I.START): (S.TRYING, (A.SEND_REQUEST, A.ARM_E, A.ARM_F)),
    (S.TRYING, T.E): (S.TRYING, (A.RETRANSMIT_E_BACKOFF,)),
    (S.TRYING, T.F): _TIMEOUT,
    (S.TRYING, I.TRANSPORT_ERROR): _TRANSPORT_ERROR,
    (S.TRYING, I.PROVISIONAL): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.TRYING, I.SUCCESS): (S.COMPLETED, (A.PASS_RESPONSE, A.ARM_K)),
    (S.TRYING, I.FAILURE): (S.COMPLETED, (A.PASS_RESPONSE, A.ARM_K)),
    (S.PROCEEDING, T.E): (S.PROCEEDING, (A.RETRANSMIT_E_T2,)),
    (S.PROCEEDING, T.F): _TIMEOUT,
    (S.PROCEEDING, I.TRANSPORT_ERROR): _TRANSPORT_ERROR,
    (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (A.PASS_RESPONSE,)),
    (S.PROCEEDING, I.SUCCESS): (S.COMPLETED, (A.PASS_RESPONSE, A.ARM_K)),
    (S.PROCEEDING, I.FAILURE): (S.COMPLETED, (A.PASS_RESPONSE, A.ARM_K)),
    # §17.1.2.2: Completed buffers response retransmissions
    (S.COMPLETED, I.PROVISIONAL): (S.COMPLETED, (A.ABSORB,)),
    (S.COMPLETED, I.SUCCESS): (S.COMPLETED, (A.ABSORB,)),
    (S.COMPLETED, I.FAILURE): (S.COMPLETED, (A.ABSORB,)),
    (S.COMPLETED, T.K): _DONE,
}

INVITE_SERVER_TABLE: Table = {
    # RFC 3261 Figure 7, RFC 6026 Figure 5
    (S.PROCEEDING, I.START): (S.PROCEEDING, (A.ARM_TRYING,)),
    (S.PROCEEDING, T.TRYING): (S.PROCEEDING, (A.SEND_TRYING,)),
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.ABSORB, A.RESEND_OR_TRYING)),
    (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (A.STOP_TRYING, A.SEND_RESPONSE)),
    (S.PROCEEDING, I.SUCCESS): (S.ACCEPTED, (A.SEND_RESPONSE, A.ARM_L, A.ARM_2XX)),
    (S.PROCEEDING, I.FAILURE): (S.COMPLETED, (A.SEND_RESPONSE, A.ARM_G, A.ARM_H)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): _TRANSPORT_ERROR,
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.ABSORB, A.RESEND_RESPONSE)),
    (S.COMPLETED, T.G): (S.COMPLETED, (A.RETRANSMIT_G,)),
    (S.COMPLETED, T.H): _TIMEOUT,
    (S.COMPLETED, I.ACK): (S.CONFIRMED, (A.ARM_I,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): _TRANSPORT_ERROR,
    (S.CONFIRMED, I.ACK): (S.CONFIRMED, (A.ABSORB,)),
    (S.CONFIRMED, I.REQUEST): (S.CONFIRMED, (A.ABSORB,)),
    (S.CONFIRMED, T.I): _DONE,
    (S.ACCEPTED, I.REQUEST): (S.ACCEPTED, (A.ABSORB,)),
    (S.ACCEPTED, I.ACK): (S.ACCEPTED, (A.PASS_ACK,)),
    (S.ACCEPTED, I.SUCCESS): (S.ACCEPTED, (A.SEND_RESPONSE,)),  # a 2xx re-sent by the TU itself
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, (A.REPORT_TRANSPORT_ERROR,)),
    # §13.3.1.4 on the UAS core's behalf: 2xx re-sent (any transport: it is end to end) until ACK
    (S.ACCEPTED, T.RETRANSMIT_2XX): (S.ACCEPTED, (A.RETRANSMIT_2XX,)),
    (S.ACCEPTED, T.L): (S.TERMINATED, (A.REPORT_UNACKED,)),
}

NON_INVITE_SERVER_TABLE: Table = {
    # RFC 3261 Figure 8
    (S.TRYING, I.START): (S.TRYING, ()),
    (S.TRYING, I.REQUEST): (S.TRYING, (A.ABSORB,)),
    (S.TRYING, I.PROVISIONAL): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.TRYING, I.SUCCESS): (S.COMPLETED, (A.SEND_RESPONSE, A.ARM_J)),
    (S.TRYING, I.FAILURE): (S.COMPLETED, (A.SEND_RESPONSE, A.ARM_J)),
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (A.ABSORB, A.RESEND_RESPONSE)),
    (S.PROCEEDING, I.PROVISIONAL): (S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.SUCCESS): (S.COMPLETED, (A.SEND_RESPONSE, A.ARM_J)),
    (S.PROCEEDING, I.FAILURE): (S.COMPLETED, (A.SEND_RESPONSE, A.ARM_J)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): _TRANSPORT_ERROR,
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (A.ABSORB, A.RESEND_RESPONSE)),
    (S.COMPLETED, I.SUCCESS): (S.COMPLETED, ()),  # §17.2.2: further finals are discarded
    (S.COMPLETED, I.FAILURE): (S.COMPLETED, ()),
    (S.COMPLETED, I.TRANSPORT_ERROR): _TRANSPORT_ERROR,
    (S.COMPLETED, T.J): _DONE,
}

TABLES: dict[TransactionKind, Table] = {
    TransactionKind.INVITE_CLIENT: INVITE_CLIENT_TABLE,
    TransactionKind.NON_INVITE_CLIENT: NON_INVITE_CLIENT_TABLE,
    TransactionKind.INVITE_SERVER: INVITE_SERVER_TABLE,
    TransactionKind.NON_INVITE_SERVER: NON_INVITE_SERVER_TABLE,
}


def classify(status: int) -> Input:
    """The trigger for a response status (1xx, 2xx, 300–699)."""
    if 100 <= status < 200:
        return Input.PROVISIONAL
    if 200 <= status < 300:
        return Input.SUCCESS
    if 300 <= status < 700:
        return Input.FAILURE
    raise ValueError(f"response status {status} is outside 100-699")
