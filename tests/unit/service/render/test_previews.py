"""An item's previews on disk: a still is a JPEG, a video an MP4 plus a contact sheet of bounded size."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import av
import cv2
import numpy as np
import pytest

from service.pipeline.frames import MediaKind
from service.render.previews import ItemPreviewWriter, PreviewOptions, preview_stem
from tests.builders import make_detections, make_info


def frame(value: int = 60) -> np.ndarray:
    return np.full((240, 320, 3), value, np.uint8)


def write_video(out: Path, frames: int, options: PreviewOptions) -> list[Path]:
    writer = ItemPreviewWriter(out, ["face"], options)
    for i in range(frames):
        info = make_info(
            item="clips/pan.mp4", media=MediaKind.VIDEO, frame_index=i * 12, timestamp_s=i * 0.5, width=320, height=240
        )
        writer.add(info, frame(i % 200), make_detections([[10, 10, 60, 60]], [0.9], [0]))
    return writer.close()


def test_a_still_becomes_one_jpeg(tmp_path: Path) -> None:
    writer = ItemPreviewWriter(tmp_path, ["face"])
    writer.add(make_info(item="photo.png", width=320, height=240), frame(), make_detections())
    assert writer.close() == [tmp_path / "photo.png.jpg"]
    assert cv2.imread(str(tmp_path / "photo.png.jpg")).shape == (240, 320, 3)


def test_a_video_becomes_an_mp4_of_its_frames_and_a_contact_sheet(tmp_path: Path) -> None:
    files = write_video(tmp_path, 5, PreviewOptions(longest_px=160))
    assert files == [tmp_path / "clips/pan.mp4.mp4", tmp_path / "clips/pan.mp4.sheet.jpg"]
    with av.open(str(files[0])) as container:
        rate = float(container.streams.video[0].average_rate or 0)
        decoded = list(container.decode(video=0))
    assert len(decoded) == 5
    assert (decoded[0].width, decoded[0].height) == (160, 120)  # scaled to --preview-px
    assert rate == pytest.approx(2.0)  # the frames' own step, 0.5 s


def test_a_long_slot_keeps_a_constant_number_of_tiles(tmp_path: Path) -> None:
    options = PreviewOptions(sheet_tiles=4, tile_width_px=64)
    short = cv2.imread(str(write_video(tmp_path / "a", 9, options)[1]))
    long = cv2.imread(str(write_video(tmp_path / "b", 300, options)[1]))
    assert short.shape == long.shape  # 4 tiles, a 2 x 2 grid, however long the slot


@pytest.mark.parametrize(
    ("item", "slot", "stem", "hashed"),
    [
        ("../../etc/passwd", "0", "_/_/etc/passwd", True),
        ("/abs/x.png", "0", "abs/x.png", False),
        ("case", "..", "case/_", True),
        ("a b/c?.jpg", "left cam", "a_b/c_.jpg/left_cam", True),
        ("", "0", "_", True),
        ("猫/狗.jpg", "0", "猫/狗.jpg", False),  # letters of any script are kept as they are
    ],
)
def test_preview_stem_never_leaves_the_folder(item: str, slot: str, stem: str, hashed: bool) -> None:
    path = preview_stem(item, slot)
    assert not path.is_absolute()
    assert ".." not in path.parts
    if hashed:  # a name that had to change carries a hash of the original
        assert re.fullmatch(re.escape(stem) + "-[0-9a-f]{8}", path.as_posix())
    else:
        assert path == PurePosixPath(stem)


def test_names_that_would_meet_get_files_of_their_own(tmp_path: Path) -> None:
    taken: set[str] = set()
    items = [("猫.jpg", "0"), ("狗.jpg", "0"), ("a b.jpg", "0"), ("a_b.jpg", "0"), ("x/y", "0"), ("x", "y")]
    items += [("A.JPG", "0"), ("a.jpg", "0"), ("clip", "0"), ("clip.sheet", "0")]
    written: list[Path] = []
    for item, slot in items:
        writer = ItemPreviewWriter(tmp_path, ["face"], taken=taken)
        writer.add(make_info(item=item, slot=slot, width=320, height=240), frame(), make_detections())
        if item == "clip":  # a video: clip.mp4 and clip.sheet.jpg, which the still clip.sheet must not overwrite
            info = make_info(item=item, slot=slot, media=MediaKind.VIDEO, frame_index=1, width=320, height=240)
            writer.add(info, frame(), make_detections())
        written += writer.close()
    assert len(written) == len(items) + 1
    assert len({path.as_posix().casefold() for path in written}) == len(written)
    assert all(path.is_file() for path in written)
    assert tmp_path / "猫.jpg.jpg" in written
