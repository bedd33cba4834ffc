"""Authentication failures reported by the digest code to the edge guard.

The registrar (REGISTER) and call control (INVITE, REFER, MESSAGE, SUBSCRIBE) report every failed
credential check; the guard bans sources and locks attacked user names (RFC 3261 §26.3.2.4 leaves
the defence against guessing to the implementation). A locked user still gets the same 401/407
as any other failure, so the lock is no oracle.
"""

from __future__ import annotations

from typing import Protocol


class AuthFailureObserver(Protocol):
    def auth_failed(self, source_host: str, username: str, now: float) -> None: ...
    def user_locked(self, username: str, now: float) -> bool: ...


class NoAuthFailureObserver:
    """The observer when no guard is configured: remembers nothing, locks nobody."""

    def auth_failed(self, source_host: str, username: str, now: float) -> None:
        return None

    def user_locked(self, username: str, now: float) -> bool:
        return False
