"""Helpers for the registrar's real-peer tests: a gateway subprocess with the demo trunks, and a
small Digest-capable REGISTER client over a real UDP socket."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

from gateway.sip.auth import Challenge, authorization_for
from gateway.sip.message import Response, parse_message
from tests.support.gateway import PROJECT_ROOT, GatewayProcess

TRUNKS = PROJECT_ROOT / "config" / "trunks.yaml"
PASSWORD = "acme-iad-secret"
LINES = [f"6288000{n}" for n in range(1, 9)]


def registrar_gateway(workdir: Path, *, redis_url: str | None = None, port: int = 0,
                      **registrar: object) -> GatewayProcess:
    extra: dict[str, object] = {"registrar": {"trunks": str(TRUNKS), **registrar}}
    if redis_url is not None:
        extra["redis"] = {"url": redis_url}
    workdir.mkdir(parents=True, exist_ok=True)
    return GatewayProcess(workdir, port=port, extra_config=extra)


def users_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """SIPp injection file: number; [authentication username=... password=...]."""
    lines = ["SEQUENTIAL"]
    lines += [f"{num};[authentication username={user} password={pw}]" for num, user, pw in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def register(port: int, user: str, password: str = PASSWORD, *, username: str | None = None,
             contact: str | None = "auto", expires: int | None = 120, host: str = "127.0.0.1",
             local_port: int = 0) -> Response:
    """REGISTER ``user`` at the gateway on ``host:port`` over UDP, answering one challenge.

    ``contact=None`` sends no Contact (a fetch of the current bindings, RFC 3261 §10.2.3).
    """
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, local_port))
        lport = sock.getsockname()[1]
        if contact == "auto":
            contact = f"sip:{user}@{host}:{lport}"
        uri = f"sip:{host}:{port}"

        def send(cseq: int, authorization: str | None) -> Response:
            lines = [
                f"REGISTER {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {host}:{lport};branch=z9hG4bK{uuid.uuid4().hex};rport",
                "Max-Forwards: 70",
                f"From: <sip:{user}@{host}>;tag={call_id[:8]}",
                f"To: <sip:{user}@{host}>",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} REGISTER",
            ]
            if contact is not None:
                lines.append(f"Contact: <{contact}>")
            if expires is not None:
                lines.append(f"Expires: {expires}")
            if authorization is not None:
                lines.append(f"Authorization: {authorization}")
            lines.append("Content-Length: 0")
            datagram = ("\r\n".join(lines) + "\r\n\r\n").encode()
            # Retransmitted like any UDP client's request (RFC 3261 §17.1.2.2: Timer E from
            # T1 = 0.5 s doubling up to T2 = 4 s, given up after Timer F = 32 s): a gateway
            # worker still warming up on a loaded machine may answer only the second copy.
            interval, deadline = 0.5, time.monotonic() + 32.0
            while True:
                sock.sendto(datagram, (host, port))
                sock.settimeout(min(interval, max(0.01, deadline - time.monotonic())))
                try:
                    answer = parse_message(sock.recv(65535))
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
                    interval = min(2 * interval, 4.0)
                    continue
                assert isinstance(answer, Response)
                return answer

        first = send(1, None)
        if first.status != 401:
            return first
        challenge = Challenge.parse(first.headers.get_all("WWW-Authenticate")[0])
        creds = authorization_for(challenge, username=username or user, password=password,
                                  method="REGISTER", uri=uri)
        return send(2, creds.render())


def contacts(port: int, user: str) -> list[str]:
    """The contact URIs the gateway holds for ``user`` (an authenticated fetch)."""
    response = register(port, user, contact=None, expires=None)
    assert response.status == 200, response
    return [c.uri for c in response.contacts]
