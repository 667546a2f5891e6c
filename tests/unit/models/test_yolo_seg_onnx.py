"""Ultralytics ``-seg`` exports through ``onnx:``: each kept box's mask is where the prototypes put it, cut to the
box, with the letterbox undone; rows dropped by the threshold or NMS take their masks with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from models.base import DetectorOptions
from models.detectors.onnx_auto import OnnxLayout, detect_layout
from models.errors import ModelLoadError
from models.registry import load_detector
from models.runtimes.onnx import session_io
from models.types import Detections
from tests.unit.models import onnx_graphs, seg_graphs
from tests.unit.models.seg_graphs import BAND_INPUT_X, BAND_INPUT_Y, BOXES

# (frame h, w) -> (scale, pad x, pad y) of the 640 x 640 letterbox: padding on either axis, down- and up-scaled.
LETTERBOXES = {
    (480, 640): (1.0, 0, 80),
    (960, 1280): (0.5, 0, 80),
    (640, 300): (1.0, 170, 0),
    (320, 240): (2.0, 80, 0),
}
FRAME_SIZES = list(LETTERBOXES)


def _frames() -> list[NDArray[np.uint8]]:
    rng = np.random.default_rng(0)
    return [rng.integers(1, 255, (h, w, 3), dtype=np.uint8) for h, w in FRAME_SIZES]


def _to_frame(xyxy_input: tuple[float, ...], size: tuple[int, int]) -> tuple[float, ...]:
    """Input-pixel corners -> frame pixels (not clipped)."""
    scale, pad_x, pad_y = LETTERBOXES[size]
    x1, y1, x2, y2 = xyxy_input
    return ((x1 - pad_x) / scale, (y1 - pad_y) / scale, (x2 - pad_x) / scale, (y2 - pad_y) / scale)


def _box_mask(xyxy: tuple[float, ...], size: tuple[int, int]) -> NDArray[np.bool_]:
    """Pixels whose index lies in [x1, x2) x [y1, y2) (Ultralytics' crop_mask), on an (h, w) frame."""
    rows, cols = np.mgrid[: size[0], : size[1]]
    return (cols >= xyxy[0]) & (cols < xyxy[2]) & (rows >= xyxy[1]) & (rows < xyxy[3])


def _ultralytics_input_mask(proto: int, box_input_xyxy: tuple[float, ...]) -> NDArray[np.bool_]:
    """Ultralytics' ``process_mask(..., upsample=True)`` for one row, by torch: the prototype upsampled to the
    640 x 640 input (bilinear, align_corners=False), cut to the box, logit > 0."""
    logits = torch.from_numpy(seg_graphs.protos()[proto])[None, None]
    upsampled = torch.nn.functional.interpolate(logits, (640, 640), mode="bilinear", align_corners=False)[0, 0]
    return (upsampled.numpy() > 0) & _box_mask(box_input_xyxy, (640, 640))


def _row(dets: Detections, key: str) -> int:
    """The row holding candidate ``key`` (by class and score)."""
    _, _, _, _, cls, score, _ = BOXES[key]
    (row,) = np.flatnonzero((dets.class_id == cls) & np.isclose(dets.confidence, score))
    return int(row)


def _detect(path: Path, frames: list[NDArray[np.uint8]], threshold: float = 0.25, batch: int = 4) -> list[Detections]:
    detector = load_detector(f"onnx:{path}", DetectorOptions(batch_size=batch))
    return detector.detect(frames, threshold=threshold)


@pytest.fixture(scope="module")
def seg_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seg_graphs.write(tmp_path_factory.mktemp("seg") / "yolo-seg.onnx")


@pytest.mark.parametrize("end2end", [False, True], ids=["nms", "end2end"])
def test_band_masks_are_exactly_where_the_prototypes_put_them_on_every_letterbox(tmp_path: Path, end2end: bool) -> None:
    # Given a -seg export whose prototypes 0 and 2 are bands, and four frames letterboxed four ways, in one batch
    results = _detect(seg_graphs.write(tmp_path / "seg.onnx", end2end=end2end), _frames())
    for dets, size in zip(results, FRAME_SIZES, strict=True):
        assert dets.masks is not None
        assert len(dets.masks) == len(dets)
        # Then each band's row has exactly the band (edges from the prototype) cut to its box, in frame pixels
        for key, band_xyxy in [
            ("hband", (BOXES["hband"][0], BAND_INPUT_Y[0], BOXES["hband"][2], BAND_INPUT_Y[1])),
            ("vband", (BAND_INPUT_X[0], BOXES["vband"][1], BAND_INPUT_X[1], BOXES["vband"][3])),
        ]:
            expected = _box_mask(_to_frame(band_xyxy, size), size)
            got = dets.masks.full(_row(dets, key), *size)
            assert got.sum() == expected.sum() > 0, (key, size)
            np.testing.assert_array_equal(got, expected, err_msg=f"{key} {size}")


@pytest.mark.parametrize("size", [(480, 640), (640, 300)], ids=["pad-y", "pad-x"])
def test_disk_cut_by_its_box_matches_ultralytics_process_mask(seg_path: Path, size: tuple[int, int]) -> None:
    # Given frames that fill the input at scale 1 (only padding to undo)
    (dets,) = _detect(seg_path, [_frames()[FRAME_SIZES.index(size)]])
    _, pad_x, pad_y = LETTERBOXES[size]
    x1, y1, x2, y2, _, _, proto = BOXES["disk"]
    # Then the disk row's mask is Ultralytics' mask on the input, padding removed, pixel for pixel
    reference = _ultralytics_input_mask(proto, (x1, y1, x2, y2))[pad_y : pad_y + size[0], pad_x : pad_x + size[1]]
    assert dets.masks is not None
    got = dets.masks.full(_row(dets, "disk"), *size)
    assert reference.sum() > 0
    np.testing.assert_array_equal(got, reference)
    # and the box cut it: no pixel left of the box's left edge, though the disk reaches past it
    assert not got[:, : int(x1 - pad_x)].any()


@pytest.mark.parametrize("size", [(960, 1280), (320, 240)], ids=["down-0.5", "up-2"])
def test_disk_follows_the_scale(seg_path: Path, size: tuple[int, int]) -> None:
    (dets,) = _detect(seg_path, [_frames()[FRAME_SIZES.index(size)]])
    scale, pad_x, pad_y = LETTERBOXES[size]
    x1, y1, x2, y2, _, _, proto = BOXES["disk"]
    # The reference on the input, cut to the frame's area and resized to the frame (nearest): the same up to edges
    on_input = _ultralytics_input_mask(proto, (x1, y1, x2, y2))
    rows = np.clip(((np.arange(size[0]) + 0.5) * scale + pad_y).astype(int), 0, 639)
    cols = np.clip(((np.arange(size[1]) + 0.5) * scale + pad_x).astype(int), 0, 639)
    reference = on_input[np.ix_(rows, cols)]
    assert dets.masks is not None
    got = dets.masks.full(_row(dets, "disk"), *size)
    iou = (got & reference).sum() / (got | reference).sum()
    assert iou > 0.97
    assert not (got & ~_box_mask(_to_frame((x1, y1, x2, y2), size), size)).any()


def test_suppressed_and_low_rows_drop_their_masks_with_them(seg_path: Path) -> None:
    frame = _frames()[0]
    # At 0.25: "dup" lost to NMS, "low" to the threshold; the rows left keep their own masks
    (dets,) = _detect(seg_path, [frame], threshold=0.25)
    assert dets.masks is not None
    np.testing.assert_allclose(sorted(dets.confidence), [0.7, 0.8, 0.9], atol=1e-6)
    band = dets.masks.full(_row(dets, "hband"), *frame.shape[:2])
    assert band.sum() == 200 * 160  # the band cut to its box, not "dup"'s disk
    # At 0.95 nothing is kept, and no mask either
    (none,) = _detect(seg_path, [frame], threshold=0.95)
    assert len(none) == 0
    assert none.masks is not None
    assert len(none.masks) == 0
    # At 0.05 "low" comes back with the disk cut to its own box
    (more,) = _detect(seg_path, [frame], threshold=0.05)
    assert more.masks is not None
    low = _row(more, "low")
    x1, y1, x2, y2, _, _, proto = BOXES["low"]
    reference = _ultralytics_input_mask(proto, (x1, y1, x2, y2))[80:560]
    np.testing.assert_array_equal(more.masks.full(low, *frame.shape[:2]), reference)


def test_each_frame_of_a_batch_gets_its_own_prototypes(seg_path: Path) -> None:
    # Given a batch where the middle frame is black and fills the input: the graph gives it all-zero prototypes
    white = np.full((640, 640, 3), 255, np.uint8)
    black = np.zeros((640, 640, 3), np.uint8)
    results = _detect(seg_path, [white, black, white], batch=3)
    # Then every frame keeps its rows, but only the white frames have mask pixels
    has_mask = [d.masks.has_mask().tolist() for d in results if d.masks is not None]
    assert has_mask == [[True] * 3, [False] * 3, [True] * 3]


def test_fixed_batch_and_symbolic_output_dims(tmp_path: Path) -> None:
    # A static batch of 2 pads a single frame; unnamed output sizes are probed with one blank frame
    path = seg_graphs.write(tmp_path / "seg.onnx", batch=2, symbolic_outputs=True)
    detector = load_detector(f"onnx:{path}")
    assert detector.info.class_names == ("person", "car")
    (dets,) = detector.detect([_frames()[0]], threshold=0.25)
    assert dets.masks is not None
    assert dets.masks.has_mask().tolist() == [True] * 3


def test_info_says_the_model_makes_masks(seg_path: Path, tmp_path: Path) -> None:
    detector = load_detector(f"onnx:{seg_path}")
    assert detector.info.makes_masks
    assert detector.info.class_names == ("person", "car")  # 38 rows - 4 box rows - 32 coefficients
    plain = onnx_graphs.yolo_model(np.zeros((6, 21), np.float32), metadata={"names": "{0: 'a', 1: 'b'}"})
    assert not load_detector(f"onnx:{onnx_graphs.save(plain, tmp_path / 'plain.onnx')}").info.makes_masks


def test_layouts_are_recognised(seg_path: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    for path, layout in [
        (seg_path, OnnxLayout.YOLO_SEG),
        (seg_graphs.write(tmp_path / "e2e.onnx", end2end=True), OnnxLayout.YOLO_SEG_END2END),
    ]:
        io = session_io(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
        assert detect_layout(io, path) is layout


def test_too_few_rows_for_the_coefficients_is_a_load_error(tmp_path: Path) -> None:
    # 4 box rows + 32 coefficients and no class row
    model = onnx_graphs.yolo_seg_model(np.zeros((36, 21), np.float32), seg_graphs.protos())
    with pytest.raises(ModelLoadError, match="too few"):
        load_detector(f"onnx:{onnx_graphs.save(model, tmp_path / 'bad.onnx')}")
