"""Every non-timer (state, input) pair of the four tables, both ways: a pair with a row moves to
the row's state; a pair without one is dropped and counted (network input), raises
ProtocolError (TU input) or is ignored (transport errors the figures do not show)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.sip.message import make_response
from gateway.sip.transactions import (
    ProtocolError,
    RequestReceived,
    Transaction,
    TransactionKind,
    TransactionState,
)
from gateway.sip.transactions.tables import TABLES, Input
from tests.sip.test_transaction_support import PEER, Driver, request, response, state_of

S = TransactionState
STATUS = {Input.PROVISIONAL: 180, Input.SUCCESS: 200, Input.FAILURE: 486}


def _client(d: Driver, method: str, replies: tuple[int, ...]) -> Transaction:
    tx = d.layer.send_request(request(method, via_host="198.51.100.1"), PEER, d.now)
    for status in replies:
        d.receive(response(tx.request, status))
    return tx


def _server(d: Driver, method: str, answers: tuple[int, ...], ack: bool = False) -> Transaction:
    events = d.receive(request(method))
    assert isinstance(events[0], RequestReceived)
    tx = events[0].transaction
    for status in answers:
        d.layer.send_response(tx, make_response(tx.request, status, to_tag="uas-tag"), d.now)
    if ack:
        d.receive(request("ACK", to_tag="uas-tag"))
    return tx


REACH: dict[tuple[TransactionKind, TransactionState], Callable[[Driver], Transaction]] = {
    (TransactionKind.INVITE_CLIENT, S.CALLING): lambda d: _client(d, "INVITE", ()),
    (TransactionKind.INVITE_CLIENT, S.PROCEEDING): lambda d: _client(d, "INVITE", (180,)),
    (TransactionKind.INVITE_CLIENT, S.COMPLETED): lambda d: _client(d, "INVITE", (486,)),
    (TransactionKind.INVITE_CLIENT, S.ACCEPTED): lambda d: _client(d, "INVITE", (200,)),
    (TransactionKind.NON_INVITE_CLIENT, S.TRYING): lambda d: _client(d, "OPTIONS", ()),
    (TransactionKind.NON_INVITE_CLIENT, S.PROCEEDING): lambda d: _client(d, "OPTIONS", (100,)),
    (TransactionKind.NON_INVITE_CLIENT, S.COMPLETED): lambda d: _client(d, "OPTIONS", (200,)),
    (TransactionKind.INVITE_SERVER, S.PROCEEDING): lambda d: _server(d, "INVITE", ()),
    (TransactionKind.INVITE_SERVER, S.COMPLETED): lambda d: _server(d, "INVITE", (486,)),
    (TransactionKind.INVITE_SERVER, S.CONFIRMED): lambda d: _server(d, "INVITE", (486,), ack=True),
    (TransactionKind.INVITE_SERVER, S.ACCEPTED): lambda d: _server(d, "INVITE", (200,)),
    (TransactionKind.NON_INVITE_SERVER, S.TRYING): lambda d: _server(d, "OPTIONS", ()),
    (TransactionKind.NON_INVITE_SERVER, S.PROCEEDING): lambda d: _server(d, "OPTIONS", (100,)),
    (TransactionKind.NON_INVITE_SERVER, S.COMPLETED): lambda d: _server(d, "OPTIONS", (200,)),
}

INPUTS = [i for i in Input if i is not Input.START]
CASES = [(kind, state, trigger) for (kind, state) in REACH for trigger in INPUTS]


def test_every_non_terminated_state_of_every_table_is_reachable() -> None:
    states = {(kind, state) for kind, table in TABLES.items() for state, _ in table}
    assert states - {(k, S.TERMINATED) for k in TransactionKind} == set(REACH)


@pytest.mark.parametrize(("kind", "state", "trigger"), CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_table_pair(kind: TransactionKind, state: TransactionState, trigger: Input) -> None:
    d = Driver()
    tx = REACH[(kind, state)](d)
    assert (tx.kind, state_of(tx)) == (kind, state)
    row = TABLES[kind].get((state, trigger))
    errors = d.layer.counters.protocol_errors
    client = kind in (TransactionKind.INVITE_CLIENT, TransactionKind.NON_INVITE_CLIENT)

    def apply() -> None:
        if trigger in STATUS and client:
            d.receive(response(tx.request, STATUS[trigger]))
        elif trigger in STATUS:
            resp = make_response(tx.request, STATUS[trigger], to_tag="uas-tag")
            d.layer.send_response(tx, resp, d.now)  # type: ignore[arg-type]
        elif trigger is Input.REQUEST:
            d.receive(request(tx.request.method))
        elif trigger is Input.ACK:
            d.receive(request("ACK", to_tag="uas-tag"))
        elif trigger is Input.CANCEL:
            d.layer.cancel(tx, d.now)  # type: ignore[arg-type]
        else:
            d.layer.transport_error(tx, d.now)

    tu_input = trigger is Input.CANCEL or (trigger in STATUS and not client)
    undeliverable = (client and trigger in (Input.REQUEST, Input.ACK)) or (
        kind is TransactionKind.NON_INVITE_SERVER and trigger is Input.ACK
    )
    if undeliverable:  # the layer never routes this input to such a transaction: no row may exist
        assert row is None
    elif row is not None:
        apply()
        assert state_of(tx) is row[0]
        assert d.layer.counters.protocol_errors == errors
    elif trigger is Input.TRANSPORT_ERROR:
        apply()  # not in the figure for this state: the transaction ignores it
        assert state_of(tx) is state
    elif tu_input:
        with pytest.raises(ProtocolError):
            apply()
        assert state_of(tx) is state
    else:
        apply()  # network input without a row: dropped and counted
        assert state_of(tx) is state
        assert d.layer.counters.protocol_errors == errors + 1
