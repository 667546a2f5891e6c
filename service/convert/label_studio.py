"""Label Studio: read a labeling config, turn one item's predictions into a prediction (pure, no I/O).

Follows docs ``label_studio.md``. Image boxes become ``rectanglelabels`` regions in percent of the image
(0-100, top-left origin). A row with a mask becomes a ``brushlabels`` region (LS's brush RLE, exact) when a
``<BrushLabels>`` control has a label for its class, or a ``polygonlabels`` one (its largest part's outer ring:
LS polygons have no holes) when a ``<PolygonLabels>`` does, the first such control in config order; else its
box (``label_studio_masks``). Video regions are boxes: LS's video tag has no masks.

A video track becomes one ``videorectangle`` region whose ``sequence`` has a keyframe per sampled frame the
track was seen on, and ``enabled: false`` on the last keyframe before a gap and on the last one, so the box is
not interpolated across frames where the detector did not see it.

LS counts a video's frames at the ``framerate`` of its ``<Video>`` tag (24 when missing), not at the file's
real rate, so keyframes are placed by time in *that* rate: ``frame`` is 1-based (LS shows frame N from
(N-1)/fps on), ``time`` = frame / fps as LS itself writes it, and ``framesCount``/``duration`` use it too.

Model classes map to the config's labels by name, case-insensitively; an ``aliases`` map or a
``<Label predicted_values="car,truck">`` attribute (the label-studio-ml-backend convention) renames them.
Boxes of classes no control has a label for are dropped and counted, never sent with an unknown label:
LS accepts unknown labels silently and the editor then shows a box nobody can edit.
"""

from __future__ import annotations

import hashlib
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal
from xml.sax.saxutils import escape

from models.masks import Masks
from service.convert.label_studio_masks import RegionHead, brush_region, polygon_region, row_mask
from service.convert.label_studio_types import (
    LsBoxPct,
    LsImageRegion,
    LsPredictionJson,
    LsRegion,
    LsVideoKeyframe,
    LsVideoRegion,
)
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox, assign_detection_ids, is_tracked, tracks_of

MAX_CONFIG_CHARS = 1_000_000
"""Larger labeling configs are refused before parsing (real ones are a few KB)."""
DEFAULT_FRAME_RATE = 24.0
"""What LS assumes when a ``<Video>`` has no usable ``framerate``."""
_FRAME_TOLERANCE = 1e-3
"""Of an LS frame: a timestamp this close after a frame's start is on that frame (float error, not motion)."""

ObjectKind = Literal["image", "video"]
ResultType = Literal["rectanglelabels", "brushlabels", "polygonlabels", "videorectangle"]
_CONTROLS: dict[str, tuple[ResultType, ObjectKind]] = {
    "rectanglelabels": ("rectanglelabels", "image"),
    "brushlabels": ("brushlabels", "image"),
    "polygonlabels": ("polygonlabels", "image"),
    "videorectangle": ("videorectangle", "video"),
}
_SHAPE_TYPES: frozenset[ResultType] = frozenset({"brushlabels", "polygonlabels"})
"""Image controls that take a mask (BrushLabels exactly, PolygonLabels as its largest part's outer ring)."""
_SLOT_OBJECT: dict[MediaKind, ObjectKind] = {MediaKind.IMAGE: "image", MediaKind.VIDEO: "video"}


@dataclass(frozen=True, slots=True)
class LsObject:
    """An object tag (``<Image>`` or ``<Video>``): what the controls point at.

    Attributes:
        name: the tag's ``name``, the ``to_name`` of its controls.
        kind: ``image`` or ``video``.
        value_key: the task data key holding the media URL (``value="$image"`` -> ``image``), or None
            when ``value`` is not a ``$variable``.
        frame_rate: a video's ``framerate`` attribute as written (``25``, ``$fps``), or None; see
            ``ls_frame_rate`` for the rate LS plays it at.
    """

    name: str
    kind: ObjectKind
    value_key: str | None
    frame_rate: str | None = None


@dataclass(frozen=True, slots=True)
class LsControl:
    """A box control: ``<RectangleLabels>`` on an image, or ``<VideoRectangle>`` on a video.

    Attributes:
        result_type: the ``type`` of the regions it produces.
        from_name: the control's ``name``. For video it is the VideoRectangle's, never the Labels'.
        to_name: the object it annotates.
        labels: its label values, in config order. For video, those of the ``<Labels>`` tags with the
            same ``toName``.
        predicted_values: lower-cased model class -> label, from ``<Label predicted_values="...">``.
    """

    result_type: ResultType
    from_name: str
    to_name: str
    labels: tuple[str, ...]
    predicted_values: Mapping[str, str] = field(default_factory=dict)

    def label_for(self, class_name: str, aliases: Mapping[str, str]) -> str | None:
        """This control's label for a model class, or None: alias, then predicted_values, then the name."""
        by_lower = {label.lower(): label for label in reversed(self.labels)}  # first one wins on a clash
        key = class_name.strip().lower()
        if key in aliases:
            return by_lower.get(aliases[key].strip().lower())
        return self.predicted_values.get(key) or by_lower.get(key)


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """The parts of a labeling config preannotation can fill: box controls and their objects."""

    objects: tuple[LsObject, ...]
    controls: tuple[LsControl, ...]

    def object(self, name: str) -> LsObject | None:
        return next((o for o in self.objects if o.name == name), None)

    def controls_for(self, object_name: str) -> list[LsControl]:
        return [c for c in self.controls if c.to_name == object_name]

    def needs_task_data(self) -> bool:
        """Whether a video's frame rate comes from each task's data (``framerate="$key"``)."""
        return any(isinstance(o.frame_rate, str) and o.frame_rate.strip().startswith("$") for o in self.objects)

    def targets(self) -> list[LsObject]:
        """Objects at least one control points at, in config order: what a task needs media for (call it on
        ``for_run``'s config: a run without masks has no use for a brush-only object)."""
        return [o for o in self.objects if self.controls_for(o.name)]

    def for_run(self, *, masks: bool) -> LabelConfig:
        """The config as a run sees it: one that makes no masks fills box controls only, so its targets and its
        regions are what they were before brush and polygon controls were read (a box never becomes a brush)."""
        if masks:
            return self
        return replace(self, controls=tuple(c for c in self.controls if c.result_type not in _SHAPE_TYPES))

    def takes_masks(self, object_name: str) -> bool:
        """Whether a brush or polygon control points at the object (only those get a segmenter's masks)."""
        return any(c.result_type in _SHAPE_TYPES for c in self.controls_for(object_name))


@dataclass(frozen=True, slots=True)
class LsPrediction:
    """One task's prediction.

    Attributes:
        result: the regions (``rectanglelabels`` / ``videorectangle``).
        score: mean region score (0 when there are none): LS sorts and samples tasks by it.
        model_version: LS shows predictions whose version is the project's ``model_version``.
        dropped: regions left out, by model class name (no control has a label for that class).
    """

    result: list[LsRegion]
    score: float
    model_version: str
    dropped: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> LsPredictionJson:
        """The body LS takes: ``{"result", "score", "model_version"}``."""
        return {"result": self.result, "score": self.score, "model_version": self.model_version}


def parse_label_config(xml: str) -> LabelConfig:
    """Find the box controls of a labeling config and the objects they annotate.

    ``toName`` may list several objects (comma-separated): the control applies to each. Controls on an
    object of the wrong kind (RectangleLabels on a Video) or on no object are ignored, as are all other
    tags.

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` when the config is not well-formed XML or is too large.
    """
    if len(xml) > MAX_CONFIG_CHARS:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"label config is over {MAX_CONFIG_CHARS} characters")
    try:
        # The stdlib parser resolves no external entities, and Python's expat (>= 2.4) caps entity expansion.
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"label config is not valid XML: {exc}") from None
    elements = list(root.iter())
    objects = tuple(_object(el) for el in elements if _tag(el) in ("image", "video") and el.get("name"))
    kinds = {o.name: o.kind for o in objects}
    controls: list[LsControl] = []
    for el in elements:
        kind = _CONTROLS.get(_tag(el))
        name = el.get("name")
        if kind is None or not name:
            continue
        result_type, object_kind = kind
        for to_name in _names(el.get("toName", "")):
            if kinds.get(to_name) != object_kind:
                continue
            # VideoRectangle has no labels of its own: they live in <Labels> tags on the same video.
            sources = [el] if object_kind == "image" else [e for e in elements if _is_labels_for(e, to_name)]
            labels, predicted = _labels(sources)
            controls.append(LsControl(result_type, name, to_name, labels, predicted))
    return LabelConfig(objects=objects, controls=tuple(controls))


def _tag(el: ET.Element) -> str:
    # LS matches tag names case-insensitively (<rectanglelabels> works).
    return el.tag.lower() if isinstance(el.tag, str) else ""


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _object(el: ET.Element) -> LsObject:
    value = el.get("value", "")
    kind: ObjectKind = "image" if _tag(el) == "image" else "video"
    key = value[1:] if value.startswith("$") and len(value) > 1 else None
    # LS lower-cases attribute names, so its documented spelling frameRate= works as well as framerate=.
    rate = next((v for k, v in el.attrib.items() if k.lower() == "framerate"), None)
    return LsObject(name=el.get("name", ""), kind=kind, value_key=key, frame_rate=rate)


def ls_frame_rate(video: LsObject, task_data: Mapping[str, object] | None, *, source_fps: float | None = None) -> float:
    """The frame rate LS counts ``video``'s frames at in one task, normalised as its Video tag does.

    ``framerate`` is a literal or ``$key`` (read from the task's data); a value that is not a positive
    finite number gives 24 (LS's default), one below 1 is a frame duration and is inverted. With ``$key``
    but no task data at hand (``task_data`` None), the source's fps is assumed: label_studio.md §5 tells
    projects to put the video's real rate there.
    """
    raw: object = video.frame_rate
    if isinstance(raw, str) and raw.strip().startswith("$"):
        if task_data is None:
            return source_fps if source_fps and math.isfinite(source_fps) and source_fps > 0 else DEFAULT_FRAME_RATE
        raw = task_data.get(raw.strip()[1:])
    fps = ls_number(raw)
    if fps is None or fps <= 0:
        return DEFAULT_FRAME_RATE  # LS: Number(...) is 0 or NaN -> 24 (it would invert a negative one: useless)
    return 1.0 / fps if fps < 1 else fps


def ls_number(value: object) -> float | None:
    """A finite number from a config attribute or task data value (a number or numeric string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _is_labels_for(el: ET.Element, to_name: str) -> bool:
    return _tag(el) == "labels" and to_name in _names(el.get("toName", ""))


def _labels(sources: Sequence[ET.Element]) -> tuple[tuple[str, ...], dict[str, str]]:
    labels: list[str] = []
    predicted: dict[str, str] = {}
    for source in sources:
        for label in source.iter():
            value = label.get("value")
            if _tag(label) != "label" or not value or value in labels:
                continue
            labels.append(value)
            for name in _names(label.get("predicted_values", "")):
                predicted.setdefault(name.lower(), value)
    return tuple(labels), predicted


def item_to_ls_result(
    item: ItemPredictions,
    model: ModelRef,
    config: LabelConfig,
    *,
    aliases: Mapping[str, str] | None = None,
    task_data: Mapping[str, object] | None = None,
    masks: bool | None = None,
) -> LsPrediction:
    """Build one task's prediction from the item's predictions.

    A slot goes to the object of the same name (the sync command names slots after objects), or, when
    the config has exactly one object of the slot's kind with box controls, to that one. Image slots
    produce ``rectanglelabels`` regions, video slots one ``videorectangle`` region per track. Other
    slot kinds (DICOM, sequences, PDF) have no LS object and are skipped. Image rows with a mask
    (``Detections.masks``) go to a brush or polygon control when one has a label for their class.

    Args:
        item: the task's slots and frame results. Video regions are the tracks its tracker ids name
            (``Detections.tracker_id``); untracked, every detection is a region of its own (``assign_detection_ids``).
        model: the model behind them; its ``version`` is the prediction's ``model_version``.
        config: the project's parsed labeling config.
        aliases: model class name -> LS label, case-insensitive; wins over name matching.
        task_data: the task's ``data``, where a ``<Video framerate="$key">`` takes LS's fps from; None when
            the task is not at hand (then the source's fps is assumed for ``$key``).
        masks: the run makes masks (``LabelConfig.for_run``); None: whether any of the item's frames carries them.
            Without masks only box controls are filled, exactly as before masks existed.

    Returns:
        The prediction; regions of classes no control has a label for are counted in ``dropped``
        (one per image box, one per video track).
    """
    lower_aliases = {k.strip().lower(): v for k, v in (aliases or {}).items()}
    result: list[LsRegion] = []
    dropped: Counter[str] = Counter()
    item = with_region_ids(item)
    if masks is None:
        masks = any(f.detections.masks is not None for f in item.frames)
    config = config.for_run(masks=masks)
    for meta in item.slots:
        kind = _SLOT_OBJECT.get(meta.media)
        target = _object_for_slot(config, meta.slot, kind) if kind else None
        if kind is None or target is None:
            continue
        controls = config.controls_for(target.name)
        frames = item.frames_of_slot(meta.slot)
        if kind == "image":
            for frame in frames:
                result += _image_regions(frame, model, controls, lower_aliases, dropped)
        else:
            fps_ls = ls_frame_rate(target, task_data, source_fps=meta.fps)
            result += _video_regions(meta, frames, tracks_of(frames), fps_ls, model, controls, lower_aliases, dropped)
    scores = [r["score"] for r in result]
    score = round(sum(scores) / len(scores), 5) if scores else 0.0
    return LsPrediction(result=result, score=score, model_version=model.version, dropped=dropped)


def with_region_ids(item: ItemPredictions) -> ItemPredictions:
    """The item with every video detection in a region: LS video regions are tracks, so with tracking off
    (no tracker ids) each detection is a one-box track, numbered across the item. Call it on the whole item
    before splitting it by slot, so region ids do not depend on the split."""
    if is_tracked(item.frames):
        return item
    return replace(item, frames=tuple(assign_detection_ids(item.frames)))


def _object_for_slot(config: LabelConfig, slot: str, kind: ObjectKind) -> LsObject | None:
    named = config.object(slot)
    if named is not None:
        return named if named.kind == kind and config.controls_for(named.name) else None
    candidates = [o for o in config.targets() if o.kind == kind]
    return candidates[0] if len(candidates) == 1 else None


def _class_name(model: ModelRef, class_id: int) -> str:
    names = model.class_names
    return names[class_id] if 0 <= class_id < len(names) else f"class_{class_id}"


def _pick(controls: Sequence[LsControl], class_name: str, aliases: Mapping[str, str]) -> tuple[LsControl, str] | None:
    # The first control with a label for the class takes the box: one box, one region.
    for control in controls:
        label = control.label_for(class_name, aliases)
        if label is not None:
            return control, label
    return None


def _pick_image(
    controls: Sequence[LsControl], class_name: str, aliases: Mapping[str, str], masked: bool
) -> tuple[LsControl, str] | None:
    """The control a row goes to: with a mask, the first brush or polygon control with a label for its class;
    a box goes to a rectangle control; either falls back to the other kind (a box drawn as a brush or polygon,
    a mask as its box)."""
    shaped = [c for c in controls if c.result_type in _SHAPE_TYPES]
    boxes = [c for c in controls if c.result_type == "rectanglelabels"]
    return _pick([*shaped, *boxes] if masked else [*boxes, *shaped], class_name, aliases)


def _image_regions(
    frame: FrameResult,
    model: ModelRef,
    controls: Sequence[LsControl],
    aliases: Mapping[str, str],
    dropped: Counter[str],
) -> list[LsImageRegion]:
    info, dets = frame.info, frame.detections
    regions: list[LsImageRegion] = []
    for row, (xyxy, score, class_id) in enumerate(
        zip(dets.xyxy.tolist(), dets.confidence.tolist(), dets.class_id.tolist(), strict=True)
    ):
        class_name = _class_name(model, class_id)
        mask = row_mask(dets.masks, row)
        picked = _pick_image(controls, class_name, aliases, mask is not None)
        if picked is None:
            dropped[class_name] += 1
            continue
        box = xyxy_to_xywh_pct(xyxy, info.width, info.height)
        if box is None:  # entirely outside the image: nothing to show
            continue
        control, label = picked
        head = RegionHead(
            region_id(control.from_name, info.slot, "box", info.frame_index, row),
            control.from_name,
            control.to_name,
            label,
            info.width,
            info.height,
            round(score, 5),
        )
        region = _image_region(control.result_type, head, box, mask)
        if region is not None:
            regions.append(region)
    return regions


def _image_region(result_type: ResultType, head: RegionHead, box: LsBoxPct, mask: Masks | None) -> LsImageRegion | None:
    if result_type == "brushlabels":
        return brush_region(head, mask, box)
    if result_type == "polygonlabels":
        return polygon_region(head, mask, box)
    return {
        "id": head.id,
        "from_name": head.from_name,
        "to_name": head.to_name,
        "type": "rectanglelabels",
        "original_width": head.width_px,
        "original_height": head.height_px,
        "image_rotation": 0,  # our boxes are in displayed (EXIF-rotated) pixels already
        "value": {**box, "rotation": 0, "rectanglelabels": [head.label]},
        "score": head.score,
    }


def _video_regions(
    meta: SlotMeta,
    frames: Sequence[FrameResult],
    tracks: Sequence[Track],
    fps_ls: float,
    model: ModelRef,
    controls: Sequence[LsControl],
    aliases: Mapping[str, str],
    dropped: Counter[str],
) -> list[LsVideoRegion]:
    fps_src = meta.fps if meta.fps and math.isfinite(meta.fps) and meta.fps > 0 else None
    # A track's box on sampled position p, then on p + 1, is one visible span; a skipped position is a gap.
    position = {index: pos for pos, index in enumerate(sorted({f.info.frame_index for f in frames}))}
    frames_count = _ls_frames_count(meta, fps_ls, max(position, default=0) + 1)
    regions: list[LsVideoRegion] = []
    for track in tracks:
        class_name = _class_name(model, track.class_id)
        picked = _pick(controls, class_name, aliases)
        if picked is None:
            dropped[class_name] += 1
            continue
        control, label = picked
        boxes = sorted(track.boxes, key=lambda b: b.frame_index)
        sequence: list[LsVideoKeyframe] = []
        for i, box in enumerate(boxes):
            xywh = xyxy_to_xywh_pct(box.xyxy, meta.width, meta.height)
            if xywh is None:
                continue
            following = boxes[i + 1].frame_index if i + 1 < len(boxes) else None
            contiguous = following is not None and position.get(following, -1) == position.get(box.frame_index, -2) + 1
            frame = track_box_to_ls_frame(box, fps_src, fps_ls)
            key: LsVideoKeyframe = {
                "frame": frame,
                "enabled": contiguous,
                "rotation": 0,
                **xywh,
                "time": round(frame / fps_ls, 6),
            }
            if sequence and sequence[-1]["frame"] == frame:
                # LS counts fewer frames than the source has: LS frame N shows the latest source frame
                # before it, so that box wins, and one keyframe per frame is all the editor can hold.
                sequence[-1] = key
            else:
                sequence.append(key)
        if not sequence:
            continue
        sequence[-1]["enabled"] = False  # a box dropped for zero size must not leave the span open
        count = max(frames_count, sequence[-1]["frame"])
        regions.append(
            {
                "id": region_id(control.from_name, meta.slot, "track", 0, track.track_id),
                "from_name": control.from_name,
                "to_name": control.to_name,
                "type": "videorectangle",
                "value": {
                    "framesCount": count,
                    "duration": round(count / fps_ls, 6),
                    "sequence": sequence,
                    "labels": [label],
                },
                "score": round(track.confidence, 5),
            }
        )
    return regions


def track_box_to_ls_frame(box: TrackBox, fps_src: float | None, fps_ls: float) -> int:
    """The 1-based LS frame, at LS's ``fps_ls``, whose picture is the box's source frame.

    LS seeks frame N to just after (N-1)/fps_ls, so the first LS frame starting at or after the box's
    time shows it (label_studio.md §5); ``round`` would pick one starting before it, which shows the
    previous source frame whenever LS counts more frames than the source has. Time is the frame's
    timestamp, else ``frame_index / fps_src``; with no clock at all, source frames are LS frames.
    """
    seconds = box.timestamp_s
    if seconds is None or not math.isfinite(seconds):
        if fps_src is None:
            return box.frame_index + 1
        seconds = box.frame_index / fps_src
    return max(1, math.ceil(seconds * fps_ls - _FRAME_TOLERANCE) + 1)


def _ls_frames_count(meta: SlotMeta, fps_ls: float, sampled: int) -> int:
    # framesCount = round(duration * fps) in LS's fps; the player's duration includes the last frame's length.
    duration = meta.playback_duration_s
    if duration and math.isfinite(duration) and duration > 0:
        return max(1, round(duration * fps_ls))
    return meta.frame_count or sampled  # no clock: source frames are LS frames


def xyxy_to_xywh_pct(xyxy_px: Sequence[float], width_px: int, height_px: int) -> LsBoxPct | None:
    """Pixel corners -> LS ``{"x", "y", "width", "height"}`` in percent of the image, top-left origin.

    The box is clipped to the image first (LS validation wants 0-100); None when nothing is left of it
    or the image size is unknown.
    """
    if width_px <= 0 or height_px <= 0 or not all(math.isfinite(v) for v in xyxy_px):
        return None
    x1, y1, x2, y2 = xyxy_px
    x1, x2 = (min(max(v, 0.0), width_px) for v in (x1, x2))
    y1, y2 = (min(max(v, 0.0), height_px) for v in (y1, y2))
    if x2 <= x1 or y2 <= y1:
        return None
    return {
        "x": round(100.0 * x1 / width_px, 4),
        "y": round(100.0 * y1 / height_px, 4),
        "width": round(100.0 * (x2 - x1) / width_px, 4),
        "height": round(100.0 * (y2 - y1) / height_px, 4),
    }


def region_id(from_name: str, slot: str, kind: str, frame_index: int, number: int) -> str:
    """A 10-character region id from where the region is: the same input always gives the same ids."""
    key = "\x1f".join((from_name, slot, kind, str(frame_index), str(number)))
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:10]


def default_label_config_xml(class_names: Sequence[str], kind: ObjectKind = "image", *, masks: bool = False) -> str:
    """A labeling config for a project that takes our predictions as they are, one label per model class:
    boxes on ``$image``, or box tracks on ``$video`` (LS wants every ``$key`` of a config in every task, so
    image and video tasks live in separate projects). The video plays at the task's ``$fps`` (LS does not
    require that key; without it LS counts 24 fps, and so does ``item_to_ls_result`` given that data).
    ``masks`` (a run that makes masks) adds ``<BrushLabels name="mask">`` beside the boxes on images: masks are
    written exactly, rows without one stay boxes; videos have no mask tag in LS."""
    labels = "".join(f'<Label value="{escape(name, {chr(34): "&quot;"})}"/>' for name in class_names)
    if kind == "image":
        brush = f'<BrushLabels name="mask" toName="image">{labels}</BrushLabels>' if masks else ""
        return (
            f'<View><Image name="image" value="$image"/>{brush}'
            f'<RectangleLabels name="label" toName="image">{labels}</RectangleLabels></View>'
        )
    return (
        f'<View><Video name="video" value="$video" framerate="$fps"/><VideoRectangle name="box" toName="video"/>'
        f'<Labels name="videoLabels" toName="video">{labels}</Labels></View>'
    )
