"""A hand-built Ultralytics ``-seg`` export whose prototypes draw known shapes: the ground truth for mask decoding.

The network input is 640 x 640, so the prototypes are 160 x 160 (1/4 scale). Prototype 0 is a horizontal band,
prototype 2 a vertical one, prototype 1 a disk; the others are noise that no candidate selects. A band's logits are
+/-10, so upsampled they cross 0 exactly on its edges (pixel edges at the scales tested): the mask is exactly the band
cut to the box, at any scale. The disk's are +10/-7: bilinear blends never land on exactly 0, so no pixel is a tie.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tests.unit.models import onnx_graphs

NAMES_LITERAL = "{0: 'person', 1: 'car'}"
NUM_CLASSES = 2
MASK_DIM = 32
INPUT_PX = 640
PROTO_PX = INPUT_PX // 4
INSIDE, OUTSIDE = 10.0, -7.0

BAND_PROTO_ROWS = (40, 80)  # prototype 0's rows -> input pixels y [160, 320)
BAND_PROTO_COLS = (20, 60)  # prototype 2's columns -> input pixels x [80, 240)
BAND_INPUT_Y = (160, 320)
BAND_INPUT_X = (80, 240)
DISK_PROTO_CENTRE_RC = (100.0, 110.0)
DISK_PROTO_RADIUS = 15.0

# Candidates in input pixels: (x1, y1, x2, y2, class, score, prototype selected or None).
BOXES = {
    "hband": (60, 140, 260, 340, 0, 0.9, 0),  # the box cuts the horizontal band at x 60, 260
    "disk": (400, 340, 520, 470, 1, 0.8, 1),  # cuts the disk (input x 382..502) on its left
    "vband": (60, 100, 260, 200, 0, 0.7, 2),  # the box cuts the vertical band at y 100, 200
    "dup": (65, 145, 265, 345, 0, 0.85, 1),  # suppressed by "hband" (NMS): its disk must not show
    "low": (300, 300, 520, 520, 0, 0.1, 1),  # below the usual threshold
    "fill": (0, 0, 8, 8, 0, 0.0, None),
}
FILLERS = 4  # keep N away from the end2end layout's 6 + nm


def protos() -> NDArray[np.float32]:
    """(32, 160, 160): the horizontal band, the disk, the vertical band, then noise."""
    rng = np.random.default_rng(7)
    out = rng.normal(0, 5, (MASK_DIM, PROTO_PX, PROTO_PX)).astype(np.float32)
    rows, cols = np.mgrid[:PROTO_PX, :PROTO_PX]
    disk = np.hypot(rows - DISK_PROTO_CENTRE_RC[0], cols - DISK_PROTO_CENTRE_RC[1]) <= DISK_PROTO_RADIUS
    out[0] = np.where((rows >= BAND_PROTO_ROWS[0]) & (rows < BAND_PROTO_ROWS[1]), INSIDE, -INSIDE)
    out[1] = np.where(disk, INSIDE, OUTSIDE)
    out[2] = np.where((cols >= BAND_PROTO_COLS[0]) & (cols < BAND_PROTO_COLS[1]), INSIDE, -INSIDE)
    return out


def _coefficients(proto: int | None) -> list[float]:
    coefficients = [0.0] * MASK_DIM
    if proto is not None:
        coefficients[proto] = 1.0
    return coefficients


def _rows() -> list[tuple[int, int, int, int, int, float, int | None]]:
    return [*(b for k, b in BOXES.items() if k != "fill"), *[BOXES["fill"]] * FILLERS]


def candidates() -> NDArray[np.float32]:
    """(4 + nc + 32, N): cx, cy, w, h, class scores, mask coefficients."""
    cols = []
    for x1, y1, x2, y2, cls, score, proto in _rows():
        scores = [0.0] * NUM_CLASSES
        scores[cls] = score
        cols.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, *scores, *_coefficients(proto)])
    return np.array(cols, np.float32).T


def end2end_rows() -> NDArray[np.float32]:
    """(N, 6 + 32): x1, y1, x2, y2, score, class, coefficients; the NMS already done ("dup" gone)."""
    rows = [
        [x1, y1, x2, y2, score, cls, *_coefficients(proto)]
        for key, (x1, y1, x2, y2, cls, score, proto) in BOXES.items()
        if key not in ("dup", "fill")
    ]
    rows += [[0, 0, 8, 8, 0.0, 0, *_coefficients(None)]] * FILLERS
    return np.array(rows, np.float32)


def write(path: Path, *, end2end: bool = False, batch: int | None = None, symbolic_outputs: bool = False) -> Path:
    """Save the export; ``symbolic_outputs`` leaves the output dims unnamed sizes (the decoder probes them)."""
    model = onnx_graphs.yolo_seg_model(
        end2end_rows() if end2end else candidates(),
        protos(),
        batch=batch,
        metadata={"names": NAMES_LITERAL, "imgsz": f"[{INPUT_PX}, {INPUT_PX}]", "stride": "32"},
    )
    if symbolic_outputs:
        for output in model.graph.output:
            for i, dim in enumerate(output.type.tensor_type.shape.dim):
                dim.dim_param = f"{output.name}_d{i}"
    return onnx_graphs.save(model, path)
