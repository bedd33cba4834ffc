"""Property tests: the codec never fails other than with SipParseError, and round-trips.

- any bytes (random, and mutations of the RFC 4475 messages) give a message or SipParseError;
- whatever parses serialises to bytes that parse back equal, and serialisation is then a fixed
  point; typed accessors and validation raise nothing but SipParseError;
- generated valid messages round-trip.
"""

from __future__ import annotations

import os
from contextlib import suppress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.errors import reason_phrase
from gateway.sip.headers import quote_string
from gateway.sip.message import (
    AnswerableParseError,
    Headers,
    Request,
    Response,
    SipParseError,
    make_response,
    parse_message,
)
from gateway.sip.uri import parse_uri
from gateway.sip.validation import validate_request
from tests.conftest import RFC4475_DIR

SEEDS = [p.read_bytes() for p in sorted(RFC4475_DIR.glob("*.dat"))]
# SIP_FUZZ_EXAMPLES=20000 for a long local run; the default keeps the suite quick.
EXAMPLES = int(os.environ.get("SIP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exercise(msg: Request | Response) -> None:
    """Touch every typed accessor; only SipParseError may come out."""
    for name in ("vias", "cseq", "call_id", "from_", "to", "max_forwards", "expires", "contacts", "routes",
                 "record_routes", "authorization", "www_authenticate", "proxy_authorization",
                 "proxy_authenticate", "reasons", "supported", "require", "session_expires",
                 "content_type", "allow", "min_expires"):
        with suppress(SipParseError):
            getattr(msg, name)
    if isinstance(msg, Request):
        uri_round_trip(msg.uri)
        for response in (validate_request(msg), validate_request(msg, forwarding=True)):
            if response is not None:
                assert reason_phrase(response.reason) == response.reason
                response.to_bytes()
        for contact in _safe_contacts(msg):
            uri_round_trip(contact)


def uri_round_trip(text: str) -> None:
    """A URI that parses prints as one that parses back equal."""
    with suppress(SipParseError):
        uri = parse_uri(text)
        assert parse_uri(str(uri)) == uri


def _safe_contacts(msg: Request) -> list[str]:
    try:
        return [c.uri for c in msg.contacts]
    except SipParseError:
        return []


def check(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        assert 400 <= exc.status <= 599
        assert "\r" not in exc.reason and "\n" not in exc.reason
        if isinstance(exc, AnswerableParseError):
            exc.request.to_bytes()
            response = make_response(exc.request, exc.status, exc.reason, to_tag="t")
            assert reason_phrase(response.reason) == response.reason
            assert response.to_bytes().startswith(f"SIP/2.0 {exc.status} ".encode())
            exercise(exc.request)
        return
    out = msg.to_bytes()
    again = parse_message(out)
    assert again == msg
    assert again.to_bytes() == out
    exercise(msg)


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 4000), st.binary(min_size=0, max_size=8)), min_size=1, max_size=6),
)
def test_mutated_torture_messages(seed: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(seed)
    for offset, chunk in edits:
        pos = offset % (len(data) + 1)
        data[pos : pos + len(chunk) // 2] = chunk  # replace, insert or delete a few octets
    check(bytes(data))


@FUZZ
@given(st.text(max_size=60))
def test_any_uri_text(text: str) -> None:
    uri_round_trip(text)
    uri_round_trip("sip:" + text)
    uri_round_trip("sip:" + text + "@example.com")


@FUZZ
@given(st.from_regex(r"(sips?|tel|urn):[A-Za-z0-9%;=?&@:.\[\]+\-_!~*'()/$,]{0,40}", fullmatch=True))
def test_uri_like_text(text: str) -> None:
    uri_round_trip(text)


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 4000))
def test_truncated_torture_messages(seed: bytes, cut: int) -> None:
    check(seed[: cut % (len(seed) + 1)])


# --- generated valid messages -----------------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
token = st.text(TOKEN_CHARS, min_size=1, max_size=12)
host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.[a-z][a-z0-9]{0,6}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
port = st.one_of(st.none(), st.integers(1, 65535))
hostport = st.builds(lambda h, p: h if p is None else f"{h}:{p}", host, port)
user = st.from_regex(r"[a-zA-Z0-9+._\-]{1,12}", fullmatch=True)
sip_uri = st.builds(lambda u, hp: f"sip:{u}@{hp}", user, hostport)
one_line_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20)
display_text = one_line_text
# Via parameters with required values (and branch, generated separately) are left out.
param_name = token.filter(lambda t: t.lower() not in {"branch", "received", "maddr", "ttl"})
param_value = st.one_of(st.none(), token, one_line_text.map(quote_string))
params = st.lists(st.tuples(param_name, param_value), max_size=3, unique_by=lambda t: t[0].lower())
param_text = params.map(lambda ps: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps))
name_addr = st.builds(
    lambda d, u, p: (f"{quote_string(d)} " if d is not None else "") + f"<{u}>{p}",
    st.one_of(st.none(), display_text),
    sip_uri,
    param_text,
)
via = st.builds(lambda t, hp, b, p: f"SIP/2.0/{t} {hp};branch=z9hG4bK{b}{p}",
                st.sampled_from(["UDP", "TCP", "TLS", "SCTP"]), hostport, token, param_text)
header_value = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=40)
extension = st.tuples(st.sampled_from(["X-Custom", "Subject", "User-Agent", "P-Asserted-Identity", "Accept"]),
                      header_value.map(str.strip))


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    headers = Headers()
    for v in draw(st.lists(via, min_size=1, max_size=3)):
        headers.add(draw(st.sampled_from(["Via", "v"])), v)
    headers.add("From", draw(name_addr))
    headers.add("To", draw(name_addr))
    headers.add("Call-ID", draw(token))
    method = draw(st.sampled_from(["INVITE", "BYE", "OPTIONS", "REGISTER", "X-EXT"]))
    headers.add("CSeq", f"{draw(st.integers(0, 2**32 - 1))} {method}")
    for name, value in draw(st.lists(extension, max_size=4)):
        headers.add(name, value)
    if draw(st.booleans()):
        headers.add("Contact", ", ".join(draw(st.lists(name_addr, min_size=1, max_size=3))))
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        return Request(method, draw(sip_uri), headers, body)
    reason = draw(one_line_text)
    return Response(draw(st.integers(100, 699)), reason.strip(" \t") or None, headers, body)


@FUZZ
@given(messages())
def test_generated_messages_round_trip(msg: Request | Response) -> None:
    out = msg.to_bytes()
    parsed = parse_message(out)
    assert parsed == msg
    assert parsed.to_bytes() == out
    # The typed views agree with what was generated.
    assert [str(v) for v in parsed.vias] == [str(v) for v in msg.vias]
    assert parsed.from_ == msg.from_ and parsed.to == msg.to
    for contact in parsed.contacts:
        assert parse_uri(contact.uri) == parse_uri(str(parse_uri(contact.uri)))
