"""Mask2Former-style post-processing on synthetic logits: masks land where the valid region puts them on the
frame (padding ignored), candidates are chosen and scored as transformers does, the threshold holds."""

from __future__ import annotations

import numpy as np
import pytest

from models.detectors.hf_instance_segmentation import InputGeometry, instance_detections

torch = pytest.importorskip("torch")

LOGITS_STRIDE_PX = 4  # Mask2Former's mask logits are at 1/4 of the padded input
OFF, ON = -10.0, 10.0


def _mask_logits(queries: int, padded_hw: tuple[int, int], blobs: dict[int, tuple[int, int, int, int]]) -> object:
    """(Q, h, w) logits: OFF everywhere, ON on each query's blob of cells (row0, row1, col0, col1)."""
    h, w = padded_hw[0] // LOGITS_STRIDE_PX, padded_hw[1] // LOGITS_STRIDE_PX
    logits = torch.full((queries, h, w), OFF)
    for query, (r0, r1, c0, c1) in blobs.items():
        logits[query, r0:r1, c0:c1] = ON
    return logits


def _class_logits(probabilities: list[list[float]]) -> object:
    """(Q, C + 1) logits whose softmax is ``probabilities`` (each row sums to 1, the last is no-object)."""
    return torch.log(torch.tensor(probabilities, dtype=torch.float32))


@pytest.mark.parametrize(
    ("frame_hw", "valid_hw", "padded_hw", "cells"),
    [
        ((480, 960), (64, 128), (96, 128), (4, 8, 8, 16)),  # padded below: a wide frame in a taller batch
        ((600, 300), (128, 64), (128, 96), (8, 16, 4, 8)),  # padded right: a tall frame in a wider batch
        ((450, 600), (96, 128), (128, 160), (6, 12, 10, 20)),  # padded on both axes
        ((470, 610), (64, 96), (64, 96), (4, 8, 8, 16)),  # rounded up to 32s: stretched unevenly, no padding
    ],
)
def test_a_blob_in_the_valid_region_lands_exactly_on_the_frame(
    frame_hw: tuple[int, int], valid_hw: tuple[int, int], padded_hw: tuple[int, int], cells: tuple[int, int, int, int]
) -> None:
    # Given one confident query whose mask logits are a block of cells inside the frame's valid region
    logits = _mask_logits(1, padded_hw, {0: cells})
    geometry = InputGeometry(valid_hw=valid_hw, padded_hw=padded_hw, frame_hw=frame_hw)
    dets = instance_detections(_class_logits([[0.9, 0.05, 0.05]]), logits, geometry, threshold=0.5)
    # Then its mask is that block mapped input pixels -> frame pixels (valid region onto the whole frame): its box
    # to the pixel (within one where an edge falls inside a pixel), nothing outside it, all of it inside but the
    # corners, which bilinear upsampling rounds off (within one logits cell)
    sy, sx = frame_hw[0] / valid_hw[0], frame_hw[1] / valid_hw[1]
    r0, r1, c0, c1 = (v * LOGITS_STRIDE_PX for v in cells)
    edges = np.array([c0 * sx, r0 * sy, c1 * sx, r1 * sy])
    slack = 0 if all(float(v).is_integer() for v in edges) else 1
    assert len(dets) == 1
    assert dets.masks is not None
    np.testing.assert_allclose(dets.xyxy[0], edges, atol=slack)
    x0, y0, x1, y1 = (int(v) for v in np.round(edges))
    got = dets.masks.full(0, *frame_hw)
    outside = np.ones(frame_hw, np.bool_)
    outside[y0 - slack : y1 + slack, x0 - slack : x1 + slack] = False
    assert not got[outside].any()
    corner_y, corner_x = int(np.ceil(LOGITS_STRIDE_PX * sy)), int(np.ceil(LOGITS_STRIDE_PX * sx))
    cross = np.zeros(frame_hw, np.bool_)
    cross[y0 + slack + corner_y : y1 - slack - corner_y, x0 + slack : x1 - slack] = True
    cross[y0 + slack : y1 - slack, x0 + slack + corner_x : x1 - slack - corner_x] = True
    assert got[cross].all()
    np.testing.assert_array_equal(dets.xyxy, dets.masks.xyxy())
    assert dets.class_id.tolist() == [0]


def test_padding_never_reaches_the_frame() -> None:
    # A query whose mask is all padding (below and right of the valid region) finds nothing on the frame
    padded_hw, valid_hw = (128, 128), (64, 96)
    logits = _mask_logits(1, padded_hw, {0: (17, 32, 0, 32)})  # rows 68.. of the input: below the frame
    logits[0, :, 25:] = ON  # and columns 100.., right of it
    geometry = InputGeometry(valid_hw=valid_hw, padded_hw=padded_hw, frame_hw=(480, 720))
    assert len(instance_detections(_class_logits([[0.9, 0.05, 0.05]]), logits, geometry, threshold=0.0)) == 0


def test_candidates_scores_and_threshold_follow_transformers() -> None:
    # Given 4 queries over 2 classes (+ no-object): query 0 likes both classes, query 1 class 1, query 2 is
    # no-object, query 3 is confident but its mask is empty
    probabilities = [[0.5, 0.4, 0.1], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]
    blobs = {0: (2, 6, 2, 6), 1: (8, 12, 4, 10), 2: (1, 3, 1, 3)}
    padded_hw = (64, 64)
    logits = _mask_logits(4, padded_hw, blobs)
    logits[1, 8:10, 4:10] = 1.0  # a less certain half: a lower mask score
    geometry = InputGeometry(valid_hw=padded_hw, padded_hw=padded_hw, frame_hw=padded_hw)
    # When post-processed at threshold 0.3
    dets = instance_detections(_class_logits(probabilities), logits, geometry, threshold=0.3)
    # Then the top-Q (4) of the 4 x 2 class probabilities are the candidates: (q3, c0) 0.9, (q1, c1) 0.8,
    # (q0, c0) 0.5, (q0, c1) 0.4; q3's empty mask is dropped; each score is probability x mean sigmoid inside
    # the mask
    sig_on, sig_half = 1 / (1 + np.exp(-ON)), 1 / (1 + np.exp(-1.0))
    q1_mask_score = (12 * sig_half + 12 * sig_on) / 24
    expected = sorted([(0.8 * q1_mask_score, 1), (0.5 * sig_on, 0), (0.4 * sig_on, 1)], reverse=True)
    np.testing.assert_allclose(dets.confidence, [s for s, _ in expected], rtol=1e-5)
    assert dets.class_id.tolist() == [c for _, c in expected]
    # q0's two rows share its mask
    assert dets.masks is not None
    np.testing.assert_array_equal(dets.masks.full(1, 64, 64), dets.masks.full(2, 64, 64))
    # And a threshold between the scores keeps only those above it
    strict = instance_detections(_class_logits(probabilities), logits, geometry, threshold=0.45)
    assert strict.class_id.tolist() == [c for s, c in expected if s >= 0.45]
    assert len(strict) == 2
