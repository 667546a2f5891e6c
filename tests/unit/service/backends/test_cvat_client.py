"""The CVAT client's pure parts (config, frame URLs) and its retry loop, driven through the real cvat-sdk against a
small CVAT stand-in on loopback (the real server is the integration tests' judge)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from service.backends.cvat import CvatClient, CvatConfig, frame_url, parse_frame_url
from service.backends.retry import BackendError, RetryPolicy
from tests.fakes.http import ContractError, FakeApp, Request, Response, serving

TOKEN = "tok-7f3a9c"  # a test credential, echoed back by the fake on refusal
TASK = {"id": 5, "name": "clip", "size": 10, "mode": "interpolation", "project_id": None}


class FakeCvat(FakeApp):
    """``/api/users/self``, ``/api/tasks/{id}`` and ``/api/auth/login``; a refusal echoes the credential back (as a
    careless proxy might) so a test sees whether an error message leaks it."""

    def __init__(self, accepted: tuple[str, ...] = (f"Token {TOKEN}",)) -> None:
        super().__init__()
        self.accepted = accepted

    def route(self, request: Request) -> Response:
        if (request.method, request.path) == ("POST", "/api/auth/login"):
            body = request.json()
            if (body.get("username"), body.get("password")) == ("ann", "pw-1"):
                return Response(200, {"key": "key-from-login"})
            return Response(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
        authorization = request.headers.get("authorization", "")
        if authorization not in self.accepted:
            return Response(401, {"detail": f"Invalid token: {authorization}"})
        if (request.method, request.path) == ("GET", "/api/users/self"):
            return Response(200, {"id": 1, "username": "ann"})
        found = re.fullmatch(r"/api/tasks/(\d+)", request.path)
        if request.method == "GET" and found:
            return Response(200, {**TASK, "id": int(found.group(1))})
        raise ContractError(f"no such endpoint: {request.method} {request.path}")

    def authorizations(self) -> list[str]:
        return [r.headers.get("authorization", "") for r in self.requests]


@pytest.fixture
def fake() -> Iterator[FakeCvat]:
    app = FakeCvat()
    with serving(app):
        yield app
    assert app.errors == [], app.errors


def _policy(sleeps: list[float], **fields: float) -> RetryPolicy:
    """Fast and deterministic: no jitter (a backoff of 0), sleeps recorded instead of slept."""
    values = {"max_attempts": 4, "base_delay_s": 0.5, "max_delay_s": 30.0, "max_retry_after_s": 60.0} | fields
    return RetryPolicy(**values, sleep=sleeps.append, random=lambda: 0.0)  # type: ignore[arg-type]


def _client(url: str, sleeps: list[float], *, token: str = TOKEN, **login: str) -> CvatClient:
    config = CvatConfig(
        url=url,
        token=SecretStr(token),
        username=login.get("username", ""),
        password=SecretStr(login.get("password", "")),
        timeout_s=5.0,
        retry=_policy(sleeps),
    )
    return CvatClient(config)


# -- configuration ---------------------------------------------------------------------------------------------------


def test_config_normalises_the_url() -> None:
    assert CvatConfig(url=" https://cvat.example.com/ ", token=SecretStr("t")).url == "https://cvat.example.com"
    assert CvatConfig(url="http://10.0.0.5:8080/cvat/", token=SecretStr("t")).url == "http://10.0.0.5:8080/cvat"


@pytest.mark.parametrize(
    ("url", "token", "username", "password", "message"),
    [
        ("ftp://cvat.example.com", "t", "", "", "http:// or https://"),
        ("cvat.example.com", "t", "", "", "http:// or https://"),
        ("https://", "t", "", "", "http:// or https://"),
        ("https://ann:pw@cvat.example.com", "t", "", "", "credentials"),
        ("https://cvat.example.com/?key=t", "t", "", "", "query"),
        ("https://cvat.example.com/#x", "t", "", "", "fragment"),
        ("https://cvat.example.com", "", "", "", "token, or a username and password"),
        ("https://cvat.example.com", "  ", "", "", "token, or a username and password"),
        ("https://cvat.example.com", "", "ann", "", "token, or a username and password"),
        ("https://cvat.example.com", "", "", "pw", "token, or a username and password"),
    ],
)
def test_config_refuses(url: str, token: str, username: str, password: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        CvatConfig(url=url, token=SecretStr(token), username=username, password=SecretStr(password))


def test_config_takes_a_login_instead_of_a_token() -> None:
    config = CvatConfig(url="https://cvat.example.com", username="ann", password=SecretStr("pw"))
    assert config.username == "ann"
    assert "pw" not in repr(config)


def test_config_refuses_a_page_size_out_of_range() -> None:
    with pytest.raises(ValueError, match="page_size"):
        CvatConfig(url="https://cvat.example.com", token=SecretStr("t"), page_size=0)


# -- frame URLs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["https://cvat.example.com", "https://cvat.example.com/", "http://h:8080/cvat"])
@pytest.mark.parametrize("quality", ["original", "compressed"])
def test_frame_urls_round_trip(base: str, quality: str) -> None:
    url = frame_url(base, 42, 17, quality)
    assert f"quality={quality}" in url
    assert "//api" not in url
    assert parse_frame_url(url) == (42, 17)
    assert parse_frame_url("cvat+" + url) == (42, 17)


def test_frame_url_refuses_an_unknown_quality() -> None:
    with pytest.raises(ValueError, match="quality"):
        frame_url("https://cvat.example.com", 1, 0, "best")


@pytest.mark.parametrize(
    "url",
    [
        "https://cvat.example.com/media/a.jpg",
        "https://cvat.example.com/api/tasks/42/data?type=chunk&number=0&quality=original",
        "https://cvat.example.com/api/tasks/42/data?type=frame&quality=original",
        "https://cvat.example.com/api/tasks/42/data?type=frame&number=-1",
        "https://cvat.example.com/api/tasks/42/data?type=frame&number=x",
        "https://cvat.example.com/api/tasks/abc/data?type=frame&number=3",
        "https://cvat.example.com/api/jobs/42/data?type=frame&number=3",
        "https://cvat.example.com/api/tasks/42/annotations?type=frame&number=3",
        "https://cvat.example.com/tasks/42/data?type=frame&number=3",
    ],
)
def test_parse_frame_url_refuses_other_urls(url: str) -> None:
    assert parse_frame_url(url) is None


# -- the retry loop, through cvat-sdk --------------------------------------------------------------------------------


def test_a_503_is_retried_then_the_answer_is_read(fake: FakeCvat) -> None:
    sleeps: list[float] = []
    with _client(fake.base_url, sleeps) as client:
        client.authorization()
        fake.fail_next(503)
        task = client.task(5)
    assert (task.id, task.mode, task.size) == (5, "interpolation", 10)
    assert [r.path for r in fake.requests] == ["/api/users/self", "/api/tasks/5", "/api/tasks/5"]
    assert sleeps == [0.0]  # one retry (no jitter: a backoff of 0)


def test_a_429_waits_as_long_as_retry_after_says(fake: FakeCvat) -> None:
    sleeps: list[float] = []
    with _client(fake.base_url, sleeps) as client:
        client.authorization()
        fake.fail_next(429, headers={"Retry-After": "7"})
        assert client.task(5).id == 5
    assert sleeps == [7.0]


def test_a_retry_after_past_the_limit_is_not_waited_for(fake: FakeCvat) -> None:
    sleeps: list[float] = []
    with _client(fake.base_url, sleeps) as client:
        client.authorization()
        fake.fail_next(429, headers={"Retry-After": "3600"})
        with pytest.raises(BackendError) as caught:
            client.task(5)
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 3600.0
    assert sleeps == []


def test_a_400_is_not_retried(fake: FakeCvat) -> None:
    sleeps: list[float] = []
    with _client(fake.base_url, sleeps) as client:
        client.authorization()
        fake.fail_next(400)
        with pytest.raises(BackendError) as caught:
            client.task(5)
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "HTTP 400" in caught.value.message
    assert "injected" in caught.value.message  # the body's error text, for the user
    assert sleeps == []
    assert len(fake.requests) == 2


def test_retries_stop_after_max_attempts(fake: FakeCvat) -> None:
    sleeps: list[float] = []
    with _client(fake.base_url, sleeps) as client:
        client.authorization()
        fake.fail_next(502, times=10)
        with pytest.raises(BackendError) as caught:
            client.task(5)
    assert (caught.value.status, caught.value.retryable) == (502, True)
    assert len(fake.requests) == 1 + 4  # the credentials check, then max_attempts sends
    assert len(sleeps) == 3


def test_a_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    with _client(f"http://127.0.0.1:{port}", sleeps) as client, pytest.raises(BackendError) as caught:
        client.authorization()
    assert caught.value.status is None
    assert len(sleeps) == 3


def test_a_token_cvat_refuses_as_an_api_key_is_tried_as_a_personal_access_token() -> None:
    fake = FakeCvat(accepted=(f"Bearer {TOKEN}",))
    sleeps: list[float] = []
    with serving(fake), _client(fake.base_url, sleeps) as client:
        assert client.authorization() == f"Bearer {TOKEN}"
        assert client.task(5).id == 5
    assert fake.authorizations() == [f"Token {TOKEN}", f"Bearer {TOKEN}", f"Bearer {TOKEN}"]
    assert sleeps == []
    assert fake.errors == []


def test_refused_credentials_are_not_retried_and_never_in_the_message() -> None:
    fake = FakeCvat(accepted=())
    sleeps: list[float] = []
    with serving(fake), _client(fake.base_url, sleeps) as client, pytest.raises(BackendError) as caught:
        client.authorization()
    assert (caught.value.status, caught.value.retryable) == (401, False)
    assert "refused the credentials" in caught.value.message
    assert TOKEN not in str(caught.value)
    assert fake.authorizations() == [f"Token {TOKEN}", f"Bearer {TOKEN}"]  # each scheme once
    assert sleeps == []


def test_a_token_revoked_later_is_never_in_the_message(fake: FakeCvat) -> None:
    sleeps: list[float] = []
    with _client(fake.base_url, sleeps) as client:
        client.authorization()
        fake.accepted = ()
        with pytest.raises(BackendError) as caught:
            client.task(5)
    assert (caught.value.status, caught.value.retryable) == (401, False)
    assert TOKEN not in str(caught.value)


def test_a_login_answers_the_api_key_every_call_carries(fake: FakeCvat) -> None:
    fake.accepted = ("Token key-from-login",)
    sleeps: list[float] = []
    with _client(fake.base_url, sleeps, token="", username="ann", password="pw-1") as client:
        assert client.task(5).id == 5
    assert [r.path for r in fake.requests] == ["/api/auth/login", "/api/users/self", "/api/tasks/5"]
    assert fake.requests[0].json() == {"username": "ann", "password": "pw-1"}
    assert fake.authorizations()[1:] == ["Token key-from-login"] * 2


def test_a_refused_login_is_reported_without_the_password(fake: FakeCvat) -> None:
    sleeps: list[float] = []
    with (
        _client(fake.base_url, sleeps, token="", username="ann", password="wrong-pw") as client,
        pytest.raises(BackendError) as caught,
    ):
        client.task(5)
    assert caught.value.status == 400
    assert "wrong-pw" not in str(caught.value)
    assert sleeps == []
