"""send_with_retries: which statuses are retried, how long it sleeps, and where it stops."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from service.backends.retry import (
    BackendError,
    RetryPolicy,
    check_response,
    parse_retry_after,
    safe_target,
    send_with_retries,
)

URL = "https://api.example.com/v2/items?X-Amz-Signature=SECRET-SIG"


class Script:
    """A transport answering from a list: ints are statuses, exceptions are raised, (status, headers) tuples too."""

    def __init__(self, answers: list[int | Exception | tuple[int, dict[str, str]]]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return httpx.Response(status, headers=headers, text=f"answer {self.calls}")


def policy(sleeps: list[float], **kwargs: object) -> RetryPolicy:
    return RetryPolicy(sleep=sleeps.append, random=lambda: 0.5, **kwargs)  # type: ignore[arg-type]


def run(script: Script, pol: RetryPolicy, method: str = "POST") -> httpx.Response:
    with httpx.Client(transport=httpx.MockTransport(script)) as client:
        return send_with_retries(client, client.build_request(method, URL, content=b"{}"), pol)


@pytest.mark.parametrize(
    ("answers", "expected_status", "expected_sleeps"),
    [
        ([200], 200, []),
        ([503, 200], 200, [0.5]),  # ceiling 1 s, jitter 0.5
        ([500, 502, 504, 200], 200, [0.5, 1.0, 2.0]),  # ceilings double
        ([404], 404, []),  # client errors are final
        ([422], 422, []),
        ([429, 429, 429, 429, 429], 429, [0.5, 1.0, 2.0, 4.0]),  # max_attempts 5: the last answer comes back
    ],
)
def test_statuses_and_backoff(answers: list[int], expected_status: int, expected_sleeps: list[float]) -> None:
    sleeps: list[float] = []
    script = Script(answers)  # type: ignore[arg-type]
    assert run(script, policy(sleeps)).status_code == expected_status
    assert sleeps == expected_sleeps
    assert script.calls == len(expected_sleeps) + 1


def test_backoff_is_capped_and_full_jitter() -> None:
    sleeps: list[float] = []
    pol = RetryPolicy(max_attempts=8, base_delay_s=1.0, max_delay_s=5.0, sleep=sleeps.append, random=lambda: 0.999)
    run(Script([500] * 8), pol)
    assert max(sleeps) <= 5.0
    assert sleeps[-1] == pytest.approx(4.995)
    zero: list[float] = []
    run(Script([500, 200]), RetryPolicy(sleep=zero.append, random=lambda: 0.0))
    assert zero == [0.0]  # full jitter may retry at once


def test_retry_after_is_honoured_as_a_floor() -> None:
    sleeps: list[float] = []
    response = run(Script([(429, {"Retry-After": "2"}), 200]), policy(sleeps))
    assert response.status_code == 200
    assert sleeps == [2.0]


def test_retry_after_over_the_limit_returns_at_once() -> None:
    sleeps: list[float] = []
    script = Script([(503, {"Retry-After": "3600"}), 200])
    response = run(script, policy(sleeps, max_retry_after_s=60.0))
    assert (response.status_code, script.calls, sleeps) == (503, 1, [])


def test_total_time_bound() -> None:
    sleeps: list[float] = []
    script = Script([(429, {"Retry-After": "30"}), 200])
    assert run(script, policy(sleeps, max_total_s=10.0)).status_code == 429
    assert script.calls == 1


def test_transport_errors_are_retried_then_raised() -> None:
    sleeps: list[float] = []
    script = Script([httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), 200])
    assert run(script, policy(sleeps)).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        run(Script([httpx.ReadTimeout("slow")] * 2), policy([], max_attempts=2))
    with pytest.raises(httpx.ConnectError):
        run(Script([httpx.ConnectError("refused"), 200]), policy([], retry_transport_errors=False))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=1445412480.0) == expected


def test_logs_never_carry_query_strings_or_headers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    script = Script([503, 200])
    with httpx.Client(transport=httpx.MockTransport(script)) as client:
        request = client.build_request("PUT", URL, headers={"Authorization": "ApiKey CANARY-KEY"}, content=b"x")
        send_with_retries(client, request, policy([]))
        assert safe_target(request) == "PUT https://api.example.com/v2/items"
    assert "retry 1/4" in caplog.text
    assert "SECRET-SIG" not in caplog.text
    assert "CANARY-KEY" not in caplog.text


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (413, False), (429, True), (500, True), (503, True)],
)
def test_check_response(status: int, retryable: bool) -> None:
    request = httpx.Request("GET", URL)
    with pytest.raises(BackendError) as info:
        check_response("v7", httpx.Response(status, text="bad field 'x'", request=request), "listing items")
    assert (info.value.status, info.value.retryable) == (status, retryable)
    assert "bad field 'x'" in str(info.value)
    ok = httpx.Response(201, request=request)
    assert check_response("v7", ok, "x") is ok


def test_policy_validates() -> None:
    bad: list[Callable[[], RetryPolicy]] = [lambda: RetryPolicy(max_attempts=0), lambda: RetryPolicy(base_delay_s=-1)]
    for make in bad:
        with pytest.raises(ValueError, match="must be"):
            make()
