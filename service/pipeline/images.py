"""Still images and image sequences: header checks, then decoding to (H, W, 3) uint8 RGB with Pillow."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import ExifTags, Image, ImageOps, TiffImagePlugin, UnidentifiedImageError

from models.types import RGBImage
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import Frame, FrameInfo, MediaKind, SlotMeta
from service.pipeline.options import MediaLimits, SamplingOptions

# Only these Pillow plugins may parse input: others (EPS runs Ghostscript, for one) are attack surface
# we do not need. (JPEG also opens the MPO files phone cameras write.)
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})

# Grey modes deeper than 8 bits: stretched min..max to 0..255 instead of Pillow's clipping convert.
_DEEP_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

# Magic numbers of the formats above: a file that starts like an image but that Pillow cannot parse is
# corrupt, not "some other kind of file".
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

# PNG keeps EXIF in an eXIf chunk that may follow the pixel data; Pillow decodes the whole image to
# find it, which a header read must not do (such a file's header size is then the stored one).
_EXIF_AFTER_PIXELS = frozenset({"PNG"})
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that transpose the image

_DEFAULT_LIMITS = MediaLimits()


def load_rgb(path: Path, limits: MediaLimits) -> RGBImage:
    """Decode a still image, refusing oversized input before decoding it.

    EXIF orientation is applied, so the result is the image as displayed. Alpha is discarded (the colour
    channels are kept as stored, as ``cv2.imread`` and Pillow's ``convert("RGB")`` do); palette, CMYK and
    1-bit images go through Pillow's conversion; 16/32-bit and float grey are stretched from their
    min..max to 0..255 (a constant image becomes zeros). Animated or multi-page files give their first
    frame.

    Args:
        path: the image file.
        limits: file size and pixel count bounds.

    Returns:
        (height, width, 3) uint8 RGB.

    Raises:
        PreannotateError: INPUT_NOT_FOUND, FILE_TOO_LARGE, DIMENSIONS_TOO_LARGE, UNSUPPORTED_MEDIA (not an
            image) or CORRUPT_MEDIA (an image that cannot be decoded).
    """
    with _open_checked(path, limits) as im:
        try:
            im.load()  # recent Pillow orients TIFFs here (and drops the tag); exif_transpose does the rest
            upright = ImageOps.exif_transpose(im)
            return _to_rgb(upright, path)
        except PreannotateError:
            raise
        except Image.DecompressionBombError as exc:  # a GIF frame larger than the header said
            raise PreannotateError(ErrorCode.DIMENSIONS_TOO_LARGE, f"{path}: {exc}") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: cannot decode image: {exc}") from exc


def image_size(path: Path, limits: MediaLimits = _DEFAULT_LIMITS) -> tuple[int, int]:
    """``(width, height)`` as displayed (after EXIF orientation), read from the header without decoding.

    Raises:
        PreannotateError: as ``load_rgb`` does for the header checks.
    """
    with _open_checked(path, limits) as im:
        width, height = _stored_size(im)
        return (height, width) if _orientation(im) in _SWAPS_AXES else (width, height)


_CAMERA_TAGS = (ExifTags.Base.Make, ExifTags.Base.Model)


def from_camera(path: Path, limits: MediaLimits = _DEFAULT_LIMITS) -> bool:
    """Whether the header names the camera that took the image (EXIF Make or Model): a photo, not a frame.

    Frame extractors (FFmpeg, annotation tools' exports) write no camera tags; phones and cameras always do.
    """
    with _open_checked(path, limits) as im:
        if im.format in _EXIF_AFTER_PIXELS and "exif" not in im.info:
            return False
        exif = im.getexif()
        return any(exif.get(tag) for tag in _CAMERA_TAGS)


class ImageReader:
    """A slot holding one still image: one frame, index 0, no timestamp.

    The constructor checks the file size, the header dimensions and the format; iterating decodes.
    """

    def __init__(self, item: str, slot: str, path: Path, limits: MediaLimits) -> None:
        width, height = image_size(path, limits)
        self._path = path
        self._limits = limits
        self.meta = SlotMeta(
            item=item,
            slot=slot,
            media=MediaKind.IMAGE,
            source_files=(str(path),),
            width=width,
            height=height,
            fps=None,
            frame_count=1,
            planned_frames=1,
        )

    def __iter__(self) -> Iterator[Frame]:
        image = load_rgb(self._path, self._limits)
        info = FrameInfo(
            item=self.meta.item,
            slot=self.meta.slot,
            source=str(self._path),
            media=MediaKind.IMAGE,
            frame_index=0,
            timestamp_s=None,
            width=image.shape[1],
            height=image.shape[0],
        )
        yield Frame(info=info, image=image)

    def close(self) -> None:
        """Nothing to release: files are opened only while decoding."""


class SequenceReader:
    """An ordered image sequence (one file per frame): media SEQUENCE, ``frame_index`` = list position.

    Sequences have no clock, so fps, start and end do not apply: every frame is kept, up to
    ``sampling.max_frames`` (or the frames ``sampling.frame_indices`` lists, as video does). Only the first
    file is opened up front (for the slot's width and height), so a long sequence starts at once; each file is
    checked when its turn comes, and one that fails stops the slot with an error naming it. All frames have the
    first one's size: a frame of another size stops the slot (INVALID_ARGUMENT, naming both files), as a video
    has one size and the slot declares it.
    """

    def __init__(
        self,
        item: str,
        slot: str,
        paths: Sequence[Path],
        sampling: SamplingOptions,
        limits: MediaLimits,
    ) -> None:
        if not paths:
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"image sequence {item}/{slot} has no files")
        if sampling.frame_indices is not None:
            chosen = sorted({i for i in sampling.frame_indices if i < len(paths)})
        else:
            chosen = list(range(len(paths) if sampling.max_frames is None else min(len(paths), sampling.max_frames)))
        planned = len(chosen)
        limits.check_frames(planned, f"image sequence {item}/{slot} ({paths[0].parent})")
        width, height = image_size(paths[0], limits)
        self._frames = tuple((i, paths[i]) for i in chosen)
        self._limits = limits
        self.meta = SlotMeta(
            item=item,
            slot=slot,
            media=MediaKind.SEQUENCE,
            source_files=tuple(str(p) for p in paths),
            width=width,
            height=height,
            fps=None,
            frame_count=len(paths),
            planned_frames=planned,
        )

    def __iter__(self) -> Iterator[Frame]:
        for index, path in self._frames:
            try:
                image = load_rgb(path, self._limits)
            except PreannotateError as exc:
                # Within a sequence, a frame that is not an image is a broken sequence.
                code = ErrorCode.CORRUPT_MEDIA if exc.code is ErrorCode.UNSUPPORTED_MEDIA else exc.code
                raise PreannotateError(
                    code, f"frame {index} of sequence {self.meta.item}/{self.meta.slot}: {exc.message}"
                ) from exc
            if (image.shape[1], image.shape[0]) != (self.meta.width, self.meta.height):
                raise PreannotateError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"sequence {self.meta.item}/{self.meta.slot}: frames must share one size: "
                    f"{self.meta.source_files[0]} is "
                    f"{self.meta.width}x{self.meta.height}, {path} is {image.shape[1]}x{image.shape[0]} "
                    "(photos of different sizes are separate items, not a sequence)",
                )
            info = FrameInfo(
                item=self.meta.item,
                slot=self.meta.slot,
                source=str(path),
                media=MediaKind.SEQUENCE,
                frame_index=index,
                timestamp_s=None,
                width=image.shape[1],
                height=image.shape[0],
            )
            yield Frame(info=info, image=image)

    def close(self) -> None:
        """Nothing to release: each file is closed once decoded."""


def natural_sort_key(path: Path) -> tuple[tuple[str | int, ...], str]:
    """Sort key ordering digit runs by value: ``frame2.png`` < ``frame10.png``; case-insensitive.

    The split always alternates text, number, text, ... so keys compare position by position; the name
    itself breaks ties (``frame01`` vs ``frame1``).
    """
    parts = re.split(r"(\d+)", path.name.casefold())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), path.name


def stretch_to_uint8(
    values: NDArray[np.generic], low: float | None = None, high: float | None = None
) -> NDArray[np.uint8]:
    """Map ``low..high`` (default: the finite min..max of ``values``) linearly onto 0..255, clipping.

    Non-finite values become 0, and so does everything when the range is empty (a constant image).
    Returns an array of the same shape as ``values``.
    """
    data = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.uint8)
    low = float(data[finite].min()) if low is None else low
    high = float(data[finite].max()) if high is None else high
    if high <= low:
        return np.zeros(data.shape, np.uint8)
    scaled = (np.where(finite, data, low) - low) * (255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def grey_to_rgb(grey: NDArray[np.uint8]) -> RGBImage:
    """(H, W) uint8 -> (H, W, 3) uint8 by repeating the channel."""
    return np.ascontiguousarray(np.repeat(grey[:, :, np.newaxis], 3, axis=2))


def _stored_size(im: Image.Image) -> tuple[int, int]:
    # Recent Pillow reports a TIFF's size already oriented (and orients it on load); the raw tags give the
    # stored size whatever the version, so the orientation below is applied exactly once.
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        width, height = im.tag_v2.get(256), im.tag_v2.get(257)  # ImageWidth, ImageLength
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return im.size


def _orientation(im: Image.Image) -> int:
    if im.format in _EXIF_AFTER_PIXELS and "exif" not in im.info:
        return 1
    value = im.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) else 1


def _open_checked(path: Path, limits: MediaLimits) -> Image.Image:
    """Open ``path`` lazily (header only) after the size check; refuse it if the header is too large."""
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{path}: no such file") from exc
    if size > limits.max_file_bytes:
        raise PreannotateError(
            ErrorCode.FILE_TOO_LARGE, f"{path}: {size} bytes, more than the limit of {limits.max_file_bytes}"
        )
    _let_our_pixel_limit_apply(limits.max_pixels)
    try:
        im = Image.open(path, formats=PILLOW_FORMATS)
    except Image.DecompressionBombError as exc:
        raise PreannotateError(ErrorCode.DIMENSIONS_TOO_LARGE, f"{path}: {exc}") from exc
    except UnidentifiedImageError as exc:
        if _looks_like_image(path):
            raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: unreadable image header") from exc
        raise PreannotateError(
            ErrorCode.UNSUPPORTED_MEDIA, f"{path}: not an image Pillow can read as {', '.join(PILLOW_FORMATS)}"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: unreadable image header: {exc}") from exc
    width, height = im.size
    if width * height > limits.max_pixels:
        im.close()
        raise PreannotateError(
            ErrorCode.DIMENSIONS_TOO_LARGE,
            f"{path}: {width}x{height} = {width * height} pixels, more than the limit of {limits.max_pixels}",
        )
    return im


def _let_our_pixel_limit_apply(max_pixels: int) -> None:
    # Pillow refuses images over 2 * MAX_IMAGE_PIXELS inside Image.open, before we see the header, and it
    # would refuse images our (larger) limit allows. Raise its threshold to ours (never lower it: other code
    # in the process may rely on it); our check below is the one that decides.
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _looks_like_image(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _to_rgb(im: Image.Image, path: Path) -> RGBImage:
    if im.mode in _DEEP_GREY_MODES:
        return grey_to_rgb(stretch_to_uint8(np.asarray(im)))
    try:
        rgb = im if im.mode == "RGB" else im.convert("RGB")
    except ValueError as exc:
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: cannot convert mode {im.mode} to RGB") from exc
    return np.array(rgb, dtype=np.uint8).reshape(rgb.height, rgb.width, 3)
