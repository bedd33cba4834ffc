"""Property test: any sequence of network input, TU calls and time steps raises nothing but the
documented ProtocolError (TU misuse), keeps the live count exact, and leaves no transaction and
no timer behind once the TU answers what it must and every timer has run out."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.address import Address
from gateway.sip.message import make_response
from gateway.sip.transactions import (
    CancelReceived,
    ClientTransaction,
    ProtocolError,
    RequestReceived,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
    TransactionState,
)
from tests.sip.test_transaction_support import request, response

SOURCES = [Address("udp", "192.0.2.10", 5060), Address("tcp", "192.0.2.11", 5060)]
STATUSES = [100, 180, 183, 200, 202, 302, 401, 486, 487, 503, 603]

ops = st.one_of(
    st.tuples(
        st.just("recv_req"),
        st.sampled_from(["INVITE", "OPTIONS", "ACK", "CANCEL", "BYE"]),
        st.sampled_from(["z9hG4bKa", "z9hG4bKb", None]),
        st.integers(0, 1),  # source
        st.sampled_from([None, "uas-tag", "other"]),  # To tag
    ),
    st.tuples(st.just("recv_resp"), st.integers(0, 20), st.sampled_from(STATUSES), st.booleans()),
    st.tuples(st.just("send_req"), st.sampled_from(["INVITE", "OPTIONS"]), st.integers(0, 1)),
    st.tuples(st.just("send_resp"), st.integers(0, 20), st.sampled_from(STATUSES)),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("send_ack"), st.integers(0, 20)),
    st.tuples(st.just("transport_error"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0, 4.0, 5.0, 32.0, 40.0])),
)


class Model:
    def __init__(self) -> None:
        self.layer = TransactionLayer(TimerConfig(), rng=random.Random(1))
        self.now = 0.0
        self.clients: list[ClientTransaction] = []
        self.servers: list[ServerTransaction] = []

    def absorb(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, (RequestReceived, CancelReceived)):
                self.servers.append(event.transaction)
        self.layer.take_outgoing()
        for tx in list(self.clients):
            if tx.cancel_transaction is not None and tx.cancel_transaction not in self.clients:
                self.clients.append(tx.cancel_transaction)

    def live(self) -> int:
        return sum(not tx.terminated for tx in [*self.clients, *self.servers])

    def step(self, op: tuple[Any, ...]) -> None:
        layer, kind = self.layer, op[0]
        if kind == "recv_req":
            _, method, branch, src, to_tag = op
            source = SOURCES[src]
            msg = request(method, branch=branch, transport=source.transport.upper(), to_tag=to_tag)
            self.absorb(layer.receive(msg, source, self.now))
        elif kind == "recv_resp" and self.clients:
            _, index, status, stray = op
            tx = self.clients[index % len(self.clients)]
            resp = response(tx.request, status)
            if stray:
                resp.headers.set("CSeq", f"{tx.request.cseq.seq} NOTIFY")
            self.absorb(layer.receive(resp, tx.destination, self.now))
        elif kind == "send_req":
            _, method, dst = op
            req = request(method, branch=None, via_host="198.51.100.1")
            tx = layer.send_request(req, SOURCES[dst], self.now)
            self.clients.append(tx)
            self.absorb([])
        elif kind == "send_resp" and self.servers:
            _, index, status = op
            stx = self.servers[index % len(self.servers)]
            try:
                resp = make_response(stx.request, status, to_tag="uas-tag")
                self.absorb(layer.send_response(stx, resp, self.now))
            except ProtocolError:
                self.absorb([])
        elif kind == "cancel" and self.clients:
            ctx = self.clients[op[1] % len(self.clients)]
            if ctx.request.method == "INVITE":
                self.absorb(layer.cancel(ctx, self.now))
        elif kind == "send_ack" and self.clients:
            ctx = self.clients[op[1] % len(self.clients)]
            if ctx.request.method == "INVITE" and ctx.last_response is not None:
                tag = ctx.last_response.to.tag
                ack = request("ACK", branch=layer.new_branch(), via_host="198.51.100.1", to_tag=tag)
                layer.send_ack(ctx, ack, ctx.destination)
                self.absorb([])
        elif kind == "transport_error":
            _, index, by_address = op
            txs: list[Any] = [*self.clients, *self.servers]
            if txs:
                tx = txs[index % len(txs)]
                if by_address:
                    target = tx.destination if isinstance(tx, ClientTransaction) else tx.response_destination
                    self.absorb(layer.transport_error(target, self.now))
                else:
                    self.absorb(layer.transport_error(tx, self.now))
        elif kind == "advance":
            self.run_until(self.now + op[1])

    def run_until(self, until: float) -> None:
        while (deadline := self.layer.next_deadline()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            self.absorb(self.layer.handle_timers(self.now))
        self.now = until

    def finish(self) -> None:
        """The TU's duties: answer every request, CANCEL every INVITE still ringing."""
        for stx in self.servers:
            if stx.state in (TransactionState.TRYING, TransactionState.PROCEEDING):
                resp = make_response(stx.request, 500, to_tag="uas-tag")
                self.absorb(self.layer.send_response(stx, resp, self.now))
        for ctx in list(self.clients):
            if ctx.state is TransactionState.PROCEEDING and ctx.request.method == "INVITE":
                self.absorb(self.layer.cancel(ctx, self.now))
        self.run_until(self.now + 10_000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40))
def test_random_inputs_never_break_the_layer_and_leave_nothing(sequence: list[tuple[Any, ...]]) -> None:
    model = Model()
    for op in sequence:
        model.step(op)
        assert model.layer.transaction_count == model.live()
        heap = model.layer._ctx.heap  # the stale count drives compaction: it must be exact
        assert heap.stale == sum(not e[2].is_armed(e[3], e[1]) for e in heap._heap)
    model.finish()
    assert model.layer.transaction_count == 0
    assert model.live() == 0
    assert model.layer.next_deadline() is None
    assert model.layer.timer_entries == 0
