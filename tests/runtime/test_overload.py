"""Graceful overload (gateway.overload): the pure gate with a fake clock, its settings, and the
gate in a running gateway over real UDP sockets (new INVITEs shed first, everything else served)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.node_settings import ListenConfig, SipConfig
from gateway.overload import Load, OverloadGate, OverloadSettings, OverloadState, ShedReason
from gateway.sip.address import Address
from gateway.sip.message import Request, Response, make_response
from tests.runtime.test_gateway_app import Peer, request_bytes, status
from tests.support.servers import free_udp_tcp_port

BOUNDS = OverloadSettings(queue_high=1000, queue_low=100, lag_high=0.5, lag_low=0.1, transactions_high=100,
                          transactions_low=50, dialogs_high=20, dialogs_low=10, hold=2.0)
IDLE = Load(0.0, 0, 0)


def test_each_signal_at_its_high_bound_sheds_with_its_reason() -> None:
    for load, reason in [(Load(0.5, 0, 0), ShedReason.LAG), (Load(0.0, 100, 0), ShedReason.TRANSACTIONS),
                         (Load(0.0, 0, 20), ShedReason.DIALOGS), (Load(0.0, 0, 0, 1000), ShedReason.QUEUE)]:
        gate = OverloadGate(BOUNDS)
        assert gate.update(Load(0.49, 99, 19, 999), 0.0) is None  # just below every bound
        assert gate.update(load, 1.0) is reason
        assert gate.state is OverloadState.OVERLOADED


def recovered(gate: OverloadGate) -> None:
    """The probes of ``recovery`` seconds (2 s) with no signal high: the admitted share back to all."""
    for _ in range(40):
        gate.adjust(IDLE, 0.05)
    assert gate.admit_ratio == pytest.approx(1.0)


def test_hysteresis_stays_overloaded_until_all_low_for_hold_seconds() -> None:
    gate = OverloadGate(BOUNDS)
    assert gate.update(Load(0.0, 100, 0), 10.0) is ShedReason.TRANSACTIONS
    recovered(gate)
    # Below high but above low: still shedding (no flapping around one threshold).
    assert gate.update(Load(0.0, 60, 0), 20.0) is ShedReason.TRANSACTIONS
    # All low, but only 1 s after the last high reading (hold is 2 s).
    assert gate.update(Load(0.0, 10, 0), 11.0) is ShedReason.TRANSACTIONS
    # High again at 11.5: the hold counts from there.
    assert gate.update(Load(0.6, 10, 0), 11.5) is ShedReason.LAG  # the latest high signal names it
    assert gate.update(IDLE, 13.4) is ShedReason.LAG
    assert gate.update(IDLE, 13.5) is None
    assert gate.state is OverloadState.NORMAL
    # One signal between its bounds in normal state does not shed.
    assert gate.update(Load(0.3, 70, 15), 14.0) is None


def test_one_signal_still_between_bounds_keeps_overload() -> None:
    gate = OverloadGate(BOUNDS)
    gate.update(Load(0.0, 0, 25), 0.0)
    recovered(gate)
    assert gate.update(Load(0.0, 0, 10), 100.0) is ShedReason.DIALOGS  # 10 is not below dialogs_low
    assert gate.update(Load(0.0, 0, 9), 100.0) is None


def test_admitted_share_halves_while_high_climbs_while_not_and_admissions_are_spread() -> None:
    gate = OverloadGate(BOUNDS)
    high, between = Load(0.0, 0, 0, 5000), Load(0.0, 0, 0, 500)
    assert gate.decide(high, 0.0) is ShedReason.QUEUE
    assert gate.admit_ratio == 0.0  # entering: every new INVITE shed
    for _ in range(10):  # 0.5 s of probes with the queue between its bounds: +0.025 each
        gate.adjust(between, 0.05)
    assert gate.admit_ratio == pytest.approx(0.25)
    decisions = [gate.decide(between, 1.0) for _ in range(8)]
    assert decisions.count(None) == 2 and decisions[3] is None and decisions[7] is None  # one in four
    gate.adjust(high, 0.05)
    assert gate.admit_ratio == pytest.approx(0.125)
    # Another signal high (transactions): halved again once the last halving could show (3 probes).
    gate.adjust(Load(0.0, 300, 0), 0.05)
    gate.adjust(Load(0.0, 300, 0), 0.05)
    assert gate.admit_ratio == pytest.approx(0.125)
    gate.adjust(Load(0.0, 300, 0), 0.05)
    assert gate.admit_ratio == pytest.approx(0.0625)
    # Still overloaded until the share is back to all, whatever the signals say.
    assert gate.update(IDLE, 100.0) is ShedReason.QUEUE
    recovered(gate)
    assert gate.update(IDLE, 100.0) is None and gate.state is OverloadState.NORMAL


@pytest.mark.parametrize("field", ["queue", "lag", "transactions", "dialogs"])
def test_low_bound_must_be_below_high(field: str) -> None:
    high = 0.2 if field == "lag" else 100
    with pytest.raises(ValidationError, match=f"{field}_low .* must be smaller than {field}_high"):
        OverloadSettings(**{f"{field}_high": high, f"{field}_low": high})


def test_unknown_key_and_bad_action_are_config_errors() -> None:
    with pytest.raises(ValidationError):
        OverloadSettings.model_validate({"action": "ignore"})
    with pytest.raises(ValidationError):
        GatewayConfig.model_validate({"overload": {"lag_hi": 1}})


# -- in a running gateway, over real UDP ------------------------------------------------------------
class Calls:
    """An INVITE handler that answers 486 at once, or later (``hold_next``), counting calls."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.hold_next = False

    def __call__(self, request: Request, source: Address) -> Response | None:
        self.seen.append(request)
        if self.hold_next:
            self.hold_next = False
            return None
        return make_response(request, 486, "Busy Here")


async def running(overload: OverloadSettings) -> Gateway:
    port = free_udp_tcp_port()
    config = GatewayConfig(
        sip=SipConfig(listen=[ListenConfig(transport="udp", port=port)], shutdown_grace=0.2),
        overload=overload,
    )
    gw = Gateway(config.sip, config.node, config.overload)
    await gw.start()
    gw.watch_load()
    return gw


@pytest.fixture
async def dialog_bound() -> AsyncIterator[tuple[Gateway, list[int], Calls]]:
    gw = await running(OverloadSettings(dialogs_high=4, dialogs_low=2, hold=0, recovery=0.1))
    dialogs = [0]
    gw.set_dialog_counter(lambda: dialogs[0])
    calls = Calls()
    gw.add_request_handler("INVITE", calls)
    try:
        yield gw, dialogs, calls
    finally:
        await gw.stop()


async def final(peer: Peer) -> int:
    """The status of the next final answer (the 100 Trying of a held INVITE skipped)."""
    while (code := status(await peer.recv())) == 100:
        pass
    return code


async def no_final(peer: Peer, wait: float) -> bool:
    """True when nothing but 100 Trying arrives within ``wait`` seconds."""
    try:
        await asyncio.wait_for(final(peer), wait)
    except TimeoutError:
        return True
    return False


async def overload_over(gw: Gateway) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while gw.metrics.value("sip_overload_state") != 0:
        assert asyncio.get_running_loop().time() < deadline, "still overloaded"
        await asyncio.sleep(0.02)


def shed_total(gw: Gateway, reason: ShedReason) -> float:
    return gw.metrics.value("sip_overload_shed_total", {"reason": reason.value})


async def test_new_invites_get_503_while_dialogs_in_progress_and_others_pass(
    dialog_bound: tuple[Gateway, list[int], Calls],
) -> None:
    gw, dialogs, calls = dialog_bound
    peer = Peer(gw.local_addresses[0].port)
    port = peer.target[1]
    calls.hold_next = True  # this call is being set up when the overload begins
    admitted = request_bytes("INVITE", port, peer.local, branch="z9hG4bKadmitted")
    await peer.send(admitted)
    assert await no_final(peer, 0.2)
    assert len(calls.seen) == 1
    dialogs[0] = 4
    await peer.send(request_bytes("INVITE", port, peer.local))
    while status(answer := await peer.recv()) == 100:
        pass
    assert status(answer) == 503 and b"\r\nRetry-After: 5\r\n" in answer
    assert len(calls.seen) == 1  # no work was spent on it
    assert shed_total(gw, ShedReason.DIALOGS) == 1
    assert gw.metrics.value("sip_overload_state") == 1
    # A retransmission of the call admitted before (not byte-identical: its own bytes changed in
    # transit) still reaches its transaction: its 100 Trying again, not 503.
    await peer.send(admitted.replace(b"Max-Forwards: 70", b"Max-Forwards:  70"))
    assert await no_final(peer, 0.2)
    gw.respond(calls.seen[0], make_response(calls.seen[0], 486, "Busy Here"))
    assert await final(peer) == 486
    # In-dialog requests (To tag), OPTIONS: served as usual.
    in_dialog = request_bytes("INVITE", port, peer.local).replace(b"To: <sip:svc@127.0.0.1>",
                                                                   b"To: <sip:svc@127.0.0.1>;tag=abc")
    await peer.send(in_dialog)
    assert status(await peer.recv()) == 486
    await peer.send(request_bytes("OPTIONS", port, peer.local))
    assert status(await peer.recv()) == 200
    # Below the low bound again: once the probes have raised the admitted share back to all
    # (recovery 0.1 s, hold 0 here), the overload is over and new INVITEs are admitted.
    dialogs[0] = 1
    await overload_over(gw)
    await peer.send(request_bytes("INVITE", port, peer.local))
    assert status(await peer.recv()) == 486
    assert shed_total(gw, ShedReason.DIALOGS) == 1


async def test_drop_policy_answers_nothing_over_udp() -> None:
    gw = await running(OverloadSettings(action="drop", transactions_high=2, transactions_low=1, hold=0))
    try:
        calls = Calls()
        calls.hold_next = True
        gw.add_request_handler("INVITE", calls)
        peer = Peer(gw.local_addresses[0].port)
        await peer.send(request_bytes("INVITE", peer.target[1], peer.local))
        await peer.send(request_bytes("OPTIONS", peer.target[1], peer.local))
        assert await final(peer) == 200  # two server transactions live now
        await peer.send(request_bytes("INVITE", peer.target[1], peer.local))
        assert await no_final(peer, 0.3)
        assert len(calls.seen) == 1
        assert shed_total(gw, ShedReason.TRANSACTIONS) == 1
    finally:
        await gw.stop()


async def test_a_loop_that_stays_behind_sheds_for_lag() -> None:
    gw = await running(OverloadSettings(lag_high=0.1, lag_low=0.05, samples=1, hold=0, recovery=0.1))
    try:
        calls = Calls()
        gw.add_request_handler("INVITE", calls)

        def stall(request: Request, source: Address) -> Response:
            time.sleep(0.3)  # the event loop is held: every datagram behind this waits
            return make_response(request, 200, "OK")

        gw.add_request_handler("MESSAGE", stall)
        peer = Peer(gw.local_addresses[0].port)
        await peer.send(request_bytes("MESSAGE", peer.target[1], peer.local))
        await peer.send(request_bytes("INVITE", peer.target[1], peer.local))
        answers = sorted([status(await peer.recv()), status(await peer.recv())])
        assert answers == [200, 503]
        assert shed_total(gw, ShedReason.LAG) == 1
        assert len(calls.seen) == 0
        await overload_over(gw)  # the probes see a punctual loop again
        await peer.send(request_bytes("INVITE", peer.target[1], peer.local))
        assert status(await peer.recv()) == 486
    finally:
        await gw.stop()


async def test_a_gateway_still_starting_admits_new_invites() -> None:
    """Between the listeners opening and the probes starting (the rest of the process starting,
    `Gateway.watch_load`), there is no lag reading: a new INVITE is served, not shed."""
    port = free_udp_tcp_port()
    config = GatewayConfig(sip=SipConfig(listen=[ListenConfig(transport="udp", port=port)]))
    gw = Gateway(config.sip, config.node, config.overload)
    gw.add_request_handler("INVITE", lambda request, source: make_response(request, 486, "Busy Here"))
    await gw.start()
    try:
        await asyncio.sleep(0.3)  # long after any probe would have been due
        peer = Peer(port)
        await peer.send(request_bytes("INVITE", port, peer.local))
        assert await final(peer) == 486
    finally:
        await gw.stop()
