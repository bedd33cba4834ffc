"""Digest maths (RFC 7616 §3.9.1 vectors), header grammar, stateless nonces and nc replay."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.auth import (
    Algorithm,
    Challenge,
    Credentials,
    DigestError,
    NonceCountTracker,
    NonceIssuer,
    NonceState,
    authorization_for,
    compute_ha1,
    compute_response,
    parse_digest,
)
from gateway.sip.errors import SipParseError

# RFC 7616 §3.9.1: user Mufasa, password "Circle of Life".
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (Algorithm.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example_vectors(algorithm: Algorithm, expected: str) -> None:
    ha1 = compute_ha1(algorithm, "Mufasa", RFC_REALM, "Circle of Life")
    got = compute_response(
        algorithm, ha1, nonce=RFC_NONCE, method="GET", uri="/dir/index.html",
        qop="auth", nc="00000001", cnonce=RFC_CNONCE,
    )
    assert got == expected


def test_rfc7616_example_header_parses() -> None:
    header = (
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",'
        ' algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001,'
        ' cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,'
        ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",'
        ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    creds = Credentials.parse(header)
    assert creds.algorithm is Algorithm.SHA256
    assert creds.nc_value == 1
    assert creds.uri == "/dir/index.html"
    assert Credentials.parse(creds.render()) == creds


def test_challenge_roundtrip_and_quoting() -> None:
    ch = Challenge(realm='we "quote"', nonce="abc", algorithm=Algorithm.SHA256, stale=True, opaque="o")
    text = ch.render()
    assert 'qop="auth"' in text and "stale=true" in text and "algorithm=SHA-256" in text
    assert Challenge.parse(text) == ch


def test_sess_variant_uses_cnonce() -> None:
    ha1 = compute_ha1(Algorithm.MD5_SESS, "u", "r", "p")
    a = compute_response(Algorithm.MD5_SESS, ha1, nonce="n", method="REGISTER", uri="sip:r",
                         qop="auth", nc="00000001", cnonce="c1")
    b = compute_response(Algorithm.MD5, ha1, nonce="n", method="REGISTER", uri="sip:r",
                         qop="auth", nc="00000001", cnonce="c1")
    assert a != b


@pytest.mark.parametrize(
    "bad",
    [
        "Basic dXNlcg==",
        'Digest realm="unterminated',
        "Digest realm=a, realm=b",
        "Digest realm",
        'Digest realm="a" nonce="b"',
        "Digest realm=",
    ],
)
def test_malformed_headers_are_400(bad: str) -> None:
    with pytest.raises((DigestError, SipParseError)) as exc:
        parse_digest(bad)
    assert isinstance(exc.value, DigestError | SipParseError) and exc.value.status == 400


def test_unknown_algorithm_and_qop() -> None:
    with pytest.raises(DigestError):
        Algorithm.parse("SHA-1")
    with pytest.raises(DigestError):
        compute_response(Algorithm.MD5, "x", nonce="n", method="M", uri="u", qop="auth-int", nc="1",
                         cnonce="c")
    with pytest.raises(DigestError):
        Credentials.parse('Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth')


@given(st.text(max_size=200))
def test_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(DigestError, SipParseError):
        parse_digest("Digest " + text)


def test_client_answer_verifies() -> None:
    ch = Challenge(realm="acme", nonce="n1", algorithm=Algorithm.SHA256)
    creds = authorization_for(ch, username="62880001", password="pw", method="REGISTER", uri="sip:acme", nc=3)
    ha1 = compute_ha1(Algorithm.SHA256, "62880001", "acme", "pw")
    expected = compute_response(Algorithm.SHA256, ha1, nonce="n1", method="REGISTER", uri="sip:acme",
                                qop="auth", nc=creds.nc, cnonce=creds.cnonce)
    assert creds.response == expected and creds.nc == "00000003"


KEY = b"k" * 32


def test_nonce_valid_stale_invalid() -> None:
    issuer = NonceIssuer(KEY, lifetime=30)
    nonce = issuer.issue(1000.0, "acme")
    assert issuer.check(nonce, 1010.0, "acme") is NonceState.VALID
    assert issuer.check(nonce, 1031.0, "acme") is NonceState.STALE
    assert issuer.check(nonce, 1010.0, "other") is NonceState.INVALID
    assert NonceIssuer(b"x" * 32).check(nonce, 1010.0, "acme") is NonceState.INVALID
    assert issuer.check(nonce, 900.0, "acme") is NonceState.INVALID  # from the future
    tampered = ("A" if nonce[0] != "A" else "B") + nonce[1:]
    assert issuer.check(tampered, 1010.0, "acme") is NonceState.INVALID
    assert issuer.check("not a nonce!", 1010.0, "acme") is NonceState.INVALID
    assert issuer.issued_at(nonce) == 1000.0


def test_nonces_are_unique() -> None:
    issuer = NonceIssuer(KEY)
    assert len({issuer.issue(5.0, "r") for _ in range(1000)}) == 1000


def test_nc_replay_window() -> None:
    t = NonceCountTracker(lifetime=30, window=8)
    assert t.accept("n", 1, issued=0, now=1)
    assert not t.accept("n", 1, issued=0, now=1)  # replay
    assert t.accept("n", 3, issued=0, now=1)
    assert t.accept("n", 2, issued=0, now=1)  # reordered, first time
    assert not t.accept("n", 2, issued=0, now=1)
    assert t.accept("n", 20, issued=0, now=1)
    assert not t.accept("n", 5, issued=0, now=1)  # fell out of the window
    assert not t.accept("n", 0, issued=0, now=1)
    assert t.accept("m", 1, issued=0, now=40) is True  # "n" expired and was dropped
    assert len(t) == 1


def test_nc_tracker_capacity_never_reopens_replay() -> None:
    t = NonceCountTracker(lifetime=100, capacity=2)
    assert t.accept("a", 1, issued=1, now=5)
    assert t.accept("b", 1, issued=2, now=5)
    assert t.accept("c", 1, issued=3, now=5)  # evicts "a": floor becomes 1
    assert not t.accept("a", 1, issued=1, now=5)  # would be a replay: refused
    assert len(t) == 2
