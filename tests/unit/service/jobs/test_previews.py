"""Drawing a stored slot's frames again (``PreviewRenderer``) with the real fetcher, cache and readers: a
sequence's frame found by its position among the slot's URLs, and a contact sheet's memory bounded by its tiles."""

from __future__ import annotations

import http.server
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from service.errors import ErrorCode, PreannotateError
from service.jobs.media_cache import MediaCache
from service.jobs.previews import PreviewRenderer, StoredSlot
from service.pipeline.fetch import Fetcher, FetchPolicy
from service.pipeline.frames import MediaKind
from service.pipeline.options import MediaLimits
from service.render.previews import PreviewOptions
from service.samples import write_video
from service.spec.requests import SlotIn
from tests.builders import make_detections, make_result

SHADES = (30, 130, 230)  # frame n of the sequence is a flat grey of SHADES[n]


class QueryServer:
    """Answers ``/get?f=N`` with frame N (a PNG): URLs that differ only in their query string."""

    def __init__(self) -> None:
        pngs = [cv2.imencode(".png", np.full((60, 80, 3), shade, np.uint8))[1].tobytes() for shade in SHADES]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pngs[int(parse_qs(urlsplit(self.path).query)["f"][0])]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[QueryServer]:
    served = QueryServer()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def renderer(tmp_path: Path, policy: FetchPolicy, options: PreviewOptions) -> PreviewRenderer:
    return PreviewRenderer(MediaCache(Fetcher(policy), max_bytes=10**9, work_dir=tmp_path), MediaLimits(), options)


def decoded(jpeg: bytes) -> NDArray[np.uint8]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image, np.uint8)


def sequence_slot(urls: list[str], media: MediaKind = MediaKind.SEQUENCE) -> StoredSlot:
    frames = tuple(
        make_result(
            make_detections(),
            item="seq",
            source=urls[0].partition("?")[0],  # as stored: the query string dropped, so all alike
            media=media,
            frame_index=n,
            width=80,
            height=60,
        )
        for n in range(len(urls))
    )
    return StoredSlot("job", 0, "seq", SlotIn(urls=urls), media, frames, ("thing",))


def test_a_sequences_frame_is_drawn_from_its_own_url_when_only_queries_differ(
    server: QueryServer, tmp_path: Path
) -> None:
    draw = renderer(tmp_path, FetchPolicy(allowed_hosts=frozenset({server.host})), PreviewOptions())
    slot = sequence_slot([f"http://{server.host}/get?f={n}" for n in range(len(SHADES))])

    shown = [decoded(draw.frame_jpeg("t", slot, frame, time.monotonic() + 30)) for frame in slot.frames]

    assert [round(float(image.mean())) for image in shown] == pytest.approx(SHADES, abs=3)
    draw.cache.close()


def test_a_dicom_series_with_two_files_of_one_name_is_refused_not_guessed(tmp_path: Path) -> None:
    draw = renderer(tmp_path, FetchPolicy(), PreviewOptions())
    dicom = sequence_slot(["https://h/s.dcm?v=1", "https://h/s.dcm?v=2"], MediaKind.DICOM)

    with pytest.raises(PreannotateError) as caught:
        draw.frame_jpeg("t", dicom, dicom.frames[1], time.monotonic() + 30)

    assert caught.value.code is ErrorCode.PREVIEW_UNAVAILABLE
    assert "several URLs" in caught.value.message


def test_a_contact_sheet_holds_tiles_not_full_size_frames(tmp_path: Path) -> None:
    video = tmp_path / "big.mp4"
    count, width, height = 16, 1280, 720
    write_video(video, width_px=width, height_px=height, fps=8, duration_s=count / 8, gop=4, threads=1)
    frames = tuple(
        make_result(
            make_detections(),
            item="big",
            source=str(video),
            media=MediaKind.VIDEO,
            frame_index=n,
            timestamp_s=n / 8,
            width=width,
            height=height,
        )
        for n in range(count)
    )
    slot = StoredSlot("job", 0, "big", SlotIn(url=video.as_uri()), MediaKind.VIDEO, frames, ())
    draw = renderer(tmp_path, FetchPolicy(local_roots=(tmp_path,)), PreviewOptions(sheet_tiles=count))

    tracemalloc.start()
    try:
        sheet, chosen = draw.sheet_jpeg("t", slot, time.monotonic() + 120)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert len(chosen) == count
    assert decoded(sheet).shape[1] > 4 * 320  # the grid of 320 px tiles
    assert peak_bytes < 5 * width * height * 3  # a few frames at a time, never all 16 at full size
    draw.cache.close()
