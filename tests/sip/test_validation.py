"""Request validation (RFC 3261 §8.2, §16.3): one small request per check, plus policy data."""

from __future__ import annotations

import pytest

from gateway.sip.message import Request, parse_message
from gateway.sip.validation import DEFAULT_POLICY, Policy, validate_request


def request(
    extra: str = "",
    *,
    method: str = "INVITE",
    uri: str = "sip:62881001@gw.example.com",
    version: str = "SIP/2.0",
    cseq: str | None = None,
    body: bytes = b"",
) -> Request:
    text = (
        f"{method} {uri} {version}\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
        "From: <sip:62880001@acme.example.com>;tag=a1\r\n"
        "To: <sip:62881001@acme.example.com>\r\n"
        "Call-ID: c1@192.0.2.1\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    msg = parse_message(text.encode() + body)
    assert isinstance(msg, Request)
    return msg


def status(req: Request, policy: Policy = DEFAULT_POLICY, **kwargs: object) -> int | None:
    response = validate_request(req, policy, **kwargs)  # type: ignore[arg-type]
    return None if response is None else response.status


def test_valid_request_passes() -> None:
    assert validate_request(request()) is None
    assert validate_request(request(), forwarding=True) is None


def test_version() -> None:
    response = validate_request(request(version="SIP/3.0"))
    assert response is not None and response.status == 505 and "SIP/3.0" in response.reason


def test_unknown_method_gets_501_with_allow() -> None:
    policy = Policy(methods=frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"}))
    response = validate_request(request(method="PUBLISH"), policy, to_tag="t1")
    assert response is not None and response.status == 501
    assert response.allow == ["ACK", "BYE", "CANCEL", "INVITE", "OPTIONS"]
    assert response.to.tag == "t1" and "PUBLISH" in response.reason
    assert status(request(method="PUBLISH"), policy, forwarding=True) is None  # proxies forward


def test_unsupported_uri_scheme() -> None:
    response = validate_request(request(uri="mailto:bob@example.com"))
    assert response is not None and response.status == 416 and "mailto" in response.reason
    assert status(request(uri="tel:+862162881001")) is None
    assert status(request(uri="tel:+862162881001"), Policy(uri_schemes=frozenset({"sip"}))) == 416


@pytest.mark.parametrize(
    ("extra", "cseq", "needle"),
    [
        ("", "1 BYE", "CSeq method"),
        ("", "4294967296 INVITE", "exceeds 4294967295"),
        ("Call-ID: again\r\n", None, "2 Call-ID"),
        ("To: <sip:x@y>\r\n", None, "2 To"),
        ("Max-Forwards: 70\r\n", None, "2 Max-Forwards"),
        ("Contact: sip:a@b?Route=x\r\n", None, "Contact"),
        ("Contact: *\r\n", None, "Contact '*'"),
        ("Route: <sip:p;lr>,,<sip:q>\r\n", None, "Route"),
        ("Expires: soon\r\n", None, "Expires"),
        ("Session-Expires: abc\r\n", None, "Session-Expires"),
    ],
)
def test_bad_requests(extra: str, cseq: str | None, needle: str) -> None:
    response = validate_request(request(extra, cseq=cseq))
    assert response is not None and response.status == 400
    assert needle in response.reason, response.reason


def test_overlarge_max_forwards_and_bare_cookie_branch() -> None:
    msg = parse_message(request().to_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: 300"))
    assert isinstance(msg, Request) and status(msg) == 400
    msg = parse_message(request().to_bytes().replace(b"branch=z9hG4bK1", b"branch=z9hG4bK"))
    assert isinstance(msg, Request) and status(msg) == 400


def test_malformed_lower_via() -> None:
    msg = request("Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK2;;\r\n")
    assert msg.top_via.branch == "z9hG4bK1"  # routable: an answer can go back
    response = validate_request(msg)
    assert response is not None and response.status == 400 and "Via" in response.reason


def test_request_uri_headers_rejected() -> None:
    assert status(request(uri="sip:bob@example.com?Subject=x")) == 400


def test_contact_wildcard_allowed_for_unregister() -> None:
    msg = request("Contact: *\r\nExpires: 0\r\n", method="REGISTER", uri="sip:acme.example.com")
    assert validate_request(msg) is None


def test_max_forwards_zero_only_matters_when_forwarding() -> None:
    msg = parse_message(request().to_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    assert isinstance(msg, Request)
    assert status(msg) is None
    assert status(msg, forwarding=True) == 483


def test_require_and_proxy_require() -> None:
    msg = request("Require: 100rel, foo\r\nProxy-Require: bar\r\n")
    response = validate_request(msg)
    assert response is not None and response.status == 420
    assert response.unsupported == ["foo"]
    proxied = validate_request(msg, forwarding=True)
    assert proxied is not None and proxied.unsupported == ["bar"]
    assert status(msg, Policy(option_tags=frozenset({"100rel", "foo", "bar"}))) is None
    ack = request("Require: foo\r\n", method="ACK")
    assert validate_request(ack) is None  # RFC 3261 §8.2.2.3


def test_content_type_and_encoding() -> None:
    sdp = b"v=0\r\n"
    assert status(request("Content-Type: application/sdp\r\n", body=sdp)) is None
    response = validate_request(request("Content-Type: text/html\r\n", body=sdp))
    assert response is not None and response.status == 415
    assert response.headers.get("Accept") == "application/sdp"
    assert status(request(body=sdp)) == 400  # body without Content-Type
    gzip = "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n"
    response = validate_request(request(gzip, body=sdp))
    assert response is not None and response.status == 415
    assert response.headers.get("Accept-Encoding") == "identity"
    assert status(request("Content-Type: text/html\r\n", body=sdp), Policy(content_types=None)) is None
    assert status(request("Content-Type: text/html\r\n", body=sdp), forwarding=True) is None


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/sdp", None),
        ("application/*", None),
        ("*/*;q=0.1", None),
        ("text/plain, application/sdp;level=1", None),
        ("text/nobodyKnowsThis", 406),
        ("", 406),
    ],
)
def test_accept(accept: str, expected: int | None) -> None:
    msg = request(f"Accept: {accept}\r\n")
    assert status(msg) == expected
    assert status(request(f"Accept: {accept}\r\n", method="OPTIONS")) is None  # no body to answer with


def test_reason_phrases_are_valid() -> None:
    response = validate_request(request("Contact: <sip:a@b>;;x\r\n"))
    assert response is not None and response.status == 400
    assert '"' not in response.reason and "\\" not in response.reason
    assert response.reason.startswith("Bad Request (Contact has an empty or malformed parameter")


def test_error_responses_round_trip() -> None:
    response = validate_request(request("Require: foo\r\n"), to_tag="z")
    assert response is not None
    again = parse_message(response.to_bytes())
    assert again == response
    assert response.reason.startswith("Bad Extension (")
