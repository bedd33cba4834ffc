"""Bearer-token authentication with two roles, ``read`` and ``admin``.

Tokens come from ``api.tokens``. Every presented token is hashed with SHA-256 and compared
with every configured digest using :func:`hmac.compare_digest`, so neither the comparison nor
the loop leaks which token (or how much of one) matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from gateway.mgmt.settings import ApiToken


class Role(IntEnum):
    """Ordered: a role may do what every lower role may."""

    READ = 1
    ADMIN = 2


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request (the token's name goes to the audit log, never the token)."""

    name: str
    role: Role


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenTable:
    """The configured tokens, as SHA-256 digests."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for entry in tokens:
            if entry.token is not None:
                hashed = digest(entry.token)
            else:
                hashed = bytes.fromhex(entry.token_sha256 or "")
            role = Role.ADMIN if entry.role == "admin" else Role.READ
            self._entries.append((hashed, Principal(entry.name, role)))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        presented = digest(token)
        found: Principal | None = None
        for hashed, principal in self._entries:
            # No early exit: every entry is compared whatever matched.
            if hmac.compare_digest(presented, hashed) and found is None:
                found = principal
        return found


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1), else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
