"""Contact sheets and encoded files: sizes, and MP4s that PyAV opens back as H.264 of the frames written."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from service.render.encode import Mp4Writer, fit_within, rgb_to_jpeg
from service.render.sheet import contact_sheet, pick_evenly


def test_pick_evenly_spreads_over_all_and_keeps_the_ends() -> None:
    assert pick_evenly(3, 5) == [0, 1, 2]
    assert pick_evenly(100, 4) == [0, 33, 66, 99]
    assert pick_evenly(10, 1) == [0]


def test_contact_sheet_is_a_grid_of_captioned_tiles() -> None:
    tiles = [np.full((90, 160, 3), 40 * i, np.uint8) for i in range(5)]
    sheet = contact_sheet(tiles, captions=[f"f{i}" for i in range(5)], tile_width_px=80, columns=3)
    tile_h = 45  # 90 x 160 at 80 wide
    assert sheet.shape == (2 * (tile_h + 18 + 4) + 4, 3 * (80 + 4) + 4, 3)
    assert tuple(sheet[4 + 10, 4 + 84 + 10]) == (40, 40, 40)  # second tile, scaled
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(tiles, captions=["one"])
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])


def test_mp4_writer_output_opens_in_pyav_as_h264_with_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with Mp4Writer(path, fps=2.0, width_px=101, height_px=75) as writer:
        for i in range(7):
            writer.write(np.full((75, 101, 3), 30 * i, np.uint8))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
    assert len(frames) == 7
    assert (frames[0].width, frames[0].height) == (102, 76)  # 4:2:0 needs even sizes: padded by a pixel
    assert frames[-1].format.name == "yuv420p"
    assert abs(float(frames[3].to_ndarray(format="rgb24")[30, 50].mean()) - 90) < 6


def test_jpeg_round_trip_and_fit_within() -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :, 0] = 200  # red, so a BGR/RGB mix-up shows
    decoded = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(rgb_to_jpeg(image), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    assert decoded.shape == (40, 80, 3)
    assert abs(int(decoded[20, 40, 0]) - 200) < 5
    assert int(decoded[20, 40, 2]) < 10
    assert fit_within(image, 40).shape == (20, 40, 3)
    assert fit_within(image, 400) is image
