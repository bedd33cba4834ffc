"""Wiring: install() on a gateway-like host, DID → pilot delivery, carrier destination choice."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from gateway.datafile import DataFileError
from gateway.registrar.holder import TrunkHolder
from gateway.registrar.qualify import Probe
from gateway.registrar.service import Handler, RegistrarService, install
from gateway.registrar.settings import RegistrarConfig
from gateway.registrar.trunks import CarrierTrunk
from gateway.sip.address import Address
from gateway.sip.message import Request, Response, make_response
from tests.registrar.test_registrar import Device

TRUNKS = """
trunks:
  - name: pbx2
    kind: registering
    group: acme
    username: pbx2
    password: pbx2-secret
    lines: [{numbers: "62882000"}]
    pilot: "62882000"
    dids: "62882000-62882099"
  - name: core
    kind: carrier
    destinations:
      - {host: 127.0.0.1, port: 5070, priority: 10, weight: 90,
         register: {username: gw, password: pw, expires: 600}}
      - {host: 127.0.0.1, port: 5071, priority: 10, weight: 10}
      - {host: 127.0.0.1, port: 5072, priority: 20}
"""


class Answered:
    """Like gateway.app.ClientRequest for a request the peer answered 200."""

    synthesized = False

    def __init__(self, request: Request) -> None:
        self.request = request

    async def wait(self) -> Response:
        return make_response(self.request, 200)


class Host:
    """Stands in for gateway.app.Gateway: takes handlers and sends requests (answered 200)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.sent: list[tuple[str, Address]] = []

    def add_request_handler(self, method: str, handler: Handler) -> None:
        self.handlers[method] = handler

    def local_address(
        self, transport: str, destination: Address | None = None, *, shared: bool = False
    ) -> Address:
        return Address("udp", "127.0.0.1", 5060)

    def send_request(self, request: Request, destination: Address) -> Answered:
        self.sent.append((request.method, destination))
        return Answered(request)


async def make(tmp_path: Path, **qualify: object) -> tuple[RegistrarService, Host]:
    path = tmp_path / "trunks.yaml"
    path.write_text(TRUNKS, encoding="utf-8")
    host = Host()
    settings = RegistrarConfig(trunks=path, qualify={"interval": 3600, **qualify})
    service = await install(host, settings, trunks=TrunkHolder.load(path))
    service.start(node="test", machine="test")
    return service, host


async def test_install_serves_register_and_delivers_dids_to_the_pilot(tmp_path: Path) -> None:
    service, host = await make(tmp_path)
    try:
        assert host.handlers["REGISTER"] == service.registrar.handle
        device = Device(service.registrar, user="62882000", password="pbx2-secret", username="pbx2")
        assert (await device.register()).status == 200
        (binding,) = await service.contacts("62882042")  # a DID of the PBX
        assert binding.aor == "62882000" and binding.trunk == "pbx2"
        assert await service.contacts("62883000") == []
    finally:
        await service.close()


async def test_client_side_starts_and_down_destinations_are_skipped(tmp_path: Path) -> None:
    service, host = await make(tmp_path)
    try:
        for _ in range(100):  # let the tracked tasks send their first requests
            if {m for m, _ in host.sent} >= {"REGISTER", "OPTIONS"}:
                break
            await asyncio.sleep(0.01)
        assert ("REGISTER", Address("udp", "127.0.0.1", 5070)) in host.sent
        assert len(service.outbound) == 1 and len(service.tasks) == 2
        carrier = service.trunks.trunks["core"]
        assert isinstance(carrier, CarrierTrunk)
        firsts = [service.destinations(carrier, random.Random(i))[0].port for i in range(200)]
        assert firsts.count(5070) > firsts.count(5071) > 0 and 5072 not in firsts  # weights, priority
        assert service.qualifier is not None
        target = service.qualifier.targets[Address("udp", "127.0.0.1", 5070)]
        for _ in range(3):
            target.reach.record(Probe.FAILURE, 0.0)
        assert [d.port for d in service.destinations(carrier)] == [5071, 5072]
    finally:
        await service.close()
    assert not service.tasks


async def test_registered_contacts_are_qualified_at_their_nat_source(tmp_path: Path) -> None:
    service, host = await make(tmp_path, contacts=True, interval=0.05)
    try:
        device = Device(service.registrar, user="62882000", password="pbx2-secret", username="pbx2")
        assert (await device.register()).status == 200
        nat = Address("udp", "192.0.2.10", 41000)  # the source the REGISTER came from
        for _ in range(200):
            if ("OPTIONS", nat) in host.sent:
                break
            await asyncio.sleep(0.01)
        assert ("OPTIONS", nat) in host.sent
    finally:
        await service.close()


async def test_reload_swaps_trunks_and_keeps_them_on_error(tmp_path: Path) -> None:
    service, _ = await make(tmp_path)
    try:
        path = tmp_path / "trunks.yaml"
        old = Device(service.registrar, user="62882000", password="pbx2-secret", username="pbx2")
        assert (await old.register()).status == 200
        path.write_text(TRUNKS.replace("pbx2-secret", "rotated-secret"), encoding="utf-8")
        service.trunks.swap(service.trunks.prepare())
        assert (await old.register()).status == 401  # the old password is refused at once
        old.password = "rotated-secret"
        assert (await old.register()).status == 200
        path.write_text("trunks: [{name: x, kind: nope}]\n", encoding="utf-8")
        with pytest.raises(DataFileError):
            service.trunks.prepare()
        assert service.registrar.trunks.credential("pbx2") is not None
    finally:
        await service.close()
