"""Mask2Former-style outputs (class and mask logits per query) -> rows with instance masks, in frame pixels.

transformers' ``post_process_instance_segmentation`` stretches the mask logits of the whole padded input to
384 x 384 and then to the frame, padding included, so a padded frame's masks come out shifted and stretched.
Here each kept query's logits are upsampled to the padded input, cut to the frame's valid (resized) region and
resized to the frame. Instances may overlap, as Mask R-CNN's do: a pixel is not given to one query only.

torch is imported inside the function (this module is imported without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from models.masks import BoolMask, Masks
from models.types import Detections

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class InputGeometry:
    """Where one frame sits in the model's input.

    Attributes:
        valid_hw: the resized frame's (height, width), at the top left of the input (the rest is padding).
        padded_hw: the model input's (height, width).
        frame_hw: the original frame's (height, width): where the masks are returned.
    """

    valid_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    frame_hw: tuple[int, int]


def instance_detections(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, geometry: InputGeometry, threshold: float
) -> Detections:
    """One frame's rows: a box (its mask's tight box), score, class and mask for each instance kept, best first.

    Candidates are chosen as transformers does: the top Q of the Q x C class probabilities (softmax without the
    no-object class; a query may give more than one class), each scored class probability x mask score (the
    mean sigmoid inside its binary mask, here over the valid region of the logits grid); those scoring at least
    ``threshold`` get a mask, one at a time (one frame-sized map in memory at once); empty masks are dropped.

    Args:
        class_logits: (Q, C + 1) the last class is "no object".
        mask_logits: (Q, h, w) on a grid covering the padded input (1/4 of it for Mask2Former).
        geometry: where the frame sits in the input.
        threshold: the minimum score.
    """
    import torch

    num_classes = int(class_logits.shape[-1]) - 1
    probs = class_logits.float().softmax(-1)[:, :-1].flatten()
    class_scores, flat = probs.topk(min(int(class_logits.shape[0]), int(probs.numel())), sorted=False)
    labels, queries = flat % num_classes, torch.div(flat, num_classes, rounding_mode="floor")
    logits = mask_logits[queries].float()
    scores = class_scores * _mask_scores(logits, geometry)
    # one device->host copy for the small per-candidate values, not one per candidate
    order: list[int] = torch.argsort(-scores, stable=True).tolist()
    score_list: list[float] = scores.tolist()
    label_list: list[int] = labels.tolist()
    crops: list[BoolMask] = []
    rows: list[tuple[int, int, float, int]] = []  # x0, y0, score, label
    for i in (i for i in order if score_list[i] >= threshold):
        found = _frame_mask(logits[i], geometry)
        if found is None:
            continue
        crop, (x0, y0) = found
        crops.append(crop)
        rows.append((x0, y0, score_list[i], label_list[i]))
    if not rows:
        return Detections.empty().with_masks(Masks.empty())
    masks = Masks.from_crops(crops, np.asarray([r[:2] for r in rows], np.int64))
    return Detections.from_arrays(
        masks.xyxy(), np.asarray([r[2] for r in rows]), np.asarray([r[3] for r in rows]), masks=masks
    )


def _valid_logits_hw(logits_hw: tuple[int, int], geometry: InputGeometry) -> tuple[int, int]:
    """The logits-grid cells that cover the valid region (rounded up: a cell half on the frame counts)."""
    return (
        max(1, math.ceil(geometry.valid_hw[0] * logits_hw[0] / geometry.padded_hw[0])),
        max(1, math.ceil(geometry.valid_hw[1] * logits_hw[1] / geometry.padded_hw[1])),
    )


def _mask_scores(logits: torch.Tensor, geometry: InputGeometry) -> torch.Tensor:
    """(Q,) mean sigmoid inside each binary mask (transformers' formula), over the valid region."""
    height, width = _valid_logits_hw((int(logits.shape[-2]), int(logits.shape[-1])), geometry)
    region = logits[:, :height, :width]
    inside = (region > 0).float()
    return (region.sigmoid() * inside).flatten(1).sum(1) / (inside.flatten(1).sum(1) + 1e-6)


def _frame_mask(logits: torch.Tensor, geometry: InputGeometry) -> tuple[BoolMask, tuple[int, int]] | None:
    """One query's (h, w) logits -> its mask on the frame, cut to its tight box, and the box's (x0, y0);
    None when no pixel is in it."""
    import torch.nn.functional as functional

    padded = functional.interpolate(logits[None, None], size=geometry.padded_hw, mode="bilinear", align_corners=False)
    valid = padded[:, :, : geometry.valid_hw[0], : geometry.valid_hw[1]]
    frame = functional.interpolate(valid, size=geometry.frame_hw, mode="bilinear", align_corners=False)[0, 0] > 0
    rows, cols = frame.any(dim=1).nonzero().flatten(), frame.any(dim=0).nonzero().flatten()
    if len(rows) == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop: NDArray[np.bool_] = frame[y0:y1, x0:x1].cpu().numpy()  # only the box leaves the device
    return crop, (x0, y0)
