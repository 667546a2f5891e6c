"""CVAT's annotation JSON as we write it (``PATCH /api/tasks/{id}/annotations``, CVAT 2.x ``LabeledData``), and the
task facts a conversion needs: its labels (with our marker attribute) and how its frames are numbered.

A frame number is CVAT's *task* frame: ``0 .. size-1`` over the frames the task kept of its source, which are
``start_frame, start_frame + step, ...`` up to ``stop_frame`` (``frame_filter="step=N"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

CvatShapeType = Literal["rectangle", "polygon"]
"""What we draw: boxes, and masks as polygons."""
CvatLabelType = str
"""A label's ``type``: ``any``, ``rectangle``, ``polygon``, ``mask``, ``tag``, ``skeleton``... (CVAT's choices)."""

SOURCE_AUTO = "auto"
"""Every object we write has this source. CVAT's UI turns an ``auto`` object a person edits into ``semi-auto``
(cvat-core's ``computeNewSource``), so an object still ``auto`` is one nobody has touched since."""

MARKER_ATTRIBUTE = "preannotate"
"""The label attribute that names the model an object came from (``<spec>@<version>``): how a re-run finds its own
objects and leaves people's, and other models', alone."""


class CvatAttributeValue(TypedDict):
    spec_id: int
    value: str


class CvatTrackedShape(TypedDict):
    """One keyframe of a track (``outside: true``: the object is gone from this frame on, until the next one)."""

    type: CvatShapeType
    frame: int
    points: list[float]
    occluded: bool
    outside: bool
    z_order: int
    rotation: float
    attributes: list[CvatAttributeValue]


class CvatShape(TypedDict):
    """An object on one frame (image tasks, and untracked video detections)."""

    type: CvatShapeType
    frame: int
    label_id: int
    points: list[float]
    occluded: bool
    outside: bool
    z_order: int
    rotation: float
    group: int
    source: str
    attributes: list[CvatAttributeValue]


class CvatTrack(TypedDict):
    """One object across frames: CVAT interpolates between its keyframes."""

    frame: int
    label_id: int
    group: int
    source: str
    attributes: list[CvatAttributeValue]
    shapes: list[CvatTrackedShape]


class CvatAnnotations(TypedDict):
    """A ``LabeledData`` body: what a task's annotations PATCH takes (``tags`` we never write)."""

    version: int
    tags: list[object]
    shapes: list[CvatShape]
    tracks: list[CvatTrack]


def empty_annotations() -> CvatAnnotations:
    return {"version": 0, "tags": [], "shapes": [], "tracks": []}


@dataclass(frozen=True, slots=True)
class CvatLabel:
    """A task's label as a conversion uses it.

    Attributes:
        id: CVAT's label id.
        name: Its name (model classes are matched to it, case-insensitively).
        type: Which shapes it takes (``any`` takes all).
        marker_id: The spec id of its ``preannotate`` attribute; None until the push has added it.
    """

    id: int
    name: str
    type: CvatLabelType = "any"
    marker_id: int | None = None

    def takes(self, shape: CvatShapeType) -> bool:
        return self.type in ("any", shape)


@dataclass(frozen=True, slots=True)
class CvatFrames:
    """How a task numbers its frames (its data meta).

    Attributes:
        size: Frames in the task.
        start_frame: The source frame task frame 0 is.
        stop_frame: The last source frame the task may hold.
        step: Source frames between two task frames (``frame_filter="step=N"``; 1 without a filter).
        names: Each image's file name, for an image task (a video task has its one file's).
        video: Whether the task is one video (``mode: interpolation``) rather than images.
        deleted: Frames deleted in CVAT (nothing is drawn on them).
    """

    size: int
    start_frame: int = 0
    stop_frame: int | None = None
    step: int = 1
    names: tuple[str, ...] = ()
    video: bool = False
    deleted: frozenset[int] = frozenset()

    def of_source_frame(self, index: int) -> int | None:
        """The task frame a source frame became: the nearest on the step grid, None outside the task or deleted.

        A frame halfway between two task frames takes the later one, always (not ``round``'s nearest even): every
        2nd frame sampled on a step-2 task then lands on a task frame each, none two on one and none on the next.
        """
        if index < self.start_frame or (self.stop_frame is not None and index > self.stop_frame):
            return None
        frame = (2 * (index - self.start_frame) + self.step) // (2 * self.step)
        return frame if 0 <= frame < self.size and frame not in self.deleted else None


def parse_frame_step(frame_filter: str | None) -> int:
    """``step=N`` -> N; an empty filter is 1.

    Raises:
        ValueError: a filter we do not know (CVAT has only ``step``).
    """
    text = (frame_filter or "").strip()
    if not text:
        return 1
    key, sep, value = text.partition("=")
    if key.strip() != "step" or not sep or not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"unknown frame_filter {frame_filter!r}")
    return int(value)
