"""A DICOM series (one file per slice) read as one slot: from a list or a folder, in anatomical order."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import Frame, MediaKind
from service.pipeline.media import SlotSpec, item_from_path, list_media_dir, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.readers import SlotReader
from tests import media_dicom

SERIES = generate_uid()
SAGITTAL = (0, 1, 0, 0, 0, -1)  # rows run anterior->posterior, columns head->feet: normal (-1, 0, 0)


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
    with pytest.raises(PreannotateError) as exc:  # when ordering reads its header, or when its turn comes
        list(open_slot("ct", SlotSpec("0", (series[0], broken)), SamplingOptions(), MediaLimits()))
    assert "IM9999.dcm" in exc.value.message


def open_input(path: Path | str, sampling: SamplingOptions | None = None) -> tuple[SlotReader, list[Frame]]:
    """Open a command-line input (a folder or ``@list.txt``) as the CLI does, and read every frame."""
    item = item_from_path(Path(path))
    reader = open_slot(item.name, item.slots[0], sampling or SamplingOptions(), MediaLimits())
    return reader, list(reader)


def values(frames: Sequence[Frame]) -> list[int]:
    return [int(f.image[0, 0, 0]) for f in frames]


def write_shuffled_axial(folder: Path, count: int = 6, suffix: str = ".dcm") -> list[Path]:
    """Axial slices whose names and instance numbers are shuffled against their positions.

    Slice ``rank`` (0 = lowest z) is all ``10 * rank``, so the decoded values show the order.
    """
    folder.mkdir(exist_ok=True)
    rng = random.Random(7)
    names, instances = list(range(count)), list(range(1, count + 1))
    rng.shuffle(names)
    rng.shuffle(instances)
    paths = []
    for rank in range(count):
        path = folder / f"IM{names[rank]}{suffix}"
        z = -100.0 + 2.5 * rank
        media_dicom.series_slice(path, 10 * rank, series_uid=SERIES, position=(-80, -90, z), instance=instances[rank])
        paths.append(path)
    return paths  # in anatomical order


def test_a_folder_of_shuffled_slices_opens_in_anatomical_order(tmp_path: Path) -> None:
    # given a folder whose file names and instance numbers both disagree with the slice positions
    expected = write_shuffled_axial(tmp_path / "ct")
    assert sorted(expected, key=lambda p: p.name) != expected
    # when
    reader, frames = open_input(tmp_path / "ct", SamplingOptions(fps=1))
    # then one DICOM slot, slices by position along the normal, numbered across the series
    assert reader.meta.media is MediaKind.DICOM
    assert (reader.meta.width, reader.meta.height, reader.meta.frame_count, reader.meta.planned_frames) == (6, 4, 6, 6)
    assert reader.meta.source_files == tuple(str(p) for p in expected)
    assert values(frames) == [0, 10, 20, 30, 40, 50]
    assert [f.info.frame_index for f in frames] == list(range(6))
    assert [f.info.source for f in frames] == [str(p) for p in expected]
    assert all(f.info.timestamp_s is None and f.info.media is MediaKind.DICOM for f in frames)


def test_extensionless_slices_are_found_by_content(tmp_path: Path) -> None:
    # given slices without an extension, a DICOMDIR and a dose report (no images, other series) and clutter
    folder = tmp_path / "export"
    expected = write_shuffled_axial(folder, count=4, suffix="")
    media_dicom.no_pixels(folder / "DICOMDIR", SeriesInstanceUID=generate_uid())
    media_dicom.no_pixels(folder / "SR000001", SeriesInstanceUID=generate_uid())
    (folder / "VERSION").write_text("3.0\n")
    (folder / ".DS_Store").write_bytes(b"\0" * 200)
    (folder / "IM9").mkdir()
    (folder / "IM9" / "nested.dcm").write_bytes(expected[0].read_bytes())
    # when
    kind, listed = list_media_dir(folder)
    reader, frames = open_input(folder)
    # then the DICOM files are listed by name, and the images read as one series in order
    assert kind is MediaKind.DICOM
    assert [p.name for p in listed] == ["DICOMDIR", "IM0", "IM1", "IM2", "IM3", "SR000001"]
    assert reader.meta.source_files == tuple(str(p) for p in expected)
    assert values(frames) == [0, 10, 20, 30]


def test_slices_are_ordered_along_the_slice_normal_not_an_axis(tmp_path: Path) -> None:
    # given an oblique stack (tilted 30 degrees about x), slices 3 mm apart along the normal, each shifted
    # within its plane so that sorting by z (or y) alone would scramble them
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, math.cos(math.pi / 6), -math.sin(math.pi / 6)])
    normal = np.cross(row, col)
    shifts = [40.0, -30.0, 25.0, -45.0, 10.0]
    positions = [3.0 * rank * normal + shift * col for rank, shift in enumerate(shifts)]
    assert sorted(range(5), key=lambda r: positions[r][2]) != list(range(5))
    assert sorted(range(5), key=lambda r: positions[r][1]) != list(range(5))
    folder = tmp_path / "oblique"
    folder.mkdir()
    for rank, position in enumerate(positions):
        orientation = (*row, *col)
        media_dicom.series_slice(
            folder / f"s{4 - rank}", 10 * rank, series_uid=SERIES, position=tuple(position), orientation=orientation
        )
    # when / then
    assert values(open_input(folder)[1]) == [0, 10, 20, 30, 40]


def test_sagittal_slices_follow_the_normal_direction(tmp_path: Path) -> None:
    # The sagittal normal points to -x, so ascending position along it is descending x.
    folder = tmp_path / "sag"
    folder.mkdir()
    for rank, x in enumerate([30.0, 20.0, 10.0, 0.0]):
        media_dicom.series_slice(
            folder / f"x{int(x)}.dcm", 10 * rank, series_uid=SERIES, position=(x, -50, 60), orientation=SAGITTAL
        )
    assert values(open_input(folder)[1]) == [0, 10, 20, 30]


@pytest.mark.parametrize(
    ("positions", "orientations"),
    [
        pytest.param([None, None, None, None], [None] * 4, id="no positions"),
        pytest.param([(0, 0, 1), (0, 0, 5), None, (0, 0, 3)], [(1, 0, 0, 0, 1, 0)] * 4, id="a position missing"),
        pytest.param(
            [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)],
            [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), (0, 1, 0, 0, 0, -1), (1, 0, 0, 0, 1, 0)],
            id="a localizer's three planes",
        ),
    ],
)
def test_without_usable_positions_instance_numbers_decide(
    tmp_path: Path,
    positions: list[tuple[float, float, float] | None],
    orientations: list[tuple[float, ...] | None],
) -> None:
    # given instance numbers 3, 1, 4, 2 on files a, b, c, d
    folder = tmp_path / "series"
    folder.mkdir()
    for name, instance, position, orientation in zip("abcd", [3, 1, 4, 2], positions, orientations, strict=True):
        media_dicom.series_slice(
            folder / name,
            10 * instance,
            series_uid=SERIES,
            position=position,
            orientation=orientation,
            instance=instance,
        )
    # then the instance numbers give the order
    assert values(open_input(folder)[1]) == [10, 20, 30, 40]


def test_without_positions_or_instance_numbers_names_decide(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for n in (10, 2, 1):  # natural order: slice2 before slice10
        media_dicom.series_slice(folder / f"slice{n}.dcm", n, series_uid=SERIES, orientation=None)
    assert values(open_input(folder)[1]) == [1, 2, 10]


def test_a_folder_with_two_series_is_refused_naming_it(tmp_path: Path) -> None:
    # given an axial stack and a localizer of another series in one folder
    folder = tmp_path / "study"
    write_shuffled_axial(folder, count=3)
    other = generate_uid()
    media_dicom.series_slice(folder / "LOC1.dcm", 0, series_uid=other, position=(0, 0, 0), orientation=SAGITTAL)
    # when / then: no reader, nothing merged
    with pytest.raises(PreannotateError) as exc:
        open_input(folder)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    assert str(folder) in exc.value.message
    assert SERIES in exc.value.message
    assert other in exc.value.message
    assert "2 series" in exc.value.message


def test_a_list_of_slices_is_ordered_too_and_two_series_refused(tmp_path: Path) -> None:
    # given a list naming the slices in a scrambled order
    expected = write_shuffled_axial(tmp_path / "ct", count=4)
    listing = tmp_path / "scan.txt"
    listing.write_text("".join(f"ct/{p.name}\n" for p in reversed(expected)))
    # when / then anatomical order, not the list's
    reader, frames = open_input(f"@{listing}")
    assert reader.meta.media is MediaKind.DICOM
    assert values(frames) == [0, 10, 20, 30]
    # and a list mixing two series is refused, naming the item
    media_dicom.series_slice(tmp_path / "other.dcm", 0, series_uid=generate_uid(), position=(0, 0, 0))
    listing.write_text(listing.read_text() + "other.dcm\n")
    with pytest.raises(PreannotateError) as exc:
        open_input(f"@{listing}")
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    assert "scan/0" in exc.value.message


def test_a_folder_with_one_multiframe_file_keeps_its_clock(tmp_path: Path) -> None:
    folder = tmp_path / "cine"
    folder.mkdir()
    media_dicom.multiframe(folder / "cine", 4, FrameTime=500.0)
    reader, frames = open_input(folder, SamplingOptions(fps=1))
    assert (reader.meta.media, reader.meta.fps) == (MediaKind.DICOM, 2.0)
    assert [f.info.timestamp_s for f in frames] == [0.0, 1.0]


@pytest.mark.parametrize("make", ["images", "nothing", "no images"])
def test_folders_that_are_neither_a_sequence_nor_a_series(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    if make == "images":
        media_dicom.series_slice(folder / "IM1", 0, series_uid=SERIES)
        Image.new("RGB", (6, 4)).save(folder / "preview.png")
    elif make == "no images":
        media_dicom.no_pixels(folder / "DICOMDIR")
    with pytest.raises(PreannotateError) as exc:
        open_input(folder)
    assert exc.value.code is ErrorCode.UNSUPPORTED_MEDIA
    assert str(folder) in exc.value.message
    if make == "nothing":
        assert "DICOM" in exc.value.message
