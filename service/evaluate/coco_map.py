"""COCO mAP@[.5:.95], mAP50, per-class AP and the PR curve, by pycocotools' own COCOeval on the scored frames."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from service.errors import ErrorCode, PreannotateError
from service.evaluate.exports import CocoAnnotation, CocoCategory, CocoDocument, CocoImage
from service.evaluate.metrics import FramePair
from service.evaluate.types import CocoRle, Shape


class ClassAp(TypedDict):
    """One class's AP (over IoU 0.50:0.95) and AP50; None when the benchmark has none of it."""

    ap: float | None
    ap50: float | None


@dataclass(slots=True)
class MapResult:
    """COCO figures (``-1`` entries of COCOeval become None: a class with no benchmark object has no AP).

    Attributes:
        iou_type: ``bbox`` or ``segm`` (only when every shape on both sides is a polygon or mask).
        map: AP averaged over IoU 0.50:0.05:0.95, all areas, 100 detections per frame.
        map50: AP at IoU 0.5.
        per_class: class -> {"ap", "ap50"}.
        pr_curve: (recall, precision) at IoU 0.5, precision averaged over classes, 101 recall points.
    """

    iou_type: str
    map: float
    map50: float
    per_class: dict[str, ClassAp] = field(default_factory=dict)
    pr_curve: list[tuple[float, float]] = field(default_factory=list)


def _cocoeval() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO  # type: ignore[import-untyped, unused-ignore]  # no stubs
        from pycocotools.cocoeval import COCOeval  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise PreannotateError(
            ErrorCode.MISSING_DEPENDENCY, "mAP needs pycocotools: pip install 'preannotate[eval]'"
        ) from None
    return COCO, COCOeval


def _bbox(shape: Shape, exact: bool) -> list[float]:
    # The source's own x, y, w, h when it is in pixels: x2 - x1 would add float error at the IoU threshold.
    if exact and shape.box_src is not None:
        return list(shape.box_src)
    x1, y1, x2, y2 = shape.xyxy
    return [x1, y1, x2 - x1, y2 - y1]


def _segmentation(shape: Shape) -> CocoRle | list[list[float]]:
    if shape.rle is not None:
        return shape.rle.copy()
    return [list(ring) for ring in shape.polygons]


def frame_pairs_to_coco(
    frames: Sequence[FramePair], *, iou_type: str, gt_exact: bool, dt_exact: bool
) -> tuple[CocoDocument, list[CocoAnnotation]]:
    """The scored frames as a COCO ground-truth dict and a COCO results list (categories sorted by name)."""
    labels = sorted({s.label for f in frames for s in (*f.gt, *f.dt)})
    category = {label: i + 1 for i, label in enumerate(labels)}
    images: list[CocoImage] = []
    gts: list[CocoAnnotation] = []
    dts: list[CocoAnnotation] = []
    for image_id, frame in enumerate(frames, start=1):
        images.append({"id": image_id, "width": frame.width or 1, "height": frame.height or 1})
        for shape in frame.gt:
            bbox = _bbox(shape, gt_exact)
            ann: CocoAnnotation = {
                "id": len(gts) + 1,
                "image_id": image_id,
                "category_id": category[shape.label],
                "bbox": bbox,
            }
            ann |= {"area": bbox[2] * bbox[3], "iscrowd": int(shape.crowd)}
            if iou_type == "segm":
                ann["segmentation"] = _segmentation(shape)
            gts.append(ann)
        for shape in frame.dt:
            det: CocoAnnotation = {
                "image_id": image_id,
                "category_id": category[shape.label],
                "bbox": _bbox(shape, dt_exact),
            }
            det["score"] = float(shape.score if shape.score is not None else 0.0)
            if iou_type == "segm":
                det["segmentation"] = _segmentation(shape)
            dts.append(det)
    categories: list[CocoCategory] = [{"id": i, "name": label} for label, i in category.items()]
    return {"images": images, "annotations": gts, "categories": categories}, dts


def _iou_type(frames: Sequence[FramePair]) -> str:
    shapes = [s for f in frames for s in (*f.gt, *f.dt)]
    masks = shapes and all(s.has_mask for s in shapes) and all(f.width and f.height for f in frames)
    return "segm" if masks else "bbox"


def _mean_valid(values: np.ndarray[Any, Any]) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def compute_map(frames: Sequence[FramePair], *, gt_exact: bool = False, dt_exact: bool = False) -> MapResult | None:
    """COCO mAP of the candidate's scored shapes on the given frames; None when the benchmark has no objects.

    Args:
        frames: every scored frame (benchmark frames the candidate lacks included: their objects are misses).
        gt_exact: benchmark ``box_src`` is in pixels (COCO, Darwin) and can be used as the bbox as is.
        dt_exact: the same for the candidate.
    """
    if not any(f.gt for f in frames):
        return None
    coco_cls, eval_cls = _cocoeval()
    iou_type = _iou_type(frames)
    gt_dict, dts = frame_pairs_to_coco(frames, iou_type=iou_type, gt_exact=gt_exact, dt_exact=dt_exact)
    if not dts:
        return MapResult(iou_type, 0.0, 0.0, {c["name"]: {"ap": 0.0, "ap50": 0.0} for c in gt_dict["categories"]})
    # pycocotools prints progress on stdout; the CLI's stdout is not its to write on.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dts)
        evaluator = eval_cls(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max dets]
    per_class: dict[str, ClassAp] = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        name = coco_gt.cats[cat_id]["name"]
        per_class[name] = {"ap": _mean_valid(precision[:, :, k, 0, -1]), "ap50": _mean_valid(precision[0, :, k, 0, -1])}
    curve = precision[0, :, :, 0, -1]  # (recall points, classes) at IoU 0.5
    pr = []
    for r, row in zip(evaluator.params.recThrs.tolist(), curve, strict=True):
        mean = _mean_valid(row)
        if mean is not None:
            pr.append((float(r), mean))
    stats = evaluator.stats
    return MapResult(iou_type, max(float(stats[0]), 0.0), max(float(stats[1]), 0.0), per_class, pr)
