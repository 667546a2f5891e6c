"""Bearer tokens: kept only as SHA-256 digests, compared in constant time; a token is its tenant.

The job page's login cookie is a session value signed with those digests (no other secret, the same on every
replica): ``v1.<tenant>.<expiry, unix s>.<HMAC-SHA256(key = the token's digest, msg = "v1.<tenant>.<expiry>")>``.
It never carries the token, and it stops working at its expiry or when its token leaves PREANNOTATE_API_TOKENS.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from service.errors import ErrorCode, PreannotateError

SESSION_VERSION = "v1"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _tenant(digest: bytes) -> str:
    return digest.hex()[:16]


def _session_mac(digest: bytes, tenant: str, expires_at_s: int) -> str:
    message = f"{SESSION_VERSION}.{tenant}.{expires_at_s}".encode()
    return hmac.new(digest, message, hashlib.sha256).hexdigest()


def _is_unix_time(text: str) -> bool:
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()  # no 4300-digit int() to parse


class TokenAuth:
    """Checks ``Authorization: Bearer <token>``; the tenant id is a short hash of the token."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = [_digest(t) for t in tokens if t]
        if not self._digests:
            raise ValueError("no API tokens configured")

    def tenant_for(self, token: str | None) -> str:
        """The caller's tenant id, or UNAUTHORIZED (401) for a missing or unknown token."""
        if not token or not token.strip():
            raise PreannotateError(ErrorCode.UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)")
        digest = _digest(token.strip())
        # Compare against every digest so the time taken does not reveal which one matched.
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise PreannotateError(ErrorCode.UNAUTHORIZED, "invalid bearer token")
        return _tenant(digest)

    def session_for(self, token: str, expires_at_s: int) -> str:
        """A signed session value for a valid token (else UNAUTHORIZED), good until ``expires_at_s``."""
        tenant = self.tenant_for(token)
        digest = _digest(token.strip())
        return f"{SESSION_VERSION}.{tenant}.{expires_at_s}.{_session_mac(digest, tenant, expires_at_s)}"

    def tenant_for_session(self, session: str | None, now_s: float) -> str:
        """The tenant a session value was signed for; UNAUTHORIZED if it is malformed, forged or expired."""
        parts = (session or "").split(".")
        if len(parts) != 4 or parts[0] != SESSION_VERSION or not _is_unix_time(parts[2]):
            raise PreannotateError(ErrorCode.UNAUTHORIZED, "invalid login session: log in again")
        _, tenant, expiry, mac = parts
        expires_at_s = int(expiry)
        # Every known digest is tried, so the time taken does not reveal which token (if any) signed it.
        matched = False
        for known in self._digests:
            same_mac = hmac.compare_digest(_session_mac(known, _tenant(known), expires_at_s).encode(), mac.encode())
            matched |= same_mac & hmac.compare_digest(_tenant(known).encode(), tenant.encode())
        if not matched:
            raise PreannotateError(ErrorCode.UNAUTHORIZED, "invalid login session: log in again")
        if expires_at_s <= now_s:
            raise PreannotateError(ErrorCode.UNAUTHORIZED, "the login session has expired: log in again")
        return tenant
