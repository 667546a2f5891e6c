"""A CVAT task as job items: the frame stride, the frames planned, the items, and the delivery key."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.backends.cvat import CvatTaskInfo, parse_frame_url
from service.backends.media import CVAT, split_via
from service.convert.cvat_types import CvatFrames
from service.errors import ErrorCode, PreannotateError
from service.intake.cvat_tasks import FramePlan, frame_stride, plan_frames, task_idem, task_items
from service.pipeline.options import SamplingMode
from service.spec.job import JobSpec

BASE = "https://cvat.example.com"
VIDEO_TASK = CvatTaskInfo(id=7, name="clip", size=10, mode="interpolation")
IMAGE_TASK = CvatTaskInfo(id=8, name="photos", size=3, mode="annotation")
VIDEO = CvatFrames(size=10, stop_frame=9, names=("clip.mp4",), video=True)
IMAGES = CvatFrames(size=3, stop_frame=2, names=("a.jpg", "b.jpg", "c.jpg"))


@pytest.mark.parametrize(
    ("frames", "fps", "video_fps", "every", "stride"),
    [
        (VIDEO, 2.0, 30.0, None, 15),  # 30 fps source, 2 fps wanted
        (replace(VIDEO, step=5), 2.0, 30.0, None, 3),  # the task keeps every 5th frame: 6 fps of task frames
        (VIDEO, 100.0, 30.0, None, 1),  # more than the source has: every frame
        (VIDEO, 0.0, 30.0, None, 1),  # 0: every frame
        (VIDEO, 2.0, 30.0, 4, 4),  # every wins over fps
        (IMAGES, 2.0, 30.0, None, 1),  # images have no rate
        (IMAGES, 2.0, 30.0, 2, 2),
    ],
)
def test_frame_stride(frames: CvatFrames, fps: float, video_fps: float, every: int | None, stride: int) -> None:
    assert frame_stride(frames, fps=fps, video_fps=video_fps, every=every) == stride


def test_frame_stride_refuses_every_below_one() -> None:
    with pytest.raises(PreannotateError) as caught:
        frame_stride(VIDEO, fps=1.0, video_fps=30.0, every=0)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_plan_leaves_deleted_frames_out() -> None:
    video = replace(VIDEO, deleted=frozenset({3, 4}))
    assert plan_frames(video, 3, max_frames=100, task_id=7) == FramePlan(every=3, frames=(0, 6, 9))
    images = replace(IMAGES, deleted=frozenset({1}))
    assert plan_frames(images, 3, max_frames=100, task_id=8) == FramePlan(every=1, frames=(0, 2))  # every image


def test_plan_over_the_limit_names_the_setting() -> None:
    assert len(plan_frames(VIDEO, 1, max_frames=10, task_id=7).frames) == 10  # at the limit: fine
    with pytest.raises(PreannotateError) as caught:
        plan_frames(VIDEO, 1, max_frames=9, task_id=7)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "PREANNOTATE_CVAT_MAX_FRAMES_PER_TASK" in str(caught.value)
    assert "task 7" in str(caught.value)


def test_a_video_task_is_one_item_of_its_sampled_frames() -> None:
    plan = plan_frames(VIDEO, 4, max_frames=100, task_id=7)

    (item,) = task_items(BASE, VIDEO_TASK, VIDEO, plan, quality="compressed")

    assert item.name == "task-7"
    assert item.external_ids == {"cvat": "7"}
    (slot,) = item.slots
    assert slot.urls is not None
    marked = [split_via(url) for url in slot.urls]
    assert {backend for backend, _ in marked} == {CVAT}
    assert [parse_frame_url(url) for _, url in marked] == [(7, 0), (7, 4), (7, 8)]
    assert all(url.startswith(f"{BASE}/api/tasks/7/data?") and "quality=compressed" in url for _, url in marked)


def test_an_image_task_is_one_item_per_frame() -> None:
    plan = plan_frames(IMAGES, 1, max_frames=100, task_id=8)

    items = task_items(BASE, IMAGE_TASK, IMAGES, plan, quality="original")

    assert [i.name for i in items] == ["task-8-frame-0", "task-8-frame-1", "task-8-frame-2"]
    for n, item in enumerate(items):
        (slot,) = item.slots
        assert slot.type == "image"
        assert slot.url is not None
        backend, url = split_via(slot.url)
        assert backend == CVAT
        assert parse_frame_url(url) == (8, n)
        assert item.external_ids == {"cvat": "8"}


def _spec(**fields: object) -> JobSpec:
    values: dict[str, object] = {"model": "onnx:/m/yolo.onnx", "fps": 1.0, "sampling": SamplingMode.EXACT}
    return JobSpec.model_validate({"threshold": 0.5, **values, **fields})


def test_the_same_task_data_and_parameters_give_the_same_key() -> None:
    key = task_idem(VIDEO_TASK, VIDEO, _spec())
    assert key.startswith("cvat:")
    assert task_idem(VIDEO_TASK, VIDEO, _spec()) == key
    assert task_idem(VIDEO_TASK, VIDEO, _spec(model_version="v2")) == key  # the version is the server's pin


@pytest.mark.parametrize(
    ("task", "frames", "spec"),
    [
        (VIDEO_TASK.model_copy(update={"id": 9}), VIDEO, _spec()),
        (VIDEO_TASK, replace(VIDEO, size=11), _spec()),
        (VIDEO_TASK, replace(VIDEO, start_frame=2), _spec()),
        (VIDEO_TASK, replace(VIDEO, stop_frame=8), _spec()),
        (VIDEO_TASK, replace(VIDEO, step=2), _spec()),
        (VIDEO_TASK, replace(VIDEO, names=("other.mp4",)), _spec()),
        (VIDEO_TASK, VIDEO, _spec(threshold=0.6)),
        (VIDEO_TASK, VIDEO, _spec(model="onnx:/m/other.onnx")),
    ],
    ids=["task", "size", "start", "stop", "step", "file", "threshold", "model"],
)
def test_other_data_or_parameters_give_another_key(task: CvatTaskInfo, frames: CvatFrames, spec: JobSpec) -> None:
    assert task_idem(task, frames, spec) != task_idem(VIDEO_TASK, VIDEO, _spec())
