"""What the Digest code tells the ban machinery, and asks of it.

Every failed Digest check (wrong password, unknown user, an algorithm or qop we did not offer,
a replayed nonce count) of a REGISTER (401, RFC 3261 §22.2) or of a request challenged by the
gateway as a proxy (407, §22.3) is reported with :meth:`AuthFailureObserver.auth_failed`; the
observer decides when a source is banned and a user name locked. A locked user is answered with
the same challenge as a wrong password, so the lock tells a guesser nothing (no oracle): the
Digest code asks :meth:`AuthFailureObserver.user_locked` and treats a locked user's right
password as wrong.

The composition code passes :class:`NoAuthFailureObserver` until a real one is wired in.
"""

from __future__ import annotations

from typing import Protocol


class AuthFailureObserver(Protocol):
    """Told of every failed authentication; says whether a user name is locked."""

    def auth_failed(self, source_host: str, username: str, now: float) -> None: ...

    def user_locked(self, username: str, now: float) -> bool: ...


class NoAuthFailureObserver:
    """Does nothing; never locks anyone."""

    def auth_failed(self, source_host: str, username: str, now: float) -> None:
        return None

    def user_locked(self, username: str, now: float) -> bool:
        return False
