"""The call core's shared models: where a call goes (:class:`Destination`, :class:`Route`,
what charging records of it, :class:`ChargeSpec`), the two sides of a call, its legs, the call
itself, the observer protocol and the typed end of a call (:class:`EndCause`).

They live here, apart from :mod:`gateway.call.b2bua`, so that routing, charging, the
switchboard and the operations API can name a call without importing the core (no cycle:
``b2bua → routing → charging → model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from gateway.call.limits import Scope
from gateway.call.state import CallInput, CallState, transition
from gateway.call.timers import NamedTimers
from gateway.charging.events import CalledNumber, CallingNumber, EndReason
from gateway.charging.payer import Payer
from gateway.routing import CallClass, Direction
from gateway.sip.address import Address
from gateway.sip.dialog import Dialog
from gateway.sip.message import Request

if TYPE_CHECKING:
    from gateway.app import ClientRequest


class EndCause(Enum):
    """Why a call (or one leg of it) ended: one member per cause, carrying what charging records
    (:class:`~gateway.charging.events.EndReason`), the ITU-T Q.850 cause and text written in
    the RFC 3326 ``Reason`` header of the BYE or CANCEL the gateway sends, and the status an
    unanswered caller is told when the gateway gives up on its call (RFC 3398 §7.2.4.1 maps
    cause 19 to 480 and 41 to 503).

    ``q850`` is None only for :attr:`REJECTED`: a final failure response's Q.850 cause is
    the one RFC 3398 §8.2.6.1 gives for its SIP status (charging maps it)."""

    label: str
    end: EndReason
    q850: int | None
    text: str
    status: int

    NORMAL = ("normal", EndReason.NORMAL, 16, "Normal call clearing", 480)
    """A party hung up (BYE)."""
    OPERATOR = ("operator", EndReason.NORMAL, 16, "Normal call clearing", 480)
    """Operations hung the call up (``DELETE /api/calls/{id}``): a normal clearing, billed so."""
    CANCELLED = ("cancelled", EndReason.CANCELLED, 16, "Normal call clearing", 487)
    """The caller gave up before answer (RFC 3398 §8.2.6.1: a CANCEL is cause 16)."""
    REJECTED = ("rejected", EndReason.REJECTED, None, "Call rejected", 480)
    """A final failure response ended the attempt (busy, declined, no destination left)."""
    NO_ANSWER = ("no_answer", EndReason.NO_ANSWER, 19, "No answer from user", 480)
    """The ring time ran out (the call's, or a hunt step's)."""
    NON_SELECTED = ("non_selected", EndReason.CANCELLED, 26, "Non-selected user clearing", 487)
    """Another fork or hunt member answered first (Q.850 26, carried as is through SIP-ISUP
    interworking, RFC 3398, to a mobile member)."""
    SESSION_EXPIRED = ("session_expired", EndReason.SESSION_EXPIRED, 102, "Recovery on timer expiry", 504)
    """No session refresh in time (RFC 4028 §10)."""
    SESSION_REFRESH_FAILED = (
        "session_refresh_failed", EndReason.SESSION_EXPIRED, 102, "Recovery on timer expiry", 504,
    )
    """Our own refresh got 408 or 481 (RFC 4028 §10)."""
    MAX_DURATION = ("max_duration", EndReason.NORMAL, 102, "Maximum call duration", 504)
    """The configured maximum duration: billed as a normal call up to that point."""
    NO_ACK = ("no_ack", EndReason.FAILURE, 102, "Recovery on timer expiry", 504)
    """The caller never ACKed our 2xx (RFC 3261 §13.3.1.4)."""
    IVR_TOO_LONG = ("ivr_too_long", EndReason.FAILURE, 102, "Recovery on timer expiry", 504)
    """The caller stayed in the switchboard's menus longer than allowed."""
    MEDIA_TIMEOUT = ("media_timeout", EndReason.FAILURE, 102, "Recovery on timer expiry", 504)
    """No RTP and no key from the caller (a dead peer)."""
    FAILURE = ("failure", EndReason.FAILURE, 41, "Temporary failure", 503)
    """Anything else that went wrong in the gateway or with a peer (unusable answer, ...)."""
    SHUTDOWN = ("shutdown", EndReason.SHUTDOWN, 41, "Temporary failure", 503)
    """The gateway is shutting down."""

    def __init__(self, label: str, end: EndReason, q850: int | None, text: str, status: int) -> None:
        self.label = label
        self.end = end
        self.q850 = q850
        self.text = text
        self.status = status

    @property
    def reason_header(self) -> str:
        """The RFC 3326 Reason value (``Q.850;cause=16;text="Normal call clearing"``)."""
        return f'Q.850;cause={self.q850 if self.q850 is not None else 21};text="{self.text}"'

    @property
    def by_party(self) -> bool:
        """A party ended the call (BYE, CANCEL, an operator), not a gateway timer or failure:
        members still ringing for it are CANCELled as a caller's hang-up (cause 16)."""
        return self in (EndCause.NORMAL, EndCause.OPERATOR, EndCause.CANCELLED)


@dataclass(frozen=True, slots=True)
class ChargeSpec:
    """What the dialplan decided that charging records (see :class:`CallInfo`)."""

    originating: str
    direction: Direction
    calling: CallingNumber
    called: CalledNumber
    call_class: CallClass
    group: str | None
    terminating: str | None
    payer: Payer | None = None
    off_net_group: bool = False
    product: str | None = None
    service_number: str | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """One place to send the outbound INVITE. ``trusted``: the next hop is inside the trust
    domain (RFC 3325 §2.3: the carrier), so P-Asserted-Identity goes there even with Privacy."""

    address: Address
    user: str
    trunk: str | None = None
    uri_host: str | None = None  # Request-URI host; None: the address's host:port
    trusted: bool = False
    uri: str | None = None  # the whole Request-URI (a registered Contact)

    def request_uri(self) -> str:
        if self.uri is not None:
            return self.uri
        host = self.uri_host or self.address.hostport()
        params = f";transport={self.address.transport}" if self.address.transport != "udp" else ""
        return f"sip:{self.user}@{host}{params}"


@dataclass(frozen=True, slots=True)
class Route:
    """Destinations in failover order; ``scopes`` are the limits the call takes slots in."""

    destinations: tuple[Destination, ...]
    scopes: tuple[Scope, ...]
    inbound_trunk: str | None = None
    outbound_trunk: str | None = None
    presented_calling: str | None = None  # From user toward the callee (None: keep the caller's)
    asserted_calling: str | None = None  # P-Asserted-Identity user (None: keep / none)
    busy_status: int = 503
    charge: ChargeSpec | None = None  # what charging records; None: not charged (static routes)


class Side(Enum):
    A = "a"  # the inbound leg (the caller's dialog; we are its UAS)
    B = "b"  # the outbound leg (the callee's dialog; we are its UAC)


class CallObserver(Protocol):
    """Told what happens to each call (charging, metrics). ``ended`` is called exactly once."""

    def attempt(self, call: Call) -> None: ...
    def ringing(self, call: Call) -> None: ...
    def answered(self, call: Call) -> None: ...
    def ended(self, call: Call, status: int | None, released_by: Side | None, cause: EndCause) -> None: ...


@dataclass(slots=True, eq=False)
class Leg:
    """One dialog of a call. ``peer`` is where its in-dialog requests go (the A leg's source,
    the B leg's destination: the flow the dialog was set up on, NAT and TCP friendly)."""

    side: Side
    call_id: str
    local_tag: str
    peer: Address
    contact: str  # our Contact on this leg
    dialog: Dialog | None = None
    last_offer_sent: bytes = b""  # the last SDP we sent on this leg (session refresh re-INVITE)
    content_type: str | None = None


@dataclass(slots=True, eq=False)
class InDialogTransaction:
    """A request relayed from ``origin`` to the other leg, whose response goes back."""

    origin: Side
    request: Request  # as received
    relayed: Request  # as sent on the other leg
    client: ClientRequest | None = None
    answered: bool = False


@dataclass(slots=True, eq=False)
class Call:
    """Both legs of one call and everything that must be released when it ends."""

    uid: str
    a_invite: Request
    a: Leg
    route: Route
    created: float
    timers: NamedTimers  # no_answer, attempt, max_duration, ack_wait, session, refresh
    state: CallState = CallState.ROUTING
    b: Leg | None = None
    b_invite: Request | None = None
    b_client: ClientRequest | None = None
    destination: Destination | None = None
    attempt: int = -1  # index into route.destinations
    answered_at: float | None = None
    a_acked: bool = False
    late_offer: bool = False
    a_final_sent: bool = False
    pending_invite: InDialogTransaction | None = None  # re-INVITE in progress (glare: 491)
    relayed: dict[tuple[Side, int], InDialogTransaction] = field(default_factory=dict)
    session_interval: int | None = None
    we_refresh_b: bool = False  # RFC 4028: B's 2xx made us (its UAC) the refresher
    slots_held: bool = False
    cause: EndCause | None = None  # why the gateway is ending it (set before B's final response)

    def leg(self, side: Side) -> Leg:
        leg = self.a if side is Side.A else self.b
        assert leg is not None
        return leg

    def other(self, side: Side) -> Leg:
        return self.leg(Side.B if side is Side.A else Side.A)

    def fire(self, event: CallInput) -> None:
        self.state = transition(self.state, event)
