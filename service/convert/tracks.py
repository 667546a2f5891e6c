"""Sampled video frames -> tracks: one object's boxes linked across a slot's frames (pure, no I/O).

Association is greedy in time and optimal per frame: on each sampled frame, the open tracks of a slot
and the frame's detections are matched by the Hungarian method on IoU, within one class only, after
moving each track's last box by its centre's constant velocity. A track that finds no match may miss
up to ``max_gap`` sampled frames before it is closed; a detection that finds no track starts one.

There is no ByteTrack-style second stage for low scores: every detection here already passed the run's
threshold and becomes an annotation, and on synthetic flickering-score clips (score alternating 0.9/0.35,
with and without low-score duplicates, crossing objects) matching high scores first gave the same tracks
or more broken ones, while letting only high scores start tracks dropped detections.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.convert.types import Track, TrackBox
from service.pipeline.frames import FrameResult, MediaKind

TRACKED_MEDIA = frozenset({MediaKind.VIDEO, MediaKind.DICOM, MediaKind.SEQUENCE})
"""Slots whose frames have an order to follow: videos, multi-frame DICOM and image sequences."""
VELOCITY_WINDOW = 4
"""Boxes (the last and up to three before it) a track's velocity is measured over."""


@dataclass(frozen=True, slots=True)
class TrackerOptions:
    """How detections are linked into tracks.

    Attributes:
        iou_gate: least IoU (0-1] between a track's predicted box and a detection for them to match.
        max_gap: sampled frames a track may miss and still be extended; with 2, a track last seen on
            sampled frame 4 can take a detection on frame 5, 6 or 7, and is closed if frame 7 has none.
        min_length: fewest boxes a track needs to be kept. 1 keeps a lone detection as a one-box track,
            so tracking never drops what the detector found.
        motion: predict a track's box by the constant velocity of its centre (per source frame) before
            matching. It keeps a track once it has two boxes and moves more than about half its width
            between samples (IoU under 0.3 unpredicted), and keeps same-class objects that cross apart.
    """

    iou_gate: float = 0.3
    max_gap: int = 2
    min_length: int = 1
    motion: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_gate <= 1.0:
            raise ValueError(f"iou_gate must be in (0, 1], got {self.iou_gate}")
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")
        if self.min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {self.min_length}")


@dataclass(slots=True)
class _OpenTrack:
    """A track being built: its boxes so far and the sampled position it was last seen at."""

    slot: str
    class_id: int
    last_position: int
    boxes: list[TrackBox] = field(default_factory=list)

    def predicted_xyxy_px(self, frame_index: int, *, motion: bool) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = self.boxes[-1].xyxy
        if not motion or len(self.boxes) < 2:
            return x1, y1, x2, y2
        # Velocity over the last few boxes, not the last two: one jittery box must not fling the prediction.
        first, last = self.boxes[-min(len(self.boxes), VELOCITY_WINDOW)], self.boxes[-1]
        elapsed = last.frame_index - first.frame_index
        if elapsed <= 0:
            return x1, y1, x2, y2
        # Centre velocity in px per source frame: sampled frames need not be evenly spaced.
        vx = ((last.xyxy[0] + last.xyxy[2]) - (first.xyxy[0] + first.xyxy[2])) / 2 / elapsed
        vy = ((last.xyxy[1] + last.xyxy[3]) - (first.xyxy[1] + first.xyxy[3])) / 2 / elapsed
        ahead = frame_index - last.frame_index
        return x1 + vx * ahead, y1 + vy * ahead, x2 + vx * ahead, y2 + vy * ahead


def frames_to_tracks(frames: Sequence[FrameResult], options: TrackerOptions | None = None) -> list[Track]:
    """Link the detections of one item's video-like slots into tracks.

    Args:
        frames: one item's frame results, any slots, any order; image and PDF slots are ignored.
        options: tracker settings (defaults: IoU gate 0.3, gap 2 sampled frames, motion on).

    Returns:
        Tracks ordered by slot (first seen first), then by the frame and row where they start;
        ``track_id`` counts from 1 across the item. The same frames always give the same tracks.
    """
    options = options or TrackerOptions()
    by_slot: dict[str, list[FrameResult]] = {}
    for result in frames:
        if result.info.media in TRACKED_MEDIA:
            by_slot.setdefault(result.info.slot, []).append(result)
    built: list[_OpenTrack] = []
    for slot, slot_frames in by_slot.items():
        built.extend(_track_slot(slot, sorted(slot_frames, key=lambda r: r.info.frame_index), options))
    kept = [t for t in built if len(t.boxes) >= options.min_length]
    return [
        Track(track_id=i, slot=t.slot, class_id=t.class_id, boxes=tuple(t.boxes)) for i, t in enumerate(kept, start=1)
    ]


def optional_tracks(frames: Sequence[FrameResult], options: TrackerOptions | None) -> list[Track] | None:
    """``frames_to_tracks`` under ``options``, or None when tracking is off (``options`` None): the Darwin,
    Encord and COCO converters then write one annotation per detection."""
    return None if options is None else frames_to_tracks(frames, options)


def region_tracks(frames: Sequence[FrameResult], options: TrackerOptions | None) -> list[Track]:
    """Tracks for Label Studio, whose video regions are tracks: with tracking off, every detection alone."""
    return single_detection_tracks(frames) if options is None else frames_to_tracks(frames, options)


def single_detection_tracks(frames: Sequence[FrameResult]) -> list[Track]:
    """Every detection of the video-like slots as a one-box track (tracking off), ordered and numbered as
    ``frames_to_tracks`` numbers its tracks: by slot (first seen first), then frame, then row."""
    by_slot: dict[str, list[FrameResult]] = {}
    for result in frames:
        if result.info.media in TRACKED_MEDIA:
            by_slot.setdefault(result.info.slot, []).append(result)
    tracks: list[Track] = []
    for slot, slot_frames in by_slot.items():
        for result in sorted(slot_frames, key=lambda r: r.info.frame_index):
            for row in range(len(result.detections)):
                box = detection_to_track_box(result, row)
                class_id = int(result.detections.class_id[row])
                tracks.append(Track(track_id=len(tracks) + 1, slot=slot, class_id=class_id, boxes=(box,)))
    return tracks


def _track_slot(slot: str, frames: Sequence[FrameResult], options: TrackerOptions) -> list[_OpenTrack]:
    """Every track of one slot, in the order they were started."""
    started: list[_OpenTrack] = []
    alive: list[_OpenTrack] = []
    for position, result in enumerate(frames):
        alive = [t for t in alive if position - t.last_position - 1 <= options.max_gap]
        dets = result.detections
        matches = _match(alive, result, options)
        for track_row, det_row in matches:
            track = alive[track_row]
            track.boxes.append(detection_to_track_box(result, det_row))
            track.last_position = position
        matched = {det_row for _, det_row in matches}
        for det_row in range(len(dets)):
            if det_row in matched:
                continue
            track = _OpenTrack(slot=slot, class_id=int(dets.class_id[det_row]), last_position=position)
            track.boxes.append(detection_to_track_box(result, det_row))
            started.append(track)
            alive.append(track)
    return started


def _match(alive: Sequence[_OpenTrack], result: FrameResult, options: TrackerOptions) -> list[tuple[int, int]]:
    """(track row, detection row) pairs: maximum total IoU, same class, IoU at least the gate."""
    dets = result.detections
    if not alive or not len(dets):
        return []
    predicted = np.array(
        [t.predicted_xyxy_px(result.info.frame_index, motion=options.motion) for t in alive], np.float64
    )
    iou = pairwise_iou(predicted, dets.xyxy.astype(np.float64))
    same_class = np.array([t.class_id for t in alive])[:, None] == dets.class_id[None, :]
    # Pairs below the gate count as nothing, so they cannot pull the optimum away from good pairs.
    iou = np.where(same_class & (iou >= options.iou_gate), iou, 0.0)
    from scipy.optimize import linear_sum_assignment  # here: scipy costs `frames` 0.4 s of imports it never uses

    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] > 0.0]


def detection_to_track_box(result: FrameResult, row: int) -> TrackBox:
    """Row ``row`` of a frame's detections as a ``TrackBox`` (corners copied exactly, pixels)."""
    x1, y1, x2, y2 = (float(v) for v in result.detections.xyxy[row])
    return TrackBox(
        frame_index=result.info.frame_index,
        timestamp_s=result.info.timestamp_s,
        xyxy=(x1, y1, x2, y2),
        confidence=float(result.detections.confidence[row]),
    )


def pairwise_iou(a_xyxy_px: NDArray[np.float64], b_xyxy_px: NDArray[np.float64]) -> NDArray[np.float64]:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4), pixels; returns (n, m)."""
    lt = np.maximum(a_xyxy_px[:, None, :2], b_xyxy_px[None, :, :2])
    rb = np.minimum(a_xyxy_px[:, None, 2:], b_xyxy_px[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a_xyxy_px[:, 2:] - a_xyxy_px[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b_xyxy_px[:, 2:] - b_xyxy_px[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou: NDArray[np.float64] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


_DetectionKey = tuple[str, int, int, float, float, float, float, float]


class TrackLookup:
    """Which track each detection of a frame belongs to.

    Tracks keep boxes, not row numbers, so a detection is found by value: slot, frame index, class,
    corners and score, which ``frames_to_tracks`` copies exactly from the frame it was given.
    Identical detections in one frame take that value's tracks in turn.
    """

    def __init__(self, tracks: Iterable[Track]) -> None:
        self._ids: dict[_DetectionKey, list[int]] = defaultdict(list)
        for track in tracks:
            for box in track.boxes:
                self._ids[(track.slot, box.frame_index, track.class_id, *box.xyxy, box.confidence)].append(
                    track.track_id
                )

    def track_ids(self, result: FrameResult) -> list[int | None]:
        """One entry per detection row: its track id, or None when it is in no track."""
        dets, info = result.detections, result.info
        seen: Counter[_DetectionKey] = Counter()
        ids: list[int | None] = []
        for xyxy, score, class_id in zip(
            dets.xyxy.tolist(), dets.confidence.tolist(), dets.class_id.tolist(), strict=True
        ):
            key: _DetectionKey = (info.slot, info.frame_index, class_id, *xyxy, score)
            candidates = self._ids.get(key, [])
            ids.append(candidates[seen[key]] if seen[key] < len(candidates) else None)
            seen[key] += 1
        return ids
