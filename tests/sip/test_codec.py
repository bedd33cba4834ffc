"""SIP codec unit tests: framing, folding, names, quoting, typed header fields, URIs, building."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.sip import limits
from gateway.sip.headers import (
    Headers,
    NameAddr,
    Via,
    parse_auth,
    parse_name_addr,
    parse_via,
    quote_string,
    split_list,
    unquote_string,
)
from gateway.sip.message import (
    AnswerableParseError,
    Request,
    Response,
    SipParseError,
    make_response,
    parse_message,
)
from gateway.sip.uri import AbsoluteUri, SipUri, TelUri, parse_uri

BASE = (
    "OPTIONS sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    "From: <sip:alice@example.com>;tag=a1\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: c1@192.0.2.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
)


def req(extra: str = "", body: bytes = b"", base: str = BASE, length: bool = True) -> Request:
    text = base + extra + (f"Content-Length: {len(body)}\r\n" if length else "") + "\r\n"
    msg = parse_message(text.encode() + body)
    assert isinstance(msg, Request)
    return msg


def parse_error(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    return info.value


# --- start lines and framing -------------------------------------------------------------------------


def test_request_fields() -> None:
    msg = req()
    assert (msg.method, msg.uri, msg.version) == ("OPTIONS", "sip:bob@example.com", "SIP/2.0")
    assert msg.call_id == "c1@192.0.2.1"
    assert (msg.cseq.seq, msg.cseq.method) == (1, "OPTIONS")
    assert msg.from_.tag == "a1" and msg.to.tag is None
    assert msg.max_forwards is None
    assert msg.body == b"" and msg.content_length == 0


def test_response_fields() -> None:
    data = BASE.replace("OPTIONS sip:bob@example.com SIP/2.0", "SIP/2.0 486 Busy Here") + "\r\n"
    msg = parse_message(data.encode())
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (486, "Busy Here")
    assert msg.top_via.branch == "z9hG4bK1"


def test_leading_crlf_is_ignored_and_buffers_accepted() -> None:
    assert parse_message(b"\r\n\r\n" + req().to_bytes()) == req()
    msg = parse_message(bytearray(req(body=b"abc").to_bytes()))
    assert type(msg.body) is bytes and msg.body == b"abc"
    assert parse_message(memoryview(req().to_bytes())) == req()


@pytest.mark.parametrize(
    ("start", "status"),
    [
        ("SIP/2.0 99 Too Small", 400),
        ("SIP/2.0 700 Too Big", 400),
        ("SIP/2.0 2000 OK", 400),
        ("SIP/3.0 200 OK", 505),
        ("SIP/2.0", 400),
    ],
)
def test_bad_status_lines_are_dropped(start: str, status: int) -> None:
    data = BASE.replace("OPTIONS sip:bob@example.com SIP/2.0", start) + "\r\n"
    exc = parse_error(data.encode())
    assert exc.status == status and not isinstance(exc, AnswerableParseError)


def test_version_is_case_insensitive_and_kept_for_validation() -> None:
    assert req(base=BASE.replace("SIP/2.0\r\n", "sip/2.0\r\n", 1)).version == "SIP/2.0"
    assert req(base=BASE.replace("SIP/2.0\r\n", "SIP/7.0\r\n", 1)).version == "SIP/7.0"


def test_body_framing_by_content_length() -> None:
    msg = req(body=b"\x00\x01binary\r\n\r\nbody\xff")
    assert msg.body == b"\x00\x01binary\r\n\r\nbody\xff"
    head = BASE + "Content-Length: 3\r\n\r\n"
    assert parse_message(head.encode() + b"abcdef").body == b"abc"  # trailing octets dropped
    no_length = parse_message((BASE + "\r\n").encode() + b"rest of datagram")
    assert no_length.body == b"rest of datagram"


@pytest.mark.parametrize(
    ("length", "reason"),
    [("-1", "non-negative"), ("abc", "non-negative"), ("99", "exceeds"), ("1" * 40, "exceeds")],
)
def test_bad_content_length_is_answerable_400(length: str, reason: str) -> None:
    exc = parse_error((BASE + f"Content-Length: {length}\r\n\r\nxy").encode())
    assert exc.status == 400 and reason in exc.reason
    assert isinstance(exc, AnswerableParseError) and exc.request.call_id == "c1@192.0.2.1"


def test_two_content_lengths() -> None:
    exc = parse_error((BASE + "Content-Length: 1\r\nl: 1\r\n\r\nx").encode())
    assert exc.status == 400 and "2 times" in exc.reason and isinstance(exc, AnswerableParseError)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"garbage",
        b"INVITE\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\n\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\rX: y\r\n\r\n",
    ],
)
def test_garbage_is_not_answerable(data: bytes) -> None:
    exc = parse_error(data)
    assert exc.status == 400 and not isinstance(exc, AnswerableParseError)


@pytest.mark.parametrize(
    ("drop", "reason"),
    [("Via", "Via"), ("Call-ID", "Call-ID"), ("CSeq", "CSeq"), ("From", "From"), ("To", "To")],
)
def test_missing_essential_header(drop: str, reason: str) -> None:
    lines = [line for line in BASE.split("\r\n") if not line.startswith(drop + ":")]
    exc = parse_error(("\r\n".join(lines) + "\r\n").encode())
    assert exc.status == 400 and reason in exc.reason
    assert not isinstance(exc, AnswerableParseError)


def test_broken_ack_is_never_answerable() -> None:
    data = BASE.replace("OPTIONS", "ACK") + "Content-Length: 9\r\n\r\n"
    exc = parse_error(data.encode())
    assert exc.status == 400 and not isinstance(exc, AnswerableParseError)


def test_missing_empty_line_is_answerable() -> None:
    exc = parse_error(BASE.encode())
    assert exc.status == 400 and "empty line" in exc.reason and isinstance(exc, AnswerableParseError)


def test_limits() -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(limits.MAX_HEADER_COUNT + 1))
    exc = parse_error((BASE + many + "\r\n").encode())
    assert exc.status == 400 and "header fields" in exc.reason and isinstance(exc, AnswerableParseError)
    exc = parse_error((BASE + "X-Long: " + "a" * limits.MAX_LINE_LENGTH + "\r\n\r\n").encode())
    assert exc.status == 400 and isinstance(exc, AnswerableParseError)
    huge_head = (BASE + "X-Pad: " + "a" * 4000 + "\r\n") * 9
    assert parse_error(huge_head.encode() + b"\r\n").status == 513
    big_body = b"x" * limits.MAX_MESSAGE_SIZE
    exc = parse_error((BASE + f"Content-Length: {len(big_body)}\r\n\r\n").encode() + big_body)
    assert exc.status == 513 and isinstance(exc, AnswerableParseError)
    vias = "".join(f"Via: SIP/2.0/UDP h{i};branch=z9hG4bK{i}\r\n" for i in range(limits.MAX_VIA_COUNT))
    assert parse_error((BASE + vias + "\r\n").encode()).status == 400


# --- header names, folding, lists ------------------------------------------------------------------------


def test_folding_and_compact_names() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1\r\n ;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>\r\n\t;tag=1\r\n"
        b"t: sip:b@example.com\r\n"
        b"i: abc\r\n"
        b"CSEQ  :   7\r\n   INVITE\r\n"
        b"m: <sip:a@192.0.2.1>\r\n"
        b"k: timer\r\n"
        b"c: application/sdp\r\n"
        b"x: 900;refresher=uas\r\n"
        b"l: 2\r\n\r\nok"
    )
    msg = parse_message(data)
    assert msg.top_via.branch == "z9hG4bK1" and msg.from_.tag == "1"
    assert msg.cseq.seq == 7 and msg.call_id == "abc"
    assert msg.headers.get("Supported") == "timer" and msg.headers.get("k") == "timer"
    session = msg.session_expires
    assert session is not None and (session.seconds, session.refresher) == (900, "uas")
    assert msg.body == b"ok"
    wire = msg.to_bytes().decode()
    for full in ("Via:", "From:", "To:", "Call-ID:", "CSeq:", "Contact:", "Supported:", "Content-Type:",
                 "Session-Expires:", "Content-Length: 2"):
        assert f"\r\n{full}" in wire
    assert "\r\n " not in wire and "\r\n\t" not in wire


def test_header_names_are_case_insensitive() -> None:
    msg = req("x-CUSTOM: 1\r\nmax-FORWARDS: 70\r\n")
    assert msg.headers.get("X-Custom") == "1" and msg.headers.get("MAX-forwards") == "70"
    assert ("x-CUSTOM", "1") in list(msg.headers)  # unknown names keep their spelling
    assert ("Max-Forwards", "70") in list(msg.headers)
    assert "call-id" in msg.headers and "i" in msg.headers and "Nope" not in msg.headers


def test_repeated_and_comma_separated_values() -> None:
    msg = req("Supported: timer, 100rel\r\nSupported: path\r\nRoute: <sip:p1;lr>, <sip:p2;lr>\r\n"
              "Route: <sip:p3;lr>\r\nAllow: INVITE,ACK , BYE\r\n")
    assert msg.supported == ["timer", "100rel", "path"]
    assert msg.allow == ["INVITE", "ACK", "BYE"]
    assert [r.uri for r in msg.routes] == ["sip:p1;lr", "sip:p2;lr", "sip:p3;lr"]
    assert msg.headers.get("Supported") == "timer, 100rel"
    assert msg.headers.get_lines("Supported") == ["timer, 100rel", "path"]


def test_quoted_strings_with_escaped_quotes_and_commas() -> None:
    msg = req('Contact: "Smith, \\"Bob\\" <x>" <sip:bob@192.0.2.4>;q=0.5, '
              "<sip:bob@[2001:db8::1]:5070>;q=1\r\n")
    first, second = msg.contacts
    assert first.display == 'Smith, "Bob" <x>'
    assert first.q == 0.5 and second.q == 1.0
    assert parse_uri(second.uri) == SipUri("sip", "2001:db8::1", "bob", port=5070)
    assert split_list('"a,b" <sip:x>, c') == ['"a,b" <sip:x>', "c"]
    assert split_list("<sip:a@b?x=1,2>, <sip:c>") == ["<sip:a@b?x=1,2>", "<sip:c>"]
    assert unquote_string(quote_string('a"b\\c')) == 'a"b\\c'


def test_contact_wildcard_and_params() -> None:
    msg = req("Contact: *\r\nExpires: 0\r\n")
    (star,) = msg.contacts
    assert star.is_wildcard and str(star) == "*"
    msg = req(
        "Contact: <sip:line1@192.0.2.9;transport=tcp>;expires=600;q=0.7"
        ';+sip.instance="<urn:uuid:1234>";reg-id=1\r\n'
    )
    (contact,) = msg.contacts
    assert contact.expires == 600 and contact.q == 0.7 and contact.reg_id == 1
    assert contact.instance == "<urn:uuid:1234>"
    assert parse_name_addr(str(contact), "Contact") == contact


@pytest.mark.parametrize(
    "value",
    [
        "<sip:a@b",
        '"unterminated <sip:a@b>',
        "sip:a@b?x=y",
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "<sip:a@b>;;tag=1",
        "<sip:a@b>;tag=1;tag=2",
        "<nouri>",
        "",
    ],
)
def test_malformed_name_addr(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_name_addr(value, "To")
    assert info.value.status == 400 and info.value.reason.startswith("To")


# --- Via ------------------------------------------------------------------------------------------------


def test_via_fields_and_serialisation() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;rport;received=2001:db8::1")
    assert (via.transport, via.host, via.port) == ("UDP", "2001:db8::9", 5070)
    assert via.branch == "z9hG4bKx" and via.received == "2001:db8::1"
    assert via.has_rport and via.rport is None
    assert str(via) == "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;rport;received=2001:db8::1"
    stamped = replace(via, params={**via.params, "rport": "5071"})
    assert stamped.rport == 5071 and via.rport is None
    spaced = parse_via("SIP / 2.0 / tcp  host.example.com : 5061 ; branch = z9hG4bK2 ; maddr=224.2.0.1")
    assert spaced == Via("TCP", "host.example.com", 5061, {"branch": "z9hG4bK2", "maddr": "224.2.0.1"})
    assert parse_via(str(spaced)) == spaced


@pytest.mark.parametrize(
    "value",
    ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host;branch", "SIP/2.0/UDP h;;",
     "SIP/2.0/UDP h junk", "SIP/2.0/UDP [::1::2]", "SIP/2.0/UDP [1:2]:5060;branch=z9hG4bK1"],
)
def test_malformed_via(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(value)


# --- auth, typed values -------------------------------------------------------------------------------------


def test_digest_authorization() -> None:
    msg = req('Authorization: Digest username="62880001", realm="acme", nonce="n1,2", uri="sip:acme",'
              ' response="abc", algorithm=MD5, qop=auth, nc=00000001, cnonce="c"\r\n'
              'Proxy-Authorization: Digest username="x", realm="r2"\r\n')
    (auth,) = msg.authorization
    assert auth.is_digest and auth.username == "62880001" and auth.realm == "acme"
    assert auth.params["nonce"] == "n1,2" and auth.params["nc"] == "00000001"
    assert parse_auth(str(auth), "Authorization") == auth
    assert msg.proxy_authorization[0].realm == "r2"
    with pytest.raises(SipParseError):
        parse_auth('Digest realm="x", realm="y"', "Authorization")


def test_reason_content_type_and_scalars() -> None:
    msg = req('Reason: SIP ;cause=200 ;text="Call completed elsewhere", Q.850;cause=16\r\n'
              "Content-Type: Application/SDP ; charset=utf-8\r\nMax-Forwards: 70\r\nExpires: 300\r\n"
              "Require: 100rel\r\nProxy-Require: sec-agree\r\nUnsupported: foo\r\n", b"v=0\r\n")
    sip_reason, q850 = msg.reasons
    assert sip_reason.cause == 200 and sip_reason.text == "Call completed elsewhere"
    assert q850.protocol == "Q.850" and q850.cause == 16
    content_type = msg.content_type
    assert content_type is not None and content_type.mime == "application/sdp"
    assert content_type.params == {"charset": "utf-8"}
    assert (msg.max_forwards, msg.expires) == (70, 300)
    assert (msg.require, msg.proxy_require, msg.unsupported) == (["100rel"], ["sec-agree"], ["foo"])
    with pytest.raises(SipParseError):
        req("Max-Forwards: seventy\r\n").max_forwards  # noqa: B018


# --- URIs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sips:alice:secret@atlanta.com:5061;transport=tcp",
        "sip:+12125551212@gateway.com;user=phone",
        "sip:[2001:db8::10]:5060;lr",
        "sip:192.0.2.4",
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "tel:+1-201-555-0123",
        "tel:7042;phone-context=example.com",
        "urn:service:sos",
    ],
)
def test_uri_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert parse_uri(str(uri)) == uri
    assert str(uri) == text


def test_uri_components() -> None:
    uri = parse_uri("sips:%61lice:pw@[::1]:5061;TRANSPORT=TLS;lr;maddr=239.255.255.1?h=%3Cx%3E")
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == ("sips", "alice", "pw", "::1", 5061)
    assert uri.secure and uri.lr and uri.transport == "tls"
    assert uri.params == {"transport": "TLS", "lr": None, "maddr": "239.255.255.1"}
    assert uri.headers == {"h": "<x>"}
    tel = parse_uri("tel:+86-21-6288-0001;ext=12")
    assert isinstance(tel, TelUri) and tel.is_global and tel.digits == "+862162880001"
    assert tel.params == {"ext": "12"}
    assert parse_uri("HTTP://example.com/x") == AbsoluteUri("http", "//example.com/x")


@pytest.mark.parametrize(
    "text",
    ["<sip:a@b>", "sip:", "sip:a@", "sip:@host", "sip:[::1::2]", "sip:host:99999", "sip:host;;",
     "sip:a b@host", "tel:abc z", "1sip:x", "sip:host?noequals", "x:with space", "sip:h;a=1;A=2",
     "sip:[12345::]"],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


# --- Headers API ----------------------------------------------------------------------------------------


def test_headers_multimap() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:x@y>"), ("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c")])
    assert h.get("v") == "SIP/2.0/UDP a"
    assert h.get_all("VIA") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    h.prepend("Via", "SIP/2.0/UDP z")
    assert h.get_all("Via")[0] == "SIP/2.0/UDP z"
    h.prepend("Record-Route", "<sip:rr;lr>")  # absent: goes to the top
    assert next(iter(h)) == ("Record-Route", "<sip:rr;lr>")
    h.set("to", "<sip:new@y>")
    assert h.get_all("To") == ["<sip:new@y>"]
    h.add("X-A", "1")
    h.add("x-a", "2")
    assert h.get_all("X-A") == ["1", "2"]
    h.set("X-A", "3")
    assert h.get_all("x-a") == ["3"]
    h.remove("Via")
    assert "Via" not in h and h.get("Via") is None and h.get_all("Via") == []
    assert h.pop_first("Record-Route") == "<sip:rr;lr>"
    with pytest.raises(ValueError, match="CR or LF"):
        h.add("X-B", "a\r\nInjected: 1")
    with pytest.raises(ValueError, match="header name"):
        h.add("Bad Name", "x")


def test_only_the_top_via_is_parsed_eagerly() -> None:
    msg = req("Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bK2, SIP/2.0/UDP p3.example.com:x\r\n")
    assert msg.top_via.host == "192.0.2.1"
    with pytest.raises(SipParseError, match="Via"):
        msg.vias  # noqa: B018
    exc = parse_error((BASE.replace("Via: SIP", "Via: SIP/2.0/UDP bad:x, SIP") + "\r\n").encode())
    assert exc.status == 400 and not isinstance(exc, AnswerableParseError)


def test_typed_cache_follows_header_changes() -> None:
    msg = req()
    assert msg.top_via.branch == "z9hG4bK1"
    msg.headers.prepend("Via", str(Via("TCP", "proxy.example.com", 5060, {"branch": "z9hG4bKp"})))
    assert [v.branch for v in msg.vias] == ["z9hG4bKp", "z9hG4bK1"]
    msg.headers.set("To", str(NameAddr("sip:bob@example.com", "Bob", {"tag": "b9"})))
    assert msg.to.tag == "b9" and msg.to.display == "Bob"
    assert msg.headers.pop_first("Via") is not None
    assert msg.top_via.branch == "z9hG4bK1"


# --- building and serialising -------------------------------------------------------------------------------


def test_make_response_copies_dialog_headers() -> None:
    request = req("Via: SIP/2.0/TCP 192.0.2.7;branch=z9hG4bK7\r\nMax-Forwards: 70\r\nTimestamp: 54\r\n")
    response = make_response(request, 200, to_tag="t77")
    assert (response.status, response.reason) == (200, "OK")
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.to.tag == "t77" and response.from_.tag == "a1"
    assert response.call_id == request.call_id and response.cseq == request.cseq
    assert "Max-Forwards" not in response.headers and "Timestamp" not in response.headers
    trying = make_response(request, 100)
    assert trying.headers.get("Timestamp") == "54" and trying.to.tag is None
    in_dialog = req(base=BASE.replace("To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=t77"))
    assert make_response(in_dialog, 481, to_tag="other").to.tag == "t77"  # an existing tag is kept
    assert make_response(request, 499).reason == "Client Error"
    assert parse_message(response.to_bytes()) == response


def test_serialisation_fixes_content_length() -> None:
    msg = req()
    msg.body = b"hello"
    wire = msg.to_bytes()
    assert wire.endswith(b"Content-Length: 5\r\n\r\nhello")
    built = Request("MESSAGE", "sip:bob@example.com", Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
                    ("From", "<sip:a@h>;tag=1"), ("To", "<sip:bob@example.com>"), ("Call-ID", "x"),
                    ("CSeq", "1 MESSAGE")]), b"hi")
    assert parse_message(built.to_bytes()) == built
    assert Response(180).reason == "Ringing"
    with pytest.raises(ValueError):
        Response(99)
    with pytest.raises(ValueError):
        Request("BAD METHOD", "sip:x")
    with pytest.raises(ValueError):
        Request("INVITE", "<sip:x>")
