"""Segment-parallel decoding: the frames (and failures) of sequential decoding, in order, with bounded threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import PreannotateError
from service.pipeline import video
from service.pipeline.frames import Frame
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.segments import decode_in_parallel, split_at_keyframes
from service.pipeline.video import VideoReader
from tests.media import corrupt_payloads

SCALED_EVERY_FRAME = SamplingOptions(fps=0, detector_size_px=160)


def _read(path: Path, options: SamplingOptions) -> tuple[VideoReader, list[Frame], PreannotateError | None]:
    reader = VideoReader("item", "0", path, options, MediaLimits())
    frames: list[Frame] = []
    try:
        for frame in reader:
            frames.append(frame)
    except PreannotateError as exc:
        return reader, frames, exc
    finally:
        reader.close()
    return reader, frames, None


def _sequential(
    monkeypatch: pytest.MonkeyPatch, path: Path, options: SamplingOptions
) -> tuple[VideoReader, list[Frame], PreannotateError | None]:
    with monkeypatch.context() as patch:
        patch.setattr(video, "_decode_workers", lambda: 1)
        return _read(path, options)


@pytest.mark.parametrize("clip", ["bframes", "long_gop", "vfr_mp4", "hevc", "ts_bframes", "mpeg2", "vp9", "rotated"])
def test_parallel_segments_give_the_frames_of_sequential_decoding(
    clips: dict[str, Path], clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, frames, error = _read(clips[clip], SCALED_EVERY_FRAME)
    assert reader._parallel
    seq_reader, expected, seq_error = _sequential(monkeypatch, clips[clip], SCALED_EVERY_FRAME)
    assert not seq_reader._parallel
    assert error is None
    assert seq_error is None
    assert [f.info for f in frames] == [f.info for f in expected]
    for ours, theirs in zip(frames, expected, strict=True):
        assert np.array_equal(ours.image, theirs.image)
    assert reader.stats.decoded_frames == len(frames) == reader.meta.planned_frames


def test_corruption_fails_the_slot_after_the_same_frames(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.mkv"
    corrupt_payloads(clips["bframes"], broken, range(60, 100))
    _, frames, error = _read(broken, SCALED_EVERY_FRAME)
    _, expected, seq_error = _sequential(monkeypatch, broken, SCALED_EVERY_FRAME)
    assert error is not None
    assert seq_error is not None
    assert error.code is seq_error.code
    intact = [f for f in expected if f.info.timestamp_s is not None and f.info.timestamp_s < 2.0]
    assert [f.info for f in frames[: len(intact)]] == [f.info for f in intact]


def test_closing_early_stops_the_workers(clips: dict[str, Path]) -> None:
    before = threading.active_count()
    reader = VideoReader("item", "0", clips["bframes"], SCALED_EVERY_FRAME, MediaLimits())
    frames = iter(reader)
    assert next(frames).info.frame_index == 0
    frames.close()  # type: ignore[attr-defined]
    reader.close()
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("wanted", "keyframes", "min_frames", "expected"),
    [
        ([0, 1, 2, 3, 4, 5], [0, 2, 4], 2, [[0, 1], [2, 3], [4, 5]]),
        ([0, 1, 2, 3, 4, 5], [0, 2, 4], 3, [[0, 1, 2, 3], [4, 5]]),  # cut only at a key frame
        ([0, 1, 2, 3], [0], 1, [[0, 1, 2, 3]]),
        ([], [0], 1, []),
    ],
)
def test_split_at_keyframes(
    wanted: list[int], keyframes: list[int], min_frames: int, expected: list[list[int]]
) -> None:
    pieces = split_at_keyframes(np.array(wanted, np.int64), np.array(keyframes, np.int64), min_frames)
    assert [p.tolist() for p in pieces] == expected


class _Worker:
    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.closed = False

    def decode(self, segment: list[int]) -> Iterator[int]:
        for value in segment:
            if value == self.fail_on:
                raise ValueError(f"bad {value}")
            yield value

    def close(self) -> None:
        self.closed = True


def test_decode_in_parallel_keeps_segment_order_and_raises_in_place() -> None:
    segments = [[0, 1], [2, 3, 4], [5], [6, 7]]
    workers: list[_Worker] = []

    def open_worker(fail_on: int | None = None) -> _Worker:
        workers.append(_Worker(fail_on))
        return workers[-1]

    assert list(decode_in_parallel(segments, 3, open_worker, queue_frames=1)) == list(range(8))
    assert all(w.closed for w in workers)
    got: list[int] = []

    def collect() -> None:
        for value in decode_in_parallel(segments, 2, lambda: open_worker(6), queue_frames=1):
            got.append(value)

    with pytest.raises(ValueError, match="bad 6"):
        collect()
    assert got == [0, 1, 2, 3, 4, 5]
