"""A job's result written item by item: the very document ``job_result`` builds, without holding the job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

import service.convert.encord
import service.jobs.outputs
from service.config import Settings
from service.convert.coco import frame_results_to_coco
from service.jobs.outputs import FORMATS, job_result
from service.jobs.result_stream import job_result_chunks
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions, item_predictions_to_json
from service.pipeline.tracks import TrackerOptions
from service.queue.store import ItemResult, ItemState
from tests.builders import linked
from tests.unit.service.jobs.test_outputs import image_frame, job, job_items, results, video_frames


class _FixedClock(datetime):
    """Encord rows are stamped with the time they are made: one instant for both documents."""

    @classmethod
    def now(cls, tz: Any = None) -> _FixedClock:
        return cls(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.convert.encord, "datetime", _FixedClock)


def stored(item: ItemPredictions) -> dict[str, Any]:
    return json.loads(json.dumps(item_predictions_to_json(item)))


def tracked_clip() -> ItemResult:
    meta = SlotMeta("track.mp4", "0", MediaKind.VIDEO, ("https://h/track.mp4",), 320, 240, 30.0, 900, 3, 30.0)
    frames = [
        replace(f, info=replace(f.info, item="track.mp4", slot="0")) for f in video_frames("0", [0, 30, 60], 30.0)
    ]
    item = linked(ItemPredictions("track.mp4", (meta,), tuple(frames)), TrackerOptions(max_gap_s=10.0, offline=False))
    return ItemResult(3, "track.mp4", ItemState.SUCCEEDED, stored(item), None)


def job_results() -> list[ItemResult]:
    """A multi-slot item (video, stills, a PDF: no Encord row holds it), an image, a failed item, a tracked
    video, and a succeeded item whose stored result is gone."""
    return [*results(), tracked_clip(), ItemResult(4, "gone.jpg", ItemState.SUCCEEDED, None, None)]


def streamed(fmt: str, items: Iterator[ItemResult] | list[ItemResult]) -> Any:
    return json.loads(b"".join(job_result_chunks(fmt, job(), iter(items), Settings())))


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_streamed_document_is_the_in_memory_one(fmt: str) -> None:
    served = json.loads(json.dumps(job_result(fmt, job(), job_results(), Settings())))

    assert streamed(fmt, job_results()) == served
    assert list(streamed(fmt, job_results())) == list(served)  # the same fields in the same order
    assert served["skipped_items"][-1] == {
        "item": "gone.jpg",
        "code": "result_missing",
        "reason": "the stored result of item 'gone.jpg' is gone (removed from the result store)",
    }


def test_coco_ids_continue_across_items_as_the_whole_job_converter_numbers_them() -> None:
    items = job_items(job_results(), job().spec.tracker(Settings()))
    whole = frame_results_to_coco(
        [frame for item in items for frame in item.frames],
        class_names=job().spec.model_ref.class_names,
        multi_slot_items=frozenset(item.name for item in items if len(item.slots) > 1),
    )

    coco = streamed("coco", job_results())

    assert len(coco["images"]) == len(coco["annotations"]) == 8  # clip 4, photo.png 1, track.mp4 3
    assert [a.get("track_id") for a in coco["annotations"][-3:]] == [1, 1, 1]  # as the worker linked them
    assert coco["images"] == json.loads(json.dumps(whole["images"]))
    assert coco["annotations"] == json.loads(json.dumps(whole["annotations"]))


def test_a_coco_item_that_fails_is_skipped_and_the_others_are_numbered_on(monkeypatch: pytest.MonkeyPatch) -> None:
    convert = service.jobs.outputs.frame_results_to_coco

    def failing_for_the_photo(frames: Any, **kwargs: Any) -> Any:
        frames = list(frames)
        if any(f.info.item == "photo.png" for f in frames):
            raise KeyError("width")
        return convert(frames, **kwargs)

    monkeypatch.setattr(service.jobs.outputs, "frame_results_to_coco", failing_for_the_photo)
    coco = streamed("coco", job_results())

    assert [(s["item"], s["code"]) for s in coco["skipped_items"]] == [
        ("photo.png", "output_failed"),
        ("gone.jpg", "result_missing"),
    ]
    assert {i["item"] for i in coco["images"]} == {"clip", "track.mp4"}
    assert [i["id"] for i in coco["images"]] == list(range(1, len(coco["images"]) + 1))
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    assert coco == json.loads(json.dumps(job_result("coco", job(), job_results(), Settings())))


def photo(position: int) -> ItemResult:
    name = f"img{position}.jpg"
    meta = SlotMeta(name, "0", MediaKind.IMAGE, (f"https://h/{name}",), 640, 480, None, 1, 1)
    item = ItemPredictions(name, (meta,), (image_frame(name, "0", f"https://h/{name}"),))
    return ItemResult(position, name, ItemState.SUCCEEDED, stored(item), None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_items_are_pulled_one_at_a_time_as_their_bytes_go_out(fmt: str) -> None:
    """Seven items read in pages of two: the stream holds at most the page it is on, never the job."""
    pulled = 0
    pages_read = 0

    def paged() -> Iterator[ItemResult]:
        nonlocal pulled, pages_read
        everything = [photo(i) for i in range(7)]
        for start in range(0, 7, 2):
            pages_read += 1
            for item in everything[start : start + 2]:
                pulled += 1
                yield item

    seen: list[tuple[int, int, int]] = []  # (items pulled, pages read, items whose entries are out)
    out = b""
    for chunk in job_result_chunks(fmt, job(), paged(), Settings()):
        out += chunk
        seen.append((pulled, pages_read, sum(f"img{i}.jpg".encode() in out for i in range(7))))

    assert seen[0][:2] == (0, 0)  # the head goes out before any item is read
    assert all(got - out_already <= 1 for got, _, out_already in seen)  # one item in hand at most
    assert all(pages <= got // 2 + 1 for got, pages, _ in seen)  # a page read only when the last one is used up
    assert json.loads(out) == json.loads(json.dumps(job_result(fmt, job(), [photo(i) for i in range(7)], Settings())))


def test_small_chunks_are_joined_and_what_came_before_a_failure_still_goes_out() -> None:
    from service.jobs.result_stream import coalesced

    def chunks() -> Iterator[bytes]:
        yield from (b"ab", b"cd", b"efgh", b"i")
        raise RuntimeError("the store went away")

    out: list[bytes] = []
    with pytest.raises(RuntimeError, match="went away"):
        out.extend(coalesced(chunks(), min_bytes=4))

    assert out == [b"abcd", b"efgh", b"i"]
    assert list(coalesced([b"x" * 10, b"y"], min_bytes=4)) == [b"x" * 10, b"y"]


def sized(position: int, frames: int) -> ItemResult:
    result = {"slots": [], "frames": [{}] * frames}
    return ItemResult(position, f"item{position}", ItemState.SUCCEEDED, result, None)


def test_pages_grow_for_photos_and_shrink_for_long_videos() -> None:
    from service.jobs.result_stream import PageBudget

    budget = PageBudget(max_items=256, max_frames=20_000)

    assert budget.first() == 8
    assert budget.after([sized(i, 1) for i in range(8)]) == 256  # photos: as many as a page may hold
    assert budget.after([sized(i, 3600) for i in range(8)]) == 5  # 1-hour videos at 1 fps: ~18,000 frames a page
    assert budget.after([sized(0, 50_000)]) == 1  # never fewer than one
    assert budget.after([ItemResult(0, "gone", ItemState.SUCCEEDED, None, None)]) == 256  # a missing result is small
    assert PageBudget(max_items=2, max_frames=20_000).first() == 2


def test_the_stream_reads_pages_sized_on_what_the_last_one_held() -> None:
    from service.jobs.result_stream import PageBudget, succeeded_items

    items = [sized(i, 1 if i < 10 else 5000) for i in range(100)]
    reads: list[tuple[int, int]] = []

    class Store:
        def results(self, *, after: int, limit: int, **_: object) -> list[ItemResult]:
            reads.append((after, limit))
            return [item for item in items if item.position > after][:limit]

    pulled = succeeded_items(Store(), tenant="t", job_id="j", budget=PageBudget(64, 20_000))  # type: ignore[arg-type]

    assert [item.position for item in pulled or ()] == list(range(100))
    # 8 photos first, then a page of 64 (the 2 photos left and 62 videos of 5,000 frames), then 4 videos a page
    assert reads[:4] == [(-1, 8), (7, 64), (71, 4), (75, 4)]
    assert reads[-1] == (99, 4)  # the last full page is followed by one read that finds nothing
