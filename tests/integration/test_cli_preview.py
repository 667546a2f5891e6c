"""``run --preview DIR`` end to end: the predictions drawn in the run's own pass, judged against the COCO file the
same run wrote (a hand-built ONNX detector with a known box, so the boxes are known), decoded with PyAV."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import skimage.data
import supervision as sv
from numpy.typing import NDArray

from models.types import Detections, RGBImage
from service.pipeline.options import SamplingOptions
from service.render.annotate import draw_detections
from service.render.encode import fit_within
from service.render.tap import SCRATCH_PREFIX
from service.samples import write_pan_video
from tests import media_dicom
from tests.integration.test_cli import preannotate
from tests.media import read_video
from tests.unit.models import onnx_graphs

NAMES = ("person", "car")
GRAY = 90
PREVIEW_PX = 500
VIDEO_WH = (1280, 720)
DETECTOR_PX = 640  # the model's input size: the reader decodes the video at this size for it


def _model(path: Path) -> Path:
    """A YOLOv8 layout with one constant candidate (a ``person`` at 0.9) and dynamic input: it keeps the aspect,
    so the run decodes videos scaled to its 640 px input and maps the box back to source pixels."""
    candidates = np.array([[320.0], [200.0], [200.0], [160.0], [0.9], [0.01]], np.float32)
    names = "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(NAMES)) + "}"
    model = onnx_graphs.yolo_model(candidates, height_px=None, width_px=None, metadata={"names": names})
    return onnx_graphs.save(model, path)


@dataclass(frozen=True)
class PreviewRun:
    result: subprocess.CompletedProcess[str]
    coco: dict[str, Any]
    previews: Path
    scratch: Path
    video: Path


@pytest.fixture(scope="module")
def preview_run(tmp_path_factory: pytest.TempPathFactory) -> PreviewRun:
    root = tmp_path_factory.mktemp("preview")
    media = root / "media"
    media.mkdir()
    cv2.imwrite(str(media / "gray.png"), np.full((750, 1000, 3), GRAY, np.uint8))
    video = media / "pan.mp4"
    write_pan_video(skimage.data.astronaut(), video, width_px=VIDEO_WH[0], height_px=VIDEO_WH[1], duration_s=2.0)
    (media / "broken.mp4").write_bytes(video.read_bytes()[:1500])
    (media / "doc.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    media_dicom.multiframe(media / "scan.dcm", 4, FrameTime=500.0)
    scratch = root / "tmp"  # the run's TMPDIR: where it keeps frames until their item is drawn
    scratch.mkdir()
    result = preannotate(
        "run",
        media / "gray.png",
        video,
        media / "broken.mp4",
        media / "doc.pdf",
        "--item",
        "pair",
        "--slot",
        f"left={media / 'gray.png'}",
        "--slot",
        f"right={media / 'scan.dcm'}",
        "--model",
        f"onnx:{_model(root / 'person.onnx')}",
        "--fps",
        "5",
        "--out",
        root / "preds.json",
        "--preview",
        root / "previews",
        "--preview-px",
        str(PREVIEW_PX),
        env={"TMPDIR": str(scratch)},
    )
    coco = json.loads((root / "preds.json").read_text())
    return PreviewRun(result, coco, root / "previews", scratch, video)


def _images(coco: dict[str, Any], item: str, slot: str = "0") -> list[dict[str, Any]]:
    images = [im for im in coco["images"] if im["item"] == item and im.get("slot", "0") == slot]
    return sorted(images, key=lambda im: int(im.get("frame_index", 0)))


def _detections(coco: dict[str, Any], image: dict[str, Any], *, tracks: bool = True) -> Detections:
    """The image's annotations as the run's detections (source pixels), tracker ids from ``track_id``."""
    names = {cat["id"]: cat["name"] for cat in coco["categories"]}
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32).reshape(-1, 4)
    tracker = np.array([a["track_id"] for a in anns]) if tracks and all("track_id" in a for a in anns) else None
    return Detections(
        xyxy,
        np.array([a["score"] for a in anns], np.float32),
        np.array([NAMES.index(names[a["category_id"]]) for a in anns]),
        tracker,
    )


def _read(path: Path) -> RGBImage:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.ascontiguousarray(image[:, :, ::-1])


def _mp4_frames(path: Path) -> list[RGBImage]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def _distance(image: RGBImage, color: tuple[int, int, int]) -> NDArray[np.float64]:
    return np.asarray(np.abs(image.astype(np.float64) - np.array(color, np.float64)).max(axis=-1))


def test_the_run_succeeds_for_good_slots_and_names_the_broken_one(preview_run: PreviewRun) -> None:
    result = preview_run.result
    assert result.returncode == 2, result.stderr  # broken.mp4 is bad input
    assert "Traceback" not in result.stderr
    assert "broken.mp4" in result.stderr
    assert f"preview file(s) to {preview_run.previews}" in result.stderr
    assert f"open {preview_run.previews / 'index.html'}" in result.stderr
    files = sorted(p.relative_to(preview_run.previews).as_posix() for p in preview_run.previews.rglob("*.*"))
    # a still -> JPEG; a video and a multi-frame DICOM -> MP4 + contact sheet; slots of an item in its folder;
    # nothing for the failed video and the PDF (never decoded)
    assert files == [
        "gray.png.jpg",
        "index.html",  # the page over them all, named last on stderr
        "pair/left.jpg",
        "pair/right.mp4",
        "pair/right.sheet.jpg",
        "pan.mp4.mp4",
        "pan.mp4.sheet.jpg",
    ]


def test_the_jpeg_shows_the_coco_box_in_its_class_colour(preview_run: PreviewRun) -> None:
    (image,) = _images(preview_run.coco, "gray.png")
    detections = _detections(preview_run.coco, image)
    assert len(detections) == 1
    picture = _read(preview_run.previews / "gray.png.jpg")
    assert picture.shape[:2] == (375, PREVIEW_PX)  # 1000 x 750 fitted within 500 px
    scale = PREVIEW_PX / image["width"]
    x1, y1, x2, y2 = (round(v * scale) for v in detections.xyxy[0])
    color = sv.ColorPalette.DEFAULT.by_idx(int(detections.class_id[0])).as_rgb()
    near = _distance(picture, color) < 40
    rows = slice(y1 + (y2 - y1) // 3, y2 - (y2 - y1) // 3)  # clear of the label at the top
    cols = slice(x1 + (x2 - x1) // 3, x2 - (x2 - x1) // 3)
    for edge in (near[rows, x1 - 2 : x1 + 3], near[rows, x2 - 2 : x2 + 3], near[y2 - 2 : y2 + 3, cols].T):
        assert edge.any(axis=1).all()  # the line runs along the whole edge, where the COCO box says
    inside = picture[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10].astype(int)
    assert np.abs(inside[rows.start - y1 :] - GRAY).max() < 12  # untouched inside (no mask from this model)
    assert (_distance(picture, color)[: y1 - 40] > 60).all()  # and nothing drawn far from the box


def test_the_video_mp4_has_the_sampled_frames_and_draws_track_ids(preview_run: PreviewRun) -> None:
    images = _images(preview_run.coco, "pan.mp4")
    assert len(images) == 10  # 2 s at 5 fps
    frames = _mp4_frames(preview_run.previews / "pan.mp4.mp4")
    assert len(frames) == len(images)
    assert frames[0].shape[1] == PREVIEW_PX  # 1280 x 720, decoded at 640 px for the model, fitted within 500
    tracked = _detections(preview_run.coco, images[0])
    assert tracked.tracker_id is not None
    assert (tracked.tracker_id >= 1).all()
    # what the first frame looks like drawn with and without its track ids: the MP4 is the one with them
    _, decoded = read_video(preview_run.video, SamplingOptions(fps=5, detector_size_px=DETECTOR_PX))
    source = fit_within(decoded[0][2], PREVIEW_PX)
    wh = (images[0]["width"], images[0]["height"])
    with_ids = draw_detections(source, tracked, NAMES, source_wh=wh).astype(int)
    without = draw_detections(source, _detections(preview_run.coco, images[0], tracks=False), NAMES, source_wh=wh)
    label = np.abs(with_ids - without.astype(int)).max(axis=-1) > 60  # where "#1" changes the label
    assert label.sum() > 20
    shown = frames[0][: source.shape[0], : source.shape[1]].astype(int)
    error_with = np.abs(shown - with_ids).max(axis=-1)[label].mean()
    error_without = np.abs(shown - without.astype(int)).max(axis=-1)[label].mean()
    assert error_with < error_without / 3, (error_with, error_without)


def test_the_dicom_slot_mp4_has_its_frames(preview_run: PreviewRun) -> None:
    images = _images(preview_run.coco, "pair", "right")
    assert len(images) >= 2  # a multi-frame slot: an MP4
    assert len(_mp4_frames(preview_run.previews / "pair" / "right.mp4")) == len(images)
    assert _read(preview_run.previews / "pair" / "right.sheet.jpg").shape[0] > 0


def test_kept_frames_are_deleted(preview_run: PreviewRun) -> None:
    assert list(preview_run.scratch.glob(f"{SCRATCH_PREFIX}*")) == []


def test_the_video_is_decoded_once_with_or_without_previews(
    preview_run: PreviewRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previews come from the frames the run decodes for the model: ``--preview`` opens the source no more
    often than a run without it (PyAV's ``open`` counted, in process)."""
    from service.commands.run import RunRequest, execute_run, preview_options
    from service.config import Settings
    from service.pipeline.media import item_from_path

    opened: list[str] = []
    real_open = av.open

    def counting_open(file: Any, mode: str = "r", **kwargs: Any) -> Any:
        if mode == "r" and str(file).endswith(str(preview_run.video)):
            opened.append(str(file))
        return real_open(file, mode, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    settings = Settings()

    def run(preview: Path | None) -> int:
        opened.clear()
        request = RunRequest(
            items=[item_from_path(preview_run.video)],
            model_spec=f"onnx:{_model(tmp_path / 'person.onnx')}",
            detector_options=settings.detector_options(),
            sampling=SamplingOptions(fps=5),
            threshold=0.5,
            classes=None,
            out=tmp_path / "preds.json",
            quiet=True,
            preview=preview,
            preview_options=preview_options(settings, longest_px=PREVIEW_PX),
        )
        output, failures = execute_run(request, settings)
        assert failures == []
        assert len(output.previews) == (0 if preview is None else 2)
        return len(opened)

    plain = run(None)
    assert plain >= 1
    assert run(tmp_path / "previews") == plain
    assert len(_mp4_frames(tmp_path / "previews" / "pan.mp4.mp4")) == 10


def test_masks_are_drawn_where_the_coco_masks_are(tmp_path: Path) -> None:
    """A hand-built YOLO ``-seg`` export (``seg_graphs``: bands and a disk cut by their boxes): the preview is tinted
    inside the masks of the COCO file and left alone in the rest of the boxes."""
    from pycocotools import mask as mask_utils

    from tests.unit.models import seg_graphs

    cv2.imwrite(str(tmp_path / "gray.png"), np.full((640, 640, 3), GRAY, np.uint8))
    result = preannotate(
        "run",
        tmp_path / "gray.png",
        "--model",
        f"onnx:{seg_graphs.write(tmp_path / 'seg.onnx')}",
        "--out",
        tmp_path / "preds.json",
        "--preview",
        tmp_path / "previews",
    )
    assert result.returncode == 0, result.stderr
    anns = json.loads((tmp_path / "preds.json").read_text())["annotations"]
    assert len(anns) >= 2
    masks = np.zeros((640, 640), bool)
    boxes = np.zeros((640, 640), bool)
    for ann in anns:
        masks |= mask_utils.decode(ann["segmentation"]).astype(bool)
        x, y, w, h = (round(v) for v in ann["bbox"])
        boxes[y + 30 : y + h, x : x + w] = True  # below the label
    kernel = np.ones((9, 9), np.uint8)
    in_masks = cv2.erode(masks.astype(np.uint8), kernel).astype(bool)
    box_only = cv2.erode((boxes & ~masks).astype(np.uint8), kernel).astype(bool)
    assert in_masks.sum() > 1000
    assert box_only.sum() > 1000
    change = np.abs(_read(tmp_path / "previews" / "gray.png.jpg").astype(int) - GRAY).max(axis=-1)
    assert np.median(change[in_masks]) > 30
    assert np.median(change[box_only]) < 8


def test_a_preview_dir_that_cannot_be_one_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((64, 64, 3), GRAY, np.uint8))
    result = preannotate(
        "run", tmp_path / "gray.png", "--model", "onnx:/nonexistent.onnx", "--out", tmp_path / "p.json",
        "--preview", tmp_path / "taken",
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"--preview {tmp_path / 'taken'}: exists and is not a directory" in result.stderr
    assert not (tmp_path / "p.json").exists()
