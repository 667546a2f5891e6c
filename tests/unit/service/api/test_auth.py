"""Bearer tokens: digests only, constant-time comparison, a tenant per token."""

from __future__ import annotations

import pytest

from service.api.auth import TokenAuth
from service.errors import ErrorCode, PreannotateError


def test_known_tokens_map_to_stable_distinct_tenants() -> None:
    auth = TokenAuth(["alpha", "beta"])
    assert auth.tenant_for("alpha") == auth.tenant_for(" alpha ")
    assert auth.tenant_for("alpha") != auth.tenant_for("beta")
    assert len(auth.tenant_for("alpha")) == 16


@pytest.mark.parametrize("token", [None, "", "   ", "gamma", "alph"])
def test_missing_or_unknown_tokens_are_401(token: str | None) -> None:
    with pytest.raises(PreannotateError) as exc:
        TokenAuth(["alpha"]).tenant_for(token)
    assert exc.value.code is ErrorCode.UNAUTHORIZED


def test_tokens_are_not_kept_in_clear() -> None:
    auth = TokenAuth(["super-secret-token"])
    assert "super-secret-token" not in repr(vars(auth))


def test_no_tokens_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="no API tokens"):
        TokenAuth(["", ""])
