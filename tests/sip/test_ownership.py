"""Which worker owns a datagram (gateway.sip.ownership): pure checks on hand-written messages."""

from __future__ import annotations

import random

import pytest

from gateway.sip.ownership import branch_marker, call_id_owner, datagram_owner
from gateway.sip.transactions.matching import new_branch


def request(call_id: str, *, name: str = "Call-ID", to_tag: str = "") -> bytes:
    return (
        "INVITE sip:60002@gw SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-w01-feedface;rport\r\n"
        "From: <sip:62880001@gw>;tag=a1\r\n"
        f"To: <sip:60002@gw>{to_tag}\r\n"
        f"{name}: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def response(branch: str, call_id: str = "peer-call", *, via: str = "Via") -> bytes:
    return (
        "SIP/2.0 180 Ringing\r\n"
        f"{via}: SIP/2.0/UDP 192.0.2.1:5060;rport=5060;branch={branch},"
        " SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-w00-aa\r\n"
        "From: <sip:a@gw>;tag=x\r\nTo: <sip:b@gw>;tag=y\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_a_request_goes_where_its_call_id_hashes_in_any_spelling_of_the_header() -> None:
    owner = call_id_owner(b"abc@10.0.0.9", 3)
    for name in ("Call-ID", "call-id", "CALL-ID", "i", "Call-Id  "):
        assert datagram_owner(request("abc@10.0.0.9", name=name), 3, {}) == owner
    # Every message of one Call-ID goes to one worker: the Call-ID's case matters (§20.8).
    assert datagram_owner(request("ABC@10.0.0.9"), 3, {}) == call_id_owner(b"ABC@10.0.0.9", 3)
    assert datagram_owner(b"BYE sip:x SIP/2.0\r\ni: \xff\xfe\r\n\r\n", 3, {}) == call_id_owner(b"\xff\xfe", 3)
    # The branch of a request's Via is the peer's: it never decides.
    assert datagram_owner(request("abc@10.0.0.9"), 3, {}) == call_id_owner(b"abc@10.0.0.9", 3)


def test_call_ids_spread_over_the_workers() -> None:
    rng = random.Random(5)
    counts = [0, 0, 0]
    for _ in range(3000):
        counts[call_id_owner(f"{rng.getrandbits(64):x}@10.0.0.9".encode(), 3)] += 1
    assert all(800 < n < 1200 for n in counts), counts


def test_a_response_returns_to_the_worker_named_in_its_top_via_branch() -> None:
    branch = new_branch(random.Random(1), branch_marker(2))
    assert branch.startswith("z9hG4bK-w02-")
    assert datagram_owner(response(branch), 3, {}) == 2
    assert datagram_owner(response(branch, via="v"), 3, {}) == 2  # compact form (§7.3.3)
    # A worker that no longer exists, or a branch that is not ours: the Call-ID decides.
    fallback = call_id_owner(b"peer-call", 3)
    assert datagram_owner(response(new_branch(random.Random(1), branch_marker(7))), 3, {}) == fallback
    assert datagram_owner(response("z9hG4bK-w1x-00"), 3, {}) == fallback
    assert datagram_owner(response("z9hG4bKabcdef"), 3, {}) == fallback


def test_a_claimed_call_id_goes_to_its_claimant() -> None:
    call_id = b"b2bua-leg"
    other = (call_id_owner(call_id, 3) + 1) % 3
    assert datagram_owner(request("b2bua-leg", to_tag=";tag=ours"), 3, {call_id: other}) == other
    assert datagram_owner(response("z9hG4bKx", "b2bua-leg"), 3, {call_id: other}) == other
    assert datagram_owner(request("b2bua-leg"), 3, {call_id: 5}) == call_id_owner(call_id, 3)  # gone


@pytest.mark.parametrize("data", [
    b"", b"\r\n\r\n", b"garbage", b"OPTIONS sip:x SIP/2.0\r\nCall-ID:   \r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-w01\r\n\r\n",
])
def test_what_has_no_call_id_stays_with_the_receiver(data: bytes) -> None:
    assert datagram_owner(data, 2, {}) is None


def test_the_call_id_is_read_in_the_header_block_only() -> None:
    data = request("real") + b"Call-ID: in-the-body\r\n"
    assert datagram_owner(data, 7, {}) == call_id_owner(b"real", 7)
    folded_lf_only = b"BYE sip:x SIP/2.0\ni: lf-only\n\nCall-ID: body"
    assert datagram_owner(folded_lf_only, 7, {}) == call_id_owner(b"lf-only", 7)


def test_marker_of_a_worker_index_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="100"):
        branch_marker(100)
