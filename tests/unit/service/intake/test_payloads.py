"""Label Studio tasks and V7 Darwin JSON as job items: slots, media marking, dedupe keys."""

from __future__ import annotations

from typing import Any

import pytest

from service.backends.media import split_via
from service.errors import ErrorCode, PreannotateError
from service.intake import label_studio as ls
from service.intake import v7
from service.spec.job import JobSpec
from tests.unit.service.intake.payloads import (
    IMAGE_CONFIG,
    LS_URL,
    PROJECT_TOKEN,
    V7_ITEM_ID,
    darwin_item,
    ls_task,
    ls_tasks_created,
)

VIDEO_CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="face"/></Labels>
  <Video name="video" value="$video"/>
  <VideoRectangle name="box" toName="video"/>
  <Image name="thumb" value="$thumb"/>
</View>"""
V7_ORIGIN = ("https", "darwin.v7labs.com", 443)
PARAMS: dict[str, Any] = {
    "model": "fake:centre",
    "model_version": "v1",
    "fps": 1.0,
    "sampling": "exact",
    "threshold": 0.5,
    "destinations": [{"backend": "label_studio", "project": 17}],
}


def _spec(changes: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec.from_stored({**PARAMS, **(changes or {})})


def test_a_tasks_created_delivery_keeps_no_project_secrets() -> None:
    body = ls_tasks_created(
        ls_task(22, "/data/local-files/?d=images/frame_0001.jpg"), ls_task(23, "/data/upload/1/b.jpg")
    )
    delivery = ls.parse_delivery(body)
    assert (delivery.action, delivery.project_id) == ("TASKS_CREATED", 17)
    assert delivery.label_config == IMAGE_CONFIG
    assert len(delivery.tasks) == 2
    assert PROJECT_TOKEN not in repr(delivery)


def test_tasks_become_items_with_media_fetched_through_label_studio() -> None:
    targets = ls.targets_of(IMAGE_CONFIG)
    item = ls.task_item(ls_task(22, "/data/local-files/?d=images/frame_0001.jpg"), targets, LS_URL)
    assert item.name == "task-22"
    assert item.external_ids == {"label_studio": "22"}
    (slot,) = item.slots
    assert (slot.name, slot.type) == ("image", "image")  # named after the object: how the push matches it
    assert slot.url == f"label-studio+{LS_URL}/data/local-files/?d=images/frame_0001.jpg"
    assert split_via(slot.url or "") == ("label-studio", f"{LS_URL}/data/local-files/?d=images/frame_0001.jpg")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{LS_URL}/data/upload/3/x.png", f"label-studio+{LS_URL}/data/upload/3/x.png"),  # absolute on LS: still LS
        ("https://cdn.example.com/x.png?sig=1", "https://cdn.example.com/x.png?sig=1"),  # elsewhere: as is, no key
        ("s3://bucket/x.png", "s3://bucket/x.png"),
        ("http://ls.example.com:9999/data/x.png", "http://ls.example.com:9999/data/x.png"),  # another port
    ],
)
def test_slot_urls(value: str, expected: str) -> None:
    assert ls.slot_url(LS_URL, value) == expected


@pytest.mark.parametrize("value", ["gs://bucket/x.png", "data:image/png;base64,AAAA", "file:///etc/passwd"])
def test_unfetchable_media(value: str) -> None:
    with pytest.raises(PreannotateError) as caught:
        ls.slot_url(LS_URL, value)
    assert caught.value.code is ErrorCode.URL_NOT_ALLOWED


def test_a_video_task_gets_one_slot_per_target_object() -> None:
    targets = ls.targets_of(VIDEO_CONFIG)
    assert [t.name for t in targets] == ["video"]  # the thumbnail has no box control: never fetched
    task = {"id": 5, "data": {"video": "/data/upload/1/clip.mp4", "thumb": "/data/upload/1/t.jpg"}}
    item = ls.task_item(task, targets, LS_URL)
    assert [(s.name, s.type) for s in item.slots] == [("video", "video")]


def test_tasks_without_media_or_id_are_refused() -> None:
    targets = ls.targets_of(IMAGE_CONFIG)
    with pytest.raises(PreannotateError, match=r"no media"):
        ls.task_item({"id": 9, "data": {"text": "hello"}}, targets, LS_URL)
    with pytest.raises(PreannotateError, match="without an id"):
        ls.task_item({"data": {"image": "/data/x.png"}}, targets, LS_URL)


def test_an_object_name_that_cannot_be_a_slot_name() -> None:
    config = IMAGE_CONFIG.replace('name="image"', 'name="my image"').replace('toName="image"', 'toName="my image"')
    with pytest.raises(PreannotateError, match="slot name"):
        ls.task_item(ls_task(1, "/data/x.png"), ls.targets_of(config), LS_URL)


def test_a_project_without_box_controls() -> None:
    with pytest.raises(PreannotateError, match="RectangleLabels"):
        ls.targets_of('<View><Text name="t" value="$text"/></View>')


def test_the_delivery_key_is_the_task_states_and_parameters() -> None:
    key = ls.delivery_idem(17, "TASKS_CREATED", [(23, "b"), (22, "a")], _spec())
    assert key == ls.delivery_idem(17, "TASKS_CREATED", [(22, "a"), (23, "b")], _spec())  # order-free
    assert key != ls.delivery_idem(17, "TASKS_CREATED", [(22, "a"), (23, "changed")], _spec())
    assert key != ls.delivery_idem(18, "TASKS_CREATED", [(22, "a"), (23, "b")], _spec())
    assert key != ls.delivery_idem(17, "TASKS_CREATED", [(22, "a"), (23, "b")], _spec({"threshold": 0.9}))
    # The version is unknown until a worker publishes it: left out of the key, told apart when a key is reused.
    assert key == ls.delivery_idem(17, "TASKS_CREATED", [(22, "a"), (23, "b")], _spec({"model_version": "v2"}))


def test_odd_deliveries() -> None:
    with pytest.raises(PreannotateError):
        ls.parse_delivery({"tasks": []})
    delivery = ls.parse_delivery({"action": "TASKS_CREATED", "tasks": [{"id": 1, "project": "4"}, "junk"]})
    assert delivery.project_id == 4  # from the tasks when project is absent
    assert delivery.label_config is None
    assert len(delivery.tasks) == 1


# -- V7 ----------------------------------------------------------------------------------------------------------


def test_a_darwin_item_becomes_one_item_imported_into_itself() -> None:
    body = darwin_item(
        [
            "https://darwin.v7labs.com/api/v2/teams/acme/uploads/bbbb-1",
            "https://storage.example.com/r.png?X-Amz-Signature=abc",
        ]
    )
    delivery = v7.parse_delivery(body, v7_origin=V7_ORIGIN)
    assert delivery is not None
    assert delivery.item_id == V7_ITEM_ID
    item = delivery.item
    assert item.name == "patient_0001_mammo"
    assert item.external_ids == {"v7": V7_ITEM_ID}
    assert [(s.name, s.type) for s in item.slots] == [("0", "image"), ("1", "image")]
    assert item.slots[0].url == "v7+https://darwin.v7labs.com/api/v2/teams/acme/uploads/bbbb-1"  # with the API key
    assert item.slots[1].url == "https://storage.example.com/r.png?X-Amz-Signature=abc"  # presigned: as is


def test_without_a_configured_v7_nothing_is_marked() -> None:
    body = darwin_item(["https://darwin.v7labs.com/api/v2/teams/acme/uploads/bbbb-1"])
    delivery = v7.parse_delivery(body, v7_origin=None)
    assert delivery is not None
    assert delivery.item.slots[0].url == "https://darwin.v7labs.com/api/v2/teams/acme/uploads/bbbb-1"


def test_the_media_hash_ignores_signatures_and_annotations() -> None:
    first = v7.parse_delivery(darwin_item(["https://s.example.com/a.png?sig=1"]), v7_origin=V7_ORIGIN)
    again = v7.parse_delivery(
        darwin_item(["https://s.example.com/a.png?sig=2"], annotations=[{"id": "x", "name": "mass"}]),
        v7_origin=V7_ORIGIN,
    )
    other = v7.parse_delivery(darwin_item(["https://s.example.com/b.png?sig=1"]), v7_origin=V7_ORIGIN)
    assert first is not None
    assert again is not None
    assert other is not None
    assert first.media_hash == again.media_hash
    assert first.media_hash != other.media_hash
    key = v7.delivery_idem(V7_ITEM_ID, first.media_hash, _spec())
    assert key == v7.delivery_idem(V7_ITEM_ID, again.media_hash, _spec())
    assert key != v7.delivery_idem(V7_ITEM_ID, first.media_hash, _spec({"model": "fake:other"}))
    assert key == v7.delivery_idem(V7_ITEM_ID, first.media_hash, _spec({"model_version": "v2"}))  # see above


def test_slots_without_urls_are_skipped_and_reported() -> None:
    body = darwin_item(["https://s.example.com/a.png"])
    body["item"]["slots"].append({"type": "image", "slot_name": "ext", "source_files": [{"file_name": "b.png"}]})
    delivery = v7.parse_delivery(body, v7_origin=V7_ORIGIN)
    assert delivery is not None
    assert [s.name for s in delivery.item.slots] == ["0"]
    assert delivery.skipped_slots
    assert "ext" in delivery.skipped_slots[0]


def test_deliveries_that_are_not_items() -> None:
    legacy = {"event_type": "workflow_complete", "payload": {"dataset_id": 1, "filename": "a.png", "annotations": []}}
    assert v7.parse_delivery(legacy, v7_origin=V7_ORIGIN) is None
    metadata_only = darwin_item([])
    assert v7.parse_delivery(metadata_only, v7_origin=V7_ORIGIN) is None


def test_bad_items() -> None:
    body = darwin_item(["https://s.example.com/a.png"])
    del body["item"]["source_info"]["item_id"]
    with pytest.raises(PreannotateError, match="item_id"):
        v7.parse_delivery(body, v7_origin=V7_ORIGIN)
    only_gs = darwin_item(["gs://bucket/a.png"])
    with pytest.raises(PreannotateError, match="no slot"):
        v7.parse_delivery(only_gs, v7_origin=V7_ORIGIN)
