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


@pytest.mark.parametrize("motion", [True, False])
def test_same_class_objects_crossing_swap_only_without_motion(motion: bool) -> None:
    # Given two same-class boxes that pass through each other, 6 px apart at the closest sample
    a, b = moving(50, 100, 12, n=31), moving(416, 100, -12, n=31)
    frames = clip([[(p, 0.9, 0), (q, 0.9, 0)] for p, q in zip(a, b, strict=True)])

    tracks = frames_to_tracks(frames, TrackerOptions(motion=motion))

    # Then constant velocity carries each through; plain IoU takes the nearer box, the other one's
    followed = [[box.xyxy for box in t.boxes] for t in tracks]
    assert (followed == [a, b]) is motion


@pytest.mark.parametrize(("missing", "expected_lengths"), [(1, [9]), (2, [8]), (3, [3, 4]), (5, [3, 2])])
def test_gap_up_to_max_gap_sampled_frames_is_bridged(missing: int, expected_lengths: list[int]) -> None:
    # Given a static object on 10 sampled frames, missed on `missing` of them from the 4th on
    box: Box = (10.0, 10.0, 60.0, 60.0)
    frames = [[(box, 0.9, 0)] for _ in range(10)]
    for i in range(3, 3 + missing):
        frames[i] = []

    tracks = frames_to_tracks(clip(frames))  # default max_gap=2

    assert [len(t.boxes) for t in tracks] == expected_lengths


def test_max_gap_zero_splits_on_any_miss() -> None:
    box: Box = (10.0, 10.0, 60.0, 60.0)
    tracks = frames_to_tracks(clip([[(box, 0.9, 0)], [], [(box, 0.9, 0)]]), TrackerOptions(max_gap=0))
    assert [frame_indices(t) for t in tracks] == [[0], [20]]


def test_motion_follows_a_fast_box_across_uneven_sampling() -> None:
    # Given a 40 px box moving 2.5 px per source frame, sampled at frames 0, 5, 10 then every 10
    # (keyframe sampling is uneven): after frame 10 it jumps 25 px per sample, IoU 0.23 with its last box
    indices = [0, 5, 10, 20, 30, 40]
    boxes = [(2.5 * i, 0.0, 2.5 * i + 40, 40.0) for i in indices]
    frames = clip([[(b, 0.9, 0)] for b in boxes], frame_indices=indices)

    # Then velocity per source frame predicts each jump; without it the track breaks on every jump
    assert [len(t.boxes) for t in frames_to_tracks(frames)] == [6]
    assert [len(t.boxes) for t in frames_to_tracks(frames, TrackerOptions(motion=False))] == [3, 1, 1, 1]


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
    options = TrackerOptions(max_gap=0)
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
        ({"iou_gate": 0.0}, "iou_gate"),
        ({"iou_gate": 1.5}, "iou_gate"),
        ({"max_gap": -1}, "max_gap"),
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
    tracks = frames_to_tracks(frames, TrackerOptions(high_score=0.5, max_gap=0, min_length=5))
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
