"""``render``'s clock: a file's frames counted at another rate are drawn on the source frame shown then."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from models.types import Detections, RGBImage
from service.commands.render import SlotPlan, render_slot
from service.errors import ErrorCode, PreannotateError
from service.evaluate.frame_clock import source_frames
from service.evaluate.types import Shape, Unit
from service.pipeline.frames import Frame, FrameInfo
from service.pipeline.media import SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.readers import SlotReader
from service.render.previews import ItemPreviewWriter
from service.samples import write_pan_video


def test_frames_counted_at_another_rate_map_to_the_source_frame_shown_then() -> None:
    assert source_frames([0, 12, 25], 25.0, 25.0000004) == {0: 0, 12: 12, 25: 25}
    assert source_frames([0, 1, 24], 24.0, None) == {0: 0, 1: 1, 24: 24}
    assert source_frames([0, 1, 5, 24], 24.0, 30.0) == {0: 0, 1: 1, 5: 6, 24: 30}
    assert np.all(np.diff(list(source_frames(list(range(100)), 30.0, 25.0).values())) >= 0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 25 fps clip of 1 s."""
    path = tmp_path_factory.mktemp("clip") / "pan.mp4"
    write_pan_video(skimage.data.astronaut(), path, width_px=160, height_px=120, fps=25, duration_s=1.0)
    return path


def _plan(clip: Path, unit: Unit) -> SlotPlan:
    return SlotPlan(SlotSpec("0", (clip,)), unit)


class _Counted:
    """A real reader whose ``close`` calls are counted."""

    def __init__(self, reader: SlotReader) -> None:
        self._reader, self.meta, self.closed = reader, reader.meta, 0

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._reader)

    def close(self) -> None:
        self.closed += 1
        self._reader.close()


def test_a_reader_is_closed_once_when_opening_the_second_one_fails(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[_Counted] = []

    def open_then_fail(item: str, slot: SlotSpec, sampling: SamplingOptions, limits: MediaLimits) -> SlotReader:
        if opened:  # the second open, for the source's frames: the file went away meanwhile
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{clip}: gone")
        opened.append(_Counted(open_slot(item, slot, sampling, limits)))
        return opened[0]

    monkeypatch.setattr("service.evaluate.frame_clock.open_slot", open_then_fail)
    unit = Unit(item="pan.mp4", fps=50.0)  # another clock than the clip's 25 fps: opened twice
    unit.add(2, Shape(object_id="a", label="face", xyxy=(10, 10, 40, 40)))
    writer = ItemPreviewWriter(Path("unused"), ["face"])
    with pytest.raises(PreannotateError, match="gone"):
        render_slot("pan.mp4", _plan(clip, unit), writer, ["face"], MediaLimits())
    assert [reader.closed for reader in opened] == [1]


class _Recorded(ItemPreviewWriter):
    """Keeps each frame's detections as they are drawn (the pictures are checked in the CLI tests)."""

    def __init__(self, out: Path) -> None:
        super().__init__(out, ["face"])
        self.frames: list[tuple[int, list[list[float]], list[int] | None]] = []

    def add(self, info: FrameInfo, image: RGBImage, detections: Detections) -> None:
        tracks = None if detections.tracker_id is None else detections.tracker_id.tolist()
        self.frames.append((info.frame_index, detections.xyxy.tolist(), tracks))
        super().add(info, image, detections)


def test_frames_counted_faster_than_the_video_are_drawn_merged_on_the_frame_shown(clip: Path, tmp_path: Path) -> None:
    unit = Unit(item="pan.mp4", width=160, height=120, fps=50.0)  # frames 4 and 5 are both shown on source frame 2
    face = (10.0, 10.0, 40.0, 40.0)
    unit.add(4, Shape(object_id="a", label="face", xyxy=face))
    unit.add(4, Shape(object_id="t", label="face", xyxy=(60.0, 10.0, 90.0, 40.0), track_id="3"))
    unit.add(5, Shape(object_id="b", label="face", xyxy=(100.0, 50.0, 130.0, 80.0)))
    unit.add(5, Shape(object_id="t", label="face", xyxy=(62.0, 10.0, 92.0, 40.0), track_id="3"))
    writer = _Recorded(tmp_path)
    assert render_slot("pan.mp4", _plan(clip, unit), writer, ["face"], MediaLimits()) == 1
    [(frame, boxes, tracks)] = writer.frames
    assert frame == 2
    assert boxes == [list(face), [60.0, 10.0, 90.0, 40.0], [100.0, 50.0, 130.0, 80.0]]  # b not dropped, t once
    assert tracks == [-1, 3, -1]
