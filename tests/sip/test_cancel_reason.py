"""The TU's own header fields on the CANCEL the transaction layer builds: a Reason saying why
the INVITE is abandoned (RFC 3326 §2), kept on a CANCEL deferred until a provisional (§9.1)."""

from __future__ import annotations

from gateway.sip.message import Request
from gateway.sip.transactions import build_cancel
from tests.sip.test_transaction_support import PEER, Driver, request, response, wire

NO_ANSWER = 'Q.850;cause=19;text="No answer from user"'


def test_build_cancel_appends_the_extra_fields_after_its_own() -> None:
    invite = request("INVITE", via_host="198.51.100.1")
    cancel = build_cancel(invite, [("Reason", "SIP;cause=487"), ("Reason", NO_ANSWER)])
    assert cancel.headers.get_lines("Reason") == ["SIP;cause=487", NO_ANSWER]
    assert (cancel.cseq.seq, cancel.cseq.method) == (invite.cseq.seq, "CANCEL")
    assert "Reason" not in build_cancel(invite).headers  # none unless the TU asks


def test_deferred_cancel_carries_the_reason_given_when_it_was_asked_for() -> None:
    d = Driver()
    tx = d.layer.send_request(request("INVITE", via_host="198.51.100.1"), PEER, d.now)
    d.drain()
    d.layer.cancel(tx, 0.1, [("Reason", NO_ANSWER)])
    d.drain()
    assert len(d.sent) == 1  # §9.1: held until a provisional arrives
    d.receive(response(tx.request, 180))
    cancel = wire(d.sent[-1][1])
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.headers.get_lines("Reason") == [NO_ANSWER]


def test_a_second_cancel_call_neither_resends_nor_rewrites_the_sent_cancel() -> None:
    d = Driver()
    tx = d.layer.send_request(request("INVITE", via_host="198.51.100.1"), PEER, d.now)
    d.receive(response(tx.request, 183))
    d.layer.cancel(tx, 0.1, [("Reason", "SIP;cause=487")])
    d.drain()
    sent = len(d.sent)
    d.layer.cancel(tx, 0.2, [("Reason", NO_ANSWER)])
    d.drain()
    assert len(d.sent) == sent
    assert tx.cancel_transaction is not None
    assert tx.cancel_transaction.request.headers.get_lines("Reason") == ["SIP;cause=487"]
