"""An item's previews on disk: each still slot a JPEG, each multi-frame slot (video, DICOM, sequence) an MP4 of its
sampled frames plus a contact sheet, predictions drawn on all of them. Frames stream through in constant memory."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from models.types import Detections, RGBImage
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.files import write_atomic
from service.pipeline.frames import FrameInfo, MediaKind
from service.render.annotate import draw_detections
from service.render.encode import Mp4Writer, fit_within, rgb_to_jpeg
from service.render.sheet import contact_sheet

DEFAULT_PREVIEW_PX = 1280
DEFAULT_SHEET_TILES = 16
MIN_VIDEO_FPS, MAX_VIDEO_FPS, DEFAULT_VIDEO_FPS = 1.0, 30.0, 2.0


@dataclass(frozen=True, slots=True)
class PreviewOptions:
    """How previews are drawn.

    Attributes:
        longest_px: frames are scaled down so their longer side is at most this (drawn after scaling, so labels
            are sized for the picture people look at).
        sheet_tiles: the most frames a contact sheet shows, spread over the slot.
        tile_width_px: a contact-sheet tile's width.
    """

    longest_px: int = DEFAULT_PREVIEW_PX
    sheet_tiles: int = DEFAULT_SHEET_TILES
    tile_width_px: int = 320

    def __post_init__(self) -> None:
        if self.longest_px < 16 or self.sheet_tiles < 1 or self.tile_width_px < 16:
            raise ValueError(f"preview sizes too small: {self}")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, longest_px: int | None = None, sheet_tiles: int | None = None
    ) -> PreviewOptions:
        """``PREANNOTATE_PREVIEW_PX`` / ``_SHEET_TILES``, each under its flag (``--preview-px``, ``--sheet-tiles``)
        when given; a size too small to draw a label on is INVALID_ARGUMENT naming the flags."""
        try:
            return cls(
                longest_px=longest_px or settings.preview_px, sheet_tiles=sheet_tiles or settings.preview_sheet_tiles
            )
        except ValueError as exc:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--preview-px/--sheet-tiles: {exc}") from None


_UNSAFE = re.compile(r"[^\w.\-]+")  # \w: letters and digits of any script (a Unicode name stays readable)
MAX_PART_CHARS = 100
"""A longer folder or file name is cut (and hashed): file systems refuse names over 255 bytes."""
PREVIEW_SUFFIXES = (".jpg", ".mp4", ".sheet.jpg")
"""What a slot may write next to its stem; a stem is reserved with all of them."""


def _safe_part(part: str) -> str:
    safe = _UNSAFE.sub("_", part)[:MAX_PART_CHARS]
    return safe if safe.strip(".") else "_"


def _name_hash(item: str, slot: str) -> str:
    return hashlib.sha256(f"{item}\0{slot}".encode()).hexdigest()[:8]


def preview_stem(item: str, slot: str) -> PurePosixPath:
    """Where an item slot's previews go, relative to the output folder: the item's name (its folders kept, anything
    that could leave the folder replaced), then the slot's when it is not the single-file ``0``. When a name had
    to change (``a b.jpg`` -> ``a_b.jpg``), a short hash of the original is appended: two names never meet."""
    parts = [part for part in item.replace("\\", "/").split("/") if part]
    if slot != "0":
        parts.append(slot)
    safe = [_safe_part(part) for part in parts] or ["_"]
    if safe != parts:
        safe[-1] += f"-{_name_hash(item, slot)}"
    return PurePosixPath(*safe)


def reserve_stem(item: str, slot: str, taken: set[str]) -> PurePosixPath:
    """``preview_stem``, hashed when another slot of the run took any of its files (compared without case, as
    macOS and Windows compare: ``x/y`` item vs item ``x`` slot ``y``, ``a.sheet`` vs ``a``'s contact sheet).
    The stem's files are added to ``taken``."""
    stem = preview_stem(item, slot)
    if any(_key(stem, suffix) in taken for suffix in PREVIEW_SUFFIXES):
        stem = stem.with_name(f"{stem.name}-{_name_hash(item, slot)}")
    for suffix in PREVIEW_SUFFIXES:
        if _key(stem, suffix) in taken:  # the hashed name too: refuse rather than overwrite
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"item {item!r} slot {slot!r}: its preview name {stem} is taken"
            )
    taken.update(_key(stem, suffix) for suffix in PREVIEW_SUFFIXES)
    return stem


def _key(stem: PurePosixPath, suffix: str) -> str:
    return (stem.as_posix() + suffix).casefold()


def frame_caption(info: FrameInfo) -> str:
    if info.timestamp_s is None:
        return f"frame {info.frame_index}"
    return f"frame {info.frame_index} | {info.timestamp_s:.2f} s"


@dataclass(slots=True)
class _SlotPreview:
    stem: Path
    media: MediaKind
    video: Mp4Writer | None = None
    first: tuple[FrameInfo, RGBImage] | None = None
    tiles: list[tuple[str, RGBImage]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0


class ItemPreviewWriter:
    """Draws one item's frames as they come (each slot's in time order) and writes its previews.

    ``add`` every frame with its detections (source-frame pixels), then ``close``; ``written`` lists the files.
    Writers of one run's items share ``taken`` so that no item's previews overwrite another's.
    """

    def __init__(
        self,
        out_dir: Path,
        class_names: Sequence[str],
        options: PreviewOptions | None = None,
        *,
        taken: set[str] | None = None,
    ) -> None:
        self._out = out_dir
        self._names = list(class_names)
        self._options = options or PreviewOptions()
        self._taken = set() if taken is None else taken
        """The run's preview files so far (``reserve_stem``): share one set across a run's items."""
        self._slots: dict[tuple[str, str], _SlotPreview] = {}
        self.written: list[Path] = []

    def add(self, info: FrameInfo, image: RGBImage, detections: Detections) -> None:
        """Draw ``detections`` on ``image`` (the frame ``info`` names, at any scale) and take it into the slot."""
        picture = fit_within(image, self._options.longest_px)
        drawn = draw_detections(picture, detections, self._names, source_wh=(info.width, info.height))
        key = (info.item, info.slot)
        slot = self._slots.get(key)
        if slot is None:
            stem = self._out / reserve_stem(info.item, info.slot, self._taken)
            slot = self._slots[key] = _SlotPreview(stem=stem, media=info.media)
        self._take(slot, info, drawn)

    def close(self) -> list[Path]:
        """Finish every slot (an MP4 closed, a contact sheet or a JPEG written); returns the files written.

        A slot that cannot be finished aborts the item (``abort``) and the error is raised."""
        try:
            for slot in self._slots.values():
                self._finish(slot)
        except BaseException:
            self.abort()
            raise
        self._slots.clear()
        return self.written

    def abort(self) -> None:
        """Give the item up after a failure: open MP4s closed and, like every file written so far, deleted (a
        half-written MP4 or an item missing slots must not pass for a preview)."""
        for slot in self._slots.values():
            if slot.video is not None:
                with contextlib.suppress(Exception):  # the file goes anyway; the first error is the one raised
                    slot.video.close()
                self.written.append(slot.video.path)
        self._slots.clear()
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written = []

    def _take(self, slot: _SlotPreview, info: FrameInfo, drawn: RGBImage) -> None:
        slot.seen += 1
        if slot.first is None:
            slot.first = (info, drawn)  # a single frame (a still) stays a JPEG; a second one starts the MP4
        else:
            if slot.video is None:
                self._start_video(slot, slot.first[0], info, slot.first[1])
            assert slot.video is not None
            slot.video.write(drawn)
        self._keep_tile(slot, info, drawn)

    def _start_video(self, slot: _SlotPreview, first: FrameInfo, second: FrameInfo, image: RGBImage) -> None:
        fps = DEFAULT_VIDEO_FPS
        if first.timestamp_s is not None and second.timestamp_s is not None:
            step_s = second.timestamp_s - first.timestamp_s
            if step_s > 0:
                fps = min(MAX_VIDEO_FPS, max(MIN_VIDEO_FPS, 1.0 / step_s))
        slot.stem.parent.mkdir(parents=True, exist_ok=True)
        height_px, width_px = image.shape[:2]
        slot.video = Mp4Writer(
            slot.stem.with_name(slot.stem.name + ".mp4"), fps=fps, width_px=width_px, height_px=height_px
        )
        slot.video.write(image)

    def _keep_tile(self, slot: _SlotPreview, info: FrameInfo, drawn: RGBImage) -> None:
        # Every stride-th frame; past twice the sheet's tiles, every other one goes and the stride doubles:
        # constant memory for a slot of any length, tiles spread over all of it.
        if (slot.seen - 1) % slot.stride:
            return
        slot.tiles.append((frame_caption(info), fit_within(drawn, self._options.tile_width_px)))
        if len(slot.tiles) >= 2 * self._options.sheet_tiles:
            slot.tiles = slot.tiles[::2]
            slot.stride *= 2

    def _finish(self, slot: _SlotPreview) -> None:
        if slot.first is None:
            return
        slot.stem.parent.mkdir(parents=True, exist_ok=True)
        if slot.video is None:
            path = slot.stem.with_name(slot.stem.name + ".jpg")
            write_atomic(path, rgb_to_jpeg(slot.first[1]))
            self.written.append(path)
            return
        video, slot.video = slot.video, None  # closed once, even if what follows fails
        self.written.append(video.path)
        video.close()
        step = max(1, len(slot.tiles) / self._options.sheet_tiles)
        chosen = [slot.tiles[int(i * step)] for i in range(min(len(slot.tiles), self._options.sheet_tiles))]
        sheet = contact_sheet(
            [tile for _, tile in chosen],
            captions=[caption for caption, _ in chosen],
            tile_width_px=self._options.tile_width_px,
        )
        path = slot.stem.with_name(slot.stem.name + ".sheet.jpg")
        write_atomic(path, rgb_to_jpeg(sheet))
        self.written.append(path)
