"""RFC 4475 torture messages through the codec and request validation, table-driven.

Every ``.dat`` file is read as bytes, never modified. For each, the table says what the codec
does (parses, or SipParseError with a status and whether the request can still be answered) and
what validation answers as a UAS/registrar and as a proxy (``None``: processed normally).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import pytest

from gateway.sip.message import AnswerableParseError, Request, Response, SipParseError, parse_message
from gateway.sip.uri import AbsoluteUri, SipUri, parse_uri
from gateway.sip.validation import DEFAULT_POLICY, Policy, validate_request
from tests.conftest import RFC4475_DIR

# A registrar/UAS that takes SDP and multipart/mixed bodies (mpart01 is a MESSAGE).
UAS = Policy(registrar=True, content_types=frozenset({"application/sdp", "multipart/mixed"}))
PROXY = DEFAULT_POLICY


@dataclass(frozen=True)
class Expect:
    parse: int | None = None  # SipParseError status, None = parses
    answerable: bool = True  # for parse errors: partial request exposed
    uas: int | None = None  # validate_request(UAS) status
    proxy: int | None = None  # validate_request(PROXY, forwarding=True) status


OK = Expect()

EXPECTED: dict[str, Expect] = {
    # 3.1.1 valid
    "wsinv.dat": OK,
    "intmeth.dat": Expect(uas=501),  # unknown method: UAS 501, proxy forwards
    "esc01.dat": OK,
    "escnull.dat": OK,
    "esc02.dat": Expect(uas=501),
    "lwsdisp.dat": OK,
    "longreq.dat": OK,
    "dblreq.dat": OK,
    "semiuri.dat": OK,
    "transports.dat": OK,
    "mpart01.dat": OK,
    "unreason.dat": OK,
    "noreason.dat": OK,
    # 3.1.2 invalid
    "badinv01.dat": Expect(parse=400),
    "clerr.dat": Expect(parse=400),
    "ncl.dat": Expect(parse=400),
    "scalar02.dat": Expect(uas=400, proxy=400),
    "scalarlg.dat": Expect(parse=400, answerable=False),
    "quotbal.dat": Expect(parse=400),
    "ltgtruri.dat": Expect(parse=400),
    "lwsruri.dat": Expect(parse=400),
    "lwsstart.dat": Expect(parse=400),
    "trws.dat": Expect(parse=400),
    "escruri.dat": Expect(uas=400, proxy=400),
    "baddate.dat": OK,  # Date does not matter to us: ignored
    "regbadct.dat": Expect(uas=400, proxy=400),
    "badaspec.dat": Expect(parse=400),
    "baddn.dat": Expect(parse=400),
    "badvers.dat": Expect(uas=505, proxy=505),
    "mismatch01.dat": Expect(uas=400, proxy=400),
    "mismatch02.dat": Expect(uas=501, proxy=400),
    "bigcode.dat": Expect(parse=400, answerable=False),
    # 3.2 transaction layer
    "badbranch.dat": Expect(uas=400, proxy=400),
    # 3.3 application layer
    "insuf.dat": Expect(parse=400, answerable=False),
    "unkscm.dat": Expect(uas=416, proxy=416),
    "novelsc.dat": Expect(uas=416, proxy=416),
    "unksm2.dat": Expect(uas=400),  # registrar: To is not a SIP AOR; a proxy routes on the R-URI
    "bext01.dat": Expect(uas=420, proxy=420),
    "invut.dat": Expect(uas=415),
    "regaut01.dat": OK,
    "multi01.dat": Expect(uas=400, proxy=400),
    "mcl01.dat": Expect(parse=400),
    "bcast.dat": OK,
    "zeromf.dat": Expect(proxy=483),
    "cparam01.dat": OK,
    "cparam02.dat": OK,
    "regescrt.dat": OK,
    "sdp01.dat": Expect(uas=406),
    # 3.4 backward compatibility
    "inv2543.dat": OK,
}


def load(name: str) -> bytes:
    return (RFC4475_DIR / name).read_bytes()


def test_table_covers_the_manifest() -> None:
    with (RFC4475_DIR / "manifest.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert {row["file"] for row in rows} == set(EXPECTED)
    assert {p.name for p in RFC4475_DIR.glob("*.dat")} == set(EXPECTED)
    for row in rows:
        kind = row["kind"]
        expect = EXPECTED[row["file"]]
        if row["class"] == "valid":
            assert expect.parse is None, row["file"]
        if kind == "response":
            assert expect.uas is None and expect.proxy is None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rfc4475_message(name: str) -> None:
    expect = EXPECTED[name]
    data = load(name)
    if expect.parse is not None:
        with pytest.raises(SipParseError) as info:
            parse_message(data)
        exc = info.value
        assert exc.status == expect.parse
        assert exc.reason and "\n" not in exc.reason and "\r" not in exc.reason
        assert isinstance(exc, AnswerableParseError) == expect.answerable
        if isinstance(exc, AnswerableParseError):
            # The partial request carries what an error response needs (RFC 3261 §8.2.6).
            exc.request.top_via  # noqa: B018
            exc.request.cseq  # noqa: B018
            assert exc.request.headers.get("Call-ID")
        return
    msg = parse_message(data)
    # What the codec emits parses back equal, and serialisation is a fixed point.
    out = msg.to_bytes()
    again = parse_message(out)
    assert again == msg
    assert again.to_bytes() == out
    if isinstance(msg, Response):
        return
    assert isinstance(msg, Request)
    uas = validate_request(msg, UAS, to_tag="t1")
    proxy = validate_request(msg, PROXY, forwarding=True)
    assert (uas.status if uas else None) == expect.uas, uas and uas.reason
    assert (proxy.status if proxy else None) == expect.proxy, proxy and proxy.reason
    for response in (uas, proxy):
        if response is not None:
            assert response.headers.get("Call-ID") == msg.headers.get("Call-ID")
            assert response.headers.get_all("Via") == msg.headers.get_all("Via")
            assert response.reason.startswith(response.reason.split(" (")[0])


def parsed(name: str) -> Request:
    msg = parse_message(load(name))
    assert isinstance(msg, Request)
    return msg


def test_wsinv_whitespace_folding_and_compact_forms() -> None:
    msg = parsed("wsinv.dat")
    assert msg.method == "INVITE"
    assert msg.to.uri == "sip:vivekg@chair-dnrc.example.com"
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (msg.cseq.seq, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    # Unknown headers are opaque: only unfolded, never split or normalised.
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert contact.q == pytest.approx(0.33)
    (route,) = msg.routes
    route_uri = parse_uri(route.uri)
    assert isinstance(route_uri, SipUri)
    assert route_uri.lr and route_uri.params["unknownwith"] == "value"
    assert len(msg.body) == 150


def test_intmeth_unusual_characters() -> None:
    msg = parsed("intmeth.dat")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq.method == msg.method
    uri = msg.request_uri
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    # Written back byte for byte, except the canonical SP after the extension header's colon.
    raw = load("intmeth.dat")
    assert msg.to_bytes() == raw.replace(b"'~:\xef", b"'~: \xef")
    response = validate_request(msg, UAS)
    assert response is not None and response.status == 501
    assert "INVITE" in (response.headers.get("Allow") or "")


def test_escaping_is_decoded_once_in_uris_only() -> None:
    msg = parsed("esc01.dat")
    ruri = msg.request_uri
    assert isinstance(ruri, SipUri)
    assert ruri.user == "sips:user@example.com" and ruri.host == "example.net"
    to = parse_uri(msg.to.uri)
    assert isinstance(to, SipUri) and to.user == "user"
    contact = parse_uri(msg.contacts[0].uri)
    assert isinstance(contact, SipUri)
    assert contact.user == "caller"
    assert contact.params == {"lr": None, "name": "value%41"}  # %25%34%31 -> "%41", not "A"
    assert parse_uri(str(contact)) == contact


def test_escnull_keeps_two_distinct_contacts() -> None:
    msg = parsed("escnull.dat")
    users = []
    for contact in msg.contacts:
        uri = parse_uri(contact.uri)
        assert isinstance(uri, SipUri)
        users.append(uri.user)
    assert users == ["\x00", "\x00\x00"]
    to = parse_uri(msg.to.uri)
    assert isinstance(to, SipUri) and to.user == "null-\x00-null"


def test_esc02_method_is_not_decoded_and_escaped_name_is_another_header() -> None:
    msg = parsed("esc02.dat")
    assert msg.method == "RE%47IST%45R"
    assert [c.uri for c in msg.contacts] == ["sip:alias1@host1.example.com", "sip:alias3@host3.example.com"]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.to.display == "%Z%45"


def test_lwsdisp_display_name_without_space() -> None:
    assert parsed("lwsdisp.dat").from_.display == "caller"


def test_longreq_long_values_and_many_vias() -> None:
    msg = parsed("longreq.dat")
    assert len(msg.vias) == 34
    assert msg.vias[0].host == "sip33.example.com"
    assert msg.vias[-1].received == "192.0.2.5"
    to_uri = parse_uri(msg.to.uri)
    assert isinstance(to_uri, SipUri) and to_uri.port == 6000
    assert "longparam" + "name" * 25 in to_uri.params


def test_dblreq_trailing_octets_are_discarded() -> None:
    msg = parsed("dblreq.dat")
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert b"INVITE" not in msg.to_bytes()


def test_semiuri_user_part() -> None:
    uri = parsed("semiuri.dat").request_uri
    assert isinstance(uri, SipUri)
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com" and uri.params == {}


def test_transports_are_kept() -> None:
    msg = parsed("transports.dat")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_is_byte_exact() -> None:
    data = load("mpart01.dat")
    msg = parsed("mpart01.dat")
    start = data.index(b"\r\n\r\n") + 4
    assert msg.body == data[start : start + 553]
    assert b"\x00" in msg.body
    content_type = msg.content_type
    assert content_type is not None and content_type.mime == "multipart/mixed"
    assert content_type.params["boundary"] == "7a9cbec02ceef655"
    assert parse_message(msg.to_bytes()).body == msg.body


def test_unusual_and_empty_reason_phrases() -> None:
    msg = parse_message(load("unreason.dat"))
    assert isinstance(msg, Response)
    assert msg.status == 200 and msg.reason.startswith("= 2**3 * 5**2 но сто")
    empty = parse_message(load("noreason.dat"))
    assert isinstance(empty, Response)
    assert (empty.status, empty.reason) == (100, "")


def test_bcast_response_parses_with_broadcast_via() -> None:
    msg = parse_message(load("bcast.dat"))
    assert isinstance(msg, Response)
    assert msg.vias[1].host == "255.255.255.255"


def test_inv2543_body_is_rest_of_datagram() -> None:
    data = load("inv2543.dat")
    msg = parsed("inv2543.dat")
    assert msg.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert msg.top_via.branch is None and msg.from_.tag is None and msg.max_forwards is None
    assert msg.headers.get("Content-Length") is None
    assert f"Content-Length: {len(msg.body)}\r\n".encode() in msg.to_bytes()


def test_unknown_schemes_kept_as_absolute_uris() -> None:
    assert parsed("unkscm.dat").request_uri == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")
    assert parsed("novelsc.dat").request_uri == AbsoluteUri("soap.beep", "//192.0.2.103:3002")
    msg = parsed("unksm2.dat")
    assert msg.to.uri == "isbn:2983792873"
    assert msg.from_.uri == "http://www.example.com"
    assert [c.uri for c in msg.contacts] == ["name:John_Smith"]


def test_contact_parameter_versus_uri_parameter() -> None:
    (c1,) = parsed("cparam01.dat").contacts
    assert c1.uri == "sip:+19725552222@gw1.example.net" and c1.params == {"unknownparam": None}
    (c2,) = parsed("cparam02.dat").contacts
    assert c2.params == {}
    uri = parse_uri(c2.uri)
    assert isinstance(uri, SipUri) and uri.params == {"unknownparam": None}


def test_regescrt_contact_keeps_escaped_route_header() -> None:
    (contact,) = parsed("regescrt.dat").contacts
    uri = parse_uri(contact.uri)
    assert isinstance(uri, SipUri)
    assert uri.headers == {"Route": "<sip:sip.example.com>"}


def test_regaut01_unknown_auth_scheme_is_parsed_opaquely() -> None:
    (auth,) = parsed("regaut01.dat").authorization
    assert auth.scheme == "NoOneKnowsThisScheme" and auth.params == {"opaque-data": "here"}


def test_scalar02_values() -> None:
    msg = parsed("scalar02.dat")
    assert msg.cseq.seq == 36893488147419103232
    assert msg.expires == 3600  # overlarge counts as the default
    assert msg.contacts[0].expires == 3600
    response = validate_request(msg, UAS)
    assert response is not None and response.status == 400 and "CSeq" in response.reason


def test_bext01_unsupported_lists_the_tags() -> None:
    msg = parsed("bext01.dat")
    uas = validate_request(msg, UAS)
    proxy = validate_request(msg, PROXY, forwarding=True)
    assert uas is not None and uas.headers.get_all("Unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]
    assert proxy is not None and proxy.headers.get_all("Unsupported") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def test_invut_and_sdp01_carry_accept() -> None:
    invut = validate_request(parsed("invut.dat"), UAS)
    assert invut is not None and invut.headers.get("Accept") == "application/sdp, multipart/mixed"
    sdp01 = validate_request(parsed("sdp01.dat"), UAS)
    assert sdp01 is not None and (sdp01.headers.get("Warning") or "").startswith("399 ")


def test_partial_requests_can_be_answered() -> None:
    from gateway.sip.message import make_response

    for name in ("badinv01.dat", "clerr.dat", "ncl.dat", "mcl01.dat", "quotbal.dat", "baddn.dat",
                 "badaspec.dat", "ltgtruri.dat", "lwsruri.dat", "lwsstart.dat", "trws.dat"):
        with pytest.raises(SipParseError) as info:
            parse_message(load(name))
        request = info.value.request
        assert request is not None, name
        response = make_response(request, info.value.status, to_tag="x")
        wire = response.to_bytes()
        assert wire.startswith(b"SIP/2.0 400 Bad Request\r\n")
        assert f"Call-ID: {request.headers.get('Call-ID')}\r\n".encode() in wire
        assert response.headers.get_lines("Via") == request.headers.get_lines("Via")
