"""A CVAT task as job items, shared by ``preannotate sync cvat`` and the CVAT webhook.

A video task is one item (``task-<id>``) whose slot is the sampled frames, fetched from CVAT's frame API as an image
sequence: the task's own frames, after its start, stop and step, so the frame numbers need no arithmetic. An image
task is one item per frame (its images may differ in size). Frame URLs are marked ``cvat+`` so the worker fetches
them with the CVAT credentials.

CVAT does not record a video's frame rate, so ``fps`` is turned into a frame stride with the source rate the
settings give (``PREANNOTATE_CVAT_VIDEO_FPS``) and the task's step; ``every`` sets the stride directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from service.backends.cvat import CvatTaskInfo, frame_url
from service.backends.media import CVAT, via
from service.convert.cvat_types import CvatFrames
from service.errors import ErrorCode, PreannotateError
from service.jobs.submit import key_params
from service.spec.job import JobSpec
from service.spec.requests import ItemIn, SlotIn


@dataclass(frozen=True, slots=True)
class FramePlan:
    """Which task frames are detected.

    Attributes:
        every: Task frames from one sampled frame to the next (video tasks; 1 for images).
        frames: The sampled task frames, ascending, deleted frames left out.
    """

    every: int
    frames: tuple[int, ...]


def frame_stride(frames: CvatFrames, *, fps: float, video_fps: float, every: int | None = None) -> int:
    """Task frames between samples: ``every`` when given; else the source rate over the task's step, over ``fps``
    (0: every frame)."""
    if every is not None:
        if every < 1:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--every must be at least 1, got {every}")
        return every
    if not frames.video or fps <= 0:
        return 1
    task_fps = video_fps / frames.step
    return max(1, round(task_fps / fps))


def plan_frames(frames: CvatFrames, every: int, *, max_frames: int, task_id: int) -> FramePlan:
    """The frames to detect.

    Raises:
        PreannotateError: INVALID_ARGUMENT when more than ``max_frames`` would be sampled (naming the setting).
    """
    step = every if frames.video else 1
    chosen = tuple(n for n in range(0, frames.size, step) if n not in frames.deleted)
    if len(chosen) > max_frames:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"task {task_id}: {len(chosen)} frames to sample (every {step} of {frames.size}); at most {max_frames} "
            "(PREANNOTATE_CVAT_MAX_FRAMES_PER_TASK, or sample fewer: --fps / --every)",
        )
    return FramePlan(every=step, frames=chosen)


def task_items(base_url: str, task: CvatTaskInfo, frames: CvatFrames, plan: FramePlan, *, quality: str) -> list[ItemIn]:
    """The job items that preannotate ``task`` (see the module docs)."""
    urls = [via(CVAT, frame_url(base_url, task.id, n, quality)) for n in plan.frames]
    ids = {"cvat": str(task.id)}
    if frames.video:
        return [ItemIn(name=f"task-{task.id}", slots=[SlotIn(name="video", urls=urls)], external_ids=ids)]
    return [
        ItemIn(name=f"task-{task.id}-frame-{n}", slots=[SlotIn(name="image", url=url, type="image")], external_ids=ids)
        for n, url in zip(plan.frames, urls, strict=True)
    ]


def task_idem(task: CvatTaskInfo, frames: CvatFrames, spec: JobSpec) -> str:
    """The store key for "this task's data, these job parameters": a webhook delivered twice, or replayed, lands
    on the job it made the first time (the model's version left out: ``SERVER_PINNED``)."""
    canonical = json.dumps(
        {
            "task": task.id,
            "data": [frames.size, frames.start_frame, frames.stop_frame, frames.step, list(frames.names)[:1]],
            "params": key_params(spec),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "cvat:" + hashlib.sha256(canonical.encode()).hexdigest()
