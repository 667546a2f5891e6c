"""One-to-one matching on one frame: Hungarian assignment on IoU, with a threshold.

Each benchmark object takes at most one candidate object and vice versa, so a duplicate box on an object is
one TP plus one FP (the seed scores both as perfect), and an object nobody drew is an FN (the seed never sees it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped, unused-ignore]  # stubs optional

from models.ops.boxes import box_iof_matrix, box_iou_matrix
from service.evaluate.geometry import (
    boxes_to_array,
    canvas_size,
    mask_iou_matrix,
    shape_to_rle,
)
from service.evaluate.types import NO_CLASS, Shape


@dataclass(slots=True)
class FrameMatch:
    """The outcome on one frame (indices into the frame's benchmark and candidate shape lists).

    Attributes:
        matches: (benchmark index, candidate index, IoU) of the class-aware one-to-one pairs: the TPs.
        missed: benchmark indices left unmatched: FNs (crowd regions excluded).
        extra: candidate indices left unmatched: FPs.
        ignored: candidate indices inside a crowd region of their class (neither TP nor FP, as in COCO).
        confusion: (benchmark label, candidate label) per pair of the class-agnostic pass, with ``(none)`` for
            an unmatched side: where the class was wrong although the place was right.
    """

    matches: list[tuple[int, int, float]] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    ignored: list[int] = field(default_factory=list)
    confusion: list[tuple[str, str]] = field(default_factory=list)


def shapes_to_iou_matrix(
    gt: Sequence[Shape], dt: Sequence[Shape], *, width: int | None, height: int | None
) -> NDArray[np.float64]:
    """(len(gt), len(dt)) IoU: mask IoU where both shapes have a polygon or mask, box IoU otherwise.

    A box against a polygon is scored box to box (the polygon's enclosing box): a box-only model is not
    punished for not drawing outlines it was never asked for.
    """
    ious = box_iou_matrix(boxes_to_array(gt), boxes_to_array(dt))
    gi = [i for i, s in enumerate(gt) if s.has_mask]
    di = [j for j, s in enumerate(dt) if s.has_mask]
    if not gi or not di:
        return ious
    h, w, scale = canvas_size([*gt, *dt], width, height)
    g_rles = {i: rle for i in gi if (rle := shape_to_rle(gt[i], h, w, scale)) is not None}
    d_rles = {j: rle for j in di if (rle := shape_to_rle(dt[j], h, w, scale)) is not None}
    if g_rles and d_rles:
        # A mask drawn on another canvas has no RLE here and keeps its box IoU.
        ious[np.ix_(list(g_rles), list(d_rles))] = mask_iou_matrix(list(g_rles.values()), list(d_rles.values()))
    return ious


def assign(valid: NDArray[np.bool_], ious: NDArray[np.float64], same_class: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """A one-to-one assignment over ``valid`` pairs: most pairs first, then most same-class pairs, then the
    highest total IoU (lexicographic, through weights that keep each level above the sum of the next)."""
    if valid.size == 0 or not valid.any():
        return []
    k = min(valid.shape)
    class_weight = k + 1.0  # above any total IoU (at most k)
    pair_weight = (k + 1.0) * (class_weight + 1.0)  # above any total of class bonus plus IoU
    weights = np.where(valid, pair_weight + class_weight * same_class + ious, 0.0)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid[r, c]]


def same_class_matrix(gt: Sequence[Shape], dt: Sequence[Shape]) -> NDArray[np.bool_]:
    """(len(gt), len(dt)): whether the two shapes carry the same label."""
    if not gt or not dt:
        return np.zeros((len(gt), len(dt)), dtype=bool)
    labels_g = np.asarray([s.label for s in gt], dtype=object)
    labels_d = np.asarray([s.label for s in dt], dtype=object)
    return np.asarray(labels_g[:, None] == labels_d[None, :], dtype=bool).reshape(len(gt), len(dt))


def in_crowd(dt: Sequence[Shape], crowd: Sequence[Shape], *, iou_threshold: float) -> list[bool]:
    """Per candidate: whether it lies in a crowd region of its class (COCO: neither right nor wrong there)."""
    if not dt or not crowd:
        return [False] * len(dt)
    iof = box_iof_matrix(boxes_to_array(dt), boxes_to_array(crowd))
    same = same_class_matrix(dt, crowd)
    flags = np.asarray(((iof >= iou_threshold) & same).any(axis=1), dtype=bool)
    return [bool(flag) for flag in flags.tolist()]


def match_class_aware(
    gt: Sequence[Shape],
    crowd: Sequence[Shape],
    dt: Sequence[Shape],
    ious: NDArray[np.float64],
    *,
    iou_threshold: float,
) -> FrameMatch:
    """The class-aware one-to-one pass of ``match_frame`` on a precomputed (len(gt), len(dt)) IoU matrix.

    ``gt`` holds the scored (non-crowd) benchmark shapes, ``crowd`` the crowd regions; indices in the result
    are into ``gt`` and ``dt``, and ``confusion`` is left empty. A pair never joins two classes, so each
    class's outcome depends on that class's shapes alone (calibration re-runs it per class and threshold).
    """
    same = same_class_matrix(gt, dt)
    pairs = assign((ious >= iou_threshold) & same, ious, same)
    result = FrameMatch(matches=[(r, c, float(ious[r, c])) for r, c in pairs])
    matched_g, matched_d = {r for r, _ in pairs}, {c for _, c in pairs}
    result.missed = [r for r in range(len(gt)) if r not in matched_g]
    extra = [c for c in range(len(dt)) if c not in matched_d]
    if crowd and extra:
        flags = in_crowd([dt[c] for c in extra], crowd, iou_threshold=iou_threshold)
        result.ignored = [c for c, flag in zip(extra, flags, strict=True) if flag]
    result.extra = [c for c in extra if c not in result.ignored]
    return result


def match_frame(
    gt: Sequence[Shape],
    dt: Sequence[Shape],
    *,
    iou_threshold: float,
    width: int | None = None,
    height: int | None = None,
) -> FrameMatch:
    """Match one frame's candidate shapes to its benchmark shapes.

    Args:
        gt: benchmark shapes on the frame.
        dt: candidate shapes on the frame.
        iou_threshold: a pair needs IoU >= this (COCO's rule) to match.
        width: frame width in pixels, for rasterising polygons (None: fit the shapes).
        height: frame height in pixels.

    Returns:
        TPs from a class-aware assignment (a right box with the wrong class is an FP plus an FN), and the
        confusion pairs from a class-agnostic one.
    """
    scored = [i for i, s in enumerate(gt) if not s.crowd]
    crowd = [gt[i] for i, s in enumerate(gt) if s.crowd]
    gt_scored = [gt[i] for i in scored]
    ious = shapes_to_iou_matrix(gt_scored, dt, width=width, height=height)
    same = same_class_matrix(gt_scored, dt)
    hit = ious >= iou_threshold

    result = match_class_aware(gt_scored, crowd, dt, ious, iou_threshold=iou_threshold)
    result.matches = [(scored[r], c, iou) for r, c, iou in result.matches]
    result.missed = [scored[r] for r in result.missed]

    agnostic = assign(hit, ious, same)
    a_g, a_d = {r for r, _ in agnostic}, {c for _, c in agnostic}
    result.confusion = [(gt_scored[r].label, dt[c].label) for r, c in agnostic]
    result.confusion += [(gt_scored[r].label, NO_CLASS) for r in range(len(gt_scored)) if r not in a_g]
    result.confusion += [(NO_CLASS, dt[c].label) for c in range(len(dt)) if c not in a_d and c not in result.ignored]
    return result
