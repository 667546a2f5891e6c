"""Label Studio counts video frames at its project's frame rate: tracks are matched to the file's frames by time."""

from __future__ import annotations

from typing import Any

import pytest

from service.convert.label_studio import parse_label_config
from service.evaluate.evaluation import evaluate, evaluation_to_summary
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.load_label_studio import pieces_at_rate, sequence_to_pieces, video_frame_rate
from service.evaluate.tracks import FrameBudget
from service.evaluate.types import Dataset
from tests.unit.service.evaluate.fixtures import (
    coco,
    encord_box,
    encord_row,
    ls_track_24,
    ls_video_task,
    thirty_fps_benchmark,
)

CAR = (0, 0, 100, 100)
CONFIG_24 = (
    '<View><Video name="video" value="$video" framerate="24"/><VideoRectangle name="box" toName="video"/></View>'
)


def load(doc: Any, role: str = BENCHMARK, label_config: str | None = None) -> Dataset:
    return documents_to_datasets([("f.json", doc)], name="x", role=role, label_config=label_config)[0]


def summary(bench: Any, cand: Any, *, cand_config: str | None = None) -> dict[str, Any]:
    b = load(bench)
    c = documents_to_datasets([("c.json", cand)], name="c", role=CANDIDATE, benchmark=b, label_config=cand_config)[0]
    return evaluation_to_summary(evaluate(b, [c], iou_threshold=0.5))


@pytest.mark.parametrize(
    ("data", "config"),
    [
        ({}, CONFIG_24),  # a literal framerate in the labeling config
        ({"rate": 24}, CONFIG_24.replace('"24"', '"$rate"')),  # framerate="$rate" read from the task data
        ({"fps": 24}, None),  # no config: the task data's fps
        ({}, CONFIG_24.replace(' framerate="24"', "")),  # no framerate at all: LS counts 24
    ],
)
def test_a_30_fps_video_labelled_in_a_24_fps_project_is_matched_by_time(
    data: dict[str, Any], config: str | None
) -> None:
    s = summary(thirty_fps_benchmark(), [ls_track_24(data)], cand_config=config)
    # Every one of the 32 source frames: LS frame 25 (1 s to 1.042 s) covers source frames 30 and 31.
    assert (s["tp"], s["fp"], s["fn"]) == (32, 0, 0)
    assert s["mean_iou"] == pytest.approx(1.0)


def test_with_no_rate_known_ls_frame_n_stays_source_frame_n_minus_1() -> None:
    # The old reading, kept when nothing gives LS's rate: LS frame N is frame N - 1, so the LS track runs
    # 25 % fast (x 12.5 px a frame against 10): frames 0..13 still overlap enough (a drift of 32.5 px at
    # most), 14..24 miss (FP + FN each) and 25..31 have no LS box (FN).
    s = summary(thirty_fps_benchmark(), [ls_track_24({})])
    assert (s["tp"], s["fp"], s["fn"]) == (14, 11, 18)


def test_pieces_sampled_at_another_rate() -> None:
    value = {
        "sequence": [
            {"frame": 1, "x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0},
            {"frame": 25, "x": 24.0, "y": 0.0, "width": 1.0, "height": 1.0, "enabled": False},
        ]
    }
    frames = pieces_at_rate(sequence_to_pieces(value), 24.0, 30.0, FrameBudget())
    # Frame k (k / 30 s) is LS position 0.8 k + 1: x 0.8 k up to 1 s, then LS frame 25 held for 1/24 s.
    assert {k: v["x"] for k, v in frames.items()} == pytest.approx({**{k: 0.8 * k for k in range(31)}, 31: 24.0})
    # At a finer LS rate each source frame is one LS frame: at 60 fps, frame k is LS frame 2k + 1, the last
    # (LS frame 25, 0.4 s) frame 12.
    frames = pieces_at_rate(sequence_to_pieces(value), 60.0, 30.0, FrameBudget())
    assert {k: v["x"] for k, v in frames.items()} == pytest.approx({k: 2.0 * k for k in range(13)})


@pytest.mark.parametrize(
    ("config", "data", "expected"),
    [
        (CONFIG_24, {"fps": 30}, 24.0),  # the config wins over a data key it does not name
        (CONFIG_24.replace('"24"', '"$fps"'), {"fps": "25"}, 25.0),
        (CONFIG_24.replace('"24"', '"$fps"'), {}, 24.0),  # LS's default when the key is missing
        (CONFIG_24.replace('"24"', '"0.04"'), {}, 25.0),  # below 1: a frame duration, inverted as LS does
        (None, {"fps": 29.97}, 29.97),
        (None, {"fps": "x"}, None),
        (None, {}, None),
        ('<View><Image name="video" value="$image"/></View>', {"fps": 30}, 30.0),  # no such video: data
    ],
)
def test_video_frame_rate(config: str | None, data: dict[str, Any], expected: float | None) -> None:
    parsed = parse_label_config(config) if config is not None else None
    assert video_frame_rate(data, "video", parsed) == expected


def test_source_rates_come_from_darwin_encord_and_coco_timestamps() -> None:
    assert load(thirty_fps_benchmark()).units[0].fps == 30.0
    row = encord_row(data_hash="d", title="v.mp4", label_hash="l", frames={"0": [encord_box("A", ("c", "C"), CAR)]})
    row["data_units"]["d"]["data_fps"] = 25
    assert load([row]).units[0].fps == 25.0
    doc = coco({})
    doc["images"] = [
        {"id": i + 1, "file_name": f"v/{i}.jpg", "item": "v.mp4", "slot": "0", "frame_index": f, "timestamp_s": t}
        for i, (f, t) in enumerate([(0, 0.0), (15, 0.5), (299, 9.976643)])
    ]
    assert load(doc).units[0].fps == pytest.approx(29.97, abs=1e-4)


def test_two_ls_projects_at_different_rates_meet_on_the_finer_one() -> None:
    # The benchmark is the same car in a 30 fps project (keyframes LS 1 and 31): the 24 fps track is
    # sampled at its frames. LS frame 25 at 24 fps lasts to 1.042 s, past the 30 fps project's LS frame 31
    # (1 s to 1.033 s): frame 31 is the 24 fps labeller's only extra.
    w, h = 100 * 100 / 640, 100 * 100 / 480
    sequence = [
        {"frame": 1, "enabled": True, "rotation": 0, "x": 0.0, "y": 0.0, "width": w, "height": h},
        {"frame": 31, "enabled": False, "rotation": 0, "x": 100 * 300 / 640, "y": 0.0, "width": w, "height": h},
    ]
    bench = ls_video_task(1, "v.mp4", sequence, frames_count=31)
    bench["annotations"] = [{"id": 1, "result": bench.pop("predictions")[0]["result"]}]
    bench["data"]["fps"] = 30
    s = summary([bench], [ls_track_24({"fps": 24})])
    assert (s["tp"], s["fp"], s["fn"]) == (31, 1, 0)
    assert s["mean_iou"] == pytest.approx(1.0)
