"""Still images and image sequences: formats, modes, EXIF orientation, limits and errors."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import MediaKind
from service.pipeline.images import (
    ImageReader,
    SequenceReader,
    image_size,
    load_rgb,
    natural_sort_key,
)
from service.pipeline.media import list_media_dir
from service.pipeline.options import MediaLimits, SamplingOptions

LIMITS = MediaLimits()


def make_rgb(height: int = 12, width: int = 20) -> NDArray[np.uint8]:
    """A smooth (JPEG-friendly) RGB image with distinct rows and columns."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 4 % 256], axis=2).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A 100-byte PNG whose IHDR claims ``width`` x ``height`` (8-bit RGB) over a few bytes of pixel data:
    a decompression bomb's header, which must never reach the decoder."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )
    return path


def save_pillow(fmt: str, **params: object) -> Callable[[NDArray[np.uint8], Path], None]:
    def save(image: NDArray[np.uint8], path: Path) -> None:
        Image.fromarray(image).save(path, format=fmt, **params)

    return save


def save_cv2(image: NDArray[np.uint8], path: Path) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.mark.parametrize(
    ("name", "save", "tolerance"),
    [
        ("a.png", save_pillow("PNG"), 0),
        ("a.tiff", save_pillow("TIFF"), 0),
        ("a.bmp", save_pillow("BMP"), 0),
        ("a.webp", save_pillow("WEBP", lossless=True), 0),
        ("a.jpg", save_pillow("JPEG", quality=95), 24),  # lossy, chroma subsampled
        ("cv2.png", save_cv2, 0),
        ("cv2.jpg", save_cv2, 24),
        ("cv2.tif", save_cv2, 0),
        ("cv2.bmp", save_cv2, 0),
        ("cv2.webp", save_cv2, 24),  # cv2 writes lossy WebP by default
    ],
)
def test_formats_round_trip(tmp_path: Path, name: str, save: Callable[..., None], tolerance: int) -> None:
    # given
    expected = make_rgb()
    path = tmp_path / name
    save(expected, path)
    # when
    image = load_rgb(path, LIMITS)
    # then
    assert image.dtype == np.uint8
    assert image.shape == (12, 20, 3)
    assert np.abs(image.astype(int) - expected).max() <= tolerance


def test_gif_palette_round_trips(tmp_path: Path) -> None:
    expected = np.zeros((4, 6, 3), np.uint8)
    expected[:, 3:] = (200, 30, 60)
    Image.fromarray(expected).save(tmp_path / "a.gif")
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.gif", LIMITS), expected)


# EXIF orientation -> how the stored pixels are turned to display them.
ORIENTATIONS: list[tuple[int, Callable[[NDArray[np.uint8]], NDArray[np.uint8]]]] = [
    (1, lambda a: a),
    (2, lambda a: a[:, ::-1]),
    (3, lambda a: a[::-1, ::-1]),
    (4, lambda a: a[::-1]),
    (5, lambda a: np.swapaxes(a, 0, 1)),
    (6, lambda a: np.rot90(a, -1)),  # 90 degrees clockwise
    (7, lambda a: np.swapaxes(a[::-1, ::-1], 0, 1)),
    (8, lambda a: np.rot90(a, 1)),  # 90 degrees counter-clockwise
]


@pytest.mark.parametrize(("orientation", "turn"), ORIENTATIONS)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, turn: Callable[..., NDArray[np.uint8]]) -> None:
    # given a 12x20 JPEG whose EXIF says how to display it
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(make_rgb()).save(path, quality=100, exif=exif)
    with Image.open(path) as im:
        stored = np.array(im.convert("RGB"))
    # when
    image = load_rgb(path, LIMITS)
    # then pixels, header size and reader meta all describe the displayed image
    np.testing.assert_array_equal(image, turn(stored))
    expected_wh = (12, 20) if orientation >= 5 else (20, 12)
    assert image_size(path) == expected_wh
    assert (image.shape[1], image.shape[0]) == expected_wh
    reader = ImageReader("item", "0", path, LIMITS)
    assert (reader.meta.width, reader.meta.height) == expected_wh


@pytest.mark.parametrize(("orientation", "turn"), ORIENTATIONS)
def test_exif_orientation_on_16_bit_tiff(
    tmp_path: Path, orientation: int, turn: Callable[..., NDArray[np.uint8]]
) -> None:
    # given a 16-bit 2x3 TIFF scan (0, 100, ... 500 -> 0, 51, ... 255) with an orientation tag
    path = tmp_path / "scan.tif"
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = np.arange(6, dtype=np.uint16).reshape(2, 3) * 100
    Image.fromarray(stored).save(path, exif=exif, compression="tiff_lzw")
    # when
    image = load_rgb(path, LIMITS)
    # then
    np.testing.assert_array_equal(image[..., 0], turn(stored // 100 * 51))
    assert image_size(path) == (image.shape[1], image.shape[0])


@pytest.mark.xfail(reason="Pillow 13 scrambles uncompressed L / I;16 TIFFs with orientation 5-8 on load")
def test_exif_transpose_on_uncompressed_grey_tiff(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 51
    Image.fromarray(stored).save(path, exif=exif)
    np.testing.assert_array_equal(load_rgb(path, LIMITS)[..., 0], np.rot90(stored, -1))


@pytest.mark.parametrize(
    ("name", "pixels", "mode", "expected"),
    [
        # min..max stretched to 0..255: (x - 1000) / 4
        ("a.png", np.array([[1000, 1400, 2020]], np.uint16), None, [0, 100, 255]),
        ("a.tif", np.array([[1000, 1400, 2020]], ">u2"), None, [0, 100, 255]),  # I;16B
        ("a.tif", np.array([[-70000, 0, 32000]], np.int32), None, [0, 175, 255]),
        ("a.tif", np.array([[-1.0, 0.0, 1.0]], np.float32), None, [0, 128, 255]),
        ("a.png", np.full((1, 3), 4242, np.uint16), None, [0, 0, 0]),  # constant -> zeros
    ],
)
def test_deep_grey_is_stretched(
    tmp_path: Path, name: str, pixels: NDArray[np.generic], mode: str | None, expected: list[int]
) -> None:
    # given
    path = tmp_path / name
    im = Image.fromarray(pixels)
    (im.convert(mode) if mode else im).save(path)
    # when
    image = load_rgb(path, LIMITS)
    # then grey is stretched and stacked to three equal channels
    np.testing.assert_array_equal(image[0, :, 0], expected)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_16_bit_png_with_cv2(tmp_path: Path) -> None:
    path = tmp_path / "depth.png"
    assert cv2.imwrite(str(path), np.array([[0, 32768, 65535]], np.uint16))
    np.testing.assert_array_equal(load_rgb(path, LIMITS)[0, :, 1], [0, 128, 255])


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        # alpha is dropped: the colour under a fully transparent pixel is kept as stored
        ("rgba.png", lambda: Image.new("RGBA", (2, 2), (10, 20, 30, 0)), (10, 20, 30)),
        ("la.png", lambda: Image.new("LA", (2, 2), (77, 0)), (77, 77, 77)),
        ("p.png", lambda: Image.new("RGB", (2, 2), (200, 30, 60)).quantize(4), (200, 30, 60)),
        ("cmyk.tif", lambda: Image.new("CMYK", (2, 2), (0, 0, 0, 0)), (255, 255, 255)),
        ("cyan.jpg", lambda: Image.new("CMYK", (2, 2), (255, 0, 0, 0)), (0, 255, 255)),
        ("bits.png", lambda: Image.new("1", (2, 2), 1), (255, 255, 255)),
        ("l.webp", lambda: Image.new("L", (2, 2), 90), (90, 90, 90)),
    ],
)
def test_modes_convert_to_rgb(
    tmp_path: Path, name: str, make: Callable[[], Image.Image], expected: tuple[int, ...]
) -> None:
    params: dict[str, Any] = {"lossless": True} if name.endswith(".webp") else {}
    make().save(tmp_path / name, **params)
    image = load_rgb(tmp_path / name, LIMITS)
    assert image.shape == (2, 2, 3)
    assert np.abs(image.astype(int) - expected).max() <= 2  # CMYK JPEG is lossy


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [100_000, 12_000])  # refused by Pillow's check (translated), by ours
def test_bomb_header_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    # given a PNG claiming side x side over a few bytes: decoding it would fail (CORRUPT_MEDIA), so only a
    # refusal before decoding gives DIMENSIONS_TOO_LARGE
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    path = write_png_header(tmp_path / "bomb.png", side, side)
    for call in (lambda: load_rgb(path, LIMITS), lambda: image_size(path), lambda: ImageReader("i", "0", path, LIMITS)):
        with pytest.raises(PreannotateError) as exc:
            call()
        assert exc.value.code is ErrorCode.DIMENSIONS_TOO_LARGE
        assert str(path) in exc.value.message


def test_our_pixel_limit_replaces_pillows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given Pillow's default threshold (~179M pixels refused) and our limit above it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    path = write_png_header(tmp_path / "big.png", 20_000, 20_000)  # 400M pixels
    # when / then: our limit decides, both ways
    assert image_size(path, MediaLimits(max_pixels=500_000_000)) == (20_000, 20_000)
    with pytest.raises(PreannotateError) as exc:
        image_size(path, MediaLimits(max_pixels=399_999_999))
    assert exc.value.code is ErrorCode.DIMENSIONS_TOO_LARGE


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (MediaLimits(max_file_bytes=10), ErrorCode.FILE_TOO_LARGE),
        (MediaLimits(max_pixels=12 * 20 - 1), ErrorCode.DIMENSIONS_TOO_LARGE),
        (MediaLimits(max_pixels=12 * 20, max_file_bytes=10_000), None),
    ],
)
def test_limits(tmp_path: Path, limits: MediaLimits, code: ErrorCode | None) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(make_rgb()).save(path)
    calls = (
        lambda: load_rgb(path, limits),
        lambda: image_size(path, limits),
        lambda: ImageReader("i", "0", path, limits),
    )
    for call in calls:
        if code is None:
            call()
            continue
        with pytest.raises(PreannotateError) as exc:
            call()
        assert exc.value.code is code


def jpeg_bytes() -> bytes:
    """A 64x64 noisy JPEG, in memory: most of its bytes are scan data, after the header."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("cut.jpg", lambda: jpeg_bytes()[: len(jpeg_bytes()) // 2], ErrorCode.CORRUPT_MEDIA),
        ("head.jpg", lambda: jpeg_bytes()[:12], ErrorCode.CORRUPT_MEDIA),
        ("notes.txt", lambda: b"hello, not an image\n", ErrorCode.UNSUPPORTED_MEDIA),
        ("fake.png", lambda: b"hello, not an image\n", ErrorCode.UNSUPPORTED_MEDIA),
        ("empty.png", lambda: b"", ErrorCode.UNSUPPORTED_MEDIA),
        ("doc.pdf", lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", ErrorCode.UNSUPPORTED_MEDIA),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: Callable[[], bytes], code: ErrorCode) -> None:
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(PreannotateError) as exc:
        load_rgb(path, LIMITS)
    assert exc.value.code is code
    assert str(path) in exc.value.message


def test_truncated_jpeg_fails_on_decode_not_open(tmp_path: Path) -> None:
    # given a JPEG whose header is intact
    path = tmp_path / "cut.jpg"
    data = jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    # when the reader is opened, then only iterating fails
    reader = ImageReader("i", "0", path, LIMITS)
    assert (reader.meta.width, reader.meta.height) == (64, 64)
    with pytest.raises(PreannotateError) as exc:
        list(reader)
    assert exc.value.code is ErrorCode.CORRUPT_MEDIA


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PreannotateError) as exc:
        load_rgb(tmp_path / "nope.png", LIMITS)
    assert exc.value.code is ErrorCode.INPUT_NOT_FOUND


def test_image_reader_yields_one_frame(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(make_rgb()).save(path)
    reader = ImageReader("cat", "main", path, LIMITS)
    frames = list(reader)
    reader.close()
    assert reader.meta.media is MediaKind.IMAGE
    assert (reader.meta.frame_count, reader.meta.planned_frames, reader.meta.fps) == (1, 1, None)
    assert len(frames) == 1
    info = frames[0].info
    assert (info.item, info.slot, info.source, info.media) == ("cat", "main", str(path), MediaKind.IMAGE)
    assert (info.frame_index, info.timestamp_s, info.width, info.height) == (0, None, 20, 12)
    np.testing.assert_array_equal(frames[0].image, make_rgb())


# --- sequences ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["frame10.png", "frame2.png", "frame1.png"], ["frame1.png", "frame2.png", "frame10.png"]),
        (["B1.png", "a1.png", "A2.png"], ["a1.png", "A2.png", "B1.png"]),  # case-insensitive
        (["img_1_10.png", "img_1_9.png", "img_0_99.png"], ["img_0_99.png", "img_1_9.png", "img_1_10.png"]),
        (["01.png", "1.png", "001.png"], ["001.png", "01.png", "1.png"]),  # equal numbers: by name
        (["10.png", "x.png", "9.png"], ["9.png", "10.png", "x.png"]),
    ],
)
def test_natural_sort_key(names: list[str], expected: list[str]) -> None:
    assert [p.name for p in sorted((Path(n) for n in names), key=natural_sort_key)] == expected


def write_sequence(directory: Path, count: int, *, prefix: str = "frame") -> list[Path]:
    directory.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"{prefix}{i}.png"
        # frame i is 4x3 and all 10 * i, so the order is visible
        Image.fromarray(np.full((3, 4, 3), 10 * i, np.uint8)).save(path)
        paths.append(path)
    return paths


def test_list_media_dir_orders_and_filters_images(tmp_path: Path) -> None:
    # given images out of order, plus things that are not frames
    write_sequence(tmp_path, 12)
    (tmp_path / ".frame99.png").write_bytes(b"hidden")
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub.png").mkdir()
    # when
    kind, paths = list_media_dir(tmp_path)
    # then
    assert kind is MediaKind.SEQUENCE
    assert [p.name for p in paths] == [f"frame{i}.png" for i in range(12)]


@pytest.mark.parametrize(
    ("make_dir", "code"), [(True, ErrorCode.UNSUPPORTED_MEDIA), (False, ErrorCode.INPUT_NOT_FOUND)]
)
def test_list_media_dir_without_images(tmp_path: Path, make_dir: bool, code: ErrorCode) -> None:
    directory = tmp_path / "seq"
    if make_dir:
        directory.mkdir()
        (directory / "readme.txt").write_text("x")
    with pytest.raises(PreannotateError) as exc:
        list_media_dir(directory)
    assert exc.value.code is code


def test_sequence_reader_frames(tmp_path: Path) -> None:
    # given
    write_sequence(tmp_path, 3)
    _, paths = list_media_dir(tmp_path)
    # when fps sampling is asked for (sequences have no clock: ignored)
    reader = SequenceReader("scan", "0", paths, SamplingOptions(fps=0.5), LIMITS)
    frames = list(reader)
    # then every frame, in order, each with its own size and file
    assert reader.meta.media is MediaKind.SEQUENCE
    assert (reader.meta.width, reader.meta.height, reader.meta.fps) == (4, 3, None)
    assert (reader.meta.frame_count, reader.meta.planned_frames) == (3, 3)
    assert reader.meta.source_files == tuple(str(p) for p in paths)
    assert [f.info.frame_index for f in frames] == [0, 1, 2]
    assert [f.info.timestamp_s for f in frames] == [None] * 3
    assert [f.info.source for f in frames] == [str(p) for p in paths]
    assert [(f.info.width, f.info.height) for f in frames] == [(4, 3)] * 3
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 10, 20]
    assert all(f.info.media is MediaKind.SEQUENCE for f in frames)


def test_a_sequence_decodes_only_the_frames_listed_in_frame_indices(tmp_path: Path) -> None:
    # given a sequence of 5 frames, asked for frames 3 and 1 (and 9, past its end)
    write_sequence(tmp_path, 5)
    _, paths = list_media_dir(tmp_path)
    reader = SequenceReader("scan", "0", paths, SamplingOptions(frame_indices=(3, 1, 9)), LIMITS)
    frames = list(reader)
    # then those two, in order, with their own index and file
    assert reader.meta.planned_frames == 2
    assert [f.info.frame_index for f in frames] == [1, 3]
    assert [f.info.source for f in frames] == [str(paths[1]), str(paths[3])]
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 30]


def test_a_frame_of_another_size_stops_the_sequence_naming_both_files(tmp_path: Path) -> None:
    # given a sequence whose third frame is wider than the first (photos, not the frames of one clip)
    paths = write_sequence(tmp_path, 4)
    Image.fromarray(np.zeros((3, 6, 3), np.uint8)).save(paths[2])
    reader = SequenceReader("i", "0", paths, SamplingOptions(), LIMITS)
    it = iter(reader)
    assert [next(it).info.frame_index, next(it).info.frame_index] == [0, 1]
    # then it is refused, not declared at the first frame's size
    with pytest.raises(PreannotateError) as exc:
        next(it)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    assert f"{paths[0]} is 4x3, {paths[2]} is 6x3" in exc.value.message


@pytest.mark.parametrize(
    ("max_frames", "limit", "planned", "code"),
    [
        (None, 100, 5, None),
        (2, 100, 2, None),
        (3, 3, 3, None),  # the cap keeps the plan within the limit
        (None, 4, None, ErrorCode.TOO_MANY_FRAMES),
        (5, 4, None, ErrorCode.TOO_MANY_FRAMES),
    ],
)
def test_sequence_frame_caps(
    tmp_path: Path, max_frames: int | None, limit: int, planned: int | None, code: ErrorCode | None
) -> None:
    paths = write_sequence(tmp_path, 5)
    sampling = SamplingOptions(max_frames=max_frames)
    limits = MediaLimits(max_frames=limit)
    if code is not None:
        with pytest.raises(PreannotateError) as exc:
            SequenceReader("i", "0", paths, sampling, limits)
        assert exc.value.code is code
        assert "--max-frames" in exc.value.message
        return
    reader = SequenceReader("i", "0", paths, sampling, limits)
    assert reader.meta.planned_frames == planned
    assert [f.info.frame_index for f in reader] == list(range(planned or 0))


@pytest.mark.parametrize("bad", [b"garbage, not a png", jpeg_bytes()[:200]])
def test_bad_file_mid_sequence(tmp_path: Path, bad: bytes) -> None:
    # given a sequence whose third file is broken
    paths = write_sequence(tmp_path, 4)
    paths[2].write_bytes(bad)
    # when opened, only the first file is read, so the reader starts
    reader = SequenceReader("i", "0", paths, SamplingOptions(), LIMITS)
    it = iter(reader)
    assert [next(it).info.frame_index, next(it).info.frame_index] == [0, 1]
    # then the broken frame fails the slot, naming its file
    with pytest.raises(PreannotateError) as exc:
        next(it)
    assert exc.value.code is ErrorCode.CORRUPT_MEDIA
    assert str(paths[2]) in exc.value.message


def test_sequence_limits_apply_per_file(tmp_path: Path) -> None:
    paths = write_sequence(tmp_path, 3)
    Image.fromarray(np.zeros((3, 6, 3), np.uint8)).save(paths[2])
    reader = SequenceReader("i", "0", paths, SamplingOptions(), MediaLimits(max_pixels=3 * 5))
    with pytest.raises(PreannotateError) as exc:
        list(reader)  # frame 2 is 6x3
    assert exc.value.code is ErrorCode.DIMENSIONS_TOO_LARGE
    assert str(paths[2]) in exc.value.message


def test_sequence_does_not_open_later_files(tmp_path: Path) -> None:
    # a long sequence must start fast: only the first file is checked up front
    paths = write_sequence(tmp_path, 1) + [tmp_path / f"missing{i}.png" for i in range(10_000)]
    reader = SequenceReader("i", "0", paths, SamplingOptions(), LIMITS)
    assert reader.meta.frame_count == 10_001


def test_empty_sequence(tmp_path: Path) -> None:
    with pytest.raises(PreannotateError) as exc:
        SequenceReader("i", "0", [], SamplingOptions(), LIMITS)
    assert exc.value.code is ErrorCode.INPUT_NOT_FOUND
