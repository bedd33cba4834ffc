"""What the call core needs of the SIP gateway (:class:`gateway.app.Gateway`): the seam that
lets the core, and the applications on it, be driven in a unit test by a fake transport and a
fake clock, with no socket (``tests/call/test_core_unit.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from gateway.sip.address import Address
from gateway.sip.message import Request, Response

if TYPE_CHECKING:
    from gateway.app import AckHandler, CancelHandler, ClientRequest, RequestHandler, ResponseCallback
    from gateway.metrics import Metrics


class CallTransport(Protocol):
    """The gateway's transaction-user interface, as call control uses it."""

    metrics: Metrics
    supported: tuple[str, ...]

    @property
    def t1(self) -> float:
        """RFC 3261 T1 of this node (an ACK of our 2xx is awaited 64*T1, §13.3.1.4)."""

    def local_address(
        self, transport: str, destination: Address | None = None, *, shared: bool = False
    ) -> Address:
        """Our address toward ``destination`` (Contact, From host)."""

    def send_request(
        self, request: Request, destination: Address, on_response: ResponseCallback | None = None
    ) -> ClientRequest:
        """A new client transaction; every response goes to ``on_response``."""

    def cancel(self, client: ClientRequest, headers: Sequence[tuple[str, str]] = ()) -> None:
        """CANCEL a pending INVITE (RFC 3261 §9.1)."""

    def send_ack(self, client: ClientRequest, ack: Request) -> None:
        """The ACK of a 2xx (RFC 3261 §13.2.2.4)."""

    def respond(self, request: Request, response: Response) -> None:
        """Answer a request received (KeyError: its transaction is gone)."""

    def add_request_handler(self, method: str, handler: RequestHandler) -> None:
        """Serve ``method`` requests with ``handler``."""

    def set_dialog_hooks(
        self, *, on_ack: AckHandler | None = None, on_cancel: CancelHandler | None = None
    ) -> None:
        """ACKs of our 2xx and CANCELs of pending INVITEs."""

    def accept_bodies(self, content_types: frozenset[str] | None) -> None:
        """Body types requests may carry (others: 415)."""

    @property
    def accepted_bodies(self) -> frozenset[str] | None:
        """The body types accepted now."""
