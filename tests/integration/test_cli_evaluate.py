"""``preannotate evaluate`` end to end: our own ``preannotate run`` COCO output scored against a hand-made GT."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from tests.unit.service.evaluate.fixtures import darwin_masks, ls_brush_task, ls_track_24, thirty_fps_benchmark

ASTRONAUT_FACE = (173, 82, 274, 180)  # x1, y1, x2, y2 of the face in skimage's astronaut photo, drawn by hand


def preannotate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    photo = root / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    x1, y1, x2, y2 = ASTRONAUT_FACE
    gt = {
        "images": [{"id": 1, "file_name": "astronaut.png", "width": 512, "height": 512}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "face"}],
    }
    (root / "gt.json").write_text(json.dumps(gt))
    run = preannotate("run", photo, "--out", root / "preds.json", "--quiet")
    assert run.returncode == 0, run.stderr
    return {"root": root, "gt": root / "gt.json", "preds": root / "preds.json"}


def test_evaluate_writes_every_output(files: dict[str, Path]) -> None:
    out = files["root"] / "out"
    result = preannotate(
        "evaluate",
        "--benchmark",
        files["gt"],
        "--candidate",
        f"centerface={files['preds']}",
        "--min-recall",
        "0.9",
        "--out",
        out,
    )

    assert result.returncode == 0, result.stderr
    assert "centerface: TP 1" in result.stderr
    assert result.stderr.rstrip().endswith(str(out))
    assert result.stdout == ""  # pycocotools' chatter must not leak
    assert {p.name for p in out.iterdir()} == {"summary.json", "leaderboard.csv", "iou_results.csv", "report.html"}

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["candidate"], summary["tp"], summary["fn"], summary["recall"]) == ("centerface", 1, 0, 1.0)
    assert summary["mean_iou"] > 0.5
    assert summary["map50"] > 0.5
    assert summary["passed"] is True
    (row,) = csv.DictReader((out / "leaderboard.csv").open())
    assert (row["candidate"], row["passed"]) == ("centerface", "pass")
    seed = (out / "iou_results.csv").read_text().splitlines()
    assert seed[0] == "training_email,data_unit_name,label_id,iou_score,class_score"
    assert seed[1].startswith("centerface,astronaut.png,,")
    assert seed[1].endswith(",1.0")

    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "data:image/png;base64," in html
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", html.replace("data:image/png;base64,", ""))  # no external URL


def test_a_bad_benchmark_is_one_line_naming_the_file(files: dict[str, Path]) -> None:
    bad = files["root"] / "bench.txt"
    bad.write_text("not json")
    result = preannotate("evaluate", "--benchmark", bad, "--candidate", files["preds"], "--out", files["root"] / "x")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "invalid_argument" in result.stderr
    assert str(bad) in result.stderr
    assert not (files["root"] / "x").exists()


def _summary(root: Path, bench: object, cand: object, *flags: object) -> dict[str, object]:
    (root / "bench.json").write_text(json.dumps(bench))
    (root / "cand.json").write_text(json.dumps(cand))
    result = preannotate(
        "evaluate",
        "--benchmark",
        root / "bench.json",
        "--candidate",
        f"c={root / 'cand.json'}",
        "--out",
        root / "out",
        *flags,
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = json.loads((root / "out" / "summary.json").read_text())
    return summary


def test_darwin_masks_against_label_studio_brush_by_mask_iou(tmp_path: Path) -> None:
    gt, brush = np.zeros((10, 12), bool), np.zeros((10, 12), bool)
    gt[2:6, 2:8], brush[2:6, 4:10] = True, True  # 24 px each, 16 shared: IoU 0.5
    s = _summary(tmp_path, darwin_masks("a.jpg", {"g": ("car", gt)}), [ls_brush_task(1, "a.jpg", [("car", brush)])])
    assert (s["tp"], s["fp"], s["fn"], s["skipped_shapes"]) == (1, 0, 0, {})
    assert s["mean_iou"] == pytest.approx(0.5)


def test_a_label_studio_track_at_24_fps_against_a_30_fps_video(tmp_path: Path) -> None:
    s = _summary(tmp_path, thirty_fps_benchmark(), [ls_track_24({"fps": 24})])  # the rate from the task data
    assert (s["tp"], s["fp"], s["fn"]) == (32, 0, 0)


def test_the_label_config_gives_the_projects_framerate(tmp_path: Path) -> None:
    config = tmp_path / "config.xml"
    config.write_text(
        '<View><Video name="video" value="$video" framerate="24"/>'
        '<VideoRectangle name="box" toName="video"/>'
        '<Labels name="l" toName="video"><Label value="car"/></Labels></View>'
    )
    without = _summary(tmp_path, thirty_fps_benchmark(), [ls_track_24({})])  # nothing says 24: frame N -> N-1
    assert (without["tp"], without["fp"], without["fn"]) != (32, 0, 0)
    s = _summary(tmp_path, thirty_fps_benchmark(), [ls_track_24({})], "--label-config", config)
    assert (s["tp"], s["fp"], s["fn"]) == (32, 0, 0)


def _coco(file_names: list[str], box: tuple[int, int, int, int]) -> dict[str, object]:
    """One ``face`` box on each named image (``x1, y1, x2, y2``)."""
    x1, y1, x2, y2 = box
    return {
        "images": [{"id": i, "file_name": n, "width": 512, "height": 512} for i, n in enumerate(file_names, 1)],
        "annotations": [
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
                "score": 0.9,
            }
            for i in range(1, len(file_names) + 1)
        ],
        "categories": [{"id": 1, "name": "face"}],
    }


def test_a_failed_gate_exits_3_after_writing_everything(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(json.dumps(_coco(["astronaut.png"], ASTRONAUT_FACE)))
    (tmp_path / "off.json").write_text(json.dumps(_coco(["astronaut.png"], (400, 400, 500, 500))))
    args = ["evaluate", "--benchmark", files["gt"], "--min-f1", "0.8", "--out", tmp_path / "out"]
    result = preannotate(
        *args, "--candidate", f"good={tmp_path / 'good.json'}", "--candidate", f"off={tmp_path / 'off.json'}"
    )
    assert result.returncode == 3, result.stderr
    assert "off: TP 0 FP 1 FN 1" in result.stderr
    assert "FAIL: f1 0.0000 < 0.8000" in result.stderr
    assert result.stderr.splitlines()[-1] == "gate failed: off"
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "summary.json",
        "leaderboard.csv",
        "iou_results.csv",
        "report.html",
    }

    passing = preannotate(*args, "--candidate", f"good={tmp_path / 'good.json'}")
    assert passing.returncode == 0, passing.stderr


def test_no_item_pairing_is_said_with_names_and_a_hint(files: dict[str, Path], tmp_path: Path) -> None:
    names = [f"frames/clip_{i}.jpg" for i in range(5)]
    (tmp_path / "cand.json").write_text(json.dumps(_coco(names, ASTRONAUT_FACE)))
    result = preannotate(
        "evaluate", "--benchmark", files["gt"], "--candidate", f"c={tmp_path / 'cand.json'}", "--out", tmp_path / "out"
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: c: no candidate item pairs with a benchmark item: benchmark has 'astronaut.png'; candidate has "
        "'frames/clip_0.jpg', 'frames/clip_1.jpg', 'frames/clip_2.jpg' and 2 more. Items pair by the tool's item id "
        "(same format only), then by name/path, then by file name alone: make the names match"
    ]


def test_an_out_that_is_a_file_fails_before_loading(files: dict[str, Path], tmp_path: Path) -> None:
    bad_benchmark = tmp_path / "bench.txt"
    bad_benchmark.write_text("not json")  # would be an invalid_argument naming it, if it were read first
    result = preannotate("evaluate", "--benchmark", bad_benchmark, "--candidate", files["preds"], "--out", files["gt"])
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: invalid_argument: --out {files['gt']}: exists and is not a directory\n"


# evaluate --media: thumbnails of the worst errors. Grey pictures with a known miss and a known false positive.
CAR, PERSON, STRAY = (40, 40, 140, 120), (200, 60, 260, 180), (20, 170, 70, 220)
GREEN, MAGENTA = np.array((0, 200, 0)), np.array((255, 0, 255))  # thumbnails.BENCHMARK_RGB, CANDIDATE_RGB


def _xywh(box: tuple[int, int, int, int]) -> list[int]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


@pytest.fixture
def media_case(tmp_path: Path) -> Path:
    """a.png and b.png, 320x240: the benchmark has a car and a person on each; the candidate finds both cars,
    misses both people and puts a stray car on background on each. Only a.png is in ``media/``."""
    (tmp_path / "media" / "shots").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "media" / "shots" / "a.png"), np.full((240, 320, 3), 128, np.uint8))
    images = [{"id": i, "file_name": n, "width": 320, "height": 240} for i, n in ((1, "shots/a.png"), (2, "b.png"))]
    cats = [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]
    gt = [(img, cat, box) for img in (1, 2) for cat, box in ((1, CAR), (2, PERSON))]
    anns = [
        {"id": n, "image_id": i, "category_id": c, "bbox": _xywh(b), "area": 1, "iscrowd": 0}
        for n, (i, c, b) in enumerate(gt, 1)
    ]
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt = [(img, 1, box, score) for img in (1, 2) for box, score in ((CAR, 0.95), (STRAY, 0.8))]
    results = [{"image_id": i, "category_id": c, "bbox": _xywh(b), "score": s} for i, c, b, s in dt]
    (tmp_path / "dt.json").write_text(json.dumps(results))
    return tmp_path


def _report(root: Path, *flags: str | Path) -> tuple[subprocess.CompletedProcess[str], str]:
    result = preannotate(
        "evaluate",
        "--benchmark",
        root / "gt.json",
        "--candidate",
        f"m={root / 'dt.json'}",
        "--out",
        root / "out",
        *flags,
    )
    assert result.returncode == 0, result.stderr
    return result, (root / "out" / "report.html").read_text()


def _thumbnails(html: str) -> list[tuple[str, np.ndarray, str]]:
    """(alt, decoded RGB image, caption) of every embedded JPEG."""
    found = re.findall(r'<img alt="([^"]+)" src="data:image/jpeg;base64,([^"]+)"><figcaption>([^<]+)<', html)
    out = []
    for alt, data, caption in found:
        image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        out.append((alt, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), caption))
    return out


def _has(image: np.ndarray, rgb: np.ndarray) -> bool:
    return bool((np.abs(image.astype(int) - rgb).max(axis=2) < 60).any())


def test_media_give_thumbnails_of_the_worst_errors(media_case: Path) -> None:
    result, html = _report(media_case, "--media", media_case / "media")

    thumbs = _thumbnails(html)
    assert sorted((alt, cap.split(" · ")[0]) for alt, _, cap in thumbs) == [
        ("false negative", "shots/a.png"),
        ("false positive", "shots/a.png"),
    ]
    by_kind = {alt: (image, caption) for alt, image, caption in thumbs}
    miss, _miss_caption = by_kind["false negative"]
    stray, stray_caption = by_kind["false positive"]
    assert max(miss.shape[:2]) == max(stray.shape[:2]) == 256  # PREANNOTATE_EVALUATE_THUMBNAIL_PX's default
    assert _has(miss, GREEN)
    assert not _has(miss, MAGENTA)
    assert _has(stray, MAGENTA)
    assert not _has(stray, GREEN)
    assert stray_caption == "shots/a.png · frame 0 · score 0.80 · IoU 0.00"
    assert "<h4>car</h4>" in html
    assert "<h4>person</h4>" in html
    assert "benchmark" in html
    # b.png is not under media/: its errors have no thumbnail, and the report and the command say so
    assert "2 of the worst errors have no thumbnail. Media not found for 1 items (b.png)." in html
    assert "warning: 2 of the worst errors have no thumbnail" in result.stderr
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", re.sub(r"data:image/\w+;base64,[^\"]+", "", html))


def test_thumbnail_count_and_size_are_settings(media_case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (media_case / "media" / "b.png").write_bytes((media_case / "media" / "shots" / "a.png").read_bytes())
    monkeypatch.setenv("PREANNOTATE_EVALUATE_THUMBNAILS_PER_CLASS", "1")
    monkeypatch.setenv("PREANNOTATE_EVALUATE_THUMBNAIL_PX", "96")
    _, html = _report(media_case, "--media", media_case / "media")
    thumbs = _thumbnails(html)
    assert len(thumbs) == 2  # of 4 errors: one false positive (car) and one miss (person)
    assert all(max(image.shape[:2]) == 96 for _, image, _ in thumbs)
    assert "have no thumbnail" not in html


def test_without_media_the_report_has_no_thumbnails(media_case: Path) -> None:
    result, html = _report(media_case)
    assert "data:image/jpeg" not in html
    assert "Worst errors" not in html
    assert "warning" not in result.stderr


def test_media_that_is_not_a_folder_is_refused_before_work(media_case: Path) -> None:
    result = preannotate(
        "evaluate", "--benchmark", media_case / "gt.json", "--candidate", media_case / "dt.json",
        "--out", media_case / "out", "--media", media_case / "nowhere",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == f"error: input_not_found: --media {media_case / 'nowhere'}: not a directory\n"
    assert not (media_case / "out").exists()


def test_undecodable_media_leave_the_report_written(media_case: Path) -> None:
    (media_case / "media" / "shots" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _result, html = _report(media_case, "--media", media_case / "media")
    assert "data:image/jpeg" not in html
    assert "4 of the worst errors have no thumbnail" in html
    assert "Not decodable: shots/a.png:" in html


def test_a_box_outside_the_media_leaves_the_report_written_with_the_other_thumbnails(media_case: Path) -> None:
    results = json.loads((media_case / "dt.json").read_text())
    results.append({"image_id": 1, "category_id": 1, "bbox": [500, 10, 100, 40], "score": 0.99})  # a.png is 320 wide
    (media_case / "dt.json").write_text(json.dumps(results))
    result, html = _report(media_case, "--media", media_case / "media")
    assert sorted(alt for alt, _, _ in _thumbnails(html)) == ["false negative", "false positive"]  # the stray car
    assert "Outside the frame: shots/a.png frame 0: box (500, 10, 600, 50) lies outside the 320x240 frame." in html
    assert "1 with boxes outside the frame" in result.stderr
