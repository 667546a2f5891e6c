"""A DICOM series (one file per slice) read as one slot, in the given order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import MediaKind
from service.pipeline.media import SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from tests import media_dicom


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    # slice i is uniformly 10 * i (8-bit grey displays as stored)
    return [media_dicom.write_dicom(tmp_path / f"IM{i:04d}.dcm", np.full((4, 6), 10 * i, np.uint8)) for i in range(5)]


def test_slices_in_the_given_order(series: list[Path]) -> None:
    order = [series[3], series[0], series[4]]
    reader = open_slot("ct", SlotSpec("0", tuple(order)), SamplingOptions(fps=1), MediaLimits())
    frames = list(reader)
    assert reader.meta.media is MediaKind.DICOM
    assert (reader.meta.width, reader.meta.height, reader.meta.planned_frames) == (6, 4, 3)
    assert [f.info.frame_index for f in frames] == [0, 1, 2]
    assert [int(f.image[0, 0, 0]) for f in frames] == [30, 0, 40]
    assert [f.info.source for f in frames] == [str(p) for p in order]
    assert all(f.info.timestamp_s is None for f in frames)


def test_max_frames_and_frame_limit(series: list[Path]) -> None:
    reader = open_slot("ct", SlotSpec("0", tuple(series)), SamplingOptions(max_frames=2), MediaLimits())
    assert len(list(reader)) == 2
    with pytest.raises(PreannotateError) as exc:
        open_slot("ct", SlotSpec("0", tuple(series)), SamplingOptions(), MediaLimits(max_frames=4))
    assert exc.value.code is ErrorCode.TOO_MANY_FRAMES


def test_a_broken_slice_fails_the_slot_naming_it(series: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "IM9999.dcm"
    broken.write_bytes(series[0].read_bytes()[:200])
    reader = open_slot("ct", SlotSpec("0", (series[0], broken)), SamplingOptions(), MediaLimits())
    with pytest.raises(PreannotateError) as exc:
        list(reader)
    assert "IM9999.dcm" in exc.value.message
