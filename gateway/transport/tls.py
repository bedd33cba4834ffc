"""TLS contexts for SIP over TLS (RFC 3261 §26.2.1, §26.3.1; RFC 5630), from the ``sip.tls``
settings. Only TLS 1.2 and later; the certificate chain and key are loaded once at start, and
any failure names the setting and the file (an operator fixes a path, not a traceback).

* Server side (our TLS listeners): our certificate; client certificates are not asked for
  (``verify_clients: none``), checked when sent (``optional``) or required (``required``)
  against ``ca_certificates`` (peer trunks that authenticate by certificate, §26.3.2.2).
* Client side (connections we open, e.g. to a carrier trunk with ``transport: tls``): the
  server's certificate is checked against ``ca_certificates`` (the system store when unset),
  including its name: the IP literal we dial must be one of its subjectAltNames. Our own
  certificate is presented, for carriers that check clients.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

VerifyClients = Literal["none", "optional", "required"]


def _load(context: ssl.SSLContext, certificate: Path | None, private_key: Path | None,
          ca_certificates: Path | None) -> None:
    if certificate is not None:
        try:
            context.load_cert_chain(certificate, private_key)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"sip.tls.certificate {certificate} / private_key {private_key}: {exc}") from None
    if ca_certificates is not None:
        try:
            context.load_verify_locations(cafile=ca_certificates)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"sip.tls.ca_certificates {ca_certificates}: {exc}") from None


def server_context(certificate: Path, private_key: Path, *, ca_certificates: Path | None = None,
                   verify_clients: VerifyClients = "none") -> ssl.SSLContext:
    """The context of our TLS listeners. Raises OSError naming the setting that failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, certificate, private_key, ca_certificates)
    context.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[verify_clients]
    return context


def client_context(*, certificate: Path | None = None, private_key: Path | None = None,
                   ca_certificates: Path | None = None, verify_server: bool = True) -> ssl.SSLContext:
    """The context of TLS connections we open. Raises OSError naming the setting that failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, certificate, private_key, ca_certificates)
    if ca_certificates is None:
        context.load_default_certs()
    if not verify_server:  # a lab or a carrier with a self-signed certificate and no CA to give
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def certificate_names(peercert: dict[str, Any] | None) -> frozenset[str]:
    """The names a verified peer certificate carries (``SSLObject.getpeercert()``): its
    subjectAltName DNS names and IP addresses, and its subject CN. Empty when the peer sent no
    certificate or it was not verified."""
    if not peercert:
        return frozenset()
    names = {value for kind, value in peercert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")}
    for rdn in peercert.get("subject", ()):
        names.update(value for key, value in rdn if key == "commonName")
    return frozenset(names)
