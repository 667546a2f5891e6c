"""assign_tracker_ids: linking a slot's detections across sampled frames (pure); tracks_of groups them by id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from service.pipeline.frames import FrameResult, MediaKind
from service.pipeline.tracks import (
    NO_TRACK,
    Track,
    TrackerOptions,
    assign_detection_ids,
    assign_tracker_ids,
    is_tracked,
    tracks_of,
)
from tests.builders import make_detections, make_result

Box = tuple[float, float, float, float]
Det = tuple[Box, float, int]  # corners (px), score, class id


def clip(
    frames: Sequence[Sequence[Det]],
    *,
    slot: str = "0",
    media: MediaKind = MediaKind.VIDEO,
    frame_indices: Sequence[int] | None = None,
) -> list[FrameResult]:
    """One slot's sampled frames; sampled frame ``i`` is source frame ``10 * i`` unless given."""
    indices = frame_indices if frame_indices is not None else [10 * i for i in range(len(frames))]
    return [
        make_result(
            make_detections([d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets]),
            item="clip",
            slot=slot,
            source="/v/clip.mp4",
            media=media,
            frame_index=index,
            timestamp_s=index / 30,
        )
        for index, dets in zip(indices, frames, strict=True)
    ]


def moving(x0: float, y0: float, step_x: float, step_y: float = 0.0, size: float = 40.0, n: int = 10) -> list[Box]:
    return [(x0 + step_x * i, y0 + step_y * i, x0 + step_x * i + size, y0 + step_y * i + size) for i in range(n)]


def frames_to_tracks(frames: Sequence[FrameResult], options: TrackerOptions | None = None) -> list[Track]:
    """The tracks the tracker fills in, grouped by id (defaults: IoU gate 0.3, gap 2, motion on)."""
    return tracks_of(assign_tracker_ids(frames, options or TrackerOptions()))


def tracker_ids(frame: FrameResult) -> list[int] | None:
    ids = frame.detections.tracker_id
    return None if ids is None else ids.tolist()


def frame_indices(track: Track) -> list[int]:
    return [b.frame_index for b in track.boxes]


def test_static_object_is_one_track_on_every_sampled_frame() -> None:
    box: Box = (100.0, 80.0, 180.0, 170.0)
    tracks = frames_to_tracks(clip([[(box, 0.9, 0)]] * 6))

    assert len(tracks) == 1
    track = tracks[0]
    assert (track.track_id, track.slot, track.class_id) == (1, "0", 0)
    assert frame_indices(track) == [0, 10, 20, 30, 40, 50]
    assert all(b.xyxy == box for b in track.boxes)
    assert track.boxes[1].timestamp_s == pytest.approx(10 / 30)


def test_static_object_with_detector_jitter_is_one_track() -> None:
    rng = np.random.default_rng(3)
    jittered = [tuple(float(v) for v in np.array([100, 80, 180, 170]) + rng.normal(0, 3, 4)) for _ in range(20)]
    tracks = frames_to_tracks(clip([[(b, 0.8, 0)] for b in jittered]))  # type: ignore[misc]
    assert [len(t.boxes) for t in tracks] == [20]


def test_crossing_objects_of_different_classes_never_swap() -> None:
    # Given a face moving right and a person moving left through it
    faces, people = moving(0, 100, 15), moving(135, 105, -15)
    tracks = frames_to_tracks(clip([[(f, 0.9, 0), (p, 0.8, 1)] for f, p in zip(faces, people, strict=True)]))

    # Then each class is one track, whatever the overlap at the crossing
    assert [(t.track_id, t.class_id, len(t.boxes)) for t in tracks] == [(1, 0, 10), (2, 1, 10)]
    assert [b.xyxy for b in tracks[0].boxes] == faces
    assert [b.xyxy for b in tracks[1].boxes] == people


def test_same_class_objects_moving_apart_keep_their_identity() -> None:
    left, right = moving(200, 100, -12), moving(230, 100, 12)  # overlapping at first (IoU 0.14), then apart
    tracks = frames_to_tracks(clip([[(a, 0.9, 0), (b, 0.9, 0)] for a, b in zip(left, right, strict=True)]))
    assert [[b.xyxy for b in t.boxes] for t in tracks] == [left, right]


@pytest.mark.parametrize("offline", [True, False])
def test_same_class_objects_crossing_keep_their_identity(offline: bool) -> None:
    # Given two same-class boxes that pass through each other, 6 px apart at the closest sample
    a, b = moving(50, 100, 12, n=31), moving(416, 100, -12, n=31)
    frames = clip([[(p, 0.9, 0), (q, 0.9, 0)] for p, q in zip(a, b, strict=True)])

    tracks = frames_to_tracks(frames, TrackerOptions(offline=offline))

    # Then each one's velocity carries it through the crossing (the nearer box is the other one's)
    assert [[box.xyxy for box in t.boxes] for t in tracks] == [a, b]


@pytest.mark.parametrize(("missing", "expected_lengths"), [(1, [9]), (2, [8]), (3, [3, 4]), (5, [3, 2])])
def test_gap_up_to_max_gap_seconds_is_bridged_online(missing: int, expected_lengths: list[int]) -> None:
    # Given a static object on 10 frames sampled every 1/3 s, missed on `missing` of them from the 4th on
    box: Box = (10.0, 10.0, 60.0, 60.0)
    frames = [[(box, 0.9, 0)] for _ in range(10)]
    for i in range(3, 3 + missing):
        frames[i] = []

    # When a track may go 0.8 s unseen: 2 missed samples (0.67 s), not 3 (1 s)
    tracks = frames_to_tracks(clip(frames), TrackerOptions(max_gap_s=0.8, offline=False))

    assert [len(t.boxes) for t in tracks] == expected_lengths
    # and the offline pass joins the pieces again: the object never moved
    assert [len(t.boxes) for t in frames_to_tracks(clip(frames), TrackerOptions(max_gap_s=0.8))] == [
        sum(expected_lengths)
    ]


@pytest.mark.parametrize(("fps", "pieces_online"), [(1, 1), (5, 2)])
def test_gaps_are_seconds_whatever_the_sampling_rate(fps: int, pieces_online: int) -> None:
    # Given an object hidden for 1.5 s (an occlusion), sampled at 1 or 5 fps from a 30 fps source
    box: Box = (100.0, 100.0, 160.0, 160.0)
    times_s = [t / fps for t in range(10 * fps)]
    seen = [t for t in times_s if not 3.0 < t < 4.5]
    frames = clip(
        [[(box, 0.9, 0)] if t in seen else [] for t in times_s], frame_indices=[round(t * 30) for t in times_s]
    )

    # Then 1 s of max gap bridges it at 1 fps (one missed sample, 4 s) but not at 5 fps (seven, 3.2 s to 4.4 s:
    # 1.4 s unseen), where counting sampled frames would have treated the two rates the other way round
    online = frames_to_tracks(frames, TrackerOptions(max_gap_s=1.0, offline=False))
    assert len(online) == pieces_online
    assert [len(t.boxes) for t in frames_to_tracks(frames, TrackerOptions(max_gap_s=1.0))] == [len(seen)]


def test_max_gap_zero_splits_on_any_miss() -> None:
    box: Box = (10.0, 10.0, 60.0, 60.0)
    frames = clip([[(box, 0.9, 0)], [], [(box, 0.9, 0)]])
    tracks = frames_to_tracks(frames, TrackerOptions(max_gap_s=0, offline=False))
    assert [frame_indices(t) for t in tracks] == [[0], [20]]


def test_velocity_follows_a_fast_box_across_uneven_sampling() -> None:
    # Given a 40 px box moving 2.5 px per source frame, sampled at frames 0, 5, 10 then every 10
    # (keyframe sampling is uneven): after frame 10 it jumps 25 px per sample
    indices = [0, 5, 10, 20, 30, 40]
    boxes = [(2.5 * i, 0.0, 2.5 * i + 40, 40.0) for i in indices]
    frames = clip([[(b, 0.9, 0)] for b in boxes], frame_indices=indices)

    # Then its velocity (px per second) predicts each jump
    assert [len(t.boxes) for t in frames_to_tracks(frames, TrackerOptions(offline=False))] == [6]


@pytest.mark.parametrize("widths_per_s", [0.6, 1.2])
def test_a_box_moving_most_of_its_width_per_sample_is_one_track_at_1_fps(widths_per_s: float) -> None:
    # Given a 60 px face moving 36 or 72 px per second, sampled at 1 fps: IoU 0.25 / 0 with its last box,
    # so no IoU gate links even its first two boxes (the old tracker's 63 tracks from 83 detections)
    step = 60 * widths_per_s
    boxes = moving(10, 50, step, size=60, n=8)
    frames = clip([[(b, 0.9, 0)] for b in boxes], frame_indices=[30 * i for i in range(8)])

    # Then the first match (within max_speed box sizes per second) gives it a velocity, which carries it on
    tracks = frames_to_tracks(frames, TrackerOptions(offline=False))
    assert [[b.xyxy for b in t.boxes] for t in tracks] == [boxes]


def test_a_turn_is_followed_at_the_objects_own_speed() -> None:
    # Given a face moving right 0.8 widths per second, bouncing off a wall: back left at the same speed
    out = moving(100, 50, 48, size=60, n=5)
    x1, y1, x2, y2 = out[-1]
    back = [(x1 - 48 * i, y1, x2 - 48 * i, y2) for i in range(1, 5)]
    boxes = [*out, *back]
    frames = clip([[(b, 0.9, 0)] for b in boxes], frame_indices=[30 * i for i in range(len(boxes))])

    # Then the boxes after the turn, far from where the track's velocity (averaged over its last boxes) puts
    # them, are within its own speed's reach of where it was
    tracks = frames_to_tracks(frames, TrackerOptions(offline=False))
    assert [[b.xyxy for b in t.boxes] for t in tracks] == [boxes]


@pytest.mark.parametrize(
    "frames",
    [pytest.param([], id="no frames"), pytest.param(clip([[], [], []]), id="frames without detections")],
)
def test_nothing_detected_gives_no_tracks(frames: list[FrameResult]) -> None:
    assert frames_to_tracks(frames) == []


@pytest.mark.parametrize(
    ("media", "tracked"),
    [
        (MediaKind.VIDEO, True),
        (MediaKind.DICOM, True),
        (MediaKind.SEQUENCE, True),
        (MediaKind.IMAGE, False),
        (MediaKind.PDF, False),
    ],
)
def test_only_slots_with_frame_order_are_tracked(media: MediaKind, tracked: bool) -> None:
    box: Box = (0.0, 0.0, 10.0, 10.0)
    frames = clip([[(box, 0.9, 0)], [(box, 0.9, 0)]], media=media)
    assert len(frames_to_tracks(frames)) == (1 if tracked else 0)


def test_track_ids_are_unique_in_the_item_and_ordered_by_slot_then_start() -> None:
    a: Box = (0.0, 0.0, 10.0, 10.0)
    b: Box = (100.0, 100.0, 150.0, 150.0)
    frames = [
        *clip([[(a, 0.9, 0)], [(a, 0.9, 0), (b, 0.7, 0)]], slot="front"),
        *clip([[(b, 0.9, 0)]], slot="photo", media=MediaKind.IMAGE),
        *clip([[(b, 0.9, 1)], [(b, 0.9, 1)]], slot="rear"),
    ]
    tracks = frames_to_tracks(frames)
    assert [(t.track_id, t.slot, frame_indices(t)) for t in tracks] == [
        (1, "front", [0, 10]),
        (2, "front", [10]),
        (3, "rear", [0, 10]),
    ]


def test_tracking_off_gives_every_detection_its_own_one_box_track() -> None:
    a: Box = (0.0, 0.0, 10.0, 10.0)
    b: Box = (100.0, 100.0, 150.0, 150.0)
    frames = [
        *clip([[(a, 0.9, 0)], [(a, 0.9, 0), (b, 0.7, 1)]], slot="front"),
        *clip([[(b, 0.9, 0)]], slot="photo", media=MediaKind.IMAGE),
        *clip([[(b, 0.8, 1)]], slot="rear"),
    ]
    numbered = assign_detection_ids(list(reversed(frames)))
    tracks = tracks_of(numbered)
    assert [(t.track_id, t.slot, t.class_id, frame_indices(t)) for t in tracks] == [
        (1, "rear", 1, [0]),  # slots in the order first seen, as frames_to_tracks orders them
        (2, "front", 0, [0]),
        (3, "front", 0, [10]),
        (4, "front", 1, [10]),
    ]
    assert tracks[3].boxes[0].xyxy == b
    assert tracks[3].boxes[0].confidence == pytest.approx(0.7)
    assert tracker_ids(numbered[-2]) == [3, 4]  # frames[1], numbered by row
    assert tracker_ids(numbered[1]) is None  # the photo


def test_converters_get_no_tracker_ids_or_one_box_tracks_when_tracking_is_off() -> None:
    box: Box = (0.0, 0.0, 10.0, 10.0)
    frames = clip([[(box, 0.9, 0)], [(box, 0.9, 0)]])
    options = TrackerOptions(max_gap_s=0)
    assert [len(t.boxes) for t in frames_to_tracks(frames, options)] == [2]
    untracked = assign_tracker_ids(frames, None)  # Darwin, Encord, COCO: one annotation per detection
    assert [tracker_ids(f) for f in untracked] == [None, None]
    assert not is_tracked(untracked)
    assert is_tracked(assign_tracker_ids(frames, options))
    one_box = tracks_of(assign_detection_ids(frames))  # Label Studio: a region per detection
    assert [len(t.boxes) for t in one_box] == [1, 1]


def test_same_frames_in_any_order_give_the_same_tracks() -> None:
    frames = clip([[(f, 0.9, 0), (p, 0.8, 0)] for f, p in zip(moving(0, 0, 10), moving(300, 0, -5), strict=True)])
    assert frames_to_tracks(frames) == frames_to_tracks(list(reversed(frames))) == frames_to_tracks(frames)


def test_min_length_drops_short_tracks_and_renumbers() -> None:
    blip: Box = (300.0, 300.0, 320.0, 320.0)
    box: Box = (0.0, 0.0, 50.0, 50.0)
    frames = clip([[(blip, 0.6, 0), (box, 0.9, 0)], [(box, 0.9, 0)], [(box, 0.9, 0)]])

    assert [len(t.boxes) for t in frames_to_tracks(frames)] == [1, 3]
    kept = frames_to_tracks(frames, TrackerOptions(min_length=2))
    assert [(t.track_id, len(t.boxes)) for t in kept] == [(1, 3)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_gap_s": -1.0}, "max_gap_s"),
        ({"max_gap_s": float("nan")}, "max_gap_s"),
        ({"join_gap_s": -0.5}, "join_gap_s"),
        ({"distance_gate": 0.0}, "distance_gate"),
        ({"max_speed": float("inf")}, "max_speed"),
        ({"min_length": 0}, "min_length"),
    ],
)
def test_bad_options_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackerOptions(**kwargs)  # type: ignore[arg-type]


def test_each_detection_carries_its_track_id() -> None:
    # Given two identical boxes in one frame (two tracks) and a box that min_length dropped
    same: Box = (0.0, 0.0, 20.0, 20.0)
    lone: Box = (200.0, 200.0, 220.0, 220.0)
    frames = clip([[(same, 0.9, 0), (same, 0.9, 0)], [(same, 0.9, 0), (same, 0.9, 0), (lone, 0.5, 0)]])

    tracked = assign_tracker_ids(frames, TrackerOptions(min_length=2))

    assert [tracker_ids(f) for f in tracked] == [[1, 2], [1, 2, NO_TRACK]]
    assert [(t.track_id, frame_indices(t)) for t in tracks_of(tracked)] == [(1, [0, 10]), (2, [0, 10])]


def test_frames_keep_their_order_and_images_pass_unchanged() -> None:
    box: Box = (0.0, 0.0, 10.0, 10.0)
    photo = clip([[(box, 0.9, 0)]], slot="photo", media=MediaKind.IMAGE)
    frames = [*reversed(clip([[(box, 0.9, 0)], [(box, 0.9, 0)]])), *photo]
    tracked = assign_tracker_ids(frames, TrackerOptions())
    assert [f.info.frame_index for f in tracked] == [10, 0, 0]
    assert tracked[2] is photo[0]
    assert [tracker_ids(f) for f in tracked] == [[1], [1], None]


def test_items_are_numbered_apart() -> None:
    box: Box = (0.0, 0.0, 10.0, 10.0)
    first = clip([[(box, 0.9, 0)]])
    second = [replace(f, info=replace(f.info, item="other")) for f in clip([[(box, 0.9, 0)]])]
    assert [tracker_ids(f) for f in assign_tracker_ids([*first, *second], TrackerOptions())] == [[1], [1]]


def test_two_stage_keeps_one_track_through_low_score_frames_and_leaves_noise_out() -> None:
    # Given an object whose score flickers 0.9 / 0.35, and a low-score false positive that moves around
    obj = moving(0, 0, 6, n=10)
    noise = [(400.0 + 50 * (i % 3), 300.0, 430.0 + 50 * (i % 3), 330.0) for i in range(10)]
    frames = clip([[(b, 0.9 if i % 2 == 0 else 0.35, 0), (noise[i], 0.3, 0)] for i, b in enumerate(obj)])

    # When only scores >= 0.5 may start tracks
    tracked = assign_tracker_ids(frames, TrackerOptions(high_score=0.5))

    # Then the object is one track on every frame, low scores included, and the noise is in no track
    tracks = tracks_of(tracked)
    assert [(t.track_id, [b.xyxy for b in t.boxes]) for t in tracks] == [(1, obj)]
    assert [b.confidence for b in tracks[0].boxes] == pytest.approx([0.9, 0.35] * 5)
    assert [tracker_ids(f) for f in tracked] == [[1, NO_TRACK]] * 10
    # while one-stage tracking makes a track of each noise box it cannot link (the object's track is the same)
    one_stage = frames_to_tracks(frames)
    assert [b.xyxy for b in one_stage[0].boxes] == obj
    assert len(one_stage) > 1


def test_two_stage_prefers_the_high_score_box_over_a_closer_low_score_duplicate() -> None:
    # Given a static object whose detection shifts on frame 2, with a low-score duplicate right on the old box
    box: Box = (100.0, 100.0, 200.0, 200.0)
    shifted: Box = (115.0, 100.0, 215.0, 200.0)  # IoU 0.74 with `box`
    frames = clip([[(box, 0.9, 0)], [(box, 0.9, 0)], [(shifted, 0.9, 0), (box, 0.3, 0)], [(shifted, 0.9, 0)]])

    # Then one stage takes the closer duplicate, and the real box starts a second track
    assert [tracker_ids(f) for f in assign_tracker_ids(frames, TrackerOptions())] == [[1], [1], [2, 1], [2]]
    # and two stages keep the object on its high-score box, the duplicate in no track
    two_stage = assign_tracker_ids(frames, TrackerOptions(high_score=0.5))
    assert [tracker_ids(f) for f in two_stage] == [[1], [1], [1, NO_TRACK], [1]]


def test_two_stage_low_scores_never_start_a_track_but_bridge_a_gap() -> None:
    box: Box = (10.0, 10.0, 60.0, 60.0)
    only_low = clip([[(box, 0.3, 0)]] * 3)
    assert [tracker_ids(f) for f in assign_tracker_ids(only_low, TrackerOptions(high_score=0.5))] == [[NO_TRACK]] * 3
    # A low-score box on a track's gap keeps it open, counting as one of its boxes for min_length
    frames = clip([[(box, 0.9, 0)], [(box, 0.3, 0)], [(box, 0.3, 0)], [(box, 0.3, 0)], [(box, 0.9, 0)]])
    tracks = frames_to_tracks(frames, TrackerOptions(high_score=0.5, max_gap_s=0, offline=False, min_length=5))
    assert [frame_indices(t) for t in tracks] == [[0, 10, 20, 30, 40]]


def test_two_stage_with_every_score_high_is_one_stage() -> None:
    # Given clips whose scores are all at least high_score: the second stage has nothing to do
    a, b = moving(50, 100, 12, n=31), moving(416, 100, -12, n=31)
    crossing = clip([[(p, 0.9, 0), (q, 0.8, 0)] for p, q in zip(a, b, strict=True)])
    rng = np.random.default_rng(5)
    jitter = clip(
        [[(tuple(float(v) for v in np.array([100, 80, 180, 170]) + rng.normal(0, 8, 4)), 0.6, 0)] for _ in range(20)]
    )  # type: ignore[misc]
    for frames in (crossing, jitter):
        assert frames_to_tracks(frames, TrackerOptions(high_score=0.6)) == frames_to_tracks(frames)


@pytest.mark.parametrize("high_score", [0.0, -0.1, 1.5])
def test_bad_high_score_is_rejected(high_score: float) -> None:
    with pytest.raises(ValueError, match="high_score"):
        TrackerOptions(high_score=high_score)


def described(frames: list[FrameResult], looks: Sequence[Sequence[Sequence[float]]]) -> list[FrameResult]:
    """``frames`` with each detection's appearance descriptor (normalised here), as the infer stage adds them."""
    out = []
    for frame, rows in zip(frames, looks, strict=True):
        array = np.array(rows, np.float32).reshape(len(rows), -1) if rows else np.zeros((0, 3), np.float32)
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        out.append(replace(frame, detections=frame.detections.with_appearance(array / np.maximum(norms, 1e-9))))
    return out


RED, BLUE = (1.0, 0.1, 0.0), (0.0, 0.1, 1.0)


def leave_and_return() -> list[FrameResult]:
    """At 1 fps: a red face walks out on the right (t 0-3), a blue one appears on the left (t 2-12), and the red
    one comes back on the right 5 s later, moving left (t 9-12)."""
    red_out = moving(400, 50, 48, size=60, n=4)  # t 0..3, leaves past x=640
    blue = moving(20, 200, 10, size=60, n=11)  # t 2..12
    red_back = [(560 - 48 * i, 60.0, 620 - 48 * i, 120.0) for i in range(4)]  # t 9..12
    dets: list[list[Det]] = [[] for _ in range(13)]
    looks: list[list[tuple[float, ...]]] = [[] for _ in range(13)]
    for t, box in enumerate(red_out):
        dets[t].append((box, 0.9, 0))
        looks[t].append(RED)
    for i, box in enumerate(blue):
        dets[2 + i].append((box, 0.9, 0))
        looks[2 + i].append(BLUE)
    for i, box in enumerate(red_back):
        dets[9 + i].append((box, 0.9, 0))
        looks[9 + i].append(RED)
    return described(clip(dets, frame_indices=[30 * t for t in range(13)]), looks)


def test_offline_pass_gives_an_object_back_its_id_after_5_s_out_of_frame() -> None:
    frames = leave_and_return()

    # Then offline, the red face's two pieces are one track (its looks agree, the blue one's do not)
    tracks = frames_to_tracks(frames)
    assert [(frame_indices(t)[0] // 30, len(t.boxes)) for t in tracks] == [(0, 8), (2, 11)]
    # online, it comes back as a new track; and without descriptors, motion alone cannot tell 5 s on
    assert len(frames_to_tracks(frames, TrackerOptions(offline=False))) == 3
    assert len(frames_to_tracks(frames, TrackerOptions(appearance=False))) == 3


def test_offline_pass_never_joins_objects_that_look_different() -> None:
    # Given a red face that stops being detected, and 1 s later a blue face right where it was going
    red = moving(100, 50, 30, size=60, n=4)
    blue = [(220.0 + 30 * i, 50.0, 280.0 + 30 * i, 110.0) for i in range(1, 5)]
    dets = [[(b, 0.9, 0)] for b in red] + [[]] + [[(b, 0.9, 0)] for b in blue]
    frames = clip(dets, frame_indices=[30 * t for t in range(9)])
    looks = [[RED]] * 4 + [[]] + [[BLUE]] * 4

    # Then their looks keep them apart; without descriptors the motion fits and they are one track
    assert [len(t.boxes) for t in frames_to_tracks(described(frames, looks))] == [4, 4]
    assert [len(t.boxes) for t in frames_to_tracks(frames)] == [8]


def test_a_class_that_flickers_on_one_object_is_one_track_with_the_voted_class() -> None:
    # Given a multi-class model calling one box "person" (0) mostly and "face" (1) twice, with lower scores
    box: Box = (100.0, 100.0, 160.0, 160.0)
    classes = [0, 0, 1, 0, 1, 0]
    frames = clip([[(box, 0.9 if c == 0 else 0.6, c)] for c in classes])

    tracks = frames_to_tracks(frames)

    assert [(t.class_id, len(t.boxes)) for t in tracks] == [(0, 6)]


def test_objects_of_another_class_apart_from_a_track_are_never_linked_to_it() -> None:
    a: Box = (100.0, 100.0, 160.0, 160.0)
    b: Box = (150.0, 100.0, 210.0, 160.0)  # IoU 0.09 with a: another object, not a class flicker
    frames = clip([[(a, 0.9, 0)], [(b, 0.9, 1)]])
    assert [(t.class_id, len(t.boxes)) for t in frames_to_tracks(frames, TrackerOptions(offline=False))] == [
        (0, 1),
        (1, 1),
    ]


def test_an_untimed_source_counts_one_sampled_frame_as_one_second() -> None:
    # Given a DICOM series without a clock: frames 0, 1, 2, then the object missing on 3 and 4
    box: Box = (10.0, 10.0, 60.0, 60.0)
    frames = [
        replace(f, info=replace(f.info, timestamp_s=None))
        for f in clip(
            [[(box, 0.9, 0)], [(box, 0.9, 0)], [(box, 0.9, 0)], [], [], [(box, 0.9, 0)]],
            media=MediaKind.DICOM,
            frame_indices=list(range(6)),
        )
    ]
    assert [len(t.boxes) for t in frames_to_tracks(frames, TrackerOptions(max_gap_s=2, offline=False))] == [4]
    assert [len(t.boxes) for t in frames_to_tracks(frames, TrackerOptions(max_gap_s=1, offline=False))] == [3, 1]


def test_descriptors_are_dropped_once_the_ids_are_filled() -> None:
    tracked = assign_tracker_ids(leave_and_return(), TrackerOptions())
    assert all(f.detections.appearance is None for f in tracked)
    assert all(f.detections.tracker_id is not None for f in tracked)


def test_offline_pass_never_joins_pieces_farther_apart_than_max_speed_allows_however_alike() -> None:
    # Given one red face that ends at the left edge and another red face (alike: same descriptor) that
    # starts 1 s later 8 box sizes away at the right
    left = moving(20, 50, 10, size=60, n=4)
    right = moving(520, 50, 10, size=60, n=4)
    dets = [[(b, 0.9, 0)] for b in left] + [[(b, 0.9, 0)] for b in right]
    frames = described(clip(dets, frame_indices=[30 * t for t in range(8)]), [[RED]] * 8)

    # Then they stay two tracks: at max_speed 2 box sizes per second it could have gone 2.5, not 8
    assert [len(t.boxes) for t in frames_to_tracks(frames)] == [4, 4]
    # unless the objects are allowed to be that fast
    assert [len(t.boxes) for t in frames_to_tracks(frames, TrackerOptions(max_speed=9.0))] == [8]


def test_an_untimed_slot_with_uneven_frame_numbers_counts_sampled_frames_not_source_frames() -> None:
    # Given a DICOM series sampled every 15th frame, the object missed on one sample
    box: Box = (10.0, 10.0, 60.0, 60.0)
    frames = [
        replace(f, info=replace(f.info, timestamp_s=None))
        for f in clip([[(box, 0.9, 0)], [(box, 0.9, 0)], [], [(box, 0.9, 0)]], media=MediaKind.DICOM,
                      frame_indices=[0, 15, 30, 45])
    ]  # fmt: skip
    # Then one missed sample is one second unseen, not 15
    assert [len(t.boxes) for t in frames_to_tracks(frames, TrackerOptions(max_gap_s=1.0, offline=False))] == [3]
