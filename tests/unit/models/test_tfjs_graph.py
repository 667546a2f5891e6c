"""``models.tfjs_graph``: tiny TF.js graphs written here, converted, run by onnxruntime, and compared with TF's
kernels written out in numpy (tests/unit/models/tfjs_graphs.py); the rewrites are counted in the ONNX graph."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray

from models.errors import ModelLoadError
from models.tfjs_graph import UnsupportedGraphError, read_tfjs_graph, tfjs_to_onnx
from tests.unit.models.tfjs_graphs import (
    NCHW_TO_NHWC,
    NHWC_TO_NCHW,
    TfjsGraphBuilder,
    conv2d_nhwc,
    ints_attr,
    leaky_relu,
    maxpool_nhwc,
    resize_bilinear_half_pixel,
    s_attr,
)

RNG = np.random.default_rng(17)


def _convert(builder: TfjsGraphBuilder, root: Path, outputs: list[str]) -> onnx.ModelProto:
    return tfjs_to_onnx(read_tfjs_graph(builder.write(root, outputs)))


def _run(model: onnx.ModelProto, x: NDArray[np.float32]) -> dict[str, NDArray[np.float32]]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def _randn(*shape: int) -> NDArray[np.float32]:
    return RNG.standard_normal(shape).astype(np.float32)


# -- one op at a time ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("padding", "stride", "in_channels", "filter_in"),
    [
        ("VALID", 1, 3, 3),
        ("VALID", 2, 3, 3),
        ("SAME", 1, 3, 3),
        ("SAME", 2, 3, 3),  # 7x9 at stride 2: TF puts the odd pad pixel after
        ("SAME", 2, 4, 2),  # grouped: 2 groups of 2 input channels
    ],
)
def test_conv2d_nhwc(tmp_path: Path, padding: str, stride: int, in_channels: int, filter_in: int) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 7, 9, in_channels))
    weight = _randn(3, 3, filter_in, 4)
    b.conv2d("conv", x, b.const("w", weight), stride=stride, padding=padding)
    model = _convert(b, tmp_path, ["conv:0"])
    feed = _randn(2, 7, 9, in_channels)

    got = _run(model, feed)["conv"]

    np.testing.assert_allclose(got, conv2d_nhwc(feed, weight, stride=stride, padding=padding), atol=1e-5)


@pytest.mark.parametrize(("padding", "stride"), [("VALID", 2), ("SAME", 2), ("SAME", 1)])
def test_maxpool(tmp_path: Path, padding: str, stride: int) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 7, 8, 3))
    attrs = {"ksize": ints_attr(1, 3, 3, 1), "strides": ints_attr(1, stride, stride, 1)}
    b.op("pool", "MaxPool", x, padding=s_attr(padding), data_format=s_attr("NHWC"), **attrs)
    feed = -np.abs(_randn(1, 7, 8, 3)) - 1  # all negative: a zero-padded border would win the max

    got = _run(_convert(b, tmp_path, ["pool:0"]), feed)["pool"]

    np.testing.assert_allclose(got, maxpool_nhwc(feed, kernel=3, stride=stride, padding=padding), atol=1e-6)


def test_resize_bilinear_half_pixel_2x_incl_edges(tmp_path: Path) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 3, 5, 2))
    b.op("up", "ResizeBilinear", x, b.ints("size", 6, 10), half_pixel_centers={"b": True}, align_corners={"b": False})
    feed = _randn(1, 3, 5, 2)

    got = _run(_convert(b, tmp_path, ["up:0"]), feed)["up"]

    np.testing.assert_allclose(got, resize_bilinear_half_pixel(feed, 6, 10), atol=1e-5)
    # At the edges half-pixel centres fall outside the source and are clamped: the corners are copied.
    np.testing.assert_allclose(got[0, 0, 0], feed[0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(got[0, -1, -1], feed[0, -1, -1], atol=1e-6)
    # Inside, output pixel 1 lies a quarter of the way from source 0 to source 1.
    np.testing.assert_allclose(got[0, 0, 1], 0.75 * feed[0, 0, 0] + 0.25 * feed[0, 0, 1], atol=1e-5)


@pytest.mark.parametrize(("op", "value"), [("Pad", 0.0), ("PadV2", 1.5), ("PadV2", -np.inf)])
def test_pad(tmp_path: Path, op: str, value: float) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 2, 3, 4))
    paddings = np.array([[0, 0], [1, 2], [0, 1], [2, 0]], np.int32)
    inputs = [x, b.const("paddings", paddings)]
    if op == "PadV2":
        inputs.append(b.const("value", np.array(value, np.float32)))
    b.op("pad", op, *inputs)
    feed = _randn(3, 2, 3, 4)

    got = _run(_convert(b, tmp_path, ["pad:0"]), feed)["pad"]

    np.testing.assert_array_equal(got, np.pad(feed, paddings, constant_values=value))


def test_concat_negative_axis(tmp_path: Path) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 2, 3, 4))
    b.op("act", "LeakyRelu", x, alpha={"f": 0.1})
    b.op("cat", "ConcatV2", x, "act", b.const("axis", np.array(-1, np.int32)), N={"i": "2"})
    feed = _randn(2, 2, 3, 4)

    got = _run(_convert(b, tmp_path, ["cat:0"]), feed)["cat"]

    assert got.shape == (2, 2, 3, 8)
    np.testing.assert_allclose(got, np.concatenate([feed, leaky_relu(feed, 0.1)], axis=-1), atol=1e-6)


def test_split_v_second_output_read_as_name_1(tmp_path: Path) -> None:
    # As NanoDet's heads: SplitV into scores and box logits, Sigmoid on the first, the second read as `split:1`.
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 7, 2, 2))
    b.op("split", "SplitV", x, b.ints("sizes", 3, 4), b.const("dim", np.array(1, np.int32)), num_split={"i": "2"})
    b.op("scores", "Sigmoid", "split")
    b.op("boxes", "Identity", "split:1")
    feed = _randn(2, 7, 2, 2)

    got = _run(_convert(b, tmp_path, ["scores:0", "boxes:0"]), feed)

    np.testing.assert_allclose(got["scores"], 1 / (1 + np.exp(-feed[:, :3].astype(np.float64))), atol=1e-6)
    np.testing.assert_array_equal(got["boxes"], feed[:, 3:])


def _nanodet_reshape_target(b: TfjsGraphBuilder, name: str, target: tuple[int, ...]) -> str:
    """The Reshape shape as onnx-tf left it in NanoDet: a constant plus a SparseToDense of no indices (zeros)."""
    zeros = b.op(
        f"{name}/SparseToDense",
        "SparseToDense",
        b.const(f"{name}/Where", np.zeros((0, 1), np.int32)),
        b.ints(f"{name}/Cast", len(target)),
        b.const(f"{name}/GatherV2", np.zeros((0,), np.int32)),
        b.const(f"{name}/zeros", np.array(0, np.int32)),
    )
    return b.op(f"{name}/add", "AddV2", b.ints(f"{name}/base", *target), zeros)


@pytest.mark.parametrize("batch", [1, 3])
def test_reshape_traced_at_batch_1_runs_at_any_batch(tmp_path: Path, batch: int) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 4, 3, 5))
    b.op("flat", "Reshape", x, _nanodet_reshape_target(b, "shape", (1, 4, -1)))
    b.transpose("out", "flat", [0, 2, 1])
    model = _convert(b, tmp_path, ["out:0"])
    feed = _randn(batch, 4, 3, 5)

    got = _run(model, feed)["out"]

    assert [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == ["batch", 15, 4]
    np.testing.assert_array_equal(got, feed.reshape(batch, 4, 15).transpose(0, 2, 1))
    assert "SparseToDense" not in _ops(model)  # folded into the Reshape's constant shape


@pytest.mark.parametrize(
    ("quantization", "stored", "expected"),
    [
        ({"dtype": "float16"}, np.array([0.1, -2.5, 1000.3]), np.float16([0.1, -2.5, 1000.3]).astype(np.float32)),
        # TF.js: value = q * scale + min
        (
            {"dtype": "uint8", "scale": 0.5, "min": -1.0},
            np.array([0, 3, 255], np.uint8),
            np.float32([-1.0, 0.5, 126.5]),
        ),
        (
            {"dtype": "uint16", "scale": 0.25, "min": 2.0},
            np.array([0, 4, 65535], np.uint16),
            np.float32([2.0, 3.0, 16385.75]),
        ),
    ],
    ids=["float16", "uint8", "uint16"],
)
def test_quantised_weights_are_dequantised(
    tmp_path: Path, quantization: dict[str, Any], stored: NDArray[Any], expected: NDArray[np.float32]
) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 3))
    b.op("sum", "AddV2", x, b.const("w", stored, quantization=quantization))
    model = _convert(b, tmp_path, ["sum:0"])

    got = _run(model, np.zeros((2, 3), np.float32))["sum"]

    np.testing.assert_array_equal(got, np.broadcast_to(expected, (2, 3)))


# -- the rewrites ----------------------------------------------------------------------------------------------------


def _onnx_tf_block(b: TfjsGraphBuilder, x: str, weight: NDArray[np.float32], bias: NDArray[np.float32]) -> str:
    """NCHW in and out, as onnx-tf wrote NanoDet: zero Pad (NCHW), Transpose to NHWC, Conv2D, bias Add, Transpose
    back, LeakyRelu."""
    pad = b.op("pad", "Pad", x, b.const("paddings", np.array([[0, 0], [0, 0], [1, 1], [1, 1]], np.int32)))
    nhwc = b.transpose("to_nhwc", pad, NCHW_TO_NHWC)
    conv = b.conv2d("conv", nhwc, b.const("w", weight), stride=2)
    added = b.op("add", "Add", conv, b.const("b", bias))
    nchw = b.transpose("to_nchw", added, NHWC_TO_NCHW)
    return b.op("act", "LeakyRelu", nchw, alpha={"f": 0.1})


def _block_reference(feed: NDArray[Any], weight: NDArray[Any], bias: NDArray[Any]) -> NDArray[np.float64]:
    padded = np.pad(feed, [(0, 0), (0, 0), (1, 1), (1, 1)]).transpose(0, 2, 3, 1)
    return leaky_relu(conv2d_nhwc(padded, weight, stride=2) + bias, 0.1).transpose(0, 3, 1, 2)


def test_onnx_tf_conv_block_becomes_one_conv_with_bias_and_pads(tmp_path: Path) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 3, 8, 10))
    weight, bias = _randn(3, 3, 3, 5), _randn(5)
    _onnx_tf_block(b, x, weight, bias)
    model = _convert(b, tmp_path, ["act:0"])
    feed = _randn(2, 3, 8, 10)

    got = _run(model, feed)["act"]

    assert _ops(model) == Counter({"Conv": 1, "LeakyRelu": 1})
    (conv,) = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(conv.input) == 3  # the bias folded in
    assert next(a.ints for a in conv.attribute if a.name == "pads") == [1, 1, 1, 1]
    np.testing.assert_allclose(got, _block_reference(feed, weight, bias), atol=1e-5)


def test_chained_blocks_keep_no_transpose_between_them(tmp_path: Path) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 3, 8, 8))
    w1, b1, w2, b2 = _randn(3, 3, 3, 4), _randn(4), _randn(1, 1, 4, 6), _randn(6)
    nhwc = b.transpose("t1", x, NCHW_TO_NHWC)
    conv1 = b.op("add1", "Add", b.conv2d("conv1", nhwc, b.const("w1", w1), padding="SAME"), b.const("b1", b1))
    act = b.op("act1", "LeakyRelu", b.transpose("t2", conv1, NHWC_TO_NCHW), alpha={"f": 0.1})
    nhwc2 = b.transpose("t3", act, NCHW_TO_NHWC)
    conv2 = b.op("add2", "AddV2", b.conv2d("conv2", nhwc2, b.const("w2", w2)), b.const("b2", b2))
    b.transpose("out", conv2, NHWC_TO_NCHW)
    model = _convert(b, tmp_path, ["out:0"])
    feed = _randn(1, 3, 8, 8)

    got = _run(model, feed)["out"]

    assert _ops(model) == Counter({"Conv": 2, "LeakyRelu": 1, "Identity": 1})  # the output keeps its name
    first = leaky_relu(conv2d_nhwc(feed.transpose(0, 2, 3, 1), w1, padding="SAME") + b1, 0.1)
    np.testing.assert_allclose(got, (conv2d_nhwc(first, w2) + b2).transpose(0, 3, 1, 2), atol=1e-5)


def test_non_zero_pad_is_not_folded_into_the_conv(tmp_path: Path) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 2, 5, 5))
    paddings = np.array([[0, 0], [0, 0], [1, 1], [1, 1]], np.int32)
    pad = b.op("pad", "PadV2", x, b.const("paddings", paddings), b.const("value", np.array(2.0, np.float32)))
    weight = _randn(3, 3, 2, 3)
    b.transpose("out", b.conv2d("conv", b.transpose("t", pad, NCHW_TO_NHWC), b.const("w", weight)), NHWC_TO_NCHW)
    model = _convert(b, tmp_path, ["out:0"])
    feed = _randn(1, 2, 5, 5)

    got = _run(model, feed)["out"]

    assert _ops(model) == Counter({"Pad": 1, "Conv": 1, "Identity": 1})
    padded = np.pad(feed, paddings, constant_values=2.0).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, conv2d_nhwc(padded, weight).transpose(0, 3, 1, 2), atol=1e-5)


def test_conv_read_twice_keeps_its_add(tmp_path: Path) -> None:
    # The pre-bias conv is an output too: folding the bias would change that output.
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 4, 4, 2))
    weight, bias = _randn(1, 1, 2, 3), _randn(3)
    conv = b.conv2d("conv", x, b.const("w", weight))
    b.op("add", "Add", conv, b.const("b", bias))
    model = _convert(b, tmp_path, ["conv:0", "add:0"])
    feed = _randn(1, 4, 4, 2)

    got = _run(model, feed)

    np.testing.assert_allclose(got["conv"], conv2d_nhwc(feed, weight), atol=1e-5)
    np.testing.assert_allclose(got["add"], conv2d_nhwc(feed, weight) + bias, atol=1e-5)


# -- refusals --------------------------------------------------------------------------------------------------------


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 4, 4, 2))
    b.op("act", "Relu6", b.op("sig", "Sigmoid", x))
    b.op("dw", "DepthwiseConv2dNative", "act", b.const("w", _randn(3, 3, 2, 1)))

    with pytest.raises(UnsupportedGraphError, match=r"does not implement: DepthwiseConv2dNative, Relu6$"):
        _convert(b, tmp_path, ["dw:0"])


def _small_model(root: Path) -> Path:
    b = TfjsGraphBuilder()
    b.conv2d("conv", b.placeholder("x", (1, 4, 4, 2)), b.const("w", _randn(3, 3, 2, 8)))
    return b.write(root, ["conv:0"], shards=2)


def test_truncated_shard_is_a_load_error(tmp_path: Path) -> None:
    model_json = _small_model(tmp_path)
    shard = tmp_path / "group1-shard2of2.bin"
    shard.write_bytes(shard.read_bytes()[:-4])

    with pytest.raises(ModelLoadError, match=r"model\.json: the weight shards end inside 'w'"):
        read_tfjs_graph(model_json)


def test_missing_shard_is_a_load_error(tmp_path: Path) -> None:
    model_json = _small_model(tmp_path)
    (tmp_path / "group1-shard2of2.bin").unlink()

    with pytest.raises(ModelLoadError, match=r"group1-shard2of2\.bin"):
        read_tfjs_graph(model_json)


@pytest.mark.parametrize("text", ["{not json", '{"format": "graph-model"}', '{"format": "layers-model"}'])
def test_not_a_graph_model_is_a_load_error(tmp_path: Path, text: str) -> None:
    model_json = tmp_path / "model.json"
    model_json.write_text(text)

    with pytest.raises(ModelLoadError, match=r"model\.json"):
        read_tfjs_graph(model_json)


@pytest.mark.parametrize(
    ("indices", "values", "expected"),
    [
        (np.array([[0], [2]], np.int32), np.array([5, 7], np.int32), [5, 0, 7, 0]),
        # A scalar value is TF's shorthand for "this value at every index".
        (np.array([[1], [3]], np.int32), np.array(9, np.int32), [0, 9, 0, 9]),
        (np.array([1, 2], np.int32), np.array(4, np.int32), [0, 4, 4, 0]),  # 1-D indices: one index each
    ],
    ids=["values", "scalar-value", "1d-indices"],
)
def test_sparse_to_dense_with_indices_is_folded(
    tmp_path: Path, indices: NDArray[np.int32], values: NDArray[np.int32], expected: list[int]
) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 4))
    dense = b.op(
        "dense",
        "SparseToDense",
        b.const("indices", indices),
        b.ints("shape", 4),
        b.const("values", values),
        b.const("default", np.array(0, np.int32)),
    )
    b.op("sum", "AddV2", x, dense)

    got = _run(_convert(b, tmp_path, ["sum:0"]), np.zeros((1, 4), np.float32))["sum"]

    np.testing.assert_array_equal(got, [expected])


def test_sparse_to_dense_with_mismatched_values_is_refused(tmp_path: Path) -> None:
    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 4))
    indices, values = b.const("indices", np.array([[0], [1], [2]], np.int32)), b.ints("values", 1, 2)
    dense = b.op("dense", "SparseToDense", indices, b.ints("shape", 4), values, b.const("d", np.array(0, np.int32)))
    b.op("sum", "AddV2", x, dense)

    with pytest.raises(UnsupportedGraphError, match=r"SparseToDense 'dense': 3 indices for 2 values"):
        _convert(b, tmp_path, ["sum:0"])


def test_signature_keys_may_be_aliases_of_the_tensor_names(tmp_path: Path) -> None:
    """SavedModel conversions key the signature by alias ("output_0": {"name": "Identity:0"}): the tensor is the
    entry's name, never the key."""
    import json

    b = TfjsGraphBuilder()
    x = b.placeholder("x", (1, 2, 3, 4))
    b.op("scores", "Sigmoid", x)
    path = b.write(tmp_path, ["scores:0"])
    document = json.loads(path.read_text())
    document["signature"]["outputs"] = {"output_0": {"name": "scores:0"}}
    path.write_text(json.dumps(document))

    graph = read_tfjs_graph(path)
    assert graph.outputs == ("scores:0",)
    value = _randn(3, 2, 3, 4)
    np.testing.assert_allclose(_run(tfjs_to_onnx(graph), value)["scores"], 1 / (1 + np.exp(-value)), rtol=1e-5)
