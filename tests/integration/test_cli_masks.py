"""``preannotate run --segmenter``: the issue's "done when", end to end in real subprocesses with the real default
detector and a tiny random SAM saved with ``save_pretrained``; every output judged by its consumer library."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from service.samples import write_pan_video
from tests.integration.darwin_py import darwin_py_parse
from tests.integration.test_cli import preannotate

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.unit.models.hf_checkpoints import write_tiny_sam

    root = tmp_path_factory.mktemp("masks")
    astronaut = skimage.data.astronaut()
    paths = {"photo": root / "astronaut.png", "video": root / "pan.mp4", "sam": root / "sam"}
    cv2.imwrite(str(paths["photo"]), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    write_pan_video(astronaut, paths["video"], duration_s=2.0, fps=25)
    write_tiny_sam(paths["sam"])
    return paths


def _run(files: dict[str, Path], *args: str | Path) -> None:
    result = preannotate("run", *args, "--segmenter", f"hf:{files['sam']}")
    assert result.returncode == 0, result.stderr


def test_coco_rle_masks_load_in_pycocotools_and_segm_eval_runs(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "coco.json"
    _run(files, files["photo"], "--format", "coco", "--out", out)

    coco = COCO(str(out))
    (annotation,) = coco.dataset["annotations"]  # the astronaut's face
    segmentation = annotation["segmentation"]
    assert set(segmentation) == {"size", "counts"}
    assert segmentation["size"] == [512, 512]
    mask = coco.annToMask(annotation).astype(bool)
    assert mask.any()
    assert annotation["area"] == float(mask.sum())
    # SAM's mask stays around its prompt box (the segmenter samples it in the box grown by 10 %)
    x, y, w, h = annotation["bbox"]
    ys, xs = np.nonzero(mask)
    margin = max(4.0, 0.1 * max(w, h)) + 1
    assert xs.min() >= x - margin
    assert xs.max() <= x + w + margin
    assert ys.min() >= y - margin
    assert ys.max() <= y + h + margin

    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco, coco.loadRes(coco.dataset["annotations"]), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_darwin_polygons_parse_in_darwin_py_and_score_one_against_the_coco_masks(
    files: dict[str, Path], tmp_path: Path
) -> None:
    darwin, coco = tmp_path / "darwin", tmp_path / "coco.json"
    _run(files, files["photo"], "--format", "darwin", "--out", darwin)
    _run(files, files["photo"], "--format", "coco", "--out", coco)

    (parsed,) = darwin_py_parse(sorted(darwin.glob("*.json")))
    assert [a["type"] for a in parsed["annotations"]] == ["polygon"]

    # Our evaluate scores the Darwin polygons against the COCO RLE of the same run by mask IoU: exactly 1
    result = preannotate("evaluate", "--benchmark", darwin, "--candidate", coco, "--out", tmp_path / "eval")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert (summary["tp"], summary["fp"], summary["fn"]) == (1, 0, 0)
    assert summary["mean_iou"] == pytest.approx(1.0)


def test_video_tracks_carry_a_mask_on_every_sampled_frame(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "video.json"
    _run(files, files["video"], "--fps", "2", "--format", "coco", "--out", out)

    coco = COCO(str(out))
    annotations = coco.dataset["annotations"]
    assert len(annotations) >= 3
    assert all("track_id" in a for a in annotations)
    assert all(coco.annToMask(a).any() for a in annotations)
