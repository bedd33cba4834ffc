"""The state of one switchboard call: an enum and one transition table, like the call core's
(:mod:`gateway.call.state`).

``MENU`` (answered, the IVR plays and collects keys) → ``HUNTING`` (members are rung) →
``CONNECTING`` (a member answered; the caller is re-INVITEd with its session) → ``CONNECTED``
(media end to end) ⇄ ``TRANSFERRING`` (the connected party REFERred the caller, RFC 3515).
``ENDING``: a goodbye prompt plays before our BYE. Every state may end (``ENDED``). An input
without a row is a bug in the switchboard (:class:`SwitchboardStateError`).
"""

from __future__ import annotations

from enum import Enum


class SbState(Enum):
    MENU = "menu"
    HUNTING = "hunting"
    CONNECTING = "connecting"  # the callee answered; the caller's re-INVITE is under way
    CONNECTED = "connected"
    TRANSFERRING = "transferring"  # the connected party REFERred the caller on (blind transfer)
    ENDING = "ending"  # a goodbye prompt plays before BYE
    ENDED = "ended"


class SbInput(Enum):
    CONNECT = "a menu choice or a service number's hunt group: members are rung"
    BACK_TO_MENU = "a choice that reaches nobody, or nobody answered and the plan repeats the menu"
    GOODBYE = "the menu hangs up, or nobody answered and the plan says hang up: a prompt, then BYE"
    ANSWERED = "a member answered (a hunt's, or a transfer target's)"
    REINVITED = "the caller took the member's session: media end to end"
    REFER = "the connected party transfers the caller (REFER)"
    TRANSFER_FAILED = "the transfer target did not answer: the caller stays with the transferor"
    END = "BYE, CANCEL, a timer, a failure or shutdown ended the call"


class SwitchboardStateError(Exception):
    """The switchboard fed an input the current state has no row for."""


_S = SbState
_I = SbInput
SB_TABLE: dict[tuple[SbState, SbInput], SbState] = {
    (_S.MENU, _I.CONNECT): _S.HUNTING,
    (_S.MENU, _I.BACK_TO_MENU): _S.MENU,
    (_S.MENU, _I.GOODBYE): _S.ENDING,
    (_S.HUNTING, _I.CONNECT): _S.HUNTING,  # nobody answered: the plan's next choice (operator)
    (_S.HUNTING, _I.BACK_TO_MENU): _S.MENU,
    (_S.HUNTING, _I.GOODBYE): _S.ENDING,
    (_S.HUNTING, _I.ANSWERED): _S.CONNECTING,
    (_S.CONNECTING, _I.REINVITED): _S.CONNECTED,
    (_S.CONNECTED, _I.REFER): _S.TRANSFERRING,
    (_S.TRANSFERRING, _I.ANSWERED): _S.CONNECTING,
    (_S.TRANSFERRING, _I.TRANSFER_FAILED): _S.CONNECTED,
    **{(state, _I.END): _S.ENDED for state in SbState if state is not _S.ENDED},
}


def transition(state: SbState, event: SbInput) -> SbState:
    """The next state, or SwitchboardStateError."""
    try:
        return SB_TABLE[state, event]
    except KeyError:
        raise SwitchboardStateError(f"switchboard {state.value}: no transition for {event.name}") from None
