"""Registrar core (RFC 3261 §10.3) with Digest auth, on a fake clock and the memory store."""

from __future__ import annotations

import inspect
import itertools
from pathlib import Path

import pytest

from gateway.registrar.location import MemoryLocationStore
from gateway.registrar.registrar import Registrar
from gateway.registrar.settings import RegistrarConfig
from gateway.registrar.trunks import load_trunks
from gateway.sip.address import Address
from gateway.sip.auth import Algorithm, Challenge, authorization_for
from gateway.sip.message import Request, Response, parse_message

ROOT = Path(__file__).resolve().parents[2]
SRC = Address("udp", "192.0.2.10", 41000)
PASSWORD = "acme-iad-secret"
_branch = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def register(
    user: str = "62880001",
    *,
    contacts: tuple[str, ...] = ("<sip:62880001@192.0.2.10:5060>",),
    expires: int | None = None,
    call_id: str = "call-1",
    cseq: int = 1,
    extra: tuple[str, ...] = (),
    to_uri: str | None = None,
) -> Request:
    lines = [
        "REGISTER sip:ims-gateway SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{next(_branch)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@ims-gateway>;tag=f1",
        f"To: <{to_uri or f'sip:{user}@ims-gateway'}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *[f"Contact: {c}" for c in contacts],
        *([f"Expires: {expires}"] if expires is not None else []),
        *extra,
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


async def answer(registrar: Registrar, request: Request, source: Address = SRC) -> Response:
    """The registrar's response, whether given at once or after the store update."""
    result = registrar.handle(request, source)
    return await result if inspect.isawaitable(result) else result


class Device:
    """A UAC that answers challenges, as an IAD line would."""

    def __init__(self, registrar: Registrar, user: str = "62880001", password: str = PASSWORD,
                 username: str | None = None) -> None:
        self.registrar, self.user, self.password = registrar, user, password
        self.username = username or user
        self.cseq = 0
        self.nc = 0
        self.challenge: Challenge | None = None

    async def send(self, **kw: object) -> Response:
        self.cseq += 1
        request = register(self.user, cseq=self.cseq, **kw)  # type: ignore[arg-type]
        if self.challenge is not None:
            self.nc += 1
            creds = authorization_for(self.challenge, username=self.username, password=self.password,
                                      method="REGISTER", uri=request.uri, nc=self.nc)
            request.headers.add("Authorization", creds.render())
        return await answer(self.registrar, request)

    async def register(self, **kw: object) -> Response:
        response = await self.send(**kw)
        if response.status == 401:
            self.challenge = Challenge.parse(response.headers.get_all("WWW-Authenticate")[0])
            self.nc = 0
            response = await self.send(**kw)
        return response


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_registrar(clock: Clock, **config: object) -> Registrar:
    return Registrar(
        RegistrarConfig.model_validate(config),
        load_trunks(ROOT / "config" / "trunks.yaml"),
        MemoryLocationStore(),
        b"k" * 32,
        clock=clock,
    )


@pytest.fixture
def registrar(clock: Clock) -> Registrar:
    return make_registrar(clock, algorithms=["SHA-256", "MD5"])


async def test_challenge_then_register(registrar: Registrar, clock: Clock) -> None:
    first = await answer(registrar, register(), SRC)
    assert first.status == 401
    challenges = [Challenge.parse(v) for v in first.headers.get_all("WWW-Authenticate")]
    assert [c.algorithm for c in challenges] == [Algorithm.SHA256, Algorithm.MD5]
    assert all(c.qop == ("auth",) and c.realm == "ims-gateway" and not c.stale for c in challenges)
    response = await Device(registrar).register(expires=600)
    assert response.status == 200
    (contact,) = response.contacts
    assert contact.uri == "sip:62880001@192.0.2.10:5060" and contact.params["expires"] == "600"
    assert response.headers.get("Date") is not None
    (binding,) = await registrar.store.lookup("62880001", clock.now)
    assert binding.source == SRC and binding.trunk == "acme-iad"


async def test_md5_answer_accepted(registrar: Registrar) -> None:
    dev = Device(registrar)
    first = await dev.send()
    dev.challenge = Challenge.parse(first.headers.get_all("WWW-Authenticate")[1])
    assert dev.challenge.algorithm is Algorithm.MD5
    assert (await dev.send()).status == 200


async def test_wrong_password_and_unknown_user_look_alike(registrar: Registrar) -> None:
    wrong = await Device(registrar, password="nope").register()
    unknown = await Device(registrar, user="62889999").register()
    for response in (wrong, unknown):
        assert response.status == 401
        assert all(not Challenge.parse(v).stale for v in response.headers.get_all("WWW-Authenticate"))
    assert [h.lower() for h, _ in wrong.headers] == [h.lower() for h, _ in unknown.headers]
    assert registrar.failures.count(SRC.host, registrar.clock()) == 2


async def test_failures_are_reported_and_a_locked_user_looks_like_a_wrong_password(clock: Clock) -> None:
    """Every failed check of REGISTER is reported (source, user); a locked user's right
    password gets the very 401 a wrong one gets (no oracle), and counts as a failure."""
    failed: list[tuple[str, str]] = []

    class Locks:
        def auth_failed(self, source_host: str, username: str, now: float) -> None:
            failed.append((source_host, username))

        def user_locked(self, username: str, now: float) -> bool:
            return username == "62880003"

    trunks = load_trunks(ROOT / "config" / "trunks.yaml")
    registrar = Registrar(RegistrarConfig(), trunks, MemoryLocationStore(), b"k" * 32, clock=clock,
                          observer=Locks())
    wrong = await Device(registrar, user="62880002", password="nope").register()
    locked = await Device(registrar, user="62880003").register()
    assert wrong.status == locked.status == 401
    assert [h.lower() for h, _ in wrong.headers] == [h.lower() for h, _ in locked.headers]
    assert all(not Challenge.parse(v).stale for v in locked.headers.get_all("WWW-Authenticate"))
    assert failed == [(SRC.host, "62880002"), (SRC.host, "62880003")]
    assert (await Device(registrar, user="62880004").register()).status == 200


async def test_line_cannot_register_another_number(registrar: Registrar) -> None:
    dev = Device(registrar, user="62880002", username="62880001")
    response = await dev.register()
    assert response.status == 403


async def test_stale_nonce_and_replay(registrar: Registrar, clock: Clock) -> None:
    dev = Device(registrar)
    assert (await dev.register()).status == 200
    clock.now += 301  # nonce lifetime is 300 s
    stale = await dev.send()
    assert stale.status == 401 and Challenge.parse(stale.headers.get_all("WWW-Authenticate")[0]).stale
    assert registrar.failures.count(SRC.host, clock.now) == 0  # right password: not a failure
    assert (await dev.register()).status == 200
    dev.nc -= 1  # replay the previous nonce count
    replay = await dev.send()
    assert replay.status == 401 and Challenge.parse(replay.headers.get_all("WWW-Authenticate")[0]).stale


async def test_expires_clamp_423_and_removal(registrar: Registrar, clock: Clock) -> None:
    dev = Device(registrar)
    brief = await dev.register(expires=10)
    assert brief.status == 423 and brief.headers.get("Min-Expires") == "60"
    long = await dev.send(expires=100_000)
    assert long.status == 200 and long.contacts[0].params["expires"] == "3600"
    two = await dev.send(
        contacts=("<sip:62880001@192.0.2.10:5060>;expires=120", "<sip:62880001@10.9.9.9>;q=0.5")
    )
    assert sorted(str(c.params["expires"]) for c in two.contacts) == ["120", "3600"]
    clock.now += 200
    assert len(await registrar.store.lookup("62880001", clock.now)) == 1
    bad_star = await dev.send(contacts=("*",), expires=30)
    assert bad_star.status == 400
    star = await dev.send(contacts=("*",), expires=0)
    assert star.status == 200 and star.contacts == []
    assert await registrar.store.lookup("62880001", clock.now) == []


async def test_fetch_bindings_without_contact(registrar: Registrar) -> None:
    dev = Device(registrar)
    await dev.register()
    fetch = await dev.send(contacts=())
    assert fetch.status == 200 and len(fetch.contacts) == 1


async def test_out_of_order_cseq_fails(registrar: Registrar) -> None:
    dev = Device(registrar)
    assert (await dev.register()).status == 200
    dev.cseq -= 2  # same Call-ID, lower CSeq than the stored binding
    response = await dev.send(expires=0)
    assert response.status == 500


async def test_instance_and_reg_id_kept(registrar: Registrar) -> None:
    inst = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    dev = Device(registrar)
    response = await dev.register(
        contacts=(f"<sip:62880001@192.0.2.10:5060>;+sip.instance={inst};reg-id=1",)
    )
    (contact,) = response.contacts
    assert contact.params["+sip.instance"] == inst and contact.params["reg-id"] == "1"
    # The same instance from a new NAT port replaces the binding instead of adding one.
    moved = await dev.send(contacts=(f"<sip:62880001@192.0.2.10:6000>;+sip.instance={inst};reg-id=1",))
    assert [c.uri for c in moved.contacts] == ["sip:62880001@192.0.2.10:6000"]


@pytest.mark.parametrize(
    ("kw", "status"),
    [
        ({"to_uri": "tel:62880001"}, 400),  # RFC 4475 unksm2-style: To is not sip/sips
        ({"extra": ("Require: gruu",)}, 420),
        ({"extra": ('Authorization: Digest username="x", realm="ims-gateway"',)}, 400),
    ],
)
async def test_bad_requests(registrar: Registrar, kw: dict[str, object], status: int) -> None:
    response = await answer(registrar, register(**kw), SRC)  # type: ignore[arg-type]
    assert response.status == status
    if status == 420:
        assert response.headers.get("Unsupported") == "gruu"


async def test_unknown_scheme_in_to_before_auth(registrar: Registrar) -> None:
    request = register(to_uri="unknown:foo")
    assert (await answer(registrar, request, SRC)).status == 400


async def test_non_sip_contact_after_auth(registrar: Registrar) -> None:
    assert (await Device(registrar).register(contacts=("<mailto:a@b>",))).status == 400


@pytest.mark.parametrize(
    "creds",
    [
        'Digest username="62880001", realm="ims-gateway", nonce="x", uri="sip:ims-gateway", '
        'response="00", algorithm=SHA-1, qop=auth, nc=00000001, cnonce="c"',
        'Digest username="62880001", realm="ims-gateway", nonce="x", uri="sip:ims-gateway", response="00"',
        'Digest username="62880001", realm="ims-gateway", nonce="x", uri="sip:ims-gateway", '
        'response="00", qop=auth-int, nc=00000001, cnonce="c"',
    ],
)
async def test_unsupported_answers_are_challenged_again(registrar: Registrar, creds: str) -> None:
    response = await answer(registrar, register(extra=(f"Authorization: {creds}",)))
    assert response.status == 401 and response.headers.get_all("WWW-Authenticate")
