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


NOW_S = 1_700_000_000


def test_a_session_names_its_tenant_until_its_expiry_without_the_token() -> None:
    auth = TokenAuth(["alpha", "beta"])
    session = auth.session_for(" beta ", NOW_S + 60)

    assert "beta" not in session.split(".")
    assert auth.tenant_for_session(session, NOW_S) == auth.tenant_for("beta")
    assert auth.tenant_for_session(session, NOW_S + 59.9) == auth.tenant_for("beta")
    with pytest.raises(PreannotateError, match="expired") as exc:
        auth.tenant_for_session(session, NOW_S + 60)
    assert exc.value.code is ErrorCode.UNAUTHORIZED


def test_a_session_for_a_bad_token_cannot_be_made() -> None:
    with pytest.raises(PreannotateError) as exc:
        TokenAuth(["alpha"]).session_for("gamma", NOW_S + 60)
    assert exc.value.code is ErrorCode.UNAUTHORIZED


def test_a_session_works_on_every_replica_and_ends_when_its_token_is_removed() -> None:
    session = TokenAuth(["alpha", "beta"]).session_for("alpha", NOW_S + 60)

    assert TokenAuth(["beta", "alpha"]).tenant_for_session(session, NOW_S) == TokenAuth(["alpha"]).tenant_for("alpha")
    with pytest.raises(PreannotateError, match="invalid login session"):
        TokenAuth(["beta"]).tenant_for_session(session, NOW_S)


def session_parts() -> list[str]:
    return TokenAuth(["alpha"]).session_for("alpha", NOW_S + 60).split(".")


@pytest.mark.parametrize(
    "forged",
    [
        None,
        "",
        "alpha",
        "v1.x.y",
        ".".join([*session_parts(), "extra"]),
        ".".join(["v2", *session_parts()[1:]]),
        ".".join([*session_parts()[:2], str(NOW_S + 86_400), session_parts()[3]]),  # a longer expiry
        ".".join([session_parts()[0], TokenAuth(["beta"]).tenant_for("beta"), *session_parts()[2:]]),
        ".".join([*session_parts()[:3], "0" * 64]),
        ".".join([*session_parts()[:3], "é" * 64]),
        ".".join([*session_parts()[:2], "9" * 5000, session_parts()[3]]),  # no 5000-digit int() parse
        ".".join([*session_parts()[:2], "-1", session_parts()[3]]),
    ],
)
def test_a_malformed_or_forged_session_is_401(forged: str | None) -> None:
    with pytest.raises(PreannotateError, match="invalid login session") as exc:
        TokenAuth(["alpha", "beta"]).tenant_for_session(forged, NOW_S)
    assert exc.value.code is ErrorCode.UNAUTHORIZED
