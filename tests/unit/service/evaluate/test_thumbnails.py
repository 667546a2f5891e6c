"""The report's thumbnails: where an item's media are found, the crop and the two boxes drawn on it, and a video's
frames counted at another rate decoded at the right time."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from service.evaluate.evaluation import evaluate
from service.evaluate.frame_clock import source_frame
from service.evaluate.thumbnails import (
    BENCHMARK_RGB,
    CANDIDATE_RGB,
    Gallery,
    MediaLookup,
    ThumbnailOptions,
    crop_window,
    draw_case,
    make_gallery,
)
from service.evaluate.types import BoxXYXY, Dataset, Shape, Unit
from service.evaluate.worst import ErrorCase, ErrorKind
from service.pipeline.options import MediaLimits, SamplingOptions
from service.render.encode import Mp4Writer
from service.samples import write_video
from tests.media import read_video

GREY = 128


def _case(kind: ErrorKind, shape: BoxXYXY, nearest: BoxXYXY | None, *, pixels: bool = True) -> ErrorCase:
    other = None if nearest is None else Shape("n", "car", nearest, score=0.5)
    return ErrorCase(kind, "a.png", "0", 0, None, pixels, Shape("s", "car", shape, score=0.9), other, 0.3)


def _near(image: NDArray[np.uint8], rgb: tuple[int, int, int], x: float, y: float, radius: int = 2) -> bool:
    """Whether a pixel within ``radius`` of (x, y) has about that colour (JPEG-safe tolerance)."""
    xs, ys = round(x), round(y)
    patch = image[max(0, ys - radius) : ys + radius + 1, max(0, xs - radius) : xs + radius + 1].astype(int)
    return bool((np.abs(patch - np.array(rgb)).max(axis=2) < 60).any())


def _mapped(box: BoxXYXY, window: tuple[int, int, int, int], scale: float) -> BoxXYXY:
    left, top = window[:2]
    return tuple((v - o) * scale for v, o in zip(box, (left, top, left, top), strict=True))  # type: ignore[return-value]


def test_a_miss_is_cropped_with_context_and_both_boxes_drawn_in_their_colours() -> None:
    image = np.full((300, 400, 3), GREY, np.uint8)
    gt, dt = (100.0, 100.0, 160.0, 140.0), (130.0, 110.0, 190.0, 150.0)
    drawn = draw_case(image, _case(ErrorKind.FALSE_NEGATIVE, gt, dt), 256)

    window = crop_window([gt, dt], 400, 300)
    assert window == (55, 75, 235, 175)  # union (100,100)-(190,150) widened by half its size each side
    scale = 256 / 180
    assert drawn.shape == (round(100 * scale), 256, 3)
    g, d = _mapped(gt, window, scale), _mapped(dt, window, scale)
    # the benchmark box's left edge and the candidate's right edge, each in its colour only
    assert _near(drawn, BENCHMARK_RGB, g[0], (g[1] + g[3]) / 2)
    assert not _near(drawn, CANDIDATE_RGB, g[0], (g[1] + g[3]) / 2)
    assert _near(drawn, CANDIDATE_RGB, d[2], (d[1] + d[3]) / 2)
    assert not _near(drawn, BENCHMARK_RGB, d[2], (d[1] + d[3]) / 2)
    assert (drawn[2, 2] == GREY).all()  # context around the boxes is the frame itself


def test_a_lone_false_positive_draws_the_candidate_box_only() -> None:
    image = np.full((300, 400, 3), GREY, np.uint8)
    drawn = draw_case(image, _case(ErrorKind.FALSE_POSITIVE, (300, 200, 310, 210), None), 128)
    window = crop_window([(300, 200, 310, 210)], 400, 300)
    assert window == (284, 184, 326, 226)  # a tiny box keeps MIN_CONTEXT_PX around it, scaled up
    colours = drawn.reshape(-1, 3).astype(int)
    assert (np.abs(colours - np.array(CANDIDATE_RGB)).max(axis=1) < 60).any()
    assert not (np.abs(colours - np.array(BENCHMARK_RGB)).max(axis=1) < 60).any()


def test_percent_boxes_are_put_in_the_frames_pixels() -> None:
    image = np.full((200, 400, 3), GREY, np.uint8)
    image[50:100, 100:200] = 255  # the object, where 25%..50% x 25%..50% y lands
    drawn = draw_case(image, _case(ErrorKind.FALSE_NEGATIVE, (25, 25, 50, 50), None, pixels=False), 200)
    window = crop_window([(100, 50, 200, 100)], 400, 200)
    scale = 200 / max(window[2] - window[0], window[3] - window[1])
    g = _mapped((100, 50, 200, 100), window, scale)
    assert _near(drawn, BENCHMARK_RGB, (g[0] + g[2]) / 2, g[1])
    assert (drawn[round((g[1] + g[3]) / 2), round((g[0] + g[2]) / 2)] > 230).all()  # the white object inside


def test_media_are_found_by_path_then_by_a_unique_file_name(tmp_path: Path) -> None:
    for rel in ("a/one.png", "b/two.png", "c/two.png", "d/three.png", "item/left.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    lookup = MediaLookup([tmp_path / "nowhere", tmp_path])
    assert lookup.find("a/one.png", "0") == tmp_path / "a/one.png"
    assert lookup.find("/data/set/one.png", "0") == tmp_path / "a/one.png"  # the only one.png
    assert lookup.find("two.png", "0") is None  # two of them: neither is guessed
    assert lookup.find("b/two.png", "0") == tmp_path / "b/two.png"
    assert lookup.find("item", "left.png") == tmp_path / "item/left.png"  # a named slot's own file
    assert lookup.find("../d/three.png", "0") is None
    assert lookup.find("missing.png", "0") is None


def test_thumbnail_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="too small"):
        ThumbnailOptions(per_class=0)
    with pytest.raises(ValueError, match="too small"):
        ThumbnailOptions(size_px=8)


def test_a_video_counted_at_another_rate_is_decoded_at_the_frame_of_that_time(tmp_path: Path) -> None:
    # a 30 fps clip of moving boxes; the benchmark counts at 10 fps: its frame 4 is 0.4 s, source frame 12.
    # The thumbnail must come from that frame, not from source frame 4.
    clip = tmp_path / "clip.mp4"
    write_video(clip, width_px=160, height_px=120, fps=30, duration_s=1.0, threads=1)
    bench_unit = Unit(item="clip.mp4", width=160, height=120, fps=10.0)
    bench_unit.add(4, Shape("g", "car", (40.0, 30.0, 100.0, 90.0)))
    bench = Dataset("benchmark", "gt.json", "coco", units=[bench_unit])
    cand = Dataset("model", "dt.json", "coco_results", units=[Unit(item="clip.mp4", width=160, height=120)])
    evaluation = evaluate(bench, [cand], worst_per_class=1)

    gallery = make_gallery(evaluation, MediaLookup([tmp_path]), ThumbnailOptions(1, 64), MediaLimits())

    (thumb,) = gallery.of("model")["car"][ErrorKind.FALSE_NEGATIVE]
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(thumb.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert max(decoded.shape[:2]) == 64
    frames = {n: image for n, _, image in read_video(clip, SamplingOptions(fps=0))[1]}
    window = crop_window([(40.0, 30.0, 100.0, 90.0)], 160, 120)
    expected = {
        n: cv2.resize(frames[n][window[1] : window[3], window[0] : window[2]], decoded.shape[1::-1]) for n in (4, 12)
    }
    error = {n: float(np.abs(decoded.astype(int) - e.astype(int)).mean()) for n, e in expected.items()}
    assert error[12] < error[4]
    assert (gallery.missing, gallery.errors_without_media) == ([], 0)


def _grey_clip(path: Path, *, fps: int, frames: int, step: int) -> None:
    """A clip whose frame n is flat grey ``20 + step * n``: a decoded frame names its own index."""
    with Mp4Writer(path, fps=fps, width_px=160, height_px=120) as writer:
        for n in range(frames):
            writer.write(np.full((120, 160, 3), 20 + step * n, np.uint8))


def _only_thumbnail(gallery: Gallery, kind: ErrorKind = ErrorKind.FALSE_NEGATIVE) -> NDArray[np.uint8]:
    (thumb,) = gallery.of("model")["car"][kind]
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(thumb.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _gallery(tmp_path: Path, bench_unit: Unit, cand_unit: Unit) -> Gallery:
    bench = Dataset("benchmark", "gt.json", "coco", units=[bench_unit])
    cand = Dataset("model", "dt.json", "coco_results", units=[cand_unit])
    evaluation = evaluate(bench, [cand], worst_per_class=1)
    return make_gallery(evaluation, MediaLookup([tmp_path]), ThumbnailOptions(1, 64), MediaLimits())


def test_a_frame_between_two_source_frames_shows_the_one_on_screen_then_as_render_does(tmp_path: Path) -> None:
    # labels at 10 fps on a 25 fps clip: label frame 3 is 0.3 s, when source frame 7 (0.28 s) is on screen;
    # frame 8 (0.32 s) is not shown yet. A rounded 7.5 would decode frame 8.
    step = 15
    _grey_clip(tmp_path / "clip.mp4", fps=25, frames=12, step=step)
    bench_unit = Unit(item="clip.mp4", width=160, height=120, fps=10.0)
    bench_unit.add(3, Shape("g", "car", (40.0, 30.0, 100.0, 90.0)))

    gallery = _gallery(tmp_path, bench_unit, Unit(item="clip.mp4", width=160, height=120))

    level = float(np.median(_only_thumbnail(gallery)))
    assert source_frame(3, 10.0, 25.0) == 7
    assert abs(level - (20 + step * 7)) < step / 2, level


def test_boxes_in_a_benchmark_of_a_larger_size_are_scaled_to_the_media_found(tmp_path: Path) -> None:
    # the benchmark was labelled on a 1920x1080 original; --media holds a 192x108 copy with the object at
    # a tenth of its coordinates
    image = np.full((108, 192, 3), GREY, np.uint8)
    image[54:81, 96:144] = 255
    cv2.imwrite(str(tmp_path / "a.png"), image)
    bench_unit = Unit(item="a.png", width=1920, height=1080)
    bench_unit.add(0, Shape("g", "car", (960.0, 540.0, 1440.0, 810.0)))

    gallery = _gallery(tmp_path, bench_unit, Unit(item="a.png", width=1920, height=1080))

    drawn = _only_thumbnail(gallery)
    window = crop_window([(96.0, 54.0, 144.0, 81.0)], 192, 108)
    scale = 64 / max(window[2] - window[0], window[3] - window[1])
    g = _mapped((96.0, 54.0, 144.0, 81.0), window, scale)
    assert drawn.shape[:2] == (round((window[3] - window[1]) * scale), 64)
    assert (drawn[round((g[1] + g[3]) / 2), round((g[0] + g[2]) / 2)] > 230).all()  # the object inside
    assert _near(drawn, BENCHMARK_RGB, g[0], (g[1] + g[3]) / 2)
    assert (gallery.unreadable, gallery.off_frame, gallery.errors_without_media) == ([], [], 0)


def test_a_box_wholly_outside_the_frame_gets_no_thumbnail_and_the_others_still_do(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((120, 160, 3), GREY, np.uint8))
    bench_unit = Unit(item="a.png", width=160, height=120)
    bench_unit.add(0, Shape("g", "car", (20.0, 20.0, 60.0, 60.0)))
    cand_unit = Unit(item="a.png", width=160, height=120)
    cand_unit.add(0, Shape("d", "car", (500.0, 10.0, 600.0, 50.0), score=0.9))

    gallery = _gallery(tmp_path, bench_unit, cand_unit)

    assert ErrorKind.FALSE_POSITIVE not in gallery.of("model")["car"]
    assert _only_thumbnail(gallery).shape[1] == 64  # the miss on the same frame is still drawn
    assert gallery.errors_without_media == 1
    assert gallery.off_frame == ["a.png frame 0: box (500, 10, 600, 50) lies outside the 160x120 frame"]


def test_a_box_partly_outside_the_frame_is_cropped_at_the_frames_edge() -> None:
    image = np.full((120, 160, 3), GREY, np.uint8)
    drawn = draw_case(image, _case(ErrorKind.FALSE_POSITIVE, (140, 10, 200, 50), None), 64)
    assert drawn is not None
    assert crop_window([(140, 10, 160, 50)], 160, 120) == (124, 0, 160, 70)  # the box as clipped, with context
    assert drawn.shape[:2] == (64, round(36 * 64 / 70))
    assert _near(drawn, CANDIDATE_RGB, (140 - 124) * 64 / 70, 30 * 64 / 70)
    assert draw_case(image, _case(ErrorKind.FALSE_POSITIVE, (500, 10, 600, 50), None), 64) is None


def test_an_item_or_slot_that_leaves_the_media_folder_finds_nothing(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "item").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")  # outside --media
    (media / "inside.png").write_bytes(b"x")
    lookup = MediaLookup([media])
    assert lookup.find("item", str(tmp_path / "secret.png")) is None  # an absolute slot
    assert lookup.find("item", "../../secret.png") is None
    assert lookup.find("item", "../inside.png") is None  # even back inside: a key that climbs names nothing
    assert lookup.find(str(tmp_path / "secret.png"), "0") is None  # an absolute item not under --media
    assert lookup.find(str(tmp_path / "inside.png"), "0") == media / "inside.png"  # found by its name alone
