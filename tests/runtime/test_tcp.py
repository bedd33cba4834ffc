"""SIP over TCP through the running gateway: pipelining, keep-alives, framing errors, idle close."""

from __future__ import annotations

import socket

import pytest

from tests.support.gateway import GatewayProcess, options_request


def connect(gw: GatewayProcess) -> socket.socket:
    sock = socket.create_connection((gw.host, gw.port), timeout=10)
    return sock


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` Content-Length: 0 responses (our OPTIONS answers have no body)."""
    buffer = b""
    while buffer.count(b"\r\n\r\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return [part + b"\r\n\r\n" for part in buffer.split(b"\r\n\r\n")[:count]]


def tcp_options(sock: socket.socket, gw: GatewayProcess) -> bytes:
    return options_request(gw.host, gw.port, sock.getsockname()[:2], transport="TCP")


def test_pipelined_requests_in_odd_chunks_get_answers_in_order(gateway_proc: GatewayProcess) -> None:
    with connect(gateway_proc) as sock:
        requests = [tcp_options(sock, gateway_proc) for _ in range(20)]
        stream = b"".join(requests)
        for i in range(0, len(stream), 97):  # cuts inside lines, headers and the empty line
            sock.sendall(stream[i : i + 97])
        answers = read_responses(sock, 20)
    assert len(answers) == 20
    call_ids = [r.split(b"Call-ID: ")[1].split(b"\r\n")[0] for r in requests]
    for call_id, answer in zip(call_ids, answers, strict=True):
        assert answer.startswith(b"SIP/2.0 200 OK\r\n")
        assert b"Call-ID: " + call_id + b"\r\n" in answer


def test_double_crlf_ping_gets_single_crlf_pong(gateway_proc: GatewayProcess) -> None:
    with connect(gateway_proc) as sock:
        sock.sendall(b"\r\n\r\n")
        assert sock.recv(16) == b"\r\n"
        # A pong from the peer (single CRLF) before a request is ignored; the request answered.
        sock.sendall(b"\r\n" + tcp_options(sock, gateway_proc))
        [answer] = read_responses(sock, 1)
        assert answer.startswith(b"SIP/2.0 200 OK")


def test_missing_content_length_is_answered_400_and_closed(gateway_proc: GatewayProcess) -> None:
    with connect(gateway_proc) as sock:
        request = tcp_options(sock, gateway_proc).replace(b"Content-Length: 0\r\n", b"")
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # until the gateway closes the connection
            data += chunk
    assert data.startswith(b"SIP/2.0 400 Content-Length required on stream transports\r\n")
    assert b";received=127.0.0.1" in data


@pytest.mark.parametrize(
    "damage",
    [
        (b"Content-Length: 0\r\n", b"Content-Length: -999\r\n"),
        (b"Content-Length: 0\r\n", b"Content-Length: 13\r\nContent-Length: 5\r\n"),
    ],
    ids=["negative", "conflicting"],
)
def test_bad_content_length_closes_the_connection(
    gateway_proc: GatewayProcess, damage: tuple[bytes, bytes]
) -> None:
    with connect(gateway_proc) as sock:
        sock.sendall(tcp_options(sock, gateway_proc).replace(*damage) + b"x" * 20)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"SIP/2.0 400 ")


def test_garbage_stream_is_closed_without_answer(gateway_proc: GatewayProcess) -> None:
    with connect(gateway_proc) as sock:
        sock.sendall(b"\x16\x03\x01 this is not SIP at all\r\n\r\n")  # e.g. a TLS hello by mistake
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data == b""


def test_idle_connection_is_closed_by_the_gateway(gateway_proc: GatewayProcess) -> None:
    # The runtime gateway is configured with tcp_idle_timeout: 2 s.
    with connect(gateway_proc) as sock:
        sock.sendall(tcp_options(sock, gateway_proc))
        assert read_responses(sock, 1)[0].startswith(b"SIP/2.0 200")
        sock.settimeout(30)
        assert sock.recv(1) == b""  # EOF: closed by the gateway, no traffic meanwhile
