"""LabelStudioClient against a loopback fake: retries, reconcile-before-create, auth, media and secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.backends.label_studio import (
    LabelStudioClient,
    LabelStudioConfig,
    PushOutcome,
    as_preannotate_error,
)
from service.backends.retry import BackendError, RetryPolicy
from service.convert.label_studio import LsPrediction
from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import FetchPolicy
from tests.unit.service.backends.fake_label_studio import (
    LEGACY_TOKEN,
    PAT,
    FakeLabelStudio,
    MediaHost,
    Seen,
    make_jwt,
    serving,
)

VERSION = "yolo-0123abcd"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def fake() -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio()
    fake.projects[1] = {"id": 1, "label_config": "<View/>", "model_version": ""}
    with serving(fake):
        yield fake


def client_for(
    fake: FakeLabelStudio, sleeps: list[float] | None = None, *, key: str = LEGACY_TOKEN, **policy: object
) -> LabelStudioClient:
    sleeps = [] if sleeps is None else sleeps
    retry = RetryPolicy(
        **{  # type: ignore[arg-type]
            "max_attempts": 4,
            "base_delay_s": 0.5,
            "max_delay_s": 30.0,
            "max_retry_after_s": 60.0,
            "max_total_s": 120.0,
            "sleep": sleeps.append,
            "random": lambda: 0.5,
            **policy,
        }
    )
    config = LabelStudioConfig(url=fake.base_url, api_key=SecretStr(key), retry=retry, page_size=2)
    return LabelStudioClient(config)


def prediction(result: list[dict[str, object]] | None = None) -> LsPrediction:
    return LsPrediction(result=result or [], score=0.5, model_version=VERSION)


def posts(fake: FakeLabelStudio) -> list[Seen]:
    return [r for r in fake.requests if (r.method, r.path) == ("POST", "/api/predictions/")]


# -- retries ----------------------------------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_says(fake: FakeLabelStudio) -> None:
    sleeps: list[float] = []
    fake.fail(429, headers={"Retry-After": "2"})
    with client_for(fake, sleeps) as client:
        assert client.get_project(1)["id"] == 1
    assert sleeps == [2.0]  # not the 0.25 s the jitter alone would give
    assert len(fake.requests) == 2


def test_5xx_is_retried_with_backoff_then_given_up(fake: FakeLabelStudio) -> None:
    sleeps: list[float] = []
    fake.fail(503, times=10)
    with client_for(fake, sleeps) as client, pytest.raises(BackendError) as caught:
        client.get_project(1)
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert len(fake.requests) == 4  # max_attempts
    assert sleeps == [0.25, 0.5, 1.0]  # full jitter (0.5) under ceilings 0.5, 1, 2
    assert as_preannotate_error(caught.value).code is ErrorCode.BACKEND_UNAVAILABLE


def test_a_retry_after_past_the_limit_is_not_waited_for(fake: FakeLabelStudio) -> None:
    sleeps: list[float] = []
    fake.fail(429, headers={"Retry-After": "3600"})
    with client_for(fake, sleeps) as client, pytest.raises(BackendError) as caught:
        client.get_project(1)
    assert (caught.value.status, sleeps) == (429, [])


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, ErrorCode.BACKEND_REJECTED), (403, ErrorCode.BACKEND_AUTH_FAILED), (400, ErrorCode.BACKEND_REJECTED)],
)
def test_client_errors_are_final(fake: FakeLabelStudio, status: int, code: ErrorCode) -> None:
    fake.fail(status, times=3)
    with client_for(fake) as client, pytest.raises(BackendError) as caught:
        client.get_project(1)
    assert (caught.value.status, caught.value.retryable) == (status, False)
    assert len(fake.requests) == 1
    assert as_preannotate_error(caught.value).code is code


# -- pushing predictions: reconcile before create ---------------------------------------------------------------


def test_a_second_push_creates_nothing(fake: FakeLabelStudio) -> None:
    task = fake.add_task(1, {"image": "/data/upload/1/a.png"})
    with client_for(fake) as client:
        first = client.upsert_prediction(task, prediction([{"id": "r1"}]))
        second = client.upsert_prediction(task, prediction([{"id": "r2"}]))
    assert (first.outcome, second.outcome) == (PushOutcome.CREATED, PushOutcome.SKIPPED)
    assert first.prediction_id == second.prediction_id
    (stored,) = fake.predictions_of(task)
    assert (stored["model_version"], stored["result"], stored["score"]) == (VERSION, [{"id": "r1"}], 0.5)
    assert len(posts(fake)) == 1


def test_replace_patches_the_oldest_and_deletes_duplicates(fake: FakeLabelStudio) -> None:
    task = fake.add_task(1, {}, [{"model_version": VERSION}, {"model_version": VERSION}, {"model_version": "other"}])
    oldest = min(p["id"] for p in fake.predictions_of(task) if p["model_version"] == VERSION)
    with client_for(fake) as client:
        pushed = client.upsert_prediction(task, prediction([{"id": "new"}]), replace_existing=True)
    assert (pushed.outcome, pushed.prediction_id) == (PushOutcome.REPLACED, oldest)
    mine = [p for p in fake.predictions_of(task) if p["model_version"] == VERSION]
    assert [(p["id"], p["result"]) for p in mine] == [(oldest, [{"id": "new"}])]
    assert len(fake.predictions_of(task)) == 2  # another version's prediction is not ours to touch
    assert posts(fake) == []


def test_a_create_whose_answer_was_lost_is_adopted_not_repeated(fake: FakeLabelStudio) -> None:
    task = fake.add_task(1, {})
    sleeps: list[float] = []
    fake.fail(500, when=lambda s: s.method == "POST", process_first=True)  # stored, then the answer failed
    with client_for(fake, sleeps) as client:
        pushed = client.upsert_prediction(task, prediction())
    assert pushed.outcome is PushOutcome.CREATED
    assert len(fake.predictions_of(task)) == 1
    assert len(posts(fake)) == 1  # never re-sent: the second round listed and found it
    assert len(sleeps) == 1


def test_a_throttled_create_is_sent_again(fake: FakeLabelStudio) -> None:
    task = fake.add_task(1, {})
    fake.fail(429, when=lambda s: s.method == "POST", headers={"Retry-After": "1"})
    with client_for(fake) as client:
        assert client.upsert_prediction(task, prediction()).outcome is PushOutcome.CREATED
    assert len(posts(fake)) == 2
    assert len(fake.predictions_of(task)) == 1


def test_a_refused_create_is_final(fake: FakeLabelStudio) -> None:
    with client_for(fake) as client, pytest.raises(BackendError) as caught:
        client.upsert_prediction(424242, prediction())
    assert caught.value.status == 400


def test_set_model_version(fake: FakeLabelStudio) -> None:
    with client_for(fake) as client:
        client.set_project_model_version(1, VERSION)
    assert fake.projects[1]["model_version"] == VERSION


# -- listing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 3, 4])
def test_tasks_are_listed_page_by_page(fake: FakeLabelStudio, count: int) -> None:
    ids = [fake.add_task(1, {"n": i}) for i in range(count)]
    fake.add_task(2, {})  # another project's
    with client_for(fake) as client:
        assert [t["id"] for t in client.iter_tasks(1)] == ids
    pages = [r.query["page"] for r in fake.requests if r.path == "/api/tasks/"]
    # page_size 2: a short page ends it; after a full one LS answers 404 "Invalid page.".
    assert pages == {0: [["1"]], 3: [["1"], ["2"]], 4: [["1"], ["2"], ["3"]]}[count]


def test_listed_tasks_carry_their_predictions(fake: FakeLabelStudio) -> None:
    fake.add_task(1, {}, [{"model_version": VERSION}])
    with client_for(fake) as client:
        (task,) = client.iter_tasks(1)
    assert [p["model_version"] for p in task["predictions"]] == [VERSION]


# -- authentication ---------------------------------------------------------------------------------------------


def test_personal_access_token_is_exchanged_and_renewed(fake: FakeLabelStudio) -> None:
    with client_for(fake, key=PAT) as client:
        client.get_project(1)
        client.get_project(1)
        assert fake.refreshes == 1  # the access token is reused while valid
        fake.expire_access_tokens()  # LS forgets it (or it expired early): 401, renew once, retry
        client.get_project(1)
    assert fake.refreshes == 2
    api_calls = [r for r in fake.requests if r.path.startswith("/api/projects/")]
    assert all(r.authorization and r.authorization.startswith("Bearer ") for r in api_calls)
    assert all(PAT not in (r.authorization or "") for r in fake.requests)  # the PAT itself is never a header


def test_an_access_token_close_to_expiry_is_renewed_first(fake: FakeLabelStudio) -> None:
    fake.access_ttl_s = 10.0  # under the 30 s margin
    with client_for(fake, key=PAT) as client:
        client.get_project(1)
        client.get_project(1)
    assert fake.refreshes == 2


def test_a_refused_personal_access_token_is_final(fake: FakeLabelStudio) -> None:
    other = make_jwt({"token_type": "refresh", "jti": "revoked"})
    with client_for(fake, key=other) as client, pytest.raises(BackendError) as caught:
        client.get_project(1)
    assert (caught.value.status, caught.value.retryable) == (401, False)
    assert other not in str(caught.value)


def test_secrets_never_reach_logs_reprs_or_errors(fake: FakeLabelStudio, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    task = fake.add_task(1, {})
    fake.fail(503, times=2)
    for key in (LEGACY_TOKEN, PAT):
        with client_for(fake, key=key) as client:
            client.upsert_prediction(task, prediction())
            with pytest.raises(BackendError) as caught:
                client.get_project(99)
            assert key not in repr(client.config)
            assert key not in str(caught.value)
    assert LEGACY_TOKEN not in caplog.text
    assert PAT not in caplog.text
    assert "Bearer" not in caplog.text


# -- media ------------------------------------------------------------------------------------------------------


def test_media_from_label_studio_is_fetched_with_the_token(fake: FakeLabelStudio, tmp_path: Path) -> None:
    fake.media["/data/local-files/?d=images/a.png"] = PNG
    with client_for(fake) as client:
        got = client.download("/data/local-files/?d=images/a.png", tmp_path)
    assert got.path.read_bytes() == PNG
    assert fake.requests[-1].authorization == f"Token {LEGACY_TOKEN}"


def test_missing_media_is_input_not_found(fake: FakeLabelStudio, tmp_path: Path) -> None:
    with client_for(fake) as client, pytest.raises(PreannotateError) as caught:
        client.download("/data/upload/1/missing.png", tmp_path)
    assert caught.value.code is ErrorCode.INPUT_NOT_FOUND


def test_the_token_never_goes_to_another_host(fake: FakeLabelStudio, tmp_path: Path) -> None:
    other = MediaHost(PNG)
    with serving(other) as other_url:
        fake.redirects["/data/upload/1/a.png"] = f"{other_url}/bucket/a.png"  # e.g. a presigned storage URL
        config = client_for(fake).config
        policy = FetchPolicy(allowed_hosts=frozenset({other_url.removeprefix("http://")}))
        with LabelStudioClient(config, fetch_policy=policy) as client:
            assert client.download("/data/upload/1/a.png", tmp_path).path.read_bytes() == PNG  # via the redirect
            assert client.download(f"{other_url}/b.png", tmp_path).path.read_bytes() == PNG  # absolute
    assert fake.requests[-1].authorization == f"Token {LEGACY_TOKEN}"
    assert other.authorizations == [None, None]


def test_a_lookalike_host_is_another_host(fake: FakeLabelStudio, tmp_path: Path) -> None:
    other = MediaHost(PNG)
    with serving(other) as other_url:
        port = other_url.rsplit(":", 1)[1]
        policy = FetchPolicy(allowed_hosts=frozenset({f"localhost:{port}"}))
        with LabelStudioClient(client_for(fake).config, fetch_policy=policy) as client:
            client.download(f"http://localhost:{port}/a.png", tmp_path)  # same machine, other origin
    assert other.authorizations == [None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/data/upload/1/a.png", "{base}/data/upload/1/a.png"),
        ("/data/local-files/?d=images/a b.png", "{base}/data/local-files/?d=images/a b.png"),
        ("data/upload/1/a.png", "{base}/data/upload/1/a.png"),
        ("https://cdn.example.com/a.png", "https://cdn.example.com/a.png"),
        ("s3://bucket/a.png", "s3://bucket/a.png"),
    ],
)
def test_media_urls_resolve_against_the_base(fake: FakeLabelStudio, value: str, expected: str) -> None:
    with client_for(fake) as client:
        assert client.media_url(value) == expected.format(base=fake.base_url)


def test_only_the_configured_origin_is_label_studio(fake: FakeLabelStudio) -> None:
    with client_for(fake) as client:
        assert client.is_label_studio_url(f"{fake.base_url}/data/upload/1/a.png")
        assert not client.is_label_studio_url(fake.base_url.replace("127.0.0.1", "localhost") + "/x")
        assert not client.is_label_studio_url(fake.base_url.replace("http:", "https:") + "/x")


# -- configuration ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["", "ftp://ls.example.com", "https://user:pw@ls.example.com", "https://ls.example.com/?a=1", "ls.example.com"],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        LabelStudioConfig(url=url, api_key=SecretStr("k" * 10))


def test_config_normalises_and_hides_the_key() -> None:
    config = LabelStudioConfig(url="https://LS.example.com:8443/", api_key=SecretStr(LEGACY_TOKEN))
    assert config.url == "https://ls.example.com:8443"
    assert config.origin == ("https", "ls.example.com", 8443)
    assert config.host_entry == "ls.example.com:8443"
    assert LEGACY_TOKEN not in repr(config)
    with pytest.raises(ValueError, match="empty"):
        LabelStudioConfig(url="https://ls.example.com", api_key=SecretStr(" "))
