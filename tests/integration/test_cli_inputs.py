"""Folders and @lists on the command line, end to end: one item per file, sequences and series grouped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
from PIL import Image
from pycocotools.coco import COCO

from service.samples import write_pan_video
from tests import media_dicom
from tests.integration.test_cli import preannotate


def write_photo(path: Path, width: int, height: int) -> Path:
    Image.fromarray(np.asarray(skimage.data.astronaut())[:height, :width]).save(path)
    return path


def images_by_item(out: Path) -> dict[str, list[dict[str, Any]]]:
    COCO(str(out))  # the file loads in pycocotools
    by_item: dict[str, list[dict[str, Any]]] = {}
    for image in json.loads(out.read_text())["images"]:
        by_item.setdefault(image["item"], []).append(image)
    return by_item


def test_a_folder_of_photos_of_several_sizes_is_one_item_per_photo(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {"beach.jpg": (320, 240), "cat.png": (200, 300), "dog.jpg": (256, 256)}
    for name, (width, height) in sizes.items():
        write_photo(photos / name, width, height)
    out = tmp_path / "preds.json"
    result = preannotate("run", photos, "--out", out, "-q")
    assert result.returncode == 0, result.stderr
    by_item = images_by_item(out)
    assert {item: [(i["width"], i["height"], i["file_name"]) for i in ims] for item, ims in by_item.items()} == {
        name: [(*size, name)] for name, size in sizes.items()
    }
    assert all("video" not in image for images in by_item.values() for image in images)  # photos, not frames


def test_numbered_frames_of_one_size_are_one_sequence_and_sequence_forces_one(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(3):
        write_photo(clip / f"frame_{i:04d}.png", 160, 120)
    out = tmp_path / "preds.json"
    result = preannotate("run", clip, "--out", out, "-q")
    assert result.returncode == 0, result.stderr
    frames = images_by_item(out)["clip"]
    assert [(i["frame_index"], i["file_name"]) for i in frames] == [(n, f"clip/frame_{n:04d}.png") for n in range(3)]
    # photos of two sizes forced into a sequence: a clear error naming both, never a resized "video"
    write_photo(clip / "frame_0003.png", 200, 120)
    result = preannotate("run", clip, "--sequence", "--out", out, "-q")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "invalid_argument" in error
    assert f"{clip / 'frame_0000.png'} is 160x120, {clip / 'frame_0003.png'} is 200x120" in error


def test_a_mixed_folder_names_what_it_skips_and_processes_the_rest(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_photo(mixed / "photo.jpg", 256, 200)
    write_pan_video(np.asarray(skimage.data.astronaut()), mixed / "pan.mp4", duration_s=1.0, fps=10)
    (mixed / "notes.txt").write_text("not media\n" * 50)
    out = tmp_path / "preds.json"
    (mixed / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    result = preannotate("run", mixed, "--fps", "2", "--out", out, "-q")
    assert result.returncode == 0, result.stderr  # a folder's other files are named, and fail nothing
    assert result.stderr.splitlines()[:2] == [
        f"skipped: {mixed / 'notes.txt'}: unsupported_media (not an image, video, DICOM or PDF file)",
        f"skipped: {mixed / 'Thumbs.db'}: unsupported_media (not an image, video, DICOM or PDF file)",
    ]
    by_item = images_by_item(out)
    assert sorted(by_item) == ["pan.mp4", "photo.jpg"]
    assert [i["frame_index"] for i in by_item["pan.mp4"]] == [0, 5]
    # what the user named still fails the run: the same file as an input, or a folder of nothing to run
    result = preannotate("run", mixed / "photo.jpg", mixed / "notes.txt", "--out", out, "-q")
    assert result.returncode == 2, result.stderr
    (mixed / "photo.jpg").unlink()
    (mixed / "pan.mp4").unlink()
    result = preannotate("run", mixed, "--out", out, "-q")
    assert result.returncode == 2, result.stderr
    assert f"skipped: {mixed}: input_not_found (no image, video, DICOM or PDF file in it)" in result.stderr


def test_a_list_with_a_bad_line_fails_that_line_alone(tmp_path: Path) -> None:
    (tmp_path / "shots").mkdir()
    write_photo(tmp_path / "shots" / "a.jpg", 128, 96)
    write_photo(tmp_path / "b.png", 96, 128)
    listing = tmp_path / "inputs.txt"
    listing.write_text("shots/a.jpg\nshots/gone.jpg\nb.png\n")
    out = tmp_path / "darwin"
    result = preannotate("run", f"@{listing}", "--format", "darwin", "--out", out, "-q")
    assert result.returncode == 2, result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
    assert skipped == [f"skipped: {tmp_path / 'shots/gone.jpg'} ({listing} line 2): input_not_found (no such file)"]
    documents = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(documents) == ["b.png.json", "shots_a.jpg.json"]
    slots = {d["item"]["name"]: d["item"]["slots"] for d in documents.values()}
    assert {name: [(s["type"], s["width"], s["height"]) for s in slot] for name, slot in slots.items()} == {
        "shots/a.jpg": [("image", 128, 96)],
        "b.png": [("image", 96, 128)],
    }


def test_a_folder_of_dicom_slices_is_still_one_series(tmp_path: Path) -> None:
    ct = tmp_path / "ct"
    ct.mkdir()
    for name, z in zip([2, 0, 1], range(3), strict=True):  # extensionless, named against the anatomy
        media_dicom.write_dicom(
            ct / f"IM{name}",
            np.full((32, 32), 40 * z, np.uint8),
            ImagePositionPatient=[0.0, 0.0, float(z)],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        )
    out = tmp_path / "preds.json"
    result = preannotate("run", ct, "--out", out, "-q")
    assert result.returncode == 0, result.stderr
    by_item = images_by_item(out)
    assert list(by_item) == ["ct"]
    assert [(i["frame_index"], i["file_name"]) for i in by_item["ct"]] == [
        (n, f"ct/frame_{n:06d}.jpg") for n in range(3)
    ]
