"""HMAC signatures of the generic webhook and the static-secret checks."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from service.errors import ErrorCode, PreannotateError
from service.intake import auth
from service.intake.signatures import check_delivery_id, sign, verify

SECRET = "whsec-current-" + "a" * 24
OLD_SECRET = "whsec-previous-" + "b" * 24
NOW = 1_767_225_600
BODY = b'{"items": [{"name": "a", "slots": [{"url": "https://media.example.com/a.jpg"}]}]}'


def check(
    body: bytes = BODY,
    *,
    ts: str | None = str(NOW),
    sig: str | None = None,
    secrets: tuple[str, ...] = (SECRET,),
    now: float = NOW,
) -> int:
    signature = sign(SECRET, NOW, BODY) if sig is None else sig
    return verify(timestamp=ts, signature=signature, body=body, secrets=secrets, tolerance_s=300, now=now)


def unauthorized(**kwargs: object) -> str:
    with pytest.raises(PreannotateError) as caught:
        check(**kwargs)  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    assert caught.value.code.http_status == 401
    return caught.value.message


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"sha256={expected}"


def test_a_valid_signature_passes() -> None:
    assert check() == NOW


@pytest.mark.parametrize("skew", [-300, 300])
def test_the_tolerance_edge_passes(skew: int) -> None:
    assert check(now=NOW + skew) == NOW


@pytest.mark.parametrize("skew", [-301, 301])
def test_301_seconds_off_is_stale(skew: int) -> None:
    assert "300 s" in unauthorized(now=NOW + skew)


def test_missing_headers() -> None:
    assert "X-Preannotate-Timestamp" in unauthorized(ts=None)
    assert "X-Preannotate-Signature" in unauthorized(sig="")


def test_a_wrong_secret_fails() -> None:
    assert "does not match" in unauthorized(sig=sign("not-the-secret", NOW, BODY))


def test_a_one_byte_change_fails() -> None:
    changed = bytearray(BODY)
    changed[10] ^= 0x01
    assert "does not match" in unauthorized(body=bytes(changed))


def test_a_changed_timestamp_fails() -> None:
    # A capture replayed with a fresh timestamp: the timestamp is signed too.
    unauthorized(ts=str(NOW + 5), now=NOW + 5)


@pytest.mark.parametrize("ts", ["abc", "-5", "1.5", "9" * 13])
def test_malformed_timestamps(ts: str) -> None:
    unauthorized(ts=ts)


@pytest.mark.parametrize("sig", ["deadbeef", "sha1=" + "0" * 40, ","])
def test_malformed_signatures(sig: str) -> None:
    unauthorized(sig=sig)


def test_rotation_any_active_secret_verifies() -> None:
    both = (SECRET, OLD_SECRET)
    assert check(sig=sign(OLD_SECRET, NOW, BODY), secrets=both) == NOW
    assert check(sig=sign(SECRET, NOW, BODY), secrets=both) == NOW
    unauthorized(sig=sign(OLD_SECRET, NOW, BODY), secrets=(SECRET,))  # retired


def test_a_sender_may_send_one_signature_per_secret_while_rotating() -> None:
    header = f"{sign('retired-elsewhere', NOW, BODY)}, {sign(SECRET, NOW, BODY)}"
    assert check(sig=header) == NOW


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    check(secrets=(OLD_SECRET, SECRET))
    assert len(calls) == 2  # every secret compared: no early exit on the first match


@pytest.mark.parametrize("value", ["abc-123", "evt_01J:2", "a" * 128])
def test_delivery_ids(value: str) -> None:
    assert check_delivery_id(f" {value} ") == value


@pytest.mark.parametrize("value", ["a b", "a/b", "x" * 129, "é"])
def test_bad_delivery_ids(value: str) -> None:
    with pytest.raises(PreannotateError) as caught:
        check_delivery_id(value)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_no_delivery_id() -> None:
    assert check_delivery_id(None) is None
    assert check_delivery_id("  ") is None


# -- static secrets (Label Studio header, MinIO / V7 Authorization) ---------------------------------------------


def test_shared_secret_header() -> None:
    auth.check_shared_secret(SECRET, (OLD_SECRET, SECRET), "X-Preannotate-Secret")
    for presented, why in [(None, "missing"), ("", "missing"), ("nope", "does not match"), (SECRET + "x", "match")]:
        with pytest.raises(PreannotateError, match=why) as caught:
            auth.check_shared_secret(presented, (SECRET,), "X-Preannotate-Secret")
        assert caught.value.code is ErrorCode.UNAUTHORIZED
        assert SECRET not in caught.value.message


@pytest.mark.parametrize("header", [SECRET, f"Bearer {SECRET}", f"bearer {SECRET}"])
def test_authorization_as_is_or_bearer(header: str) -> None:
    auth.check_authorization(header, (SECRET,))


def test_authorization_configured_with_its_scheme() -> None:
    auth.check_authorization("Basic dXNlcjpwYXNz", ("Basic dXNlcjpwYXNz",))


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", f"Token {SECRET}", f"{SECRET} "[:-2]])
def test_authorization_refused(header: str | None) -> None:
    with pytest.raises(PreannotateError) as caught:
        auth.check_authorization(header, (SECRET,))
    assert caught.value.code is ErrorCode.UNAUTHORIZED


def test_no_secret_means_not_found() -> None:
    with pytest.raises(PreannotateError) as caught:
        auth.require_enabled((), "generic")
    assert caught.value.code.http_status == 404
