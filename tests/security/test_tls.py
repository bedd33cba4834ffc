"""SIP over TLS (RFC 3261 §26.2.1, RFC 5630) with a real TLS peer: two baresip lines register over
TLS (certificates made by openssl in the test, the CA given to baresip) and call each other by
short number; a plain-TCP hello on the TLS port gets nothing; a bad certificate path stops the
gateway at start with the setting named."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.call.harness import TIMERS, free_port, status, wait_for, wait_idle
from tests.call.test_baresip import baresip, command
from tests.registrar.peers import contacts
from tests.support.gateway import GatewayProcess, demo_trunks_file, options_request
from tests.support.servers import require_binary


def _openssl(*args: str) -> None:
    subprocess.run([require_binary("openssl"), *args], check=True, capture_output=True, timeout=60)


def issue(ca_dir: Path, directory: Path, cn: str, san: str) -> tuple[Path, Path]:
    """A certificate for ``cn`` / ``san`` signed by the CA in ``ca_dir``: (cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, cert, ext = (directory / name for name in ("key.pem", "req.csr", "cert.pem", "san.ext"))
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={cn}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.pem"), "-CAkey", str(ca_dir / "ca.key"),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return cert, key


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for IP 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(directory / "ca.key"),
             "-out", str(directory / "ca.pem"), "-days", "2", "-subj", "/CN=test SIP CA")
    cert, key = issue(directory, directory / "server", "127.0.0.1", "IP:127.0.0.1")
    return directory / "ca.pem", cert, key


@pytest.fixture(scope="module")
def tls_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, int, Path]]:
    workdir = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_certificates(workdir / "certs")
    trunks = demo_trunks_file(workdir / "trunks.yaml", carrier=free_port(), pbx=free_port())
    port, tls_port = free_port(), free_port()
    gw = GatewayProcess(
        workdir / "gw", port=port,
        sip_overrides={
            "timers": TIMERS,
            "listen": [{"transport": "udp", "host": "127.0.0.1", "port": port},
                       {"transport": "tcp", "host": "127.0.0.1", "port": port},
                       {"transport": "tls", "host": "127.0.0.1", "port": tls_port}],
            "tls": {"certificate": str(cert), "private_key": str(key)},
        },
        extra_config={
            "registrar": {"trunks": str(trunks), "qualify": {"enabled": False}},
            "call": {"status_socket": str(workdir / "gw" / "call.sock")},
        },
    )
    gw.start()
    try:
        yield gw, tls_port, ca
    finally:
        gw.stop()


def test_options_over_tls_with_certificate_check(tls_gw: tuple[GatewayProcess, int, Path]) -> None:
    _, tls_port, ca = tls_gw
    context = ssl.create_default_context(cafile=str(ca))  # checks the chain and IP 127.0.0.1
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(options_request("127.0.0.1", tls_port, sock.getsockname()[:2], transport="TLS"))
        answer = sock.recv(65536)
    assert answer.startswith(b"SIP/2.0 200 "), answer
    assert b"Via: SIP/2.0/TLS " in answer
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as plain:
        plain.sendall(options_request("127.0.0.1", tls_port, plain.getsockname()[:2], transport="TCP"))
        plain.settimeout(5)
        try:
            data = plain.recv(65536)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"SIP/2.0"), data  # not TLS: no SIP answer


def test_two_baresip_lines_register_and_call_over_tls(
    tls_gw: tuple[GatewayProcess, int, Path], tmp_path: Path
) -> None:
    gw, tls_port, ca = tls_gw
    config = f"sip_cafile {ca}\n"
    with (
        baresip(tmp_path / "caller", "62880005", tls_port, transport="tls", config=config) as caller,
        baresip(tmp_path / "callee", "62880006", tls_port, transport="tls", config=config),
    ):
        deadline = time.monotonic() + 15
        while not (contacts(gw.port, "62880005") and contacts(gw.port, "62880006")):
            assert time.monotonic() < deadline, "baresip did not register over TLS:\n" + gw.log()[-3000:]
            time.sleep(0.2)
        assert all("transport=tls" in c for c in contacts(gw.port, "62880006")), contacts(gw.port, "62880006")
        command(caller, "dial", f"sip:60006@127.0.0.1:{tls_port}")  # baresip adds transport=tls
        wait_for(gw, lambda snap: any(c["state"] == "confirmed" for c in snap["active"]), timeout=15)
        command(caller, "hangup")
        snap = wait_idle(gw)
    assert snap["completed"] == 1 and status(gw)["failed"] == 0


def test_a_bad_certificate_path_stops_the_start_with_the_setting_named(tmp_path: Path) -> None:
    port = free_port()
    gw = GatewayProcess(tmp_path, port=port, sip_overrides={
        "listen": [{"transport": "udp", "host": "127.0.0.1", "port": port},
                   {"transport": "tls", "host": "127.0.0.1", "port": free_port()}],
        "tls": {"certificate": str(tmp_path / "missing.pem"), "private_key": str(tmp_path / "missing.key")},
    }, extra_config={"dialplans": []})
    gw.write_config()
    command = [sys.executable, "-m", "gateway", "run", "--config", str(gw.config_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stderr
    assert "sip.tls.certificate" in result.stderr and "missing.pem" in result.stderr, result.stderr



class TlsCarrier:
    """A carrier SBC stub on TLS: answers each OPTIONS 200 and records what it got."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.handshake_errors: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(5)
                    buffer = b""
                    while chunk := conn.recv(65536):
                        buffer += chunk
                        while b"\r\n\r\n" in buffer:
                            head, _, buffer = buffer.partition(b"\r\n\r\n")
                            self.requests.append(head)
                            conn.sendall(self._answer(head))
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))

    @staticmethod
    def _answer(head: bytes) -> bytes:
        lines = [line for line in head.split(b"\r\n")[1:]
                 if line.split(b":")[0].lower() in (b"via", b"from", b"call-id", b"cseq")]
        to = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"to:"))
        return b"\r\n".join([b"SIP/2.0 200 OK", *lines, to + b";tag=carrier", b"Content-Length: 0", b"", b""])

    def close(self) -> None:
        self.listener.close()


def carrier_over_tls(workdir: Path, carrier_port: int) -> Path:
    path = demo_trunks_file(workdir / "trunks.yaml", carrier=carrier_port, pbx=free_port())
    data = yaml.safe_load(path.read_text())
    for trunk in data["trunks"]:
        if trunk["name"] == "carrier":
            trunk["transport"] = "tls"
            for destination in trunk["destinations"]:
                destination["transport"] = "tls"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("trusted", [True, False])
def test_tls_toward_the_carrier_checks_its_certificate(tmp_path: Path, trusted: bool) -> None:
    """Qualify OPTIONS to a carrier trunk with transport: tls go over TLS with Via TLS when the
    carrier's certificate is signed by sip.tls.ca_certificates; with another CA nothing is sent."""
    ca, cert, key = make_certificates(tmp_path / "certs")
    other_ca, _, _ = make_certificates(tmp_path / "other")
    carrier = TlsCarrier(cert, key)
    trunks = carrier_over_tls(tmp_path, carrier.port)
    port = free_port()
    listen = [{"transport": "udp", "host": "127.0.0.1", "port": port},
              {"transport": "tls", "host": "127.0.0.1", "port": free_port()}]  # our Via / Contact on TLS
    tls = {"certificate": str(cert), "private_key": str(key),
           "ca_certificates": str(ca if trusted else other_ca)}
    gw = GatewayProcess(
        tmp_path / "gw", port=port, sip_overrides={"listen": listen, "tls": tls},
        extra_config={"registrar": {"trunks": str(trunks), "qualify": {"enabled": True, "interval": 0.3}},
                      "dialplans": []},
    )
    gw.start()
    try:
        deadline = time.monotonic() + 10
        while not (carrier.requests if trusted else carrier.handshake_errors):
            assert time.monotonic() < deadline, gw.log()[-3000:]
            time.sleep(0.05)
    finally:
        gw.stop()
        carrier.close()
    if trusted:
        assert carrier.requests[0].startswith(b"OPTIONS sip:"), carrier.requests
        assert b"\r\nVia: SIP/2.0/TLS " in carrier.requests[0]
    else:
        assert carrier.requests == [], carrier.requests  # the handshake failed: not one byte of SIP


def test_a_peer_trunk_over_tls_must_show_its_client_certificate(tmp_path: Path) -> None:
    """``match.tls_names``: from the PBX's address, a TLS connection with a certificate naming the
    PBX is served; one without a certificate, or with another name, is closed before any SIP."""
    ca, cert, key = make_certificates(tmp_path / "certs")
    good = issue(tmp_path / "certs", tmp_path / "pbx", "pbx.acme.example", "DNS:pbx.acme.example")
    other = issue(tmp_path / "certs", tmp_path / "other", "intruder.example", "DNS:intruder.example")
    trunks = demo_trunks_file(tmp_path / "trunks.yaml", carrier=free_port(), pbx=free_port())
    data = yaml.safe_load(trunks.read_text())
    data["trunks"].append({"name": "acme-pbx-tls", "kind": "peer", "group": "acme", "transport": "tls",
                           "match": [{"host": "127.0.0.1", "tls_names": ["pbx.acme.example"]}],
                           "dids": "62881900-62881999"})
    trunks.write_text(yaml.safe_dump(data))
    port, tls_port = free_port(), free_port()
    gw = GatewayProcess(tmp_path / "gw", port=port, sip_overrides={
        "listen": [{"transport": "udp", "host": "127.0.0.1", "port": port},
                   {"transport": "tls", "host": "127.0.0.1", "port": tls_port}],
        "tls": {"certificate": str(cert), "private_key": str(key), "ca_certificates": str(ca),
                "verify_clients": "optional"},
    }, extra_config={"registrar": {"trunks": str(trunks), "qualify": {"enabled": False}}, "dialplans": []})
    gw.start()
    try:
        assert tls_options(tls_port, ca, good).startswith(b"SIP/2.0 200 ")
        assert tls_options(tls_port, ca, None) == b""
        assert tls_options(tls_port, ca, other) == b""
        assert "its certificate names ['intruder.example']" in gw.log()
    finally:
        gw.stop()


def tls_options(port: int, ca: Path, client: tuple[Path, Path] | None) -> bytes:
    """OPTIONS over TLS with ``client`` (cert, key) or no client certificate; the answer, b"" when
    the gateway closed the connection."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(*client)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        try:
            sock.sendall(options_request("127.0.0.1", port, sock.getsockname()[:2], transport="TLS"))
            return sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return b""
