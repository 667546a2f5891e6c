"""``preannotate bench tracks``: the clips' ground truth follows what is drawn, the metrics adapter scores ids
through py-motmetrics, and a quick run writes every row."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.bench_tracks import EVERY_BOX, LIBRARY_TRACKERS, OURS, Tracked, degrade, main, score
from benchmarks.track_clips import (
    HEIGHT_PX,
    PATCH_PX,
    SOURCE_FPS,
    WIDTH_PX,
    ClipSpec,
    Mover,
    box_width_px,
    clip_spec,
    face_box_in_patch,
    ground_truth,
    truth_at,
    write_clip,
)
from service.cli import build_parser
from service.commands.bench import BENCHMARKS
from service.pipeline.frames import MediaKind
from tests.builders import make_detections, make_result


def _centre(row: tuple[int, float, float, float, float]) -> np.ndarray:
    return np.array([(row[1] + row[3]) / 2, (row[2] + row[4]) / 2])


def _absences_s(clip: ClipSpec, obj: int) -> list[float]:
    """How long (seconds) each run of frames without object ``obj`` in the ground truth lasts."""
    present = [any(row[0] == obj for row in rows) for rows in ground_truth(clip).frames]
    runs, run = [], 0
    for here in [*present, True]:
        if not here:
            run += 1
        elif run:
            runs.append(run / SOURCE_FPS)
            run = 0
    return runs


def test_a_face_moves_at_the_speed_asked_in_box_widths() -> None:
    mover = Mover("lfw3", (0, 100), 0.6, 0)
    clip = ClipSpec("one", (mover,), duration_s=10)
    [at_1], [at_6] = truth_at(clip, 1.0), truth_at(clip, 6.0)
    moved_px = np.linalg.norm(_centre(at_6) - _centre(at_1))
    assert moved_px == pytest.approx(5 * 0.6 * box_width_px("lfw3"), abs=1.0)
    assert at_6[3] - at_6[1] == pytest.approx(box_width_px("lfw3"))  # the box moves, its size does not


def test_a_face_is_absent_while_hidden_or_out_of_frame_and_clipped_when_partly_out() -> None:
    bar = (300.0, 0.0, 300.0 + PATCH_PX, HEIGHT_PX)
    clip = ClipSpec("hide", (Mover("lfw3", (300, 100), 0, 0),), occluders_px=(bar,))
    assert truth_at(clip, 0.0) == []  # wholly behind the bar
    wide = (0.0, 0.0, WIDTH_PX + 2 * PATCH_PX, HEIGHT_PX)  # bounds past the right edge: no bounce before it
    x1, _, x2, _ = face_box_in_patch("lfw3")
    for shown, present in ((0.6, True), (0.4, False)):
        patch_x = WIDTH_PX - x1 - shown * (x2 - x1)  # that fraction of the box inside the frame
        rows = truth_at(ClipSpec("edge", (Mover("lfw3", (patch_x, 100), 0, 0, wide),)), 0.0)
        assert bool(rows) is present
        if rows:
            assert rows[0][3] == WIDTH_PX  # clipped to the frame
            assert rows[0][3] - rows[0][1] == pytest.approx(shown * (x2 - x1), abs=1.0)
    gone = Mover("lfw3", (WIDTH_PX + 10, 100), 0, 0, (0, 0, WIDTH_PX + PATCH_PX + 10, HEIGHT_PX))
    assert truth_at(ClipSpec("gone", (gone,)), 0.0) == []


def test_mixed_hides_one_face_for_1_5_s_and_another_leaves_for_about_5_s() -> None:
    clip = clip_spec("mixed")
    assert _absences_s(clip, 0) == [pytest.approx(1.5, abs=0.1)]  # the bar, crossed once
    assert _absences_s(clip, 4) == [pytest.approx(5.0, abs=0.25)]  # out on the right and back


def test_a_clip_decodes_with_the_frame_count_of_its_ground_truth(tmp_path: Path) -> None:
    clip = clip_spec("medium", duration_s=2.0)
    truth = write_clip(clip, tmp_path / "medium.mp4")
    with av.open(str(tmp_path / "medium.mp4")) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == len(truth.frames) == 2 * SOURCE_FPS
    assert json.loads((tmp_path / "medium.mp4.truth.json").read_text())["objects"] == 4


def _tracked(ids: list[list[int]], boxes: list[list[tuple[float, ...]]]) -> Tracked:
    return Tracked(
        ids=[np.array(i, np.int64) for i in ids],
        boxes=[np.array(b, np.float32).reshape(-1, 4) for b in boxes],
        seconds=0.0,
    )


def test_the_metrics_give_a_perfect_tracker_idf1_1_and_a_swap_less() -> None:
    a, b = (0.0, 0.0, 10.0, 10.0), (50.0, 0.0, 60.0, 10.0)
    truth = [[(0, *a), (1, *b)]] * 4
    perfect = score(truth, _tracked([[7, 8]] * 4, [[a, b]] * 4))
    assert (perfect.idf1, perfect.mota, perfect.id_switches, perfect.tracks, perfect.objects) == (1.0, 1.0, 0, 2, 2)
    swapped = score(truth, _tracked([[7, 8], [7, 8], [8, 7], [8, 7]], [[a, b]] * 4))
    assert swapped.idf1 < 1.0
    assert swapped.id_switches == 2
    off = score(truth, _tracked([[7, 8]] * 4, [[(5.0, 5.0, 15.0, 15.0), b]] * 4))  # IoU 1/7: no match
    assert off.mota < perfect.mota


def test_quick_run_writes_every_row(tmp_path: Path) -> None:
    path = main(["--quick", "--duration", "4", "--clips", "medium", "--cache-dir", str(tmp_path), "--results-dir",
                 str(tmp_path)])  # fmt: skip
    payload = json.loads(path.read_text())
    row = payload["results"]["medium"]["1"]
    assert set(OURS) | set(LIBRARY_TRACKERS) <= set(row)
    assert {name + EVERY_BOX for name in LIBRARY_TRACKERS} <= set(row)
    assert row["_detections"]["sampled_frames"] == 4
    # Four faces crossing at 1 fps for 4 s: every one of our variants follows them
    assert all(row[name]["idf1"] >= 0.9 for name in OURS)
    verdict = payload["verdict"]
    assert verdict["medium_idf1_at_1fps"] == {"target": 0.9, "idf1": row["ours"]["idf1"], "pass": True}
    best = max(row[name]["idf1"] for name in row if name in LIBRARY_TRACKERS or name.endswith(EVERY_BOX))
    assert verdict["ours_at_least_best_library"]["pass"] is (row["ours"]["idf1"] >= best)
    assert "supervision-bytetrack" in payload["settings"]["unavailable"]


def test_bench_tracks_is_a_benchmark() -> None:
    assert "tracks" in BENCHMARKS
    args = build_parser().parse_args(["bench", "tracks", "--quick"])
    assert (args.name, args.extra) == ("tracks", ["--quick"])


def test_degraded_detections_are_moved_and_dropped_as_asked() -> None:
    frames = [
        make_result(make_detections([[100, 100, 200, 200]] * 50, [0.9] * 50, [0] * 50), media=MediaKind.VIDEO)
        for _ in range(20)
    ]
    assert degrade(frames, 0.0, 0.0, seed=1) is frames
    moved = degrade(frames, 0.1, 0.0, seed=1)
    shifts = np.concatenate([m.detections.xyxy - f.detections.xyxy for m, f in zip(moved, frames, strict=True)])
    assert np.std(shifts) == pytest.approx(10.0, rel=0.1)  # 0.1 box sizes of a 100 px box
    kept = sum(len(f.detections) for f in degrade(frames, 0.0, 0.2, seed=1))
    assert kept == pytest.approx(800, rel=0.1)
    assert degrade(frames, 0.1, 0.2, seed=1)[3].detections.xyxy.tolist() == (
        degrade(frames, 0.1, 0.2, seed=1)[3].detections.xyxy.tolist()
    )
