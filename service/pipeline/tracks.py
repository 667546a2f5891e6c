"""Sampled video frames -> tracker ids: one object's boxes linked across a slot's frames (pure, no I/O).

The tracker is a pipeline stage (decode -> infer -> track -> convert): it fills ``Detections.tracker_id`` once,
where an item's predictions are made, and converters only read it (``tracks_of`` groups rows by id).

Preannotation samples sparsely (1 fps by default), so objects move far between samples: a face crossing the
frame moves most of its width from one sample to the next, and IoU-gated trackers lose it. Two passes:

**Online** (frame by frame, in time order): tracks and detections are matched by the Hungarian method on a
cost that is the distance between centres **in box sizes** (``sqrt(width x height)``), plus how different the
boxes look (``service.pipeline.appearance``) when the infer stage described them:

1. Each track predicts where its object is now: its last centre moved by its velocity (px/s, measured over its
   last few boxes, from its second box on). A detection within ``distance_gate`` box sizes of the prediction,
   plus a drift that grows with the time since the track was last seen, may match. A one-box track has no
   velocity yet: the object may be anywhere within ``max_speed`` box sizes per second of where it was.
2. Tracks and detections left over are matched again on where the track's object could have got to at twice
   its own speed (its fastest step lately), in any direction, from where it was last seen: turns, bounces, stops.

A detection must be of the track's class, or overlap its predicted box (IoU >= 0.5: a class that flickers on one
object), with a size within a factor of 2 of the track's last box. A track not seen for more than
``max_gap_s`` seconds is closed; a detection left unmatched starts one.

**Offline** (``offline``, the default; a job has every frame of a slot before it answers): the online tracks are
pieces, joined by a min-cost matching of piece ends to piece starts over the whole slot (each free to stay
unjoined): a start may follow an end up to ``join_gap_s`` seconds later, no farther from it than ``max_speed``
allows, when the sizes agree and either the two look alike (with descriptors: their whole pieces' mean looks;
motion extrapolated across the gap then only helps) or, without descriptors, the end's motion extrapolated and the
start's extrapolated back meet. So an object hidden at a crossing or gone from the frame for a few seconds keeps
its id. Only boxes and descriptors are held (a few hundred bytes per detection), never pixels.

Times are the frames' timestamps; a source without a clock (untimed DICOM, image sequences) counts one sampled
frame as one second. A track's class is its boxes' confidence-weighted vote (``tracks_of``).

ByteTrack-style two stages are an option (``high_score``) for runs with a low threshold, where low scores are
mostly noise: detections scoring at least ``high_score`` are matched first and only they start tracks, then the
rest extend the tracks still unmatched, where those predict them (stage 1 only); a low-score detection that
extends no track is in none (``NO_TRACK``), so Darwin, Encord and Label Studio leave it out and COCO writes it
without ``track_id``.

``preannotate bench tracks`` measures this against the kept libraries (``trackers``' SORT, ByteTrack, OC-SORT and
the rest) on the same detections at 1, 2 and 5 fps.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from models.masks import Masks
from models.ops.boxes import box_iou_matrix
from service.pipeline.frames import FrameResult, MediaKind

TRACKED_MEDIA = frozenset({MediaKind.VIDEO, MediaKind.DICOM, MediaKind.SEQUENCE})
"""Slots whose frames have an order to follow: videos, multi-frame DICOM and image sequences."""
NO_TRACK = -1
"""The tracker id of a detection in no kept track: its track was shorter than ``min_length``, or (two-stage
tracking, ``TrackerOptions.high_score``) it scored low and extended no track."""

VELOCITY_WINDOW = 4
"""Boxes (the last and up to three before it) a track's velocity is measured over: one jittery box must not
fling the prediction."""
DRIFT_BOX_SIZES_PER_S = 0.15
"""How far, in box sizes per second unseen, a moving object may stray from its predicted path before only the
second stage may take it (turns, speed-ups). This, the gate's 0.4 and ``REACH_FACTOR`` are the best of a grid on
``preannotate bench tracks`` (its clips as they are, and with ``--jitter 0.07 --drop 0.1``): a wider first stage
lets a near neighbour take a track's detection before the second stage weighs where the track could have gone."""
REACH_FACTOR = 2.0
"""The second online stage: how much faster than its own speed a track's object may have moved."""
MAX_SIZE_RATIO = 2.0
"""Largest ratio of box sizes (either way) between a track's box and the box that extends it."""
CLASS_CHANGE_IOU = 0.5
"""Least IoU of a track's predicted box and a detection of another class for the two to match."""
APPEARANCE_WEIGHT = 2.0
"""Online, the weight of ``1 - cosine`` of two descriptors in a matching cost (the distance term is at most 1;
``preannotate bench tracks``: 2 beat 1 on the held-out crowds and changed none of the other clips; 3 is the same)."""
ONLINE_MIN_SIMILARITY = 0.3
"""Online, two boxes whose descriptors' cosine is below this never match: another object."""
JOIN_MIN_SIMILARITY = 0.75
"""Offline, two pieces whose descriptors' cosine is below this are never joined."""
JOIN_BLIND_REACH = 3.0
"""Without descriptors, the farthest apart (box sizes) two pieces may be and still be joined: motion alone."""
_JOIN_GAP_WEIGHT = 0.25
"""Offline, how much a longer gap costs a join (at ``join_gap_s``): of two joins alike, the shorter gap wins."""
_UNJOINED_COST = 0.75
"""Offline, the cost of a piece end (or start) left as it is: a join is made when its cost is under twice this."""
JOIN_CANDIDATES = 64
"""Offline, the most piece starts (the nearest in time after it) a piece end is weighed against."""
_EPSILON_S = 1e-6
"""Slack on time comparisons: timestamps are frame counts over rates, never exact."""
_NO = 1e6
"""The cost of a pair that may not match."""


@dataclass(frozen=True, slots=True)
class TrackBox:
    """A track's box on one sampled frame, and its mask there when the run makes masks (a one-row ``Masks``)."""

    frame_index: int
    timestamp_s: float | None
    xyxy: tuple[float, float, float, float]
    confidence: float
    mask: Masks | None = None


@dataclass(frozen=True, slots=True)
class Track:
    """One object followed across a video's sampled frames: one class, boxes in frame order.

    Attributes:
        track_id: unique within the item, from 1.
        slot: the slot the frames came from.
        class_id: index into the model's class names: the boxes' vote, weighted by confidence.
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
    """How detections are linked into tracks (what each does at 1, 2 and 5 fps: the README's "Tracks").

    Attributes:
        max_gap_s: seconds a track may go unseen online (from its last box to the last sampled frame that
            missed it) and still be extended: 2.0 bridges 2 missed samples at 1 fps, 10 at 5 fps; 0 extends a
            track only on the next sampled frame.
        distance_gate: how far (box sizes) a detection may be from a moving track's predicted centre, before the
            drift allowed for the time since it was seen.
        max_speed: the fastest an object is expected to move, in box sizes per second: how far a track with one
            box (no velocity yet) may reach. Faster objects start a new piece each sample (joined offline).
        offline: join the online pieces over the whole slot (``join_gap_s``); False keeps the online tracks
            (streaming order, memory of the open tracks only).
        join_gap_s: the longest gap (seconds) the offline pass joins across: an object hidden or out of frame.
        appearance: use the boxes' descriptors, where the infer stage computed them, in matching and joining.
        min_length: fewest boxes a track needs to be kept. 1 keeps a lone detection as a one-box track,
            so tracking never drops what the detector found.
        high_score: None: every detection is matched at once and may start a track. A score in (0, 1]:
            ByteTrack's two stages: detections scoring at least this are matched first and only they start
            tracks; the others then extend the tracks left unmatched, or are in no track (``NO_TRACK``).
    """

    max_gap_s: float = 2.0
    distance_gate: float = 0.4
    max_speed: float = 2.0
    offline: bool = True
    join_gap_s: float = 10.0
    appearance: bool = True
    min_length: int = 1
    high_score: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_gap_s", "join_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value}")
        for name in ("distance_gate", "max_speed"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be > 0 box sizes, got {value}")
        if self.min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {self.min_length}")
        if self.high_score is not None and not 0.0 < self.high_score <= 1.0:
            raise ValueError(f"high_score must be in (0, 1], got {self.high_score}")


@dataclass(slots=True)
class _Piece:
    """A track being built: its boxes, when they were seen (s), where they are (sampled position, detection
    row), their classes, and the sum of their descriptors (None without)."""

    boxes: list[TrackBox] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    rows: list[tuple[int, int]] = field(default_factory=list)
    class_ids: list[int] = field(default_factory=list)
    look_sum: NDArray[np.float32] | None = None

    def add(self, result: FrameResult, time_s: float, position: int, row: int, *, appearance: bool) -> None:
        dets = result.detections
        self.boxes.append(detection_to_track_box(result, row))
        self.times_s.append(time_s)
        self.rows.append((position, row))
        self.class_ids.append(int(dets.class_id[row]))
        if appearance and dets.appearance is not None:
            self._add_look(dets.appearance[row])

    def absorb(self, later: _Piece) -> None:
        for name in ("boxes", "times_s", "rows", "class_ids"):
            getattr(self, name).extend(getattr(later, name))
        if later.look_sum is not None:
            self._add_look(later.look_sum)

    def _add_look(self, look: NDArray[np.float32]) -> None:
        self.look_sum = look.astype(np.float32) if self.look_sum is None else self.look_sum + look

    @property
    def class_id(self) -> int:
        return self.class_ids[-1]

    def velocity_px_s(self, *, at_end: bool = True) -> tuple[float, float] | None:
        """Centre velocity over the last (or first) ``VELOCITY_WINDOW`` boxes; None with one box or no time."""
        if len(self.boxes) < 2:
            return None
        window = min(len(self.boxes), VELOCITY_WINDOW)
        a, b = (len(self.boxes) - window, len(self.boxes) - 1) if at_end else (0, window - 1)
        elapsed_s = self.times_s[b] - self.times_s[a]
        if elapsed_s <= 0:
            return None
        (ax, ay), (bx, by) = _centre(self.boxes[a].xyxy), _centre(self.boxes[b].xyxy)
        return (bx - ax) / elapsed_s, (by - ay) / elapsed_s

    def step_speed_px_s(self) -> float | None:
        """The fastest the object moved between two of its last ``VELOCITY_WINDOW`` boxes (px/s): its own
        speed, which a turn or a bounce keeps while the averaged velocity shrinks; None with one box."""
        window = range(max(1, len(self.boxes) - VELOCITY_WINDOW + 1), len(self.boxes))
        speeds = [
            math.dist(_centre(self.boxes[i - 1].xyxy), _centre(self.boxes[i].xyxy))
            / (self.times_s[i] - self.times_s[i - 1])
            for i in window
            if self.times_s[i] > self.times_s[i - 1]
        ]
        return max(speeds) if speeds else None

    def look(self) -> NDArray[np.float32] | None:
        """How the piece looks: the mean of its boxes' descriptors, unit-norm; None without descriptors.

        The whole piece, not its last boxes: where it ends or starts, an object is often half hidden (at a
        crossing, at the frame's edge), and those boxes' descriptors show the other object or the background.
        """
        if self.look_sum is None:
            return None
        norm = float(np.linalg.norm(self.look_sum))
        return self.look_sum / np.float32(norm) if norm > 1e-6 else None


def needs_appearance(tracker: TrackerOptions | None) -> bool:
    """Whether ``tracker`` matches on how boxes look: the flow then describes them (``FlowOptions.describe_boxes``)."""
    return tracker is not None and tracker.appearance


def assign_tracker_ids(frames: Sequence[FrameResult], options: TrackerOptions | None) -> list[FrameResult]:
    """Link the detections of each item's video-like slots into tracks: fill their ``tracker_id`` once.

    Args:
        frames: frame results of one or more items, any slots, any order; image and PDF frames pass unchanged.
        options: tracker settings; None when tracking is off: every frame passes unchanged (``tracker_id`` None).

    Returns:
        ``frames`` in the same order, video-like ones with ``tracker_id`` set (and their descriptors dropped):
        ids count from 1 across an item, ordered by slot (first seen first), then by the frame and row where the
        track starts; a detection in no kept track (shorter than ``min_length``, or a low score that extended
        none) gets ``NO_TRACK``. The same frames always give the same ids.
    """
    if options is None:
        return list(frames)
    ids = _untracked_ids(frames)
    for slots in _positions_by_item_slot(frames).values():
        next_id = 1
        for positions in slots.values():
            ordered = sorted(positions, key=lambda i: frames[i].info.frame_index)
            for piece in _track_slot([frames[i] for i in ordered], options):
                if len(piece.boxes) < options.min_length:
                    continue
                for position, row in piece.rows:
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
    frame order, each track's class its boxes' confidence-weighted vote (ties: the first box's). Rows in no
    kept track and untracked frames are in none."""
    boxes: dict[int, list[TrackBox]] = {}
    slots: dict[int, str] = {}
    votes: dict[int, dict[int, float]] = {}
    for result in sorted(frames, key=lambda r: r.info.frame_index):
        tracker_id = result.detections.tracker_id
        if tracker_id is None:
            continue
        for row, track_id in enumerate(tracker_id.tolist()):
            if track_id == NO_TRACK:
                continue
            box = detection_to_track_box(result, row)
            boxes.setdefault(track_id, []).append(box)
            slots.setdefault(track_id, result.info.slot)
            vote = votes.setdefault(track_id, {})
            class_id = int(result.detections.class_id[row])
            vote[class_id] = vote.get(class_id, 0.0) + box.confidence
    return [
        Track(track_id=i, slot=slots[i], class_id=max(votes[i], key=votes[i].__getitem__), boxes=tuple(boxes[i]))
        for i in sorted(boxes)
    ]


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


def _track_slot(frames: Sequence[FrameResult], options: TrackerOptions) -> list[_Piece]:
    """Every track of one slot's frames (in frame order), in the order they start."""
    pieces = _online(frames, options)
    if options.offline and options.join_gap_s > 0:
        pieces = _join(pieces, options)
    return sorted(pieces, key=lambda p: p.rows[0])


def _online(frames: Sequence[FrameResult], options: TrackerOptions) -> list[_Piece]:
    """The online pass: every piece, in the order started."""
    started: list[_Piece] = []
    alive: list[_Piece] = []
    previous_s: float | None = None
    for position, (result, now_s) in enumerate(zip(frames, _times_s(frames), strict=True)):
        # A track's gap is the time it went unseen: from its last sighting to the previous sampled frame.
        if previous_s is not None:
            alive = [p for p in alive if previous_s - p.times_s[-1] <= options.max_gap_s + _EPSILON_S]
        previous_s = now_s
        dets = result.detections
        if options.high_score is None:
            first, second = np.arange(len(dets)), np.zeros(0, np.intp)
        else:
            high = dets.confidence >= options.high_score
            first, second = np.flatnonzero(high), np.flatnonzero(~high)
        free = list(alive)
        starters: list[int] = []
        # Low scores only extend tracks the high ones left, where they are predicted; they never start one
        # (ByteTrack's second stage).
        for rows, stages, may_start in ((first, _STAGES, True), (second, _STAGES[:1], False)):
            for cost in stages:
                pairs = _match(free, result, now_s, rows, cost, options)
                for piece, row in pairs:
                    piece.add(result, now_s, position, row, appearance=options.appearance)
                taken = {row for _, row in pairs}
                rows = np.array([r for r in rows.tolist() if r not in taken], np.intp)
                free = [p for p in free if all(p is not q for q, _ in pairs)]
            if may_start:
                starters = rows.tolist()
        for row in starters:
            piece = _Piece()
            piece.add(result, now_s, position, row, appearance=options.appearance)
            started.append(piece)
            alive.append(piece)
    return started


def _match(
    pieces: Sequence[_Piece],
    result: FrameResult,
    now_s: float,
    rows: NDArray[np.intp],
    cost_of: _CostFn,
    options: TrackerOptions,
) -> list[tuple[_Piece, int]]:
    """(piece, detection row) pairs among ``rows`` at the least total cost, each pair allowed by ``cost_of``."""
    if not pieces or not len(rows):
        return []
    dets = result.detections
    found = _Candidates(
        now_s=now_s,
        xyxy=dets.xyxy[rows].astype(np.float64),
        class_ids=dets.class_id[rows],
        looks=dets.appearance[rows] if options.appearance and dets.appearance is not None else None,
    )
    cost = np.stack([cost_of(p, found, options) for p in pieces])
    from scipy.optimize import linear_sum_assignment  # here: scipy costs `frames` 0.4 s of imports it never uses

    r, c = linear_sum_assignment(cost)
    return [(pieces[i], int(rows[j])) for i, j in zip(r.tolist(), c.tolist(), strict=True) if cost[i, j] < _NO]


@dataclass(frozen=True, slots=True)
class _Candidates:
    """The detections an online stage weighs against a piece: when they were seen, where, of which class, and how
    they look (None: not described)."""

    now_s: float
    xyxy: NDArray[np.float64]
    class_ids: NDArray[np.int64]
    looks: NDArray[np.float32] | None


_CostFn = Callable[[_Piece, _Candidates, TrackerOptions], NDArray[np.float64]]
"""``(piece, candidates, options) -> cost per candidate`` (``_NO``: may not match)."""


def _predicted_cost(piece: _Piece, found: _Candidates, options: TrackerOptions) -> NDArray[np.float64]:
    """Stage 1: distance from where the piece's object should be now, in box sizes, within its gate."""
    xyxy = found.xyxy
    elapsed_s = max(found.now_s - piece.times_s[-1], 0.0)
    velocity = piece.velocity_px_s()
    last = np.array(piece.boxes[-1].xyxy, np.float64)
    if velocity is None:
        predicted, reach = last, options.distance_gate + options.max_speed * elapsed_s
    else:
        shift = np.array([velocity[0], velocity[1]] * 2) * elapsed_s
        predicted, reach = last + shift, options.distance_gate + DRIFT_BOX_SIZES_PER_S * elapsed_s
    distance = _centre_distance_box_sizes(predicted, xyxy)
    iou = box_iou_matrix(predicted[None, :].astype(np.float32), xyxy.astype(np.float32))[0]
    other_class = found.class_ids != piece.class_id
    allowed = (distance <= reach) & _sizes_agree(last, xyxy) & (~other_class | (iou >= CLASS_CHANGE_IOU))
    cost = distance / reach + other_class * 0.5
    return _with_looks(cost, allowed, piece, found.looks)


def _reach_cost(piece: _Piece, found: _Candidates, options: TrackerOptions) -> NDArray[np.float64]:
    """Stage 2: anywhere a moving piece's object could have got to at its own speed, from where it was seen."""
    speed_px_s = piece.step_speed_px_s()
    if speed_px_s is None:
        return np.full(len(found.xyxy), _NO)
    last = np.array(piece.boxes[-1].xyxy, np.float64)
    elapsed_s = max(found.now_s - piece.times_s[-1], 0.0)
    speed = speed_px_s / _size_px(last)  # box sizes per second
    reach = options.distance_gate + REACH_FACTOR * speed * elapsed_s
    distance = _centre_distance_box_sizes(last, found.xyxy)
    allowed = (distance <= reach) & _sizes_agree(last, found.xyxy) & (found.class_ids == piece.class_id)
    return _with_looks(distance / reach, allowed, piece, found.looks)


_STAGES: tuple[_CostFn, ...] = (_predicted_cost, _reach_cost)
"""The online stages, in order: where the track predicts its object, then anywhere it could have reached."""


def _with_looks(
    cost: NDArray[np.float64], allowed: NDArray[np.bool_], piece: _Piece, looks: NDArray[np.float32] | None
) -> NDArray[np.float64]:
    """``cost`` plus how different the detections look from the piece's last box; ``_NO`` where not allowed."""
    if looks is not None:
        # Where either side has no descriptor (a box with no pixels, a piece of such boxes), a neutral 0.5:
        # neither rewarded nor punished against the pairs that have one.
        mine = piece.look()
        similarity = (looks @ mine).astype(np.float64) if mine is not None else np.zeros(len(looks))
        described = np.any(looks, axis=1) & (mine is not None)
        allowed = allowed & (~described | (similarity >= ONLINE_MIN_SIMILARITY))
        cost = cost + APPEARANCE_WEIGHT * np.where(described, 1.0 - similarity, 0.5)
    return np.where(allowed, cost, _NO)


def _join(pieces: list[_Piece], options: TrackerOptions) -> list[_Piece]:
    """The offline pass: piece ends matched to later piece starts at the least total cost; chains merged.

    A min-cost assignment over tracklets, as a sparse bipartite matching (pairs only within ``join_gap_s``, so a
    long video's thousands of pieces cost no dense matrix): ends on one side, starts on the other, each end also
    free to stay an end (``_UNJOINED_COST``) and each start free to stay a start, so a join is made only where it
    costs less than leaving both apart, and two mediocre joins never win over one good one by number alone.
    """
    pairs = _join_pairs(pieces, options)
    if not pairs:
        return pieces
    count = len(pieces)
    # Rows: ends 0..n-1, then "stays a start" n..2n-1. Columns: starts 0..n-1, then "stays an end" n..2n-1.
    # A join i -> j frees start j's "stays a start" row and end i's "stays an end" column: they pair at no cost.
    rows, cols, costs = [], [], []
    for (i, j), cost in pairs.items():
        rows += [i, count + j]
        cols += [j, count + i]
        costs += [cost, 0.0]
    for k in range(count):
        rows += [k, count + k]
        cols += [count + k, k]
        costs += [_UNJOINED_COST, _UNJOINED_COST]
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    # Shifted above zero: the sparse matrix would read a zero weight as no edge.
    graph = csr_matrix((np.array(costs) + 1.0, (rows, cols)), shape=(2 * count, 2 * count))
    matched_rows, matched_cols = min_weight_full_bipartite_matching(graph)
    after = {int(i): int(j) for i, j in zip(matched_rows, matched_cols, strict=True) if i < count and j < count}
    heads = set(range(count)) - set(after.values())
    joined: list[_Piece] = []
    for head in sorted(heads):
        piece, at = pieces[head], head
        while at in after:
            at = after[at]
            piece.absorb(pieces[at])
        joined.append(piece)
    return joined


def _join_pairs(pieces: Sequence[_Piece], options: TrackerOptions) -> dict[tuple[int, int], float]:
    """``(end piece, start piece) -> cost`` of every join allowed: starts within ``join_gap_s`` after the end."""
    by_start = sorted(range(len(pieces)), key=lambda k: pieces[k].times_s[0])
    starts_s = [pieces[k].times_s[0] for k in by_start]
    pairs: dict[tuple[int, int], float] = {}
    for i, end in enumerate(pieces):
        end_s = end.times_s[-1]
        first = bisect.bisect_right(starts_s, end_s)
        last = bisect.bisect_right(starts_s, end_s + options.join_gap_s + _EPSILON_S)
        # The starts nearest in time only: a long join_gap_s over a fragmented hour stays linear, not quadratic.
        for j in by_start[first : min(last, first + JOIN_CANDIDATES)]:
            cost = _join_cost(end, pieces[j], options)
            if cost < _NO:
                pairs[(i, j)] = cost
    return pairs


def _join_cost(end: _Piece, start: _Piece, options: TrackerOptions) -> float:
    """What joining ``start`` after ``end`` costs (``_NO``: may not): motion across the gap, sizes, looks."""
    gap_s = start.times_s[0] - end.times_s[-1]
    if not 0 < gap_s <= options.join_gap_s + _EPSILON_S or _vote(end) != _vote(start):
        return _NO
    last, first = np.array(end.boxes[-1].xyxy, np.float64), np.array(start.boxes[0].xyxy, np.float64)
    if not _sizes_agree(last, first[None, :])[0]:
        return _NO
    # Never farther than the object could have gone at max_speed, however alike the two look.
    if _centre_distance_box_sizes(last, first[None, :])[0] > options.distance_gate + options.max_speed * gap_s:
        return _NO
    forward, backward = end.velocity_px_s(at_end=True), start.velocity_px_s(at_end=False)
    misses = [_centre_distance_box_sizes(last, first[None, :])[0]] if forward is None and backward is None else []
    if forward is not None:
        ahead = last + np.array([forward[0], forward[1]] * 2) * gap_s
        misses.append(_centre_distance_box_sizes(ahead, first[None, :])[0])
    if backward is not None:
        behind = first - np.array([backward[0], backward[1]] * 2) * gap_s
        misses.append(_centre_distance_box_sizes(behind, last[None, :])[0])
    miss = min(misses)
    moving = forward is not None or backward is not None
    reach = options.distance_gate + (DRIFT_BOX_SIZES_PER_S if moving else options.max_speed) * gap_s
    mine, theirs = end.look(), start.look()
    if options.appearance and mine is not None and theirs is not None:
        similarity = float(mine @ theirs)
        if similarity < JOIN_MIN_SIMILARITY:
            return _NO
        # Out of sight long enough, an object may come back anywhere: then its looks decide, motion only helps.
        motion = min(float(miss) / reach, 1.0)
        looks = (1.0 - similarity) / (1.0 - JOIN_MIN_SIMILARITY)
        return 0.5 * motion + looks + _JOIN_GAP_WEIGHT * gap_s / options.join_gap_s
    if miss > min(reach, JOIN_BLIND_REACH):
        return _NO
    return float(miss) / reach + _JOIN_GAP_WEIGHT * gap_s / options.join_gap_s


def _vote(piece: _Piece) -> int:
    weights: dict[int, float] = {}
    for class_id, box in zip(piece.class_ids, piece.boxes, strict=True):
        weights[class_id] = weights.get(class_id, 0.0) + box.confidence
    return max(weights, key=weights.__getitem__)


def _times_s(frames: Sequence[FrameResult]) -> list[float]:
    """When each of a slot's frames (in frame order) shows, in seconds; a source without a clock (any frame
    without a timestamp) counts one sampled frame as one second."""
    stamps = [f.info.timestamp_s for f in frames]
    if any(t is None for t in stamps):
        return [float(position) for position in range(len(frames))]
    return [float(t) for t in stamps if t is not None]


def _centre(xyxy: tuple[float, float, float, float]) -> tuple[float, float]:
    return (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2


def _size_px(xyxy: NDArray[np.float64]) -> float:
    return math.sqrt(max(float(xyxy[2] - xyxy[0]), 1.0) * max(float(xyxy[3] - xyxy[1]), 1.0))


def _sizes_px(xyxy: NDArray[np.float64]) -> NDArray[np.float64]:
    sizes: NDArray[np.float64] = np.sqrt(
        np.maximum(xyxy[:, 2] - xyxy[:, 0], 1.0) * np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)
    )
    return sizes


def _centre_distance_box_sizes(box: NDArray[np.float64], xyxy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Distance from ``box``'s centre to each row's, over the mean of their sizes."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    dx = (xyxy[:, 0] + xyxy[:, 2]) / 2 - cx
    dy = (xyxy[:, 1] + xyxy[:, 3]) / 2 - cy
    distance: NDArray[np.float64] = np.hypot(dx, dy) / ((_size_px(box) + _sizes_px(xyxy)) / 2)
    return distance


def _sizes_agree(box: NDArray[np.float64], xyxy: NDArray[np.float64]) -> NDArray[np.bool_]:
    ratio = _sizes_px(xyxy) / _size_px(box)
    return (ratio <= MAX_SIZE_RATIO) & (ratio >= 1 / MAX_SIZE_RATIO)


def detection_to_track_box(result: FrameResult, row: int) -> TrackBox:
    """Row ``row`` of a frame's detections as a ``TrackBox`` (corners copied exactly, pixels)."""
    dets = result.detections
    x1, y1, x2, y2 = (float(v) for v in dets.xyxy[row])
    return TrackBox(
        frame_index=result.info.frame_index,
        timestamp_s=result.info.timestamp_s,
        xyxy=(x1, y1, x2, y2),
        confidence=float(dets.confidence[row]),
        mask=None if dets.masks is None else dets.masks[row : row + 1],
    )
