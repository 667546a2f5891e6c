"""Sampled video frames -> tracker ids: one object's boxes linked across a slot's frames (pure, no I/O).

The tracker is a pipeline stage (decode -> infer -> track -> convert): it fills ``Detections.tracker_id`` once,
where an item's predictions are made, and converters only read it (``tracks_of`` groups rows by id).

Association is greedy in time and optimal per frame: on each sampled frame, the open tracks of a slot
and the frame's detections are matched by the Hungarian method on IoU, within one class only, after
moving each track's last box by its centre's constant velocity. A track that finds no match may miss
up to ``max_gap`` sampled frames before it is closed; a detection that finds no track starts one.

By default there is no ByteTrack-style second stage for low scores: every detection here already passed the
run's threshold and becomes an annotation, and on synthetic flickering-score clips (score alternating
0.9/0.35, with and without low-score duplicates, crossing objects) matching high scores first gave the same
tracks or more broken ones, while letting only high scores start tracks dropped detections. It is there as an
option (``TrackerOptions.high_score``) for runs with a low threshold, where low scores are mostly noise: the
detections scoring at least ``high_score`` are matched first and only they start tracks, then the rest are
matched to the tracks still unmatched; a low-score detection that extends no track is in none (``NO_TRACK``),
so Darwin, Encord and Label Studio leave it out and COCO writes it without ``track_id``.

A kept library was weighed (``trackers``' ByteTrackTracker; supervision 0.31 no longer ships ByteTrack): it
matches across classes, gives a track's first detection no id (-1), numbers per tracker instance, and needs
timestamps for uneven sampling, so it did worse than this tracker on the sampled-frame cases tested here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from models.ops.boxes import box_iou_matrix
from service.pipeline.frames import FrameResult, MediaKind

TRACKED_MEDIA = frozenset({MediaKind.VIDEO, MediaKind.DICOM, MediaKind.SEQUENCE})
"""Slots whose frames have an order to follow: videos, multi-frame DICOM and image sequences."""
VELOCITY_WINDOW = 4
"""Boxes (the last and up to three before it) a track's velocity is measured over."""
NO_TRACK = -1
"""The tracker id of a detection in no kept track: its track was shorter than ``min_length``, or (two-stage
tracking, ``TrackerOptions.high_score``) it scored low and extended no track."""


@dataclass(frozen=True, slots=True)
class TrackBox:
    """A track's box on one sampled frame."""

    frame_index: int
    timestamp_s: float | None
    xyxy: tuple[float, float, float, float]
    confidence: float


@dataclass(frozen=True, slots=True)
class Track:
    """One object followed across a video's sampled frames: one class, boxes in frame order.

    Attributes:
        track_id: unique within the item, from 1.
        slot: the slot the frames came from.
        class_id: index into the model's class names.
        boxes: one per sampled frame the object was detected on, in frame order (gaps possible).
    """

    track_id: int
    slot: str
    class_id: int
    boxes: tuple[TrackBox, ...]

    @property
    def confidence(self) -> float:
        """Mean box confidence: the track's score."""
        return sum(b.confidence for b in self.boxes) / len(self.boxes)


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
        high_score: None: every detection is matched at once and may start a track. A score in (0, 1]:
            ByteTrack's two stages: detections scoring at least this are matched first and only they start
            tracks; the others then extend the tracks left unmatched, or are in no track (``NO_TRACK``).
    """

    iou_gate: float = 0.3
    max_gap: int = 2
    min_length: int = 1
    motion: bool = True
    high_score: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_gate <= 1.0:
            raise ValueError(f"iou_gate must be in (0, 1], got {self.iou_gate}")
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")
        if self.min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {self.min_length}")
        if self.high_score is not None and not 0.0 < self.high_score <= 1.0:
            raise ValueError(f"high_score must be in (0, 1], got {self.high_score}")


@dataclass(slots=True)
class _OpenTrack:
    """A track being built: its boxes so far, where they are (sampled position, detection row), and the
    sampled position it was last seen at."""

    class_id: int
    last_position: int
    boxes: list[TrackBox] = field(default_factory=list)
    rows: list[tuple[int, int]] = field(default_factory=list)

    def add(self, result: FrameResult, position: int, row: int) -> None:
        self.boxes.append(detection_to_track_box(result, row))
        self.rows.append((position, row))
        self.last_position = position

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


def assign_tracker_ids(frames: Sequence[FrameResult], options: TrackerOptions | None) -> list[FrameResult]:
    """Link the detections of each item's video-like slots into tracks: fill their ``tracker_id`` once.

    Args:
        frames: frame results of one or more items, any slots, any order; image and PDF frames pass unchanged.
        options: tracker settings; None when tracking is off: every frame passes unchanged (``tracker_id`` None).

    Returns:
        ``frames`` in the same order, video-like ones with ``tracker_id`` set: ids count from 1 across an item,
        ordered by slot (first seen first), then by the frame and row where the track starts; a detection
        in no kept track (shorter than ``min_length``, or a low score that extended none) gets ``NO_TRACK``.
        The same frames always give the same ids.
    """
    if options is None:
        return list(frames)
    ids = _untracked_ids(frames)
    for slots in _positions_by_item_slot(frames).values():
        next_id = 1
        for positions in slots.values():
            ordered = sorted(positions, key=lambda i: frames[i].info.frame_index)
            for track in _track_slot([frames[i] for i in ordered], options):
                if len(track.boxes) < options.min_length:
                    continue
                for position, row in track.rows:
                    ids[ordered[position]][row] = next_id
                next_id += 1
    return _with_ids(frames, ids)


def assign_detection_ids(frames: Sequence[FrameResult]) -> list[FrameResult]:
    """Every detection of the video-like frames as a track of its own (Label Studio's regions with tracking
    off): ids numbered as ``assign_tracker_ids`` numbers tracks, by slot (first seen first), then frame, then row."""
    ids = _untracked_ids(frames)
    for slots in _positions_by_item_slot(frames).values():
        next_id = 1
        for positions in slots.values():
            for i in sorted(positions, key=lambda i: frames[i].info.frame_index):
                ids[i][:] = np.arange(next_id, next_id + len(ids[i]), dtype=np.int64)
                next_id += len(ids[i])
    return _with_ids(frames, ids)


def is_tracked(frames: Sequence[FrameResult]) -> bool:
    """Whether the tracker filled these frames' ids (False when tracking was off, or for image frames)."""
    return any(f.detections.tracker_id is not None for f in frames)


def tracks_of(frames: Sequence[FrameResult]) -> list[Track]:
    """The tracks the frames' tracker ids name: rows grouped by id (never by value), ordered by id, boxes in
    frame order. Rows in no kept track and untracked frames are in none."""
    boxes: dict[int, list[TrackBox]] = {}
    first: dict[int, tuple[str, int]] = {}
    for result in sorted(frames, key=lambda r: r.info.frame_index):
        tracker_id = result.detections.tracker_id
        if tracker_id is None:
            continue
        for row, track_id in enumerate(tracker_id.tolist()):
            if track_id == NO_TRACK:
                continue
            boxes.setdefault(track_id, []).append(detection_to_track_box(result, row))
            first.setdefault(track_id, (result.info.slot, int(result.detections.class_id[row])))
    return [Track(track_id=i, slot=first[i][0], class_id=first[i][1], boxes=tuple(boxes[i])) for i in sorted(boxes)]


def _positions_by_item_slot(frames: Sequence[FrameResult]) -> dict[str, dict[str, list[int]]]:
    """Positions in ``frames`` of the video-like frames, by item, then by slot in the order first seen."""
    by_item: dict[str, dict[str, list[int]]] = {}
    for i, result in enumerate(frames):
        if result.info.media in TRACKED_MEDIA:
            by_item.setdefault(result.info.item, {}).setdefault(result.info.slot, []).append(i)
    return by_item


def _untracked_ids(frames: Sequence[FrameResult]) -> dict[int, NDArray[np.int64]]:
    return {
        i: np.full(len(r.detections), NO_TRACK, np.int64) for i, r in enumerate(frames) if r.info.media in TRACKED_MEDIA
    }


def _with_ids(frames: Sequence[FrameResult], ids: dict[int, NDArray[np.int64]]) -> list[FrameResult]:
    return [
        replace(r, detections=r.detections.with_tracker_id(ids[i])) if i in ids else r for i, r in enumerate(frames)
    ]


def _track_slot(frames: Sequence[FrameResult], options: TrackerOptions) -> list[_OpenTrack]:
    """Every track of one slot's frames (in frame order), in the order they were started."""
    started: list[_OpenTrack] = []
    alive: list[_OpenTrack] = []
    for position, result in enumerate(frames):
        alive = [t for t in alive if position - t.last_position - 1 <= options.max_gap]
        dets = result.detections
        if options.high_score is None:
            first, second = np.arange(len(dets)), np.zeros(0, np.intp)
        else:
            high = dets.confidence >= options.high_score
            first, second = np.flatnonzero(high), np.flatnonzero(~high)
        matches = _match(alive, result, first, options)
        matched_tracks = {track_row for track_row, _ in matches}
        unmatched = [t for i, t in enumerate(alive) if i not in matched_tracks]
        # Low scores only extend tracks the high ones left; they never start one (ByteTrack's second stage).
        late = _match(unmatched, result, second, options)
        for track, det_row in [(alive[t], d) for t, d in matches] + [(unmatched[t], d) for t, d in late]:
            track.add(result, position, det_row)
        matched = {det_row for _, det_row in matches}
        for det_row in first.tolist():
            if det_row in matched:
                continue
            track = _OpenTrack(class_id=int(dets.class_id[det_row]), last_position=position)
            track.add(result, position, det_row)
            started.append(track)
            alive.append(track)
    return started


def _match(
    alive: Sequence[_OpenTrack], result: FrameResult, det_rows: NDArray[np.intp], options: TrackerOptions
) -> list[tuple[int, int]]:
    """(track row, detection row) pairs among ``det_rows``: maximum total IoU, same class, IoU at least the gate."""
    dets = result.detections
    if not alive or not len(det_rows):
        return []
    predicted = np.array(
        [t.predicted_xyxy_px(result.info.frame_index, motion=options.motion) for t in alive], np.float64
    )
    iou = box_iou_matrix(predicted, dets.xyxy[det_rows])
    same_class = np.array([t.class_id for t in alive])[:, None] == dets.class_id[det_rows][None, :]
    # Pairs below the gate count as nothing, so they cannot pull the optimum away from good pairs.
    iou = np.where(same_class & (iou >= options.iou_gate), iou, 0.0)
    from scipy.optimize import linear_sum_assignment  # here: scipy costs `frames` 0.4 s of imports it never uses

    rows, cols = linear_sum_assignment(iou, maximize=True)
    return [(int(r), int(det_rows[c])) for r, c in zip(rows, cols, strict=True) if iou[r, c] > 0.0]


def detection_to_track_box(result: FrameResult, row: int) -> TrackBox:
    """Row ``row`` of a frame's detections as a ``TrackBox`` (corners copied exactly, pixels)."""
    x1, y1, x2, y2 = (float(v) for v in result.detections.xyxy[row])
    return TrackBox(
        frame_index=result.info.frame_index,
        timestamp_s=result.info.timestamp_s,
        xyxy=(x1, y1, x2, y2),
        confidence=float(result.detections.confidence[row]),
    )
