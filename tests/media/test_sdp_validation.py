"""SDP connection and media lines (issue #16): Hypothesis builds offers from valid parts and
from one broken part at a time; valid ones pass, broken ones are SdpError 488, and no input at
all raises anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.sdp import SdpError, validate

IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str)
PORT = st.integers(0, 65535)
PAYLOAD_TYPES = st.lists(st.integers(0, 127), min_size=1, max_size=8)


@st.composite
def offers(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(session-level c= line, media sections) of a valid offer."""
    family = draw(st.sampled_from(["IP4", "IP6"]))
    address = draw(IPV4 if family == "IP4" else IPV6)
    media = []
    for _ in range(draw(st.integers(1, 3))):
        pts = " ".join(str(p) for p in draw(PAYLOAD_TYPES))
        section = f"m=audio {draw(PORT)} RTP/AVP {pts}\r\n"
        if draw(st.booleans()):
            own = draw(st.sampled_from(["IP4", "IP6"]))
            section += f"c=IN {own} {draw(IPV4 if own == 'IP4' else IPV6)}\r\n"
        media.append(section)
    return f"c=IN {family} {address}\r\n", media


def sdp(connection: str, media: list[str]) -> bytes:
    return ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n" + connection + "t=0 0\r\n" + "".join(media)).encode()


@settings(max_examples=300, deadline=None)
@given(offers())
def test_valid_offers_pass(offer: tuple[str, list[str]]) -> None:
    validate(sdp(*offer))


BROKEN_CONNECTIONS = st.one_of(
    IPV4.map(lambda a: f"c=IN IP6 {a}\r\n"),  # an IPv4 literal said to be IPv6
    IPV6.map(lambda a: f"c=IN IP4 {a}\r\n"),
    st.sampled_from([
        "c=IN IP4 gateway.example.com\r\n",  # a host name: never resolved for media
        "c=IN IP4 256.1.1.1\r\n", "c=IN IP4\r\n", "c=IN XX 1.2.3.4\r\n", "c=ATM NSAP 1.2.3.4\r\n",
    ]),
)
BROKEN_MEDIA = st.one_of(
    st.integers(65536, 10**9).map(lambda p: f"m=audio {p} RTP/AVP 0\r\n"),
    st.integers(128, 10**6).map(lambda pt: f"m=audio 4000 RTP/AVP 0 {pt}\r\n"),
    st.sampled_from([
        "m=audio -1 RTP/AVP 0\r\n", "m=audio x RTP/AVP 0\r\n", "m=audio 4000 RTP/AVP\r\n",
        "m=audio 4000 RTP/AVP PCMU\r\n", "m=audio 4000/0 RTP/AVP 0\r\n", "m=audio 4000 RTP/AVP 0 \x01\r\n",
        "m=audio 4000\r\n",
    ]),
)


@settings(max_examples=300, deadline=None)
@given(offers(), BROKEN_CONNECTIONS, st.booleans())
def test_a_bad_connection_line_is_488(offer: tuple[str, list[str]], broken: str, session_level: bool) -> None:
    connection, media = offer
    body = sdp(broken, media) if session_level else sdp(connection, [media[0] + broken, *media[1:]])
    with pytest.raises(SdpError) as caught:
        validate(body)
    assert caught.value.status == 488


@settings(max_examples=300, deadline=None)
@given(offers(), BROKEN_MEDIA)
def test_a_bad_media_line_is_488(offer: tuple[str, list[str]], broken: str) -> None:
    connection, media = offer
    with pytest.raises(SdpError) as caught:
        validate(sdp(connection, [*media, broken]))
    assert caught.value.status == 488


def test_a_stream_without_any_connection_address_is_488() -> None:
    with pytest.raises(SdpError):
        validate(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4002 RTP/AVP 0\r\n")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_input_is_accepted_or_an_sdp_error(body: bytes) -> None:
    try:
        validate(body)
    except SdpError as exc:
        assert exc.status == 488
