"""Command-line inputs to items: one item per file of a folder or list; sequences and series grouped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.commands.run import items_from_args
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import MediaKind
from service.pipeline.inputs import (
    Entry,
    Expansion,
    ImageHeader,
    expand_input,
    numbered_names,
    plan_items,
)
from service.pipeline.media import item_from_path, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from tests import media_dicom


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["frame_0001.png", "frame_0002.png"], True),
        (["frame_0002.png", "frame_0010.png", "frame_0003.png"], True),  # gaps and any order
        (["0.jpg", "7.jpg"], True),  # an empty prefix is one prefix
        (["Frame1.PNG", "frame2.png"], True),  # case is ignored
        (["img_1_9.png", "img_1_10.png"], True),  # the number is the last digit run
        (["frame_0001.png"], False),  # one file is no sequence
        (["a.png", "b.png"], False),  # no numbers
        (["f1.png", "g2.png"], False),  # two prefixes
        (["f1.png", "f2.jpg"], False),  # two extensions
        (["f1.png", "f01.png"], False),  # one number twice
        (["f1a.png", "f2a.png"], False),  # the number is not at the end
        (["cat.jpg", "dog.jpg", "frame_1.jpg"], False),
    ],
)
def test_numbered_names(names: list[str], expected: bool) -> None:
    assert numbered_names(names) is expected


def header(width: int, height: int, camera: bool = False) -> ImageHeader:
    return ImageHeader(width, height, camera)


SAME = {n: header(64, 48) for n in ("f_1.png", "f_2.png", "f_3.png", "a.jpg", "b.jpg")}
CASES: dict[str, tuple[list[tuple[str, MediaKind]], bool | None, dict[str, ImageHeader | None], list[list[str]]]] = {
    # case: (files, sequence flag, headers, expected items as lists of their files)
    "photos of several sizes: one item each": (
        [("a.jpg", MediaKind.IMAGE), ("b.jpg", MediaKind.IMAGE)],
        None,
        {"a.jpg": header(64, 48), "b.jpg": header(80, 60)},
        [["a.jpg"], ["b.jpg"]],
    ),
    "unnumbered photos of one size: one item each": (
        [("a.jpg", MediaKind.IMAGE), ("b.jpg", MediaKind.IMAGE)],
        None,
        SAME,
        [["a.jpg"], ["b.jpg"]],
    ),
    "numbered frames of one size: a sequence": (
        [("f_1.png", MediaKind.IMAGE), ("f_2.png", MediaKind.IMAGE), ("f_3.png", MediaKind.IMAGE)],
        None,
        SAME,
        [["f_1.png", "f_2.png", "f_3.png"]],
    ),
    "numbered frames of two sizes: one item each": (
        [("f_1.png", MediaKind.IMAGE), ("f_2.png", MediaKind.IMAGE)],
        None,
        {"f_1.png": header(64, 48), "f_2.png": header(64, 49)},
        [["f_1.png"], ["f_2.png"]],
    ),
    "numbered camera photos of one size: one item each": (
        [("f_1.png", MediaKind.IMAGE), ("f_2.png", MediaKind.IMAGE)],
        None,
        {"f_1.png": header(64, 48, camera=True), "f_2.png": header(64, 48, camera=True)},
        [["f_1.png"], ["f_2.png"]],
    ),
    "a frame whose header cannot be read: one item each": (
        [("f_1.png", MediaKind.IMAGE), ("f_2.png", MediaKind.IMAGE)],
        None,
        {"f_1.png": header(64, 48), "f_2.png": None},
        [["f_1.png"], ["f_2.png"]],
    ),
    "--sequence: photos are one sequence, the video stays alone": (
        [("a.jpg", MediaKind.IMAGE), ("clip.mp4", MediaKind.VIDEO), ("b.jpg", MediaKind.IMAGE)],
        True,
        {"a.jpg": header(64, 48), "b.jpg": header(80, 60)},
        [["a.jpg", "b.jpg"], ["clip.mp4"]],
    ),
    "--no-sequence: numbered frames are one item each": (
        [("f_1.png", MediaKind.IMAGE), ("f_2.png", MediaKind.IMAGE)],
        False,
        SAME,
        [["f_1.png"], ["f_2.png"]],
    ),
    "DICOM slices are one series, beside a photo and a PDF": (
        [
            ("IM1", MediaKind.DICOM),
            ("a.jpg", MediaKind.IMAGE),
            ("IM2", MediaKind.DICOM),
            ("doc.pdf", MediaKind.PDF),
        ],
        None,
        SAME,
        [["IM1", "IM2"], ["a.jpg"], ["doc.pdf"]],
    ),
    "one DICOM file is an item of its own": ([("IM1", MediaKind.DICOM)], None, SAME, [["IM1"]]),
}


@pytest.mark.parametrize("case", CASES)
def test_plan_items(case: str) -> None:
    files, sequence, headers, expected = CASES[case]
    entries = [Entry(f"d/{name}", Path("/in/d", name), kind) for name, kind in files]
    items = plan_items(
        entries,
        group="d",
        qualified_group="/in/d",
        sequence=sequence,
        folder=True,
        header_of=lambda path: headers[path.name],
    )
    assert [[p.name for p in e.item.slots[0].paths] for e in items] == expected
    for e in items:
        paths = e.item.slots[0].paths
        grouped = len(paths) > 1
        # a group is named after the folder; a file after its name relative to it, and qualified by its path
        assert e.item.name == ("d" if grouped else f"d/{paths[0].name}")
        assert e.qualified == ("/in/d" if grouped else str(paths[0]))
        assert e.item.slots[0].folder_series is grouped


def write_image(path: Path, width: int, height: int, value: int = 0) -> Path:
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)
    return path


def files_of(expansion: Expansion) -> list[tuple[str, list[str]]]:
    return [(e.item.name, [p.name for p in e.item.slots[0].paths]) for e in expansion.items]


def test_a_folder_of_photos_is_one_item_per_photo_and_unusable_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "b.png", 64, 48)
    write_image(folder / "a.jpg", 80, 60)
    (folder / "notes.txt").write_text("not media\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "sub").mkdir()
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden files are not inputs
    expansion = expand_input(folder)
    assert files_of(expansion) == [("a.jpg", ["a.jpg"]), ("b.png", ["b.png"])]
    assert sorted(s.line() for s in expansion.skipped) == [
        f"skipped: {folder / 'empty.png'}: corrupt_media (the file is empty)",
        f"skipped: {folder / 'notes.txt'}: unsupported_media (not an image, video, DICOM or PDF file)",
        f"skipped: {folder / 'sub'}: unsupported_media (a subfolder: not searched (give it as its own INPUT))",
    ]
    # files that are not media are only named; a damaged image still fails the run
    assert {Path(s.where).name: s.fails_run for s in expansion.skipped} == {
        "empty.png": True,
        "notes.txt": False,
        "sub": False,
    }


def test_numbered_frames_of_one_size_are_detected_and_sequence_forces_or_refuses(tmp_path: Path) -> None:
    frames = tmp_path / "clip"
    frames.mkdir()
    for i in (10, 9, 11):
        write_image(frames / f"frame_{i:04d}.png", 32, 24, i)
    assert files_of(expand_input(frames)) == [("clip", ["frame_0009.png", "frame_0010.png", "frame_0011.png"])]
    assert len(expand_input(frames, sequence=False).items) == 3


def test_numbered_phone_photos_stay_photos(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Pixel"  # Make
    for i in (1, 2):
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / f"IMG_000{i}.JPG", exif=exif)
    assert files_of(expand_input(tmp_path)) == [("IMG_0001.JPG", ["IMG_0001.JPG"]), ("IMG_0002.JPG", ["IMG_0002.JPG"])]


def test_a_forced_sequence_of_two_sizes_is_refused_naming_both(tmp_path: Path) -> None:
    small = write_image(tmp_path / "a.png", 32, 24)
    large = write_image(tmp_path / "b.png", 40, 24)
    [item] = expand_input(tmp_path, sequence=True).items
    reader = open_slot(item.item.name, item.item.slots[0], SamplingOptions(), MediaLimits())
    with pytest.raises(PreannotateError) as exc:
        list(reader)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    assert f"{small} is 32x24, {large} is 40x24" in exc.value.message


def test_a_list_is_one_input_per_line_and_a_bad_line_fails_alone(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 32, 24)
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "b.jpg", 40, 30)
    (tmp_path / "more").mkdir()
    write_image(tmp_path / "more" / "c.jpg", 20, 30)
    (tmp_path / "notes.txt").write_text("x")
    listing = tmp_path / "inputs.txt"
    listing.write_text("# photos\na.png\n\nmissing.png\nimgs/b.jpg\nnotes.txt\na.png\nmore/\n")
    expansion = expand_input(Path(f"@{listing}"))
    # a file is named as its line; a folder line's files as line/file
    assert files_of(expansion) == [("a.png", ["a.png"]), ("imgs/b.jpg", ["b.jpg"]), ("more/c.jpg", ["c.jpg"])]
    assert [s.line() for s in expansion.skipped] == [
        f"skipped: {tmp_path / 'missing.png'} ({listing} line 4): input_not_found (no such file)",
        f"skipped: {tmp_path / 'notes.txt'} ({listing} line 6): "
        "unsupported_media (not an image, video, DICOM or PDF file)",
        f"skipped: {tmp_path / 'a.png'} ({listing} line 7): invalid_argument (listed twice)",
    ]


@pytest.mark.parametrize(("text", "reason"), [(None, "cannot read the list"), ("# nothing\n\n", "the list is empty")])
def test_an_unreadable_or_empty_list_is_skipped(tmp_path: Path, text: str | None, reason: str) -> None:
    listing = tmp_path / "inputs.txt"
    if text is not None:
        listing.write_text(text)
    expansion = expand_input(Path(f"@{listing}"))
    assert expansion.items == []
    assert len(expansion.skipped) == 1
    assert reason in expansion.skipped[0].line()


def test_a_folder_of_dicom_slices_is_still_one_series_beside_a_photo(tmp_path: Path) -> None:
    folder = tmp_path / "ct"
    folder.mkdir()
    for i in range(3):  # slices without an extension, found by content
        media_dicom.write_dicom(folder / f"IM{i}", np.full((4, 6), 10 * i, np.uint8))
    media_dicom.no_pixels(folder / "DICOMDIR")  # no image: left out of the series, as before
    write_image(folder / "scout.png", 32, 24)
    expansion = expand_input(folder)
    assert expansion.skipped == []
    assert files_of(expansion) == [("ct", ["DICOMDIR", "IM0", "IM1", "IM2"]), ("scout.png", ["scout.png"])]
    series = expansion.items[0].item
    reader = open_slot(series.name, series.slots[0], SamplingOptions(), MediaLimits())
    assert reader.meta.media is MediaKind.DICOM
    assert [int(f.image[0, 0, 0]) for f in reader] == [0, 10, 20]


def test_a_list_reads_alike_as_run_inputs_and_as_a_slot(tmp_path: Path) -> None:
    """One line parser: an indented ``#`` comment is a comment for ``run @list`` and ``--slot S=@list`` alike."""
    a, b = write_image(tmp_path / "a.png", 32, 24), write_image(tmp_path / "b.png", 40, 24)
    listing = tmp_path / "inputs.txt"
    listing.write_text("a.png\n  # c.png is not wanted\n\n\t b.png \n")
    assert item_from_path(Path(f"@{listing}")).slots[0].paths == (a, b)
    assert [p for e in expand_input(Path(f"@{listing}")).items for p in e.item.slots[0].paths] == [a, b]


def test_list_lines_outside_the_lists_folder_are_named_by_base_name_never_absolute(tmp_path: Path) -> None:
    for folder in ("p", "p2", "l/deep"):
        (tmp_path / folder).mkdir(parents=True)
    photo0 = write_image(tmp_path / "p" / "photo0.png", 32, 24)
    write_image(tmp_path / "p" / "photo1.png", 40, 24)
    write_image(tmp_path / "p2" / "x.png", 32, 24)
    write_image(tmp_path / "l" / "in.png", 32, 24)
    inside = write_image(tmp_path / "l" / "deep" / "c.png", 32, 24)
    listing = tmp_path / "l" / "inputs.txt"
    listing.write_text(f"{photo0}\n../p/photo1.png\ndeep/../in.png\n{inside}\n../p2/\n./in.png\n")
    expansion = expand_input(Path(f"@{listing}"))
    names = [e.item.name for e in expansion.items]
    assert names == ["photo0.png", "photo1.png", "in.png", "deep/c.png", "p2/x.png"]
    assert [s.line() for s in expansion.skipped] == [
        f"skipped: {listing.parent / 'in.png'} ({listing} line 6): invalid_argument (listed twice)"
    ]


@pytest.mark.parametrize("sequence", [True, None])
def test_a_series_and_a_sequence_in_one_folder_are_two_items_of_distinct_names(
    tmp_path: Path, sequence: bool | None
) -> None:
    """DICOM slices and numbered PNG exports of one size (asked for with --sequence, or detected)."""
    folder = tmp_path / "ct"
    folder.mkdir()
    for i in range(2):
        media_dicom.write_dicom(folder / f"IM{i}", np.full((4, 6), 10 * i, np.uint8))
        write_image(folder / f"export_{i}.png", 32, 24, i)
    expansion = expand_input(folder, sequence=sequence)
    assert files_of(expansion) == [("ct/images", ["export_0.png", "export_1.png"]), ("ct", ["IM0", "IM1"])]
    names = [i.name for i in items_from_args([folder], None, [], sequence=sequence).items]
    assert names == ["ct/images", "ct"]  # before: "ct: given twice as an input"
