"""An item's previews on disk: a still is a JPEG, a video an MP4 plus a contact sheet of bounded size."""

from __future__ import annotations

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
    ("item", "slot", "stem"),
    [
        ("../../etc/passwd", "0", "_/_/etc/passwd"),
        ("/abs/x.png", "0", "abs/x.png"),
        ("case", "..", "case/_"),
        ("a b/c?.jpg", "left cam", "a_b/c_.jpg/left_cam"),
        ("", "0", "_"),
    ],
)
def test_preview_stem_never_leaves_the_folder(item: str, slot: str, stem: str) -> None:
    path = preview_stem(item, slot)
    assert path == PurePosixPath(stem)
    assert not path.is_absolute()
    assert ".." not in path.parts
