"""A client-transaction sender over one UDP socket, for driving :mod:`gateway.registrar.outbound`
against a real peer in tests: the transaction layer (retransmissions, Timer F) fed by asyncio.

The running gateway will offer the same :class:`~gateway.registrar.outbound.RequestSender`
interface from its own transaction layer; this stands in for it until then.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from gateway.registrar.outbound import NoResponseError
from gateway.sip.address import Address
from gateway.sip.errors import SipParseError
from gateway.sip.message import Request, Response, parse_message
from gateway.sip.timers import TimerConfig
from gateway.sip.transactions import TransactionLayer
from gateway.sip.transactions.events import (
    ResponseReceived,
    TimeoutEvent,
    TransactionEvent,
    TransportErrorEvent,
)


class UdpTransactionClient(asyncio.DatagramProtocol):
    def __init__(self, timers: TimerConfig) -> None:
        self.layer = TransactionLayer(timers)
        self.transport: asyncio.DatagramTransport | None = None
        self._local = Address("udp", "127.0.0.1", 0)
        self._waiting: dict[int, asyncio.Future[Response]] = {}
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, timers: TimerConfig) -> UdpTransactionClient:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(lambda: cls(timers), local_addr=("127.0.0.1", 0))
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        host, port = transport.get_extra_info("sockname")[:2]
        self._local = Address("udp", host, port)

    def local_address(self, transport: str) -> Address:
        return self._local

    async def send_request(self, request: Request, destination: Address) -> Response:
        loop = asyncio.get_running_loop()
        tx = self.layer.send_request(request, destination, loop.time())
        future: asyncio.Future[Response] = loop.create_future()
        self._waiting[id(tx)] = future
        self._pump([])
        try:
            return await future
        finally:
            self._waiting.pop(id(tx), None)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(SipParseError):
            message = parse_message(data)
            loop = asyncio.get_running_loop()
            self._pump(self.layer.receive(message, Address("udp", addr[0], addr[1]), loop.time()))

    def _pump(self, events: list[TransactionEvent]) -> None:
        for event in events:
            future = self._waiting.get(id(event.transaction))
            if future is None or future.done():
                continue
            if isinstance(event, ResponseReceived) and event.response.status >= 200:
                future.set_result(event.response)
            elif isinstance(event, TimeoutEvent | TransportErrorEvent):
                future.set_exception(NoResponseError(type(event).__name__))
        assert self.transport is not None
        for transmit in self.layer.take_outgoing():
            self.transport.sendto(transmit.data, (transmit.destination.host, transmit.destination.port))
        deadline = self.layer.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump(self.layer.handle_timers(asyncio.get_running_loop().time()))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
