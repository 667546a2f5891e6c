"""Thumbnails of the worst errors for ``report.html`` (``evaluate --media DIR``): the item's media found under the
given folders, only the frames with a picked error decoded, each error cropped with some context around it and
the benchmark box and the candidate box drawn in two fixed colours."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import supervision as sv

from models.types import RGBImage
from service.errors import PreannotateError
from service.evaluate.evaluation import Evaluation
from service.evaluate.frame_clock import open_shown_frames
from service.evaluate.types import BoxXYXY
from service.evaluate.worst import ErrorCase, ErrorKind
from service.pipeline.frames import Frame
from service.pipeline.media import SlotSpec
from service.pipeline.options import MediaLimits
from service.render.encode import rgb_to_jpeg

log = logging.getLogger(__name__)

BENCHMARK_RGB = (0, 200, 0)  # green: what should have been drawn
CANDIDATE_RGB = (255, 0, 255)  # magenta: what the candidate drew; neither is in supervision's class palette
CONTEXT = 0.5  # the crop reaches this many box sizes past the boxes on each side...
MIN_CONTEXT_PX = 16  # ...and at least this many pixels, so a tiny object shows its surroundings


@dataclass(frozen=True, slots=True)
class ThumbnailOptions:
    """``per_class``: thumbnails per class and kind (false positives, misses); ``size_px``: a thumbnail's
    longer side (crops are scaled to it, up or down, so small objects stay visible)."""

    per_class: int = 4
    size_px: int = 256

    def __post_init__(self) -> None:
        if self.per_class < 1 or self.size_px < 32:
            raise ValueError(f"thumbnail limits too small: {self}")


class MediaLookup:
    """Finds an item's file under ``--media`` folders: ``DIR/ITEM`` (``DIR/ITEM/SLOT`` for a named slot), else
    the one file under a folder with the item's file name (none when two share it)."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self._roots = [Path(r) for r in roots]
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, item: str, slot: str) -> Path | None:
        """The item's (or its named slot's) file; None when not found, or when the benchmark's key or slot
        climbs out of the folders (``..``, or an absolute slot: joined, it would replace the folder)."""
        item_path, slot_path = PurePosixPath(item), PurePosixPath(slot)
        if ".." in item_path.parts or ".." in slot_path.parts or slot_path.is_absolute():
            return None  # a key that climbs out of the folder names nothing in it
        # an absolute item key (a path on the labelling machine) is found by its file name alone, below
        relative = [] if item_path.is_absolute() else [item_path, *([item_path / slot_path] if slot != "0" else [])]
        for root in self._roots:
            for rel in reversed(relative):  # the slot's own file before the item's
                path = root / rel
                if path.is_file():
                    return path
        found = self._names().get(PurePosixPath(item).name, [])
        return found[0] if len(found) == 1 else None

    def _names(self) -> dict[str, list[Path]]:
        if self._by_name is None:  # walked once, only when an exact path failed
            names: dict[str, list[Path]] = defaultdict(list)
            for root in self._roots:
                for path in root.rglob("*"):
                    if path.is_file():
                        names[path.name].append(path)
            self._by_name = names
        return self._by_name


@dataclass(frozen=True, slots=True)
class Thumbnail:
    case: ErrorCase
    jpeg: bytes


@dataclass(slots=True)
class Gallery:
    """Per candidate, class and kind: the thumbnails, worst first; and the items they could not be made for."""

    thumbnails: dict[str, dict[str, dict[ErrorKind, list[Thumbnail]]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # item keys whose media were not found
    unreadable: list[str] = field(default_factory=list)  # "item: reason" for media that would not decode
    off_frame: list[str] = field(default_factory=list)  # "item frame N: box ..." for errors drawn off the picture
    errors_without_media: int = 0

    def of(self, candidate: str) -> dict[str, dict[ErrorKind, list[Thumbnail]]]:
        return self.thumbnails.get(candidate, {})


def to_pixels(box: BoxXYXY, case: ErrorCase, width_px: int, height_px: int) -> BoxXYXY:
    """A case's box in the decoded frame's pixels, as ``render`` scales shapes (``frame_shapes``): percent when
    neither side knew the size; pixels of another size (a benchmark labelled on the original, ``--media``
    holding a smaller copy) scaled to the decoded frame."""
    if not case.pixels:
        sx, sy = width_px / 100.0, height_px / 100.0
    elif case.width and case.height:
        sx, sy = width_px / case.width, height_px / case.height
    else:
        return box
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def clip_to_frame(box: BoxXYXY, width_px: int, height_px: int) -> BoxXYXY | None:
    """The part of ``box`` inside the frame; None when nothing of it is (a box drawn off the picture)."""
    x1, y1 = min(max(box[0], 0.0), width_px), min(max(box[1], 0.0), height_px)
    x2, y2 = min(max(box[2], 0.0), width_px), min(max(box[3], 0.0), height_px)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def crop_window(boxes: Sequence[BoxXYXY], width_px: int, height_px: int) -> tuple[int, int, int, int]:
    """The part of the frame a thumbnail shows: the boxes' union widened by ``CONTEXT``, clipped to the frame."""
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    pad_x = max(MIN_CONTEXT_PX, CONTEXT * (x2 - x1))
    pad_y = max(MIN_CONTEXT_PX, CONTEXT * (y2 - y1))
    left, top = max(0, math.floor(x1 - pad_x)), max(0, math.floor(y1 - pad_y))
    right, bottom = min(width_px, math.ceil(x2 + pad_x)), min(height_px, math.ceil(y2 + pad_y))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def _box_annotator(rgb: tuple[int, int, int], size_px: int) -> sv.BoxAnnotator:
    # one fixed colour per side (INDEX: a single colour has nothing to look up)
    return sv.BoxAnnotator(
        color=sv.Color(*rgb), thickness=max(2, round(size_px / 85)), color_lookup=sv.ColorLookup.INDEX
    )


def _boxes_in_frame(case: ErrorCase, width_px: int, height_px: int) -> dict[tuple[int, int, int], BoxXYXY]:
    """Colour -> the case's boxes in the frame's pixels, clipped to it; empty when the error's own box lies
    wholly outside (a nearest box wholly outside is left out, the error itself still shown)."""
    own = clip_to_frame(to_pixels(case.shape.xyxy, case, width_px, height_px), width_px, height_px)
    if own is None:
        return {}
    boxes: dict[tuple[int, int, int], BoxXYXY] = {}
    for rgb, box in ((BENCHMARK_RGB, case.benchmark_box), (CANDIDATE_RGB, case.candidate_box)):
        clipped = None if box is None else clip_to_frame(to_pixels(box, case, width_px, height_px), width_px, height_px)
        if clipped is not None:
            boxes[rgb] = clipped
    return boxes


def draw_case(image: RGBImage, case: ErrorCase, size_px: int) -> RGBImage | None:
    """The error's crop of ``image`` (a full frame), scaled so its longer side is ``size_px``, with the benchmark
    box in ``BENCHMARK_RGB`` and the candidate box in ``CANDIDATE_RGB`` (whichever of the two exist, clipped to
    the frame); None when the error's box lies wholly outside the frame (nothing of it to show)."""
    height_px, width_px = image.shape[:2]
    boxes = _boxes_in_frame(case, width_px, height_px)
    if not boxes:
        return None
    left, top, right, bottom = crop_window(list(boxes.values()), width_px, height_px)
    scale = size_px / max(right - left, bottom - top)
    size = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    crop = cv2.resize(np.ascontiguousarray(image[top:bottom, left:right]), size, interpolation=interpolation)
    # supervision draws on numpy images in OpenCV's BGR order (its colours are RGB): draw on a BGR copy
    canvas: RGBImage = np.ascontiguousarray(np.asarray(crop, np.uint8)[:, :, ::-1])
    for rgb, (x1, y1, x2, y2) in boxes.items():
        xyxy = np.array([[(x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale]])
        canvas = _box_annotator(rgb, size_px).annotate(canvas, sv.Detections(xyxy=xyxy.astype(np.float32)))
    return np.ascontiguousarray(np.asarray(canvas, np.uint8)[:, :, ::-1])


def _decode(
    path: Path, item: str, slot: str, cases: list[ErrorCase], limits: MediaLimits
) -> Iterator[tuple[Frame, list[ErrorCase]]]:
    """Each decoded frame of ``path`` that cases are on, with those cases; only those frames are decoded."""
    reader, to_source = open_shown_frames(item, SlotSpec(slot, (path,)), ((c.frame, c.fps) for c in cases), limits)
    left: dict[int, list[ErrorCase]] = defaultdict(list)
    for case in cases:  # a frame counted at another rate than the file's: the one on screen at its time
        left[to_source[case.frame, case.fps]].append(case)
    try:
        for frame in reader:  # image sequences decode every frame: the ones not wanted are passed over
            on_frame = left.pop(frame.info.frame_index, None)
            if on_frame:
                yield frame, on_frame
            if not left:
                break
    finally:
        reader.close()


Picked = dict[str, dict[str, dict[ErrorKind, list[ErrorCase]]]]
"""Candidate -> class -> kind -> its worst cases."""


def _jpegs(
    picked: Picked, lookup: MediaLookup, options: ThumbnailOptions, limits: MediaLimits, out: Gallery
) -> dict[int, bytes]:
    """id(case) -> its thumbnail, for the cases whose media were found and whose frame decoded; each unit's
    media opened once for every candidate's cases on it."""
    by_unit: dict[tuple[str, str], list[ErrorCase]] = defaultdict(list)
    for classes in picked.values():
        for kinds in classes.values():
            for cases in kinds.values():
                for case in cases:
                    by_unit[(case.item, case.slot)].append(case)
    jpegs: dict[int, bytes] = {}
    missing: set[str] = set()
    for (item, slot), cases in sorted(by_unit.items()):
        path = lookup.find(item, slot)
        if path is None:
            missing.add(item)
            continue
        try:
            for frame, on_frame in _decode(path, item, slot, cases, limits):
                for case in on_frame:
                    drawn = draw_case(frame.image, case, options.size_px)
                    if drawn is None:
                        out.off_frame.append(_off_frame(case, frame.info.width, frame.info.height))
                    else:
                        jpegs[id(case)] = rgb_to_jpeg(drawn)
        except PreannotateError as exc:  # a corrupt or refused file costs its thumbnails, not the report
            log.info("no thumbnails for %s: %s", item, exc)
            out.unreadable.append(f"{item}: {exc}")
        except Exception as exc:  # a decoder's or OpenCV's own error on one file: the same, and worth a warning
            log.warning("no thumbnails for %s: %s: %s", item, type(exc).__name__, exc)
            out.unreadable.append(f"{item}: {type(exc).__name__}: {exc}")
    out.missing = sorted(missing)
    return jpegs


def _off_frame(case: ErrorCase, width_px: int, height_px: int) -> str:
    box = ", ".join(f"{v:g}" for v in case.shape.xyxy)
    return f"{case.item} frame {case.frame}: box ({box}) lies outside the {width_px}x{height_px} frame"


def make_gallery(
    evaluation: Evaluation, lookup: MediaLookup, options: ThumbnailOptions, limits: MediaLimits
) -> Gallery:
    """Thumbnails of every candidate's kept worst errors (``evaluate(worst_per_class=...)``)."""
    picked: Picked = {r.dataset.name: r.worst.worst() for r in evaluation.candidates if r.worst is not None}
    out = Gallery()
    jpegs = _jpegs(picked, lookup, options, limits, out)
    for name, classes in picked.items():
        per_class = out.thumbnails.setdefault(name, {})
        for label, kinds in classes.items():
            for kind, cases in kinds.items():
                shown = [Thumbnail(c, jpegs[id(c)]) for c in cases if id(c) in jpegs]
                out.errors_without_media += len(cases) - len(shown)
                if shown:
                    per_class.setdefault(label, {})[kind] = shown
    return out
