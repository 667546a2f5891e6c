"""``preannotate render`` end to end: a real run's COCO and Darwin, and a real job's Label Studio and Encord
results, drawn on generated media; pixels and frame counts checked in the files written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data
import supervision as sv
from numpy.typing import NDArray

from service.samples import write_pan_video
from tests.integration.servers import running, wait_for_job
from tests.integration.test_cli import preannotate

FPS = 2


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    astronaut = skimage.data.astronaut()
    paths = {"photo": root / "astronaut.png", "video": root / "pan.mp4", "text": root / "notes.txt"}
    cv2.imwrite(str(paths["photo"]), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    write_pan_video(astronaut, paths["video"], duration_s=3.0, fps=25)
    paths["text"].write_text("not media\n" * 100)
    return paths


@pytest.fixture(scope="module")
def run_outputs(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("run")
    coco, darwin = out / "preds.json", out / "darwin"
    for fmt, target in (("coco", coco), ("darwin", darwin)):
        done = preannotate("run", media["photo"], media["video"], "--fps", FPS, "--format", fmt, "--out", target)
        assert done.returncode == 0, done.stderr
    return {"coco": coco, "darwin": darwin}


@pytest.fixture(scope="module")
def job_results(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real service's job over the same media; its Label Studio and Encord results saved as served."""
    root = tmp_path_factory.mktemp("job")
    items = [
        {"name": "astronaut.png", "slots": [{"url": media["photo"].as_uri()}]},
        {"name": "pan.mp4", "slots": [{"url": media["video"].as_uri(), "type": "video"}]},
    ]
    saved: dict[str, Path] = {}
    with running(root / "jobs.db", PREANNOTATE_LOCAL_ROOTS=str(media["photo"].parent)) as server, server.client() as c:
        submitted = c.post("/v1/jobs", json={"items": items, "fps": FPS})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        assert wait_for_job(c, job_id)["status"] == "succeeded"
        for fmt in ("labelstudio", "encord"):
            result = c.get(f"/v1/jobs/{job_id}/result", params={"format": fmt})
            assert result.status_code == 200, result.text
            saved[fmt] = root / f"{fmt}.json"
            saved[fmt].write_text(result.text)
    return saved


def read_rgb(path: Path) -> NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), np.uint8)


def near(image: NDArray[np.uint8], colour: tuple[int, int, int], tolerance: float = 40.0) -> NDArray[np.bool_]:
    return np.linalg.norm(image.astype(np.float32) - np.array(colour, np.float32), axis=2) < tolerance


def face_box(coco: dict[str, object]) -> tuple[int, int, int, int]:
    images = {im["id"]: im for im in coco["images"]}  # type: ignore[attr-defined]
    [ann] = [a for a in coco["annotations"] if images[a["image_id"]]["item"] == "astronaut.png"]  # type: ignore[attr-defined]
    x, y, w, h = ann["bbox"]
    return round(x), round(y), round(x + w), round(y + h)


def render(
    media: dict[str, Path], predictions: Path, out: Path, *extra: str | Path
) -> subprocess.CompletedProcess[str]:
    return preannotate("render", media["photo"], media["video"], "--predictions", predictions, "--out", out, *extra)


def sampled_frames(coco: dict[str, object], item: str) -> int:
    return sum(1 for im in coco["images"] if im["item"] == item)  # type: ignore[attr-defined]


def mp4_frames(path: Path) -> tuple[int, str]:
    with av.open(str(path)) as container:
        name = container.streams.video[0].codec_context.name
        return sum(1 for _ in container.decode(video=0)), name


@pytest.mark.parametrize("fmt", ["coco", "darwin", "labelstudio", "encord"])
def test_render_draws_the_face_box_where_it_was_predicted_and_every_sampled_frame(
    media: dict[str, Path],
    run_outputs: dict[str, Path],
    job_results: dict[str, Path],
    tmp_path: Path,
    fmt: str,
) -> None:
    coco = json.loads(run_outputs["coco"].read_text())
    predictions = {**run_outputs, **job_results}[fmt]
    done = render(media, predictions, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"open {tmp_path / 'index.html'}"
    assert any(line.startswith("astronaut.png: 1 frame(s) drawn") for line in lines)

    drawn, original = read_rgb(tmp_path / "astronaut.png.jpg"), read_rgb(media["photo"])
    colour = sv.ColorPalette.DEFAULT.by_idx(0).as_rgb()  # class 0, "face"
    painted = near(drawn, colour) & ~near(original, colour)
    x1, y1, x2, y2 = face_box(coco)
    assert painted[(y1 + y2) // 2, x1 - 1 : x1 + 2].any()  # the left edge, at the predicted x
    assert painted[(y1 + y2) // 2, x2 - 2 : x2 + 1].any()  # the right edge
    assert painted[y2 - 2 : y2 + 1, (x1 + x2) // 2].any()  # the bottom edge
    assert not painted[y1 + 8 : y2 - 8, x1 + 8 : x2 - 8].any()  # not inside the box
    elsewhere = painted.copy()
    elsewhere[max(0, y1 - 40) : y2 + 4, max(0, x1 - 4) : x2 + 60] = False  # the box, its label above it
    assert elsewhere.sum() < 20, elsewhere.sum()

    frames, codec = mp4_frames(tmp_path / "pan.mp4.mp4")
    assert codec == "h264"
    assert frames == sampled_frames(coco, "pan.mp4") == 6  # 3 s at 2 fps: the run's frames, no more
    assert (tmp_path / "pan.mp4.sheet.jpg").is_file()
    page = (tmp_path / "index.html").read_text()
    assert 'src="astronaut.png.jpg"' in page
    assert '<video controls preload=metadata src="pan.mp4.mp4">' in page


def test_an_item_without_an_input_is_warned_about_and_the_rest_drawn(
    media: dict[str, Path], run_outputs: dict[str, Path], tmp_path: Path
) -> None:
    done = preannotate("render", media["photo"], "--predictions", run_outputs["coco"], "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    [warning] = done.stderr.splitlines()
    assert warning.startswith("warning: ")
    assert "'pan.mp4'" in warning
    assert (tmp_path / "astronaut.png.jpg").is_file()
    assert not (tmp_path / "pan.mp4.mp4").exists()


def test_render_takes_the_preview_settings_and_its_flags_over_them(
    media: dict[str, Path], run_outputs: dict[str, Path], tmp_path: Path
) -> None:
    env = {"PREANNOTATE_PREVIEW_PX": "128", "PREANNOTATE_PREVIEW_SHEET_TILES": "2"}
    by_setting = preannotate(
        "render", media["photo"], media["video"], "--predictions", run_outputs["coco"], "--out", tmp_path / "s", env=env
    )
    assert by_setting.returncode == 0, by_setting.stderr
    assert max(read_rgb(tmp_path / "s" / "astronaut.png.jpg").shape[:2]) == 128
    sheet_by_setting = read_rgb(tmp_path / "s" / "pan.mp4.sheet.jpg")

    by_flag = render(media, run_outputs["coco"], tmp_path / "f", "--preview-px", "96", "--sheet-tiles", "6")
    assert by_flag.returncode == 0, by_flag.stderr
    assert max(read_rgb(tmp_path / "f" / "astronaut.png.jpg").shape[:2]) == 96
    # 2 tiles side by side vs 6 in a 3x2 grid: the sheet of more tiles is the larger one
    assert read_rgb(tmp_path / "f" / "pan.mp4.sheet.jpg").shape[0] > sheet_by_setting.shape[0]


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_bad_inputs_exit_2_with_one_line(media: dict[str, Path], run_outputs: dict[str, Path], tmp_path: Path) -> None:
    not_labels = tmp_path / "other.json"
    not_labels.write_text(json.dumps({"hello": "world"}))
    line = one_error_line(render(media, not_labels, tmp_path / "a"))
    assert str(not_labels) in line
    assert "unsupported_media" in line

    line = one_error_line(preannotate("render", media["text"], "--predictions", run_outputs["coco"], "--out", tmp_path))
    assert str(media["text"]) in line

    other = tmp_path / "renamed.png"
    other.write_bytes(media["photo"].read_bytes())
    line = one_error_line(preannotate("render", other, "--predictions", run_outputs["coco"], "--out", tmp_path / "b"))
    assert str(run_outputs["coco"]) in line
    assert "'astronaut.png'" in line
    assert "'renamed.png'" in line

    a_file = tmp_path / "file"
    a_file.write_text("")
    line = one_error_line(render(media, run_outputs["coco"], a_file))
    assert "--out" in line
