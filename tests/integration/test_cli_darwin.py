"""``preannotate run --format darwin`` end to end: real subprocesses, generated media, the real default model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import skimage.data

from models.types import RGBImage
from service.commands.run import item_file_name
from service.samples import write_pan_video
from tests import media_dicom
from tests.integration.test_cli import preannotate
from tests.unit.service.convert.test_darwin import schema_errors

# A one-page PDF, hand-written: PDF slots are listed, never decoded, so any valid header will do.
TINY_PDF = b"""%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >> endobj
trailer << /Root 1 0 R >>
%%EOF
"""


def write_still_video(image: RGBImage, path: Path, *, fps: int = 25, duration_s: float = 3.0) -> None:
    """The same picture on every frame: whatever is in it is a static object."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": "25", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        for _ in range(round(fps * duration_s)):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def write_png(image: RGBImage, path: Path) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    astronaut = skimage.data.astronaut()
    paths = {
        "face": write_png(astronaut, root / "astronaut.png"),
        "cat": write_png(skimage.data.chelsea(), root / "chelsea.png"),
        "pan": root / "pan.mp4",
        "still": root / "still.mp4",
        "dicom": media_dicom.multiframe(root / "scan.dcm", 6, FrameTime=500.0),
        "pdf": root / "report.pdf",
    }
    write_pan_video(astronaut, paths["pan"], duration_s=3.0, fps=25)
    write_still_video(np.ascontiguousarray(astronaut), paths["still"])
    paths["pdf"].write_bytes(TINY_PDF)
    return paths


def run_darwin(out: Path, *args: str | Path) -> dict[str, dict[str, Any]]:
    """Run with ``--format darwin``; every written file, by file name, each checked against the schema."""
    result = preannotate("run", *args, "--fps", "2", "--format", "darwin", "--out", out)
    assert result.returncode == 0, result.stderr
    documents = {path.name: json.loads(path.read_text()) for path in sorted(out.glob("*.json"))}
    for name, document in documents.items():
        assert schema_errors(document) == [], name
    return documents


def slots_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(slot["slot_name"], slot["type"]) for slot in document["item"]["slots"]]


def test_two_image_slots(media: dict[str, Path], tmp_path: Path) -> None:
    documents = run_darwin(
        tmp_path, "--item", "pair", "--slot", f"left={media['face']}", "--slot", f"right={media['cat']}"
    )

    document = documents["pair.json"]
    assert list(documents) == ["pair.json"]
    assert document["item"]["name"] == "pair"
    assert slots_of(document) == [("left", "image"), ("right", "image")]
    assert document["item"]["slots"][0]["source_files"] == [{"file_name": "astronaut.png"}]
    faces = [a for a in document["annotations"] if a["slot_names"] == ["left"]]
    assert len(faces) == 1
    assert faces[0]["name"] == "face"
    assert faces[0]["inference"]["model"]["name"].startswith("builtin:centerface@")


def test_video_and_image_slots(media: dict[str, Path], tmp_path: Path) -> None:
    documents = run_darwin(
        tmp_path, "--item", "walk", "--slot", f"video={media['pan']}", "--slot", f"plan={media['face']}"
    )

    document = documents["walk.json"]
    assert slots_of(document) == [("video", "video"), ("plan", "image")]
    video = document["item"]["slots"][0]
    assert (video["width"], video["height"], video["fps"], video["frame_count"]) == (320, 240, 25.0, 75)
    tracks = [a for a in document["annotations"] if a["slot_names"] == ["video"]]
    # The camera pans slowly across one face: one track, keyframes on the 2 fps samples
    assert len(tracks) == 1
    assert list(tracks[0]["frames"]) == ["0", "12", "25", "37", "50", "62"]
    assert tracks[0]["ranges"] == [[0, 63]]
    assert [a["name"] for a in document["annotations"] if a["slot_names"] == ["plan"]] == ["face"]


def test_dicom_and_pdf_slots(media: dict[str, Path], tmp_path: Path) -> None:
    documents = run_darwin(
        tmp_path, "--item", "patient 17/ct", "--slot", f"scan={media['dicom']}", "--slot", f"report={media['pdf']}"
    )

    document = documents["patient_17_ct.json"]  # the file name is made safe; the item keeps its name
    assert document["item"]["name"] == "patient 17/ct"
    assert document["item"]["slots"] == [
        {
            "type": "dicom",
            "slot_name": "scan",
            "width": 6,
            "height": 4,
            "fps": None,
            "frame_count": 6,
            "source_files": [{"file_name": "scan.dcm"}],
        },
        {"type": "pdf", "slot_name": "report", "source_files": [{"file_name": "report.pdf"}]},
    ]
    assert document["annotations"] == []  # flat grey slices: nothing to find


def test_static_face_in_a_video_is_one_track_and_coco_carries_it(media: dict[str, Path], tmp_path: Path) -> None:
    # Given a still video of a face, plus a photo, as positional inputs (one file per item)
    documents = run_darwin(tmp_path / "darwin", media["still"], media["face"])
    coco_out = tmp_path / "preds.json"
    coco_run = preannotate("run", media["still"], "--fps", "2", "--out", coco_out)
    assert coco_run.returncode == 0, coco_run.stderr
    coco = json.loads(coco_out.read_text())

    # Then the video holds exactly one annotation, keyed on every sampled frame
    assert sorted(documents) == ["astronaut.png.json", "still.mp4.json"]
    (track,) = documents["still.mp4.json"]["annotations"]
    sampled = [image["frame_index"] for image in coco["images"]]
    assert sampled == [0, 12, 25, 37, 50, 62]
    assert list(track["frames"]) == [str(i) for i in sampled]
    assert all(frame["keyframe"] for frame in track["frames"].values())
    assert (track["ranges"], track["interpolated"]) == ([[0, 63]], True)
    # And COCO marks every one of its boxes with the same track
    assert [ann["track_id"] for ann in coco["annotations"]] == [1] * len(sampled)


def test_no_tracks_flag_leaves_video_detections_unlinked(media: dict[str, Path], tmp_path: Path) -> None:
    documents = run_darwin(tmp_path, media["still"], "--no-tracks")

    annotations = documents["still.mp4.json"]["annotations"]
    assert [a["ranges"] for a in annotations] == [[[i, i + 1]] for i in (0, 12, 25, 37, 50, 62)]


def test_out_must_be_a_directory(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "file.json"
    out.write_text("{}")
    result = preannotate("run", media["face"], "--format", "darwin", "--out", out)
    assert result.returncode == 2
    assert result.stderr == f"error: invalid_argument: --out {out}: exists and is not a directory\n"


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["clip.mp4"], ["clip.mp4.json"]),
        (["a/b c", "a_b_c", "A_B_C"], ["a_b_c.json", "a_b_c-2.json", "A_B_C-3.json"]),
        (["../etc/passwd", "..", "ünï"], ["_etc_passwd.json", "item.json", "_n_.json"]),
    ],
)
def test_item_file_names_are_safe_and_unique(names: list[str], expected: list[str]) -> None:
    taken: set[str] = set()
    assert [item_file_name(name, taken) for name in names] == expected
