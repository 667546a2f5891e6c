"""``run --thresholds FILE`` (and ``sync label-studio --thresholds``): a calibrated class is kept at its own least
score, over ``--threshold``; a bad file exits 2 with one line naming it. Real subprocesses, the real default model
(CenterFace, one class ``face``) on skimage's astronaut photo."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import skimage.data

from service.spec.thresholds import ClassThreshold, ThresholdsFile
from tests.integration.servers import running
from tests.integration.test_cli import preannotate


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def face_score(photo: Path, tmp_path_factory: pytest.TempPathFactory) -> float:
    """The face's score in a run without per-class thresholds (the photo has one face)."""
    out = tmp_path_factory.mktemp("out") / "plain.json"
    result = preannotate("run", photo, "--threshold", "0.05", "--out", out)
    assert result.returncode == 0, result.stderr
    return max(a["score"] for a in json.loads(out.read_text())["annotations"])


def thresholds_file(path: Path, classes: dict[str, ClassThreshold]) -> Path:
    path.write_text(ThresholdsFile(model_version="x", classes=classes).to_json_text())
    return path


def scores_with(photo: Path, tmp_path: Path, threshold: float, classes: dict[str, ClassThreshold]) -> list[float]:
    thresholds = thresholds_file(tmp_path / "thresholds.json", classes)
    out = tmp_path / "preds.json"
    result = preannotate("run", photo, "--threshold", threshold, "--thresholds", thresholds, "--out", out)
    assert result.returncode == 0, result.stderr
    return [a["score"] for a in json.loads(out.read_text())["annotations"]]


def test_a_class_threshold_below_the_global_one_keeps_the_face(photo: Path, tmp_path: Path, face_score: float) -> None:
    above_face = min(1.0, face_score + 0.01)
    assert scores_with(photo, tmp_path, above_face, {}) == []  # the global threshold alone drops it
    kept = scores_with(photo, tmp_path, above_face, {"face": ClassThreshold(threshold=face_score - 0.05)})
    assert max(kept) == pytest.approx(face_score, abs=1e-3)


def test_a_class_threshold_above_the_global_one_drops_the_face(photo: Path, tmp_path: Path, face_score: float) -> None:
    below = scores_with(photo, tmp_path, 0.3, {"face": ClassThreshold(threshold=min(1.0, face_score + 0.01))})
    assert below == []


def test_an_uncalibrated_class_keeps_the_global_threshold(photo: Path, tmp_path: Path, face_score: float) -> None:
    entry = ClassThreshold(threshold=0.0, calibrated=False, reason="support 2 < 10")
    assert scores_with(photo, tmp_path, min(1.0, face_score + 0.01), {"face": entry}) == []


BAD_FILES = [
    (None, "cannot read the thresholds file"),
    ("{not json", "not a thresholds file"),
    ('{"classes": {"face": {"threshold": 1.5}}}', "not a thresholds file (classes.face.threshold"),
]


def write_bad(path: Path, content: str | None) -> Path:
    if content is not None:
        path.write_text(content)
    return path


def assert_one_line_exit_2(stderr: str, returncode: int, message: str) -> None:
    assert returncode == 2, stderr
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_a_bad_thresholds_file_exits_2_with_one_line_naming_it(
    photo: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    path = write_bad(tmp_path / "thr.json", content)
    result = preannotate("run", photo, "--thresholds", path, "--out", tmp_path / "x.json")
    assert_one_line_exit_2(result.stderr, result.returncode, f"{path}: {message}")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_sync_refuses_a_bad_thresholds_file_before_calling_label_studio(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = write_bad(tmp_path / "thr.json", content)
    url = "http://127.0.0.1:9"  # nothing listens: the file is refused before any request
    result = preannotate("sync", "label-studio", "--project", "1", "--url", url, "--api-key", "k", "--thresholds", path)
    assert_one_line_exit_2(result.stderr, result.returncode, f"{path}: {message}")


def test_a_threshold_for_a_class_the_model_lacks_exits_2(photo: Path, tmp_path: Path) -> None:
    path = thresholds_file(tmp_path / "thr.json", {"cat": ClassThreshold(threshold=0.4)})
    result = preannotate("run", photo, "--thresholds", path, "--out", tmp_path / "x.json")
    assert_one_line_exit_2(result.stderr, result.returncode, "unknown class(es) in thresholds cat; the model has: face")
    assert not (tmp_path / "x.json").exists()


def test_calibrate_save_is_applied_by_the_service_to_that_model_version(photo: Path, tmp_path: Path) -> None:
    """The issue's second case end to end: calibrate a real run's predictions on a benchmark, save them, and a real
    `preannotate serve` on the same store lists them for its model and applies them to /v1/predict."""
    predictions = tmp_path / "preds.json"
    result = preannotate("run", photo, "--threshold", "0.05", "--out", predictions)
    assert result.returncode == 0, result.stderr
    coco = json.loads(predictions.read_text())
    best = max(coco["annotations"], key=lambda a: a["score"])
    # The benchmark: the photo's one face. Calibrated on F1, face keeps exactly the boxes scoring >= its own.
    benchmark = tmp_path / "benchmark.json"
    gold = {k: v for k, v in best.items() if k != "score"}
    benchmark.write_text(json.dumps({**coco, "annotations": [gold]}))
    db = tmp_path / "jobs.db"
    out = tmp_path / "thresholds.json"
    calibrated = preannotate(
        "calibrate", "--benchmark", benchmark, "--candidate", predictions, "--min-support", "1", "--out", out,
        "--save", env={"PREANNOTATE_DB_PATH": str(db)},
    )  # fmt: skip
    assert calibrated.returncode == 0, calibrated.stderr
    assert f"saved to {db}, model version {coco['info']['model_version']}" in calibrated.stderr
    face = ThresholdsFile.read(out).classes["face"]
    assert face.threshold == pytest.approx(best["score"], abs=1e-6)

    with running(db) as server, server.client() as client:
        (model,) = client.get("/v1/models").json()
        assert model["version"] == coco["info"]["model_version"]
        assert model["thresholds"] == {"face": pytest.approx(face.threshold)}
        # Above the face's global threshold, below its calibrated one: the saved threshold keeps the face.
        above = min(1.0, best["score"] + 0.01)
        kept = client.post("/v1/predict", files={"file": photo.read_bytes()}, data={"threshold": str(above)})
        assert kept.status_code == 200, kept.text
        assert [d["score"] for d in kept.json()["detections"]] == [pytest.approx(best["score"], abs=1e-3)]


def test_calibrate_save_refuses_a_candidate_without_a_model_version(tmp_path: Path) -> None:
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "face"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}],
    }
    benchmark, candidate = tmp_path / "gt.json", tmp_path / "pred.json"
    benchmark.write_text(json.dumps(document))
    document["annotations"][0]["score"] = 0.9  # type: ignore[index]
    candidate.write_text(json.dumps(document))
    result = preannotate(
        "calibrate", "--benchmark", benchmark, "--candidate", candidate, "--out", tmp_path / "t.json", "--save",
        env={"PREANNOTATE_DB_PATH": str(tmp_path / "jobs.db")},
    )  # fmt: skip
    assert_one_line_exit_2(result.stderr, result.returncode, "no model version to save the thresholds under")
    assert not (tmp_path / "t.json").exists()
