"""Dialog state (RFC 3261 §12): creation on both sides, route set, CSeq ordering, target
refresh, and in-dialog requests with loose and strict routing."""

from __future__ import annotations

import pytest

from gateway.sip.dialog import Dialog, DialogError, DialogId, DialogState
from gateway.sip.message import Request, Response, make_response, parse_message


def invite(
    extra: tuple[str, ...] = (), cseq: int = 10, method: str = "INVITE", to_tag: str | None = None
) -> Request:
    lines = [
        f"{method} sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv",
        "Max-Forwards: 70",
        '"Alice" <sip:alice@example.com>;tag=a-tag'.join(("From: ", "")),
        "To: <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: dlg-call@example.com",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@192.0.2.10:5060>",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def reply(req: Request, status: int, *, contact: str | None = "sip:bob@198.51.100.20:5060",
          extra: tuple[str, ...] = (), tag: str = "b-tag") -> Response:  # fmt: skip
    resp = make_response(req, status, to_tag=tag)
    if contact:
        resp.headers.add("Contact", f"<{contact}>")
    for line in extra:
        name, _, value = line.partition(": ")
        resp.headers.add(name, value)
    parsed = parse_message(resp.to_bytes())
    assert isinstance(parsed, Response)
    return parsed


def state_of(dialog: Dialog) -> DialogState:
    """The state, read through a call so mypy does not narrow it across transitions."""
    return dialog.state


VIA = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKindialog"
RR = ("Record-Route: <sip:p1.example.com;lr>", "Record-Route: <sip:p2.example.com;lr>")


# --- creation --------------------------------------------------------------------------------------


def test_uac_dialog_from_2xx() -> None:
    req = invite(RR)
    d = Dialog.uac(req, reply(req, 200))
    assert state_of(d) is DialogState.CONFIRMED and d.is_uac
    assert d.id == DialogId("dlg-call@example.com", "a-tag", "b-tag")
    assert d.route_set == ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")  # reversed
    assert d.remote_target == "sip:bob@198.51.100.20:5060"
    assert d.local_target == "sip:alice@192.0.2.10:5060"
    assert (d.local_seq, d.remote_seq) == (10, None)
    assert d.local.tag == "a-tag" and d.remote.tag == "b-tag"
    assert d.local.display == "Alice"


def test_uas_dialog_keeps_record_route_order() -> None:
    req = invite(RR)
    resp = reply(req, 180, contact="sip:gw@198.51.100.1:5060")
    d = Dialog.uas(req, resp)
    assert state_of(d) is DialogState.EARLY and not d.is_uac
    assert d.id == DialogId("dlg-call@example.com", "b-tag", "a-tag")
    assert d.route_set == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert d.remote_target == "sip:alice@192.0.2.10:5060"
    assert d.local_target == "sip:gw@198.51.100.1:5060"
    assert (d.local_seq, d.remote_seq) == (None, 10)
    d.send_response(req, reply(req, 200, contact="sip:gw@198.51.100.1:5060"))
    assert state_of(d) is DialogState.CONFIRMED


def test_dialog_ids_of_incoming_messages() -> None:
    req = invite(to_tag="b-tag")
    assert DialogId.of_incoming_request(req) == DialogId("dlg-call@example.com", "b-tag", "a-tag")
    assert DialogId.of_incoming_request(invite()) is None
    resp = reply(invite(), 200)
    assert DialogId.of_incoming_response(resp) == DialogId("dlg-call@example.com", "a-tag", "b-tag")


def test_creation_refuses_what_cannot_make_a_dialog() -> None:
    req = invite()
    with pytest.raises(DialogError) as info:
        Dialog.uac(req, reply(req, 486))
    assert info.value.status == 400
    no_contact = invite()
    no_contact.headers.remove("Contact")
    with pytest.raises(DialogError) as info:
        Dialog.uas(no_contact, reply(no_contact, 200))
    assert info.value.status == 400


def test_early_dialog_confirmed_by_2xx_recomputes_route_set_and_target() -> None:
    req = invite()
    early = reply(
        req, 183, contact="sip:early@198.51.100.30", extra=("Record-Route: <sip:old.example.com;lr>",)
    )
    d = Dialog.uac(req, early)
    assert state_of(d) is DialogState.EARLY
    assert d.route_set == ("<sip:old.example.com;lr>",)
    d.receive_response(req, reply(req, 180))
    assert state_of(d) is DialogState.EARLY
    ok = reply(req, 200, contact="sip:final@198.51.100.31", extra=RR[0:1])
    d.receive_response(req, ok)
    assert state_of(d) is DialogState.CONFIRMED
    assert d.route_set == ("<sip:p1.example.com;lr>",)
    assert d.remote_target == "sip:final@198.51.100.31"


def test_early_dialog_ends_on_failure() -> None:
    req = invite()
    d = Dialog.uac(req, reply(req, 180))
    d.receive_response(req, reply(req, 486))
    assert state_of(d) is DialogState.TERMINATED


# --- CSeq ordering (§12.2.2) ---------------------------------------------------------------------


def test_remote_cseq_must_not_go_down() -> None:
    req = invite()
    d = Dialog.uas(req, reply(req, 200))
    d.receive_request(invite(cseq=10, method="ACK", to_tag="b-tag"))  # ACK keeps the INVITE's number
    d.receive_request(invite(cseq=11, method="INFO", to_tag="b-tag"))
    assert d.remote_seq == 11
    with pytest.raises(DialogError) as info:
        d.receive_request(invite(cseq=9, method="INFO", to_tag="b-tag"))
    assert info.value.status == 500
    assert d.remote_seq == 11 and state_of(d) is DialogState.CONFIRMED


def test_uac_learns_remote_cseq_from_first_request() -> None:
    req = invite()
    d = Dialog.uac(req, reply(req, 200))
    d.receive_request(invite(cseq=4711, method="INFO", to_tag="a-tag"))
    assert d.remote_seq == 4711


def test_bye_received_terminates_and_later_requests_get_481() -> None:
    req = invite()
    d = Dialog.uas(req, reply(req, 200))
    d.receive_request(invite(cseq=11, method="BYE", to_tag="b-tag"))
    assert state_of(d) is DialogState.TERMINATED
    with pytest.raises(DialogError) as info:
        d.receive_request(invite(cseq=12, method="INFO", to_tag="b-tag"))
    assert info.value.status == 481
    with pytest.raises(DialogError):
        d.create_request("INFO", via=VIA)


# --- target refresh ----------------------------------------------------------------------------------


def test_uac_target_refresh_on_reinvite_2xx_only() -> None:
    req = invite()
    d = Dialog.uac(req, reply(req, 200))
    reinvite = d.create_request("INVITE", via=VIA)
    d.receive_response(reinvite, reply(reinvite, 491, contact="sip:ignored@198.51.100.99"))
    assert d.remote_target == "sip:bob@198.51.100.20:5060" and state_of(d) is DialogState.CONFIRMED
    d.receive_response(reinvite, reply(reinvite, 200, contact="sip:moved@198.51.100.21"))
    assert d.remote_target == "sip:moved@198.51.100.21"
    update = d.create_request("UPDATE", via=VIA)
    d.receive_response(update, reply(update, 200, contact="sip:again@198.51.100.22"))
    assert d.remote_target == "sip:again@198.51.100.22"
    info = d.create_request("INFO", via=VIA)
    d.receive_response(info, reply(info, 200, contact="sip:not-a-refresh@198.51.100.23"))
    assert d.remote_target == "sip:again@198.51.100.22"


def test_uas_target_refresh_when_2xx_sent() -> None:
    req = invite()
    d = Dialog.uas(req, reply(req, 200))
    reinvite = invite(cseq=11, to_tag="b-tag", extra=())
    reinvite.headers.set("Contact", "<sip:alice@203.0.113.50:5070>")
    d.receive_request(reinvite)
    assert d.remote_target == "sip:alice@192.0.2.10:5060"
    d.send_response(reinvite, reply(reinvite, 200))
    assert d.remote_target == "sip:alice@203.0.113.50:5070"
    assert state_of(d) is DialogState.CONFIRMED


def test_481_or_408_ends_the_dialog() -> None:
    for status in (481, 408):
        req = invite()
        d = Dialog.uac(req, reply(req, 200))
        info = d.create_request("INFO", via=VIA)
        d.receive_response(info, reply(info, status))
        assert state_of(d) is DialogState.TERMINATED


def test_bye_answered_ends_uac_dialog_but_not_a_challenge() -> None:
    req = invite()
    d = Dialog.uac(req, reply(req, 200))
    bye = d.create_request("BYE", via=VIA)
    d.receive_response(bye, reply(bye, 401))
    assert state_of(d) is DialogState.CONFIRMED
    bye = d.create_request("BYE", via=VIA)
    d.receive_response(bye, reply(bye, 200))
    assert state_of(d) is DialogState.TERMINATED


# --- building requests (§12.2.1.1) ------------------------------------------------------------------


def test_in_dialog_request_with_loose_routes() -> None:
    req = invite(RR)
    d = Dialog.uac(req, reply(req, 200))
    bye = d.create_request("BYE", via="SIP/2.0/UDP 192.0.2.10:5060")
    assert bye.method == "BYE" and bye.uri == "sip:bob@198.51.100.20:5060"
    assert bye.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert str(bye.from_) == '"Alice" <sip:alice@example.com>;tag=a-tag'
    assert str(bye.to) == "<sip:bob@example.com>;tag=b-tag"
    assert bye.call_id == "dlg-call@example.com"
    assert (bye.cseq.seq, bye.cseq.method) == (11, "BYE")
    assert bye.max_forwards == 70
    assert "Contact" not in bye.headers
    assert bye.top_via.branch is None  # the transaction layer fills it
    assert d.next_hop() == "sip:p2.example.com;lr"
    reinvite = d.create_request("INVITE", via=VIA, body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.cseq.seq == 12 and reinvite.contacts[0].uri == "sip:alice@192.0.2.10:5060"
    assert reinvite.headers.get("Content-Type") == "application/sdp" and reinvite.body == b"v=0\r\n"
    assert isinstance(parse_message(reinvite.to_bytes()), Request)


def test_in_dialog_request_without_routes_goes_to_remote_target() -> None:
    req = invite()
    d = Dialog.uac(req, reply(req, 200))
    info = d.create_request("INFO", via=VIA)
    assert info.uri == "sip:bob@198.51.100.20:5060" and "Route" not in info.headers
    assert d.next_hop() == "sip:bob@198.51.100.20:5060"


def test_in_dialog_request_with_strict_first_route() -> None:
    req = invite(("Record-Route: <sip:strict.example.com;method=INVITE?X-H=1>, <sip:p1.example.com;lr>",))
    d = Dialog.uas(req, reply(req, 200))
    bye = d.create_request("BYE", via=VIA)
    # §12.2.1.1: first route as Request-URI (no headers, no method), remote target as last Route
    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:alice@192.0.2.10:5060>"]
    assert d.local_seq == 1


def test_ack_for_2xx_reuses_invite_cseq_and_credentials() -> None:
    credentials = 'Proxy-Authorization: Digest username="a", realm="r", nonce="n", uri="sip:x", response="0"'
    req = invite((*RR, credentials))
    d = Dialog.uac(req, reply(req, 200))
    ack = d.create_ack(req, via="SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKack")
    assert (ack.cseq.seq, ack.cseq.method) == (10, "ACK")
    assert d.local_seq == 10  # the ACK takes no new number
    assert ack.uri == "sip:bob@198.51.100.20:5060"
    assert ack.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert ack.proxy_authorization[0].username == "a"
    with pytest.raises(ValueError, match="ACK"):
        d.create_request("ACK")


def test_dialog_table_refuses_unknown_inputs() -> None:
    req = invite()
    d = Dialog.uac(req, reply(req, 200))
    d.terminate()
    with pytest.raises(DialogError) as info:
        d.terminate()
    assert info.value.status == 481


def test_response_of_another_fork_is_refused() -> None:
    req = invite()
    d = Dialog.uac(req, reply(req, 180, tag="fork-1"))
    with pytest.raises(ValueError, match="fork-2"):
        d.receive_response(req, reply(req, 200, tag="fork-2"))
    assert state_of(d) is DialogState.EARLY


def test_dialog_creating_responses_carry_the_record_route_in_order() -> None:
    """RFC 3261 §12.1.1: the UAS copies the request's Record-Route into 101-299 responses."""
    req = invite(RR)
    for status in (180, 200):
        assert make_response(req, status, to_tag="b").headers.get_lines("Record-Route") == \
            req.headers.get_lines("Record-Route")
    assert make_response(req, 100).headers.get_lines("Record-Route") == []
    assert make_response(req, 486, to_tag="b").headers.get_lines("Record-Route") == []
