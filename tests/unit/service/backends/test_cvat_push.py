"""The CVAT push's pure parts: each slot's task frame numbering, which stored objects are ours, the labels a model's
classes need, and the comparison that makes a second push ``unchanged``."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from pydantic import SecretStr

from service.backends.cvat import (
    CvatClient,
    CvatConfig,
    CvatJobInfo,
    CvatLabelInfo,
    CvatStoredAnnotations,
    frame_url,
)
from service.backends.cvat_push import (
    _create,
    holds_exactly,
    jobs_covering,
    labels_for_classes,
    our_objects,
    slot_task_frames,
)
from service.backends.media import CVAT, via
from service.backends.retry import BackendError, RetryPolicy
from service.convert.cvat import item_to_cvat, marker_spec, marker_version, model_marker, read_marker, stamp_marker
from service.convert.cvat_types import CvatAnnotations, CvatFrames, CvatLabel, empty_annotations
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox
from service.spec.requests import ItemIn, SlotIn
from tests.builders import CAR_PERSON_MODEL, make_detections, make_result, with_tracks

BASE = "https://cvat.example.com"
MODEL = CAR_PERSON_MODEL
SPEC = MODEL.spec
MARKER = model_marker(MODEL)
MARKERS: dict[int, int | None] = {11: 101, 12: 102, 13: None}  # label id -> its marker attribute's spec id


def _frames_of(task: int, numbers: list[int]) -> ItemIn:
    return ItemIn(
        name="task", slots=[SlotIn(name="video", urls=[via(CVAT, frame_url(BASE, task, n)) for n in numbers])]
    )


# -- slot_task_frames ------------------------------------------------------------------------------------------------


def test_frames_fetched_from_the_task_keep_their_numbers() -> None:
    to_task = slot_task_frames(_frames_of(7, [0, 5, 10]), 7, CvatFrames(size=11, video=True))["video"]
    assert [to_task(i) for i in (0, 1, 2)] == [0, 5, 10]
    assert to_task(3) is None
    assert to_task(-1) is None


def test_unmarked_frame_urls_are_the_task_frames_too() -> None:
    item = ItemIn(name="x", slots=[SlotIn(name="0", url=frame_url(BASE, 7, 4), type="image")])
    assert slot_task_frames(item, 7, CvatFrames(size=5))["0"](0) == 4


@pytest.mark.parametrize(
    "urls",
    [
        [via(CVAT, frame_url(BASE, 8, 0))],  # another task's frame
        [via(CVAT, frame_url(BASE, 7, 0)), via(CVAT, frame_url(BASE, 8, 1))],
        [via(CVAT, frame_url(BASE, 7, 0)), "https://media.example/b.jpg"],  # this task's frame among others
    ],
)
def test_frames_of_another_task_are_refused(urls: list[str]) -> None:
    item = ItemIn(name="mixed", slots=[SlotIn(name="video", urls=urls)])
    with pytest.raises(PreannotateError) as caught:
        slot_task_frames(item, 7, CvatFrames(size=10, video=True))
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "'mixed'" in str(caught.value)


def test_a_source_video_goes_through_the_task_start_and_step() -> None:
    item = ItemIn(name="clip", slots=[SlotIn(name="0", url="https://media.example/clip.mp4", type="video")])
    frames = CvatFrames(size=4, start_frame=10, stop_frame=19, step=3, video=True)
    to_task = slot_task_frames(item, 7, frames)["0"]
    assert [to_task(i) for i in (9, 10, 13, 16, 19, 20)] == [None, 0, 1, 2, 3, None]


def test_images_are_the_task_frames_of_the_same_file_name() -> None:
    frames = CvatFrames(size=4, names=("batch/a.jpg", "b.jpg", "cam1/c.jpg", "cam2/c.jpg"))
    item = ItemIn(
        name="photos",
        slots=[
            SlotIn(name="0", url="https://media.example/x/b.jpg?sig=abc", type="image"),
            SlotIn(name="1", url="s3://bucket/a.jpg", type="image"),
            SlotIn(name="2", url="https://media.example/d.jpg", type="image"),
            SlotIn(name="3", url="https://media.example/site/cam2/c.jpg", type="image"),
        ],
    )
    found = slot_task_frames(item, 7, frames)
    assert found["0"](0) == 1
    assert found["1"](0) == 0
    assert found["2"](0) is None  # not in the task
    assert found["0"](1) is None
    assert found["3"](0) == 3  # the name sharing the most of its path: cam2's, not cam1's


def test_an_image_two_frames_match_alike_cannot_be_placed() -> None:
    frames = CvatFrames(size=2, names=("cam1/c.jpg", "cam2/c.jpg"))
    item = ItemIn(name="photo", slots=[SlotIn(name="0", url="https://media.example/c.jpg", type="image")])
    with pytest.raises(PreannotateError) as caught:
        slot_task_frames(item, 7, frames)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "'c.jpg'" in caught.value.message


# -- our_objects -----------------------------------------------------------------------------------------------------


def _shape(
    id_: int, *, frame: int = 0, label: int = 11, source: str = "auto", marker: str | None = MARKER, spec_id: int = 101
) -> dict[str, Any]:
    attributes = [] if marker is None else [{"spec_id": spec_id, "value": marker}]
    return {
        "id": id_,
        "type": "rectangle",
        "frame": frame,
        "label_id": label,
        "points": [1.0, 2.0, 3.0, 4.0],
        "source": source,
        "attributes": attributes,
        "group": 0,
        "occluded": False,
        "outside": False,
        "z_order": 0,
        "rotation": 0.0,
        "elements": [],
    }


STORED = CvatStoredAnnotations.model_validate(
    {
        "shapes": [
            _shape(1),
            _shape(2, marker=f"{SPEC}@v0"),  # an older version of our model: ours to replace
            _shape(3, source="semi-auto"),  # a person edited it
            _shape(4, source="manual", marker=None),
            _shape(5, marker="onnx:/m/other.onnx@v1"),  # another model's
            _shape(6, marker=None),  # CVAT's own auto-annotation: no marker
            _shape(7, spec_id=102),  # a marker value under another label's attribute
            _shape(8, label=13, spec_id=101),  # a label without our attribute
            _shape(9, frame=3),
            _shape(10, label=12, spec_id=102),
        ],
        "tracks": [
            {
                "id": 20,
                "frame": 2,
                "label_id": 11,
                "source": "auto",
                "group": 0,
                "attributes": [{"spec_id": 101, "value": MARKER}],
                "shapes": [{"id": 200, "type": "rectangle", "frame": 2, "points": [1, 2, 3, 4], "outside": False}],
                "elements": [],
            },
            {
                "id": 21,
                "frame": 0,
                "label_id": 11,
                "source": "semi-auto",
                "group": 0,
                "attributes": [{"spec_id": 101, "value": MARKER}],
                "shapes": [{"id": 210, "type": "rectangle", "frame": 0, "points": [1, 2, 3, 4], "outside": False}],
                "elements": [],
            },
        ],
    }
)


def test_only_untouched_objects_with_our_spec_marker_are_ours() -> None:
    assert [o.id for o in our_objects(STORED, MARKERS, SPEC, None)] == [1, 2, 9, 10, 20]


def test_on_given_frames_only_objects_there_are_ours() -> None:
    assert [o.id for o in our_objects(STORED, MARKERS, SPEC, frozenset({0}))] == [1, 2, 10]
    assert [o.id for o in our_objects(STORED, MARKERS, SPEC, frozenset({3}))] == [9]
    assert our_objects(STORED, MARKERS, "onnx:/m/other.onnx", None)[0].id == 5


# -- labels_for_classes ----------------------------------------------------------------------------------------------

LABELS = [
    CvatLabelInfo(id=11, name="Car"),
    CvatLabelInfo(id=12, name="person"),
    CvatLabelInfo(id=13, name="Truck"),
]


@pytest.mark.parametrize(
    ("classes", "aliases", "ids"),
    [
        (["car", "PERSON", "bicycle"], None, {11, 12}),
        (["car", "bicycle"], {"Bicycle": "truck"}, {11, 13}),
        (["car"], {"car": "truck"}, {13}),  # an alias wins over the class's own name
        (["bicycle"], {"bicycle": "boat"}, set()),
        ([], None, set()),
    ],
)
def test_labels_for_classes(classes: list[str], aliases: dict[str, str] | None, ids: set[int]) -> None:
    assert labels_for_classes(classes, LABELS, aliases) == ids


# -- a second push finds what the first wrote ------------------------------------------------------------------------


def _converted(model: ModelRef = MODEL) -> CvatAnnotations:
    """A tracked video with a gap (so an outside keyframe) and an image's two boxes, as item_to_cvat makes them."""
    slot = SlotMeta("vid", "clip", MediaKind.VIDEO, ("/data/clip.mp4",), 640, 480, 25.0, 100, 4)
    frames = tuple(
        make_result(item="vid", slot="clip", media=MediaKind.VIDEO, frame_index=n, timestamp_s=n / 25) for n in range(4)
    )
    boxes = tuple(TrackBox(n, n / 25, (10.123 + n, 20.0, 40.456 + n, 60.0), 0.9) for n in (0, 1, 3))
    video = with_tracks(ItemPredictions("vid", (slot,), frames), [Track(1, "clip", 0, boxes)])
    image_slot = SlotMeta("img", "0", MediaKind.IMAGE, ("/data/a.jpg",), 640, 480, None, 1, 1)
    dets = make_detections([[1.111, 2.0, 30.0, 40.0], [5.0, 6.0, 70.0, 80.555]], [0.9, 0.8], [0, 1])
    image = ItemPredictions("img", (image_slot,), (make_result(dets, item="img", slot="0"),))
    labels = [CvatLabel(11, "car", marker_id=101), CvatLabel(12, "person", marker_id=102)]
    tracks = item_to_cvat(video, {"clip": lambda i: i}, labels, model).annotations
    shapes = item_to_cvat(image, {"0": lambda i: 9}, labels, model).annotations
    return {"version": 0, "tags": [], "shapes": shapes["shapes"], "tracks": tracks["tracks"]}


def _as_stored(new: CvatAnnotations) -> CvatStoredAnnotations:
    """What ``GET /api/tasks/{id}/annotations`` answers after a create: the objects as sent, with ids."""
    raw = json.loads(json.dumps(new))
    ids = iter(range(1, 1000))
    for shape in raw["shapes"]:
        shape |= {"id": next(ids), "elements": []}
    for track in raw["tracks"]:
        track |= {"id": next(ids), "elements": []}
        for keyframe in track["shapes"]:
            keyframe["id"] = next(ids)
    return CvatStoredAnnotations.model_validate(raw)


def test_a_push_stamps_its_content_digest_on_every_object() -> None:
    new = _converted()
    marker = stamp_marker(new)

    assert marker.startswith(MARKER + "#")
    assert len(marker) == len(MARKER) + 13
    values = [a["value"] for obj in (*new["shapes"], *new["tracks"]) for a in obj["attributes"]]
    assert values == [f"{marker}/{n}/3" for n in range(3)]  # each object its place in the push, and its size
    assert (marker_version(marker), marker_spec(marker)) == (MARKER, SPEC)
    again = _converted()
    assert stamp_marker(again) == marker  # the same objects: the same marker (a second push is `unchanged`)
    ours = our_objects(_as_stored(new), MARKERS, SPEC, None)
    assert len(ours) == 3
    assert {read_marker(o.marker(MARKERS[o.label_id]) or "").push for o in ours} == {marker}
    assert holds_exactly(ours, new, MARKERS, marker)


def test_a_job_holding_a_duplicate_or_an_older_push_is_rewritten_one_missing_is_not() -> None:
    new = _converted()
    marker = stamp_marker(new)
    stored = _as_stored(new)
    ours = our_objects(stored, MARKERS, SPEC, None)

    assert holds_exactly(ours[1:], new, MARKERS, marker)  # a person deleted one of ours: it stays deleted
    assert not holds_exactly([*ours, ours[0].model_copy(update={"id": 999})], new, MARKERS, marker)  # two pushes raced
    older = _converted()
    older["tracks"][0]["shapes"][1]["points"][0] += 1.0
    older_marker = stamp_marker(older)
    assert not holds_exactly(our_objects(_as_stored(older), MARKERS, SPEC, None), new, MARKERS, marker)
    assert older_marker != marker
    assert not holds_exactly([], new, MARKERS, marker)  # nothing of ours there yet
    assert holds_exactly([], empty_annotations(), MARKERS, "")  # nothing to write, nothing there


def test_a_moved_box_or_another_version_stamps_another_marker() -> None:
    marker = stamp_marker(_converted())
    moved = _converted()
    moved["tracks"][0]["shapes"][1]["points"][0] += 1.0
    assert stamp_marker(moved) != marker

    upgraded = ModelRef(spec=MODEL.spec, version="v2", class_names=MODEL.class_names)
    other = stamp_marker(_converted(upgraded))
    assert other != marker
    assert marker_version(other) == model_marker(upgraded)


# -- a create whose outcome is unknown ------------------------------------------------------------------------------


class _CvatJob:
    """A CVAT job's annotations whose create stores the objects and then answers a failure (a proxy's 503, a timeout
    after the server committed): what a push must not answer by creating them twice."""

    def __init__(self, failure: BackendError, *, stores: bool) -> None:
        self.config = CvatConfig(url="http://cvat.test", token=SecretStr("t"), retry=RetryPolicy(sleep=lambda _: None))
        self.stored: list[dict[str, Any]] = []
        self.creates = 0
        self._failure: BackendError | None = failure
        self._stores = stores

    def change_job_annotations(self, job_id: int, action: str, body: CvatAnnotations, **_: object) -> None:
        assert action == "create"
        self.creates += 1
        failure, self._failure = self._failure, None
        if failure is None or self._stores:
            for n, shape in enumerate(body["shapes"]):
                self.stored.append({**shape, "id": 100 * self.creates + n})
        if failure is not None:
            raise failure

    def job_annotations(self, job_id: int) -> CvatStoredAnnotations:
        return CvatStoredAnnotations.model_validate({"shapes": self.stored, "tracks": []})


@pytest.mark.parametrize(
    "failure",
    [
        BackendError("cvat", "HTTP 503", status=503, retryable=False),
        BackendError("cvat", "ReadTimeoutError", status=None, retryable=False),
    ],
)
def test_a_create_that_landed_before_it_failed_is_not_sent_again(failure: BackendError) -> None:
    new = _converted()
    new["tracks"] = []
    marker = stamp_marker(new)
    job = _CvatJob(failure, stores=True)

    _create(cast(CvatClient, job), 1, new, set(), MARKERS, marker)

    assert job.creates == 1
    assert len(job.stored) == len(new["shapes"])


def test_a_create_that_did_not_land_is_sent_again_and_a_refusal_is_not() -> None:
    new = _converted()
    new["tracks"] = []
    marker = stamp_marker(new)
    job = _CvatJob(BackendError("cvat", "HTTP 502", status=502, retryable=False), stores=False)
    _create(cast(CvatClient, job), 1, new, set(), MARKERS, marker)
    assert job.creates == 2
    assert len(job.stored) == len(new["shapes"])

    refused = _CvatJob(BackendError("cvat", "HTTP 400", status=400, retryable=False), stores=False)
    with pytest.raises(BackendError):
        _create(cast(CvatClient, refused), 1, new, set(), MARKERS, marker)
    assert refused.creates == 1


def test_jobs_people_finished_are_protected_and_jobs_are_picked_by_frame() -> None:
    jobs = [
        CvatJobInfo(id=1, start_frame=0, stop_frame=9),
        CvatJobInfo(id=2, start_frame=10, stop_frame=19, stage="acceptance"),
        CvatJobInfo(id=3, start_frame=20, stop_frame=29, state="completed"),
    ]
    assert [j.protected for j in jobs] == [False, True, True]
    assert [j.id for j in jobs_covering(jobs, [12, 25])] == [2, 3]
    assert [j.id for j in jobs_covering(jobs, None)] == [1, 2, 3]
    assert jobs_covering(jobs, [40]) == []


def test_a_deleted_task_frame_takes_no_source_frame() -> None:
    frames = CvatFrames(size=5, start_frame=0, step=2, video=True, deleted=frozenset({2}))
    assert [frames.of_source_frame(i) for i in (0, 2, 4, 6)] == [0, 1, None, 3]
