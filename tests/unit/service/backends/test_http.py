"""VendorHttp: every vendor's calls share one retry loop and one failure mapping."""

from __future__ import annotations

import httpx
import pytest

from service.backends.http import VendorHttp
from service.backends.retry import BackendError, RetryPolicy, backend_error_to_preannotate
from service.errors import ErrorCode
from tests.unit.service.backends.test_retry import Script


def vendor(script: Script, **policy: object) -> VendorHttp:
    client = httpx.Client(base_url="https://api.example.com", transport=httpx.MockTransport(script))
    sleeps: list[float] = []
    return VendorHttp("v7", client, RetryPolicy(sleep=sleeps.append, random=lambda: 0.0, **policy))  # type: ignore[arg-type]


def test_a_retryable_status_is_retried_then_answered() -> None:
    script = Script([503, 200])
    with_retries = vendor(script)
    assert with_retries.call("GET", "/items", "listing items").status_code == 200
    assert script.calls == 2


@pytest.mark.parametrize(
    ("answers", "code", "retryable"),
    [
        ([401], ErrorCode.BACKEND_AUTH_FAILED, False),
        ([422], ErrorCode.BACKEND_REJECTED, False),
        ([503, 503], ErrorCode.BACKEND_UNAVAILABLE, True),
        ([httpx.ConnectError("down"), httpx.ConnectError("down")], ErrorCode.BACKEND_UNAVAILABLE, True),
    ],
)
def test_failures_map_to_the_vendor_and_the_service_codes(
    answers: list[int | Exception], code: ErrorCode, retryable: bool
) -> None:
    client = vendor(Script(answers), max_attempts=2)
    with pytest.raises(BackendError) as info:
        client.call("POST", "/items", "registering items", json_body={"a": 1})
    assert info.value.backend == "v7"
    assert info.value.retryable is retryable
    assert "registering items" in str(info.value)
    assert backend_error_to_preannotate(info.value).code is code


def test_ok_statuses_come_back_instead_of_raising() -> None:
    assert vendor(Script([413])).call("POST", "/import", "importing", ok_statuses=frozenset({413})).status_code == 413


def test_an_answer_that_is_not_json_is_retryable() -> None:
    with pytest.raises(BackendError) as info:
        vendor(Script([200])).call_json("GET", "/items", "listing items")
    assert info.value.retryable
    assert "not JSON" in str(info.value)


def test_a_retry_after_over_the_limit_is_answered_at_once_with_its_wait() -> None:
    script = Script([(429, {"Retry-After": "900"})])
    with pytest.raises(BackendError) as info:
        vendor(script, max_retry_after_s=60.0).call("GET", "/items", "listing items")
    assert script.calls == 1
    assert backend_error_to_preannotate(info.value).retry_after_s == 900
