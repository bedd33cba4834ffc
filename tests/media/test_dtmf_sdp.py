"""RFC 4733 detection, SIP INFO bodies and SDP offer / answer: pure."""

from __future__ import annotations

import pytest

from gateway.media.dtmf import DtmfDetector, event_payload, info_key, parse_event
from gateway.media.g711 import Codec
from gateway.media.rtp import decode
from gateway.media.sdp import SdpError, build_answer, negotiate, parse_offer, reoffer
from tests.media.rtp_tools import dtmf_packets


def feed_all(detector: DtmfDetector, packets: list[bytes]) -> list[str]:
    keys = []
    for raw in packets:
        packet = decode(raw)
        key = detector.feed(packet.timestamp, packet.payload)
        if key is not None:
            keys.append(key)
    return keys


def test_one_press_with_updates_and_three_end_packets_is_one_key() -> None:
    assert feed_all(DtmfDetector(), dtmf_packets("5", timestamp=100, sequence=1)) == ["5"]


def test_a_press_whose_first_packets_are_lost_still_counts_once() -> None:
    packets = dtmf_packets("#", timestamp=100, sequence=1)
    assert feed_all(DtmfDetector(), packets[3:]) == ["#"]  # only late updates and the ends arrived


def test_the_same_key_twice_is_two_presses_with_different_timestamps() -> None:
    packets = dtmf_packets("1", timestamp=100, sequence=1) + dtmf_packets("1", timestamp=900, sequence=8)
    assert feed_all(DtmfDetector(), packets) == ["1", "1"]


def test_a_late_duplicate_of_an_earlier_press_is_not_counted_again() -> None:
    first = dtmf_packets("1", timestamp=100, sequence=1)
    second = dtmf_packets("2", timestamp=900, sequence=8)
    assert feed_all(DtmfDetector(), first + second + first[-1:]) == ["1", "2"]


def test_event_fields_and_unknown_events() -> None:
    event = parse_event(event_payload("*", end=True, duration=400, volume=7))
    assert event is not None and (event.key, event.end, event.volume, event.duration) == ("*", True, 7, 400)
    assert parse_event(b"\x01") is None
    assert DtmfDetector().feed(1, bytes([200, 0x80, 0, 160])) is None  # event 200 is no key


@pytest.mark.parametrize(
    ("content_type", "body", "key"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("Application/DTMF-Relay; charset=x", b"signal= #\nDuration=100", "#"),
        ("application/dtmf-relay", b"Signal=10\r\n", "*"),  # some phones send the event code
        ("application/dtmf", b"9", "9"),
        ("application/dtmf", b"x", None),
        ("application/dtmf-relay", b"Duration=160", None),
        ("application/sdp", b"v=0", None),
        (None, b"Signal=1", None),
    ],
)
def test_info_bodies(content_type: str | None, body: bytes, key: str | None) -> None:
    assert info_key(content_type, body) == key


OFFER = b"""v=0\r
o=alice 1 1 IN IP4 192.0.2.1\r
s=-\r
c=IN IP4 192.0.2.1\r
t=0 0\r
m=audio 4000 RTP/AVP 18 8 0 96\r
a=rtpmap:18 G729/8000\r
a=rtpmap:96 telephone-event/8000\r
a=fmtp:96 0-16\r
m=video 5000 RTP/AVP 31\r
c=IN IP4 192.0.2.9\r
"""


def test_answer_picks_the_offerers_first_g711_and_its_telephone_event() -> None:
    offer = parse_offer(OFFER)
    assert (offer.address, offer.port, offer.payload_types) == ("192.0.2.1", 4000, (18, 8, 0, 96))
    negotiated = negotiate(offer)
    assert (negotiated.codec, negotiated.telephone_event) == (Codec.PCMA, 96)
    answer = build_answer(negotiated, "127.0.0.1", 20000, session_id=42).decode()
    assert "m=audio 20000 RTP/AVP 8 96\r\n" in answer
    assert "a=rtpmap:96 telephone-event/8000" in answer and "c=IN IP4 127.0.0.1" in answer
    again = parse_offer(answer.encode())
    assert negotiate(again).codec is Codec.PCMA


def test_media_level_connection_wins_and_static_types_need_no_rtpmap() -> None:
    offer = parse_offer(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 9 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n")
    assert offer.address == "10.0.0.2"
    assert negotiate(offer).telephone_event is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18\r\n", 488),  # no G.711
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 4000 RTP/AVP 31\r\n", 488),  # no audio
        # A malformed offer is 488 too (issue #16): the session description is not acceptable.
        (b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", 488),  # no connection address
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n", 488),  # stream refused
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n", 488),
        (b"\xff\xfe", 488),
    ],
)
def test_offers_we_cannot_answer(body: bytes, status: int) -> None:
    with pytest.raises(SdpError) as info:
        negotiate(parse_offer(body))
    assert info.value.status == status


def test_reoffer_keeps_our_origin_with_the_next_version() -> None:
    out = reoffer(OFFER, session_id=42, version=3, address="127.0.0.1").decode()
    assert out.startswith("v=0\r\no=gateway 42 3 IN IP4 127.0.0.1\r\n")
    assert "m=audio 4000 RTP/AVP 18 8 0 96" in out and "c=IN IP4 192.0.2.1" in out
