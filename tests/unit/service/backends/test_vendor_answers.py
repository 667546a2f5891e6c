"""Vendor answers are read once, at the client boundary: an answer of another shape is a clear, final
BackendError naming the call and the field, never a KeyError deep inside a push; keys we do not read are kept
where an answer is passed on (Encord rows saved back, Label Studio tasks)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from service.backends.encord import BearerAuth, EncordBackend, EncordConfig
from service.backends.http import parse_answer
from service.backends.label_studio import LabelStudioClient, LabelStudioConfig, LsTask
from service.backends.retry import BackendError, RetryPolicy
from service.backends.v7 import V7Backend, V7Config, V7ItemEntry

NO_RETRY = RetryPolicy(max_attempts=1, sleep=lambda s: None)


def answering(body: object) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, json=body))


def v7(body: object) -> V7Backend:
    config = V7Config(team_slug="acme", dataset_slug="d", dataset_id=7)
    return V7Backend(config, "key", retry=NO_RETRY, transport=answering(body))


def encord(answer: Callable[[dict[str, object]], object]) -> EncordBackend:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": 200, "response": answer(json.loads(request.content))})

    return EncordBackend(
        EncordConfig(project_hash="p"), BearerAuth("t"), retry=NO_RETRY, transport=httpx.MockTransport(handle)
    )


def label_studio(body: object) -> LabelStudioClient:
    config = LabelStudioConfig(url="http://ls.test", api_key=SecretStr("legacy-token"), retry=NO_RETRY)
    return LabelStudioClient(config, transport=answering(body))


def test_v7_items_are_typed_with_their_ids_as_strings() -> None:
    with v7({"items": [{"id": 42, "name": "a.png", "path": "/x/", "status": "new", "extra": 1}]}) as be:
        (found,) = be.find_items(item_names=["a.png"])
    assert found == V7ItemEntry(id="42", name="a.png", path="/x/", status="new")
    assert found.key == "/x/a.png"


@pytest.mark.parametrize(
    ("body", "where"),
    [({"items": [{"name": "a.png"}]}, "items.0.id"), ({"items": "nope"}, "items"), ([1], "the answer")],
)
def test_a_v7_listing_of_another_shape_is_a_final_backend_error(body: object, where: str) -> None:
    with v7(body) as be, pytest.raises(BackendError) as caught:
        be.find_items(item_names=["a.png"])
    assert caught.value.retryable is False
    assert f"listing items: unexpected answer ({where}" in str(caught.value)


def test_encord_rows_keep_every_key_and_need_their_data_hash() -> None:
    row = {"data_hash": "d1", "label_hash": "l1", "data_units": {"d1": {"labels": {}}}, "object_answers": {}}

    def answer(request: dict[str, object]) -> object:
        values = request["values"]
        assert isinstance(values, dict)
        if request["query_type"] == "labelrowmetadata":
            return [{"data_hash": "d1", "label_hash": "l1", "other": True}]
        return [row]

    with encord(answer) as be:
        assert be.initialise_rows(["d1"]) == {"d1": row}
    with encord(lambda request: [{"label_hash": "l1"}]) as be, pytest.raises(BackendError) as caught:
        be.list_rows(["d1"])
    assert "listing label rows: unexpected answer (0.data_hash" in str(caught.value)
    assert caught.value.retryable is False


def test_label_studio_tasks_keep_their_keys_and_a_bad_project_is_named() -> None:
    task = {"id": 3, "data": {"image": "/data/upload/a.png"}, "predictions": [7], "annotations": [], "inner_id": 1}
    assert parse_answer("label_studio", LsTask, task, "reading a task") == task
    with label_studio({"title": "no id"}) as client, pytest.raises(BackendError) as caught:
        client.get_project(1)
    assert "reading project 1: unexpected answer (id: Field required)" in str(caught.value)
