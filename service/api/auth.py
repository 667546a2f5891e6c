"""Bearer tokens: kept only as SHA-256 digests, compared in constant time; a token is its tenant."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from service.errors import ErrorCode, PreannotateError


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


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
        return digest.hex()[:16]
