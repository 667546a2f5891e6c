"""PreviewTap: frames kept on disk while their item runs, drawn and deleted per item, failed slots left out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import ErrorCode, PreannotateError
from service.pipeline.flow import ItemOutput, SlotOpener
from service.pipeline.frames import Frame, FrameResult, MediaKind, SlotMeta
from service.pipeline.media import SlotSpec
from service.pipeline.readers import SlotReader
from service.pipeline.run import SlotFailure
from service.render.previews import PreviewOptions
from service.render.tap import PreviewTap
from tests.builders import make_detections, make_info

VIDEO = MediaKind.VIDEO


class _Reader:
    """``count`` frames of one video slot, 200 x 100, each a different gray."""

    def __init__(self, item: str, slot: str, count: int) -> None:
        self.infos = [
            make_info(item=item, slot=slot, media=VIDEO, frame_index=n, timestamp_s=n / 2, width=200, height=100)
            for n in range(count)
        ]
        self.meta = SlotMeta(item, slot, MediaKind.VIDEO, ("v.mp4",), 200, 100, 2.0, count, count)
        self.closed = False

    def __iter__(self) -> Iterator[Frame]:
        for n, info in enumerate(self.infos):
            yield Frame(info, np.full((100, 200, 3), 40 * n % 256, np.uint8))

    def close(self) -> None:
        self.closed = True


def _open(count: int) -> tuple[dict[tuple[str, str], _Reader], SlotOpener]:
    readers: dict[tuple[str, str], _Reader] = {}

    def open_slot(item: str, slot: SlotSpec) -> SlotReader:
        reader = readers[(item, slot.name)] = _Reader(item, slot.name, count)
        return reader

    return readers, open_slot


def _decode(tap: PreviewTap, open_slot: SlotOpener, item: str, slot: str) -> list[FrameResult]:
    reader = tap.opener(open_slot)(item, SlotSpec(slot, (Path("v.mp4"),)))
    try:
        box = make_detections([[20, 10, 120, 90]], [0.9], [0])
        return [FrameResult(frame.info, box) for frame in reader]
    finally:
        reader.close()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_frames_pass_unchanged_and_are_kept_until_their_item_is_drawn(tmp_path: Path) -> None:
    readers, open_slot = _open(3)
    with PreviewTap(tmp_path / "out", ["person"], PreviewOptions(longest_px=100), scratch_parent=tmp_path) as tap:
        first = _decode(tap, open_slot, "a", "0")
        second = _decode(tap, open_slot, "b", "0")  # decoded ahead while "a" is drawn
        assert readers[("a", "0")].closed
        assert len(list(tap.scratch.rglob("*.jpg"))) == 6
        written = tap.render(ItemOutput("a", (readers[("a", "0")].meta,), tuple(first)))
        assert _files(tmp_path / "out") == ["a.mp4", "a.sheet.jpg"]
        assert written == [tmp_path / "out" / "a.mp4", tmp_path / "out" / "a.sheet.jpg"]
        assert len(list(tap.scratch.rglob("*.jpg"))) == 3  # "a"'s frames gone, "b"'s kept
        third = _decode(tap, open_slot, "c", "0")  # a later item never lands in a drawn item's folder
        tap.render(ItemOutput("b", (readers[("b", "0")].meta,), tuple(second)))
        tap.render(ItemOutput("c", (readers[("c", "0")].meta,), tuple(third)))
        assert len(_files(tmp_path / "out")) == 6
        assert list(tap.scratch.rglob("*.jpg")) == []
        scratch = tap.scratch
    assert not scratch.exists()


def test_a_failed_slot_is_not_drawn(tmp_path: Path) -> None:
    readers, open_slot = _open(2)
    with PreviewTap(tmp_path / "out", ["person"], scratch_parent=tmp_path) as tap:
        good = _decode(tap, open_slot, "pair", "left")
        broken = _decode(tap, open_slot, "pair", "right")  # decoded in part, then failed
        failure = SlotFailure("pair", "right", PreannotateError(ErrorCode.CORRUPT_MEDIA, "v.mp4: broken"))
        output = ItemOutput("pair", (readers[("pair", "left")].meta,), tuple(good + broken), failures=(failure,))
        assert _files(tmp_path / "out") == []
        tap.render(output)
        assert _files(tmp_path / "out") == ["pair/left.mp4", "pair/left.sheet.jpg"]
        assert tap.render(ItemOutput("none", (), ())) == []  # nothing decoded (a PDF, a slot that never opened)


def test_a_frame_that_cannot_be_kept_stops_previews_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, open_slot = _open(2)
    with PreviewTap(tmp_path / "out", ["person"], scratch_parent=tmp_path) as tap:

        def full_disk(self: Path, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Path, "write_bytes", full_disk)
        results = _decode(tap, open_slot, "a", "0")
        monkeypatch.undo()
        assert len(results) == 2  # the model still got every frame
        assert tap.error is not None
        assert "No space" in str(tap.error)
        tap.render(ItemOutput("a", (), tuple(results)))
        assert _files(tmp_path / "out") == []


UNDRAWABLE = make_detections([[1e30, 10, 120, 90]], [0.9], [0])
"""A box OpenCV cannot draw (cv2.error, not an OSError): what a broken model output does to the drawing."""


LONG = 60
"""Frames enough for the encoder to have written part of the MP4 before the last one fails."""


def _failing_on_last_frame(tap: PreviewTap, open_slot: SlotOpener, item: str) -> ItemOutput:
    results = _decode(tap, open_slot, item, "0")
    frames = (*results[:-1], FrameResult(results[-1].info, UNDRAWABLE))  # the MP4 is open when it fails
    return ItemOutput(item, (), frames)


def test_an_item_that_cannot_be_drawn_leaves_no_half_written_file(tmp_path: Path) -> None:
    _, open_slot = _open(LONG)
    with PreviewTap(tmp_path / "out", ["person"], scratch_parent=tmp_path) as tap:
        output = _failing_on_last_frame(tap, open_slot, "a")
        with pytest.raises(Exception, match="rectangle"):
            tap.render(output)
        assert _files(tmp_path / "out") == []  # no MP4 left open and half-written
        assert list(tap.scratch.rglob("*.jpg")) == []
        later = _decode(tap, open_slot, "b", "0")  # the next item draws as usual
        tap.render(ItemOutput("b", (), tuple(later)))
        assert _files(tmp_path / "out") == ["b.mp4", "b.sheet.jpg"]


def test_run_warns_and_goes_on_when_an_item_cannot_be_drawn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.commands.run import _render_previews

    _, open_slot = _open(LONG)
    with PreviewTap(tmp_path / "out", ["person"], scratch_parent=tmp_path) as tap:
        assert _render_previews(tap, _failing_on_last_frame(tap, open_slot, "a")) == []
    assert "warning: no preview of a:" in capsys.readouterr().err
    assert _files(tmp_path / "out") == []
