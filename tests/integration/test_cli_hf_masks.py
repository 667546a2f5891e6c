"""``preannotate run --model hf:DIR`` with an instance-segmentation checkpoint (a tiny random Mask2Former): the
detector's own masks reach the COCO file as RLE that pycocotools reads, in source pixels, no segmenter needed."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.integration.test_cli import preannotate

pytest.importorskip("torch")
pytest.importorskip("transformers")

PHOTO_HW = (400, 640)  # not square: the model's input is padded/rounded on one axis only


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.unit.models.hf_checkpoints import write_tiny_mask2former

    root = tmp_path_factory.mktemp("hf_masks")
    photo = cv2.resize(skimage.data.astronaut(), PHOTO_HW[::-1], interpolation=cv2.INTER_AREA)
    paths = {"photo": root / "astronaut.png", "model": root / "m2f"}
    cv2.imwrite(str(paths["photo"]), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    write_tiny_mask2former(paths["model"])
    return paths


def test_mask2former_rows_are_coco_rle_masks_in_source_pixels(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "coco.json"
    model = f"hf:{files['model']}"
    args = ("--model", model, "--threshold", "0.05", "--format", "coco", "--out", out)
    result = preannotate("run", files["photo"], *args)
    assert result.returncode == 0, result.stderr

    coco = COCO(str(out))
    assert {c["name"] for c in coco.dataset["categories"]} >= {"cat", "dog", "car"}
    annotations = coco.dataset["annotations"]
    assert annotations  # random weights: some rows pass 0.05
    for annotation in annotations:
        segmentation = annotation["segmentation"]
        assert set(segmentation) == {"size", "counts"}
        assert segmentation["size"] == list(PHOTO_HW)
        mask = coco.annToMask(annotation).astype(bool)
        assert annotation["area"] == float(mask.sum()) > 0
        # the row's box is its mask's tight box (each scaled back to the source on its own: within a pixel)
        ys, xs = np.nonzero(mask)
        x, y, w, h = annotation["bbox"]
        np.testing.assert_allclose([x, y, x + w, y + h], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.5)

    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco, coco.loadRes(annotations), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] > 0
