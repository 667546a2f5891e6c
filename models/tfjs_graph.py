"""TF.js graph models (``model.json`` + weight shards) -> ONNX, for the op set of converted vision CNNs.

A small converter for exactly the ops that NanoDet's TF.js graph uses (it went PyTorch -> ONNX -> TF -> TF.js,
so it is NCHW tensors with a Transpose around every NHWC convolution): ``Placeholder``, ``Const``, ``Conv2D``,
``Pad``/``PadV2``, ``LeakyRelu``, ``Add``/``AddV2``, ``ConcatV2``, ``Transpose``, ``Reshape``, ``ResizeBilinear``,
``SplitV``, ``Sigmoid``, ``MaxPool``, ``Identity`` and ``SparseToDense``. Anything else is refused by name rather
than guessed. No TensorFlow: the graph is read from its JSON and the weights from the shards with numpy.

The ONNX graph computes what the TF.js graph computes (``tests/integration/test_nanodet_reference.py`` runs both
on the same tensors), with three rewrites that change no value:
    * the batch dimension is symbolic (a Reshape's baked-in batch of 1 becomes 0, "copy the input's");
    * a convolution's bias ``Add`` is folded into the ``Conv``, and a zero ``Pad`` in front of it into its pads;
    * a Transpose followed by its inverse is dropped (each NHWC op is emitted as NCHW between two Transposes,
      and onnx-tf had wrapped it the other way round, so almost all of them cancel).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from models.errors import ModelLoadError

OPSET = 18  # every runtime we use reads it
BATCH_DIM = "batch"

_DTYPES: dict[str, type[np.generic]] = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANTISED: dict[str, type[np.generic]] = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}
_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)

Shape = tuple[int | None, ...]
"""A tensor's static shape; None for the batch dimension."""


class UnsupportedGraphError(ModelLoadError):
    """The TF.js graph uses an op or attribute this converter does not implement."""


@dataclass(frozen=True, slots=True)
class TfjsNode:
    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TfjsGraph:
    """A TF.js graph model as read from disk: nodes in file order, the weights by node name, and its signature's
    input and output tensor names (``name:0``)."""

    nodes: tuple[TfjsNode, ...]
    weights: dict[str, NDArray[Any]]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    def op_counts(self) -> Counter[str]:
        return Counter(node.op for node in self.nodes)


def read_tfjs_graph(model_json: Path) -> TfjsGraph:
    """Read ``model.json`` and its weight shards (named in ``weightsManifest``, beside it).

    Raises:
        ModelLoadError: not a TF.js graph model, a shard missing or shorter than its manifest says.
    """
    try:
        document = json.loads(model_json.read_text(encoding="utf-8"))
        topology = document["modelTopology"]
        manifest = document["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{model_json}: not a TF.js graph model ({exc})") from exc
    if document.get("format") not in (None, "graph-model"):
        raise ModelLoadError(f"{model_json}: format {document.get('format')!r}, not a graph model")
    weights: dict[str, NDArray[Any]] = {}
    for group in manifest:
        try:
            data = b"".join((model_json.parent / path).read_bytes() for path in group["paths"])
        except OSError as exc:
            raise ModelLoadError(f"{model_json}: a weight shard is unreadable ({exc})") from exc
        weights.update(decode_weights(group["weights"], data, model_json))
    nodes = tuple(
        TfjsNode(node["name"], node["op"], tuple(node.get("input", ())), dict(node.get("attr", {})))
        for node in topology["node"]
    )
    signature = document.get("signature") or topology.get("signature") or {}
    try:  # keys may be aliases (SavedModel conversions: "output_0"); each entry's "name" is the tensor
        inputs = tuple(str(entry.get("name", key)) for key, entry in signature.get("inputs", {}).items())
        outputs = tuple(str(entry.get("name", key)) for key, entry in signature.get("outputs", {}).items())
    except AttributeError as exc:
        raise ModelLoadError(f"{model_json}: unreadable signature ({exc})") from exc
    if not inputs:
        inputs = tuple(f"{node.name}:0" for node in nodes if node.op == "Placeholder")
    if not outputs:
        raise ModelLoadError(f"{model_json}: the graph has no signature naming its outputs")
    metadata = {key: str(document[key]) for key in ("generatedBy", "convertedBy") if key in document}
    return TfjsGraph(nodes, weights, inputs, outputs, metadata)


def decode_weights(specs: Sequence[dict[str, Any]], data: bytes, source: Path) -> dict[str, NDArray[Any]]:
    """One manifest group's weight specs over its concatenated shards -> arrays, dequantised to their dtype.

    float16 quantisation is a cast; uint8/uint16 is affine (``q * scale + min``), as TF.js reads them.
    """
    arrays: dict[str, NDArray[Any]] = {}
    offset = 0
    for spec in specs:
        shape = tuple(int(d) for d in spec["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        dtype = _DTYPES.get(spec["dtype"])
        if dtype is None:
            raise UnsupportedGraphError(f"{source}: weight {spec['name']!r} has dtype {spec['dtype']!r}")
        quantization = spec.get("quantization")
        stored = _QUANTISED[quantization["dtype"]] if quantization else dtype
        size = count * np.dtype(stored).itemsize
        if offset + size > len(data):
            raise ModelLoadError(f"{source}: the weight shards end inside {spec['name']!r}")
        raw = np.frombuffer(data, dtype=np.dtype(stored).newbyteorder("<"), count=count, offset=offset)
        offset += size
        if quantization and quantization["dtype"] != "float16":
            value = raw.astype(np.float32) * np.float32(quantization["scale"]) + np.float32(quantization["min"])
        else:
            value = raw
        arrays[spec["name"]] = value.astype(dtype).reshape(shape)
    return arrays


def tfjs_to_onnx(graph: TfjsGraph, *, producer: str = "preannotate") -> onnx.ModelProto:
    """The ONNX model that computes ``graph`` (float32, dynamic batch), checked by ``onnx.checker``.

    Raises:
        UnsupportedGraphError: an op or attribute outside the supported set, named.
    """
    unsupported = sorted(set(graph.op_counts()) - set(_CONVERTERS) - {"Const", "Placeholder"})
    if unsupported:
        raise UnsupportedGraphError(f"TF.js graph uses ops this converter does not implement: {', '.join(unsupported)}")
    builder = _Builder(graph)
    builder.convert()
    return builder.model(producer)


def onnx_name(tensor: str) -> str:
    """A TF tensor name (``node:0``, ``node:1``, ``node``) as the ONNX value it became."""
    node, _, index = tensor.partition(":")
    return node if index in ("", "0") else f"{node}:{index}"


class _Builder:
    """Walks the TF.js nodes in order, folding constants in numpy and emitting ONNX nodes for the rest."""

    def __init__(self, graph: TfjsGraph) -> None:
        self.graph = graph
        self.consts: dict[str, NDArray[Any]] = {}
        self.shapes: dict[str, Shape] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, NDArray[Any]] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self._names: Counter[str] = Counter()

    def convert(self) -> None:
        for node in self.graph.nodes:
            if node.op == "Const":
                if node.name not in self.graph.weights:
                    raise UnsupportedGraphError(f"constant {node.name!r} has no weight in the manifest")
                self.consts[node.name] = self.graph.weights[node.name]
            elif node.op == "Placeholder":
                self._placeholder(node)
            else:
                _CONVERTERS[node.op](self, node, [onnx_name(i) for i in node.inputs if not i.startswith("^")])
        self.nodes = _optimise(self.nodes, self.initializers, keep={onnx_name(o) for o in self.graph.outputs})

    def model(self, producer: str) -> onnx.ModelProto:
        outputs = []
        for tensor in self.graph.outputs:
            name = onnx_name(tensor)
            if name in self.consts:
                raise UnsupportedGraphError(f"output {tensor!r} is a constant")
            dims = [BATCH_DIM if d is None else d for d in self.shape(name)]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        used = {name for node in self.nodes for name in node.input}
        initializers = [numpy_helper.from_array(arr, name) for name, arr in self.initializers.items() if name in used]
        graph = helper.make_graph(self.nodes, "tfjs", self.inputs, outputs, initializers)
        model = helper.make_model(
            graph, producer_name=producer, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9
        )
        for key, value in self.graph.metadata.items():
            model.metadata_props.add(key=f"tfjs_{key}", value=value)
        onnx.checker.check_model(model, full_check=True)
        return model

    # -- helpers --------------------------------------------------------------------------------------------------

    def _placeholder(self, node: TfjsNode) -> None:
        dims = node.attr.get("shape", {}).get("shape", {}).get("dim", [])
        shape: Shape = tuple(None if i == 0 else int(d.get("size", -1)) for i, d in enumerate(dims))
        if any(d is not None and d < 0 for d in shape):
            raise UnsupportedGraphError(f"input {node.name!r} has an unknown non-batch dimension")
        self.shapes[node.name] = shape
        self.inputs.append(
            helper.make_tensor_value_info(node.name, TensorProto.FLOAT, [BATCH_DIM if d is None else d for d in shape])
        )

    def fresh(self, base: str) -> str:
        self._names[base] += 1
        return f"{base}__{self._names[base]}"

    def const(self, name: str, what: str) -> NDArray[Any]:
        if name not in self.consts:
            raise UnsupportedGraphError(f"{what} ({name!r}) must be a constant")
        return self.consts[name]

    def initializer(self, base: str, value: NDArray[Any]) -> str:
        name = self.fresh(base)
        self.initializers[name] = value
        return name

    def emit(self, op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=self.fresh(op), **attrs))

    def shape(self, name: str) -> Shape:
        if name not in self.shapes:
            raise UnsupportedGraphError(f"tensor {name!r} has no known shape (is it produced by a supported op?)")
        return self.shapes[name]

    def nhwc_op(
        self, node: TfjsNode, x: str, op: str, out_shape_nchw: Shape, inputs: Sequence[str], **attrs: Any
    ) -> None:
        """Emit an NCHW ONNX op for an NHWC TF op: Transpose in, the op, Transpose out."""
        nchw = self.to_nchw(node, x)
        result = self.fresh(f"{node.name}/result")
        self.emit(op, [nchw, *inputs], [result], **attrs)
        self.from_nchw(node, result, out_shape_nchw)

    def to_nchw(self, node: TfjsNode, x: str) -> str:
        nchw = self.fresh(f"{node.name}/nchw")
        self.emit("Transpose", [x], [nchw], perm=list(_NHWC_TO_NCHW))
        return nchw

    def from_nchw(self, node: TfjsNode, result: str, out_shape_nchw: Shape) -> None:
        self.emit("Transpose", [result], [node.name], perm=list(_NCHW_TO_NHWC))
        self.shapes[node.name] = tuple(out_shape_nchw[i] for i in _NCHW_TO_NHWC)


def _attr_string(node: TfjsNode, key: str, default: str) -> str:
    value = node.attr.get(key, {}).get("s")
    return base64.b64decode(value).decode() if value else default


def _attr_ints(node: TfjsNode, key: str, default: Sequence[int]) -> list[int]:
    values = node.attr.get(key, {}).get("list", {}).get("i")
    return [int(v) for v in values] if values else list(default)


def _attr_bool(node: TfjsNode, key: str) -> bool:
    return bool(node.attr.get(key, {}).get("b", False))


def _spatial(node: TfjsNode, key: str, data_format: str) -> list[int]:
    """A 4-entry NHWC/NCHW attribute list -> its (H, W) pair."""
    values = _attr_ints(node, key, [1, 1, 1, 1])
    return values[1:3] if data_format == "NHWC" else values[2:4]


def _window_out(size: int | None, kernel: int, stride: int, dilation: int, padding: str) -> int | None:
    if size is None:
        return None
    if padding == "SAME":
        return -(-size // stride)
    return (size - (kernel - 1) * dilation - 1) // stride + 1


def _pads_for(padding: str, node: TfjsNode) -> dict[str, Any]:
    if padding == "VALID":
        return {}
    if padding == "SAME":
        return {"auto_pad": "SAME_UPPER"}
    raise UnsupportedGraphError(f"{node.op} {node.name!r}: padding {padding!r}")


def _conv2d(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    x, w = inputs
    data_format = _attr_string(node, "data_format", "NHWC")
    padding = _attr_string(node, "padding", "VALID")
    filt = b.const(w, f"Conv2D {node.name!r} filter").astype(np.float32)  # HWIO
    kh, kw, per_group, out_channels = filt.shape
    in_shape = b.shape(x)
    channels = in_shape[3] if data_format == "NHWC" else in_shape[1]
    if channels is None or channels % per_group:
        raise UnsupportedGraphError(f"Conv2D {node.name!r}: {channels} input channels for a filter of {per_group}")
    strides, dilations = _spatial(node, "strides", data_format), _spatial(node, "dilations", data_format)
    h, w_ = (in_shape[1], in_shape[2]) if data_format == "NHWC" else (in_shape[2], in_shape[3])
    out_hw = [
        _window_out(size, k, s, d, padding) for size, k, s, d in zip((h, w_), (kh, kw), strides, dilations, strict=True)
    ]
    conv_inputs = [b.initializer(f"{node.name}/weight", np.ascontiguousarray(filt.transpose(3, 2, 0, 1)))]
    attrs = {
        "kernel_shape": [kh, kw],
        "strides": strides,
        "dilations": dilations,
        "group": channels // per_group,
        **_pads_for(padding, node),
    }
    out_nchw: Shape = (in_shape[0], out_channels, out_hw[0], out_hw[1])
    if data_format == "NHWC":
        b.nhwc_op(node, x, "Conv", out_nchw, conv_inputs, **attrs)
    else:
        b.emit("Conv", [x, *conv_inputs], [node.name], **attrs)
        b.shapes[node.name] = out_nchw


def _maxpool(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    (x,) = inputs
    data_format = _attr_string(node, "data_format", "NHWC")
    padding = _attr_string(node, "padding", "VALID")
    kernel, strides = _spatial(node, "ksize", data_format), _spatial(node, "strides", data_format)
    in_shape = b.shape(x)
    h, w = (in_shape[1], in_shape[2]) if data_format == "NHWC" else (in_shape[2], in_shape[3])
    channels = in_shape[3] if data_format == "NHWC" else in_shape[1]
    out_hw = [_window_out(size, k, s, 1, padding) for size, k, s in zip((h, w), kernel, strides, strict=True)]
    attrs = {"kernel_shape": kernel, "strides": strides, **_pads_for(padding, node)}
    out_nchw: Shape = (in_shape[0], channels, out_hw[0], out_hw[1])
    if data_format == "NHWC":
        b.nhwc_op(node, x, "MaxPool", out_nchw, [], **attrs)
    else:
        b.emit("MaxPool", [x], [node.name], **attrs)
        b.shapes[node.name] = out_nchw


def _resize_bilinear(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    x, size = inputs
    out_h, out_w = (int(v) for v in b.const(size, f"ResizeBilinear {node.name!r} size"))
    if _attr_bool(node, "align_corners"):
        mode = "align_corners"
    elif _attr_bool(node, "half_pixel_centers"):
        mode = "half_pixel"  # TF clamps the source coordinate to the image, as ONNX Runtime does
    else:
        mode = "asymmetric"
    # Sizes of all four dims (N and C read at run time), not ``axes=[2, 3]``: ONNX Runtime's transpose optimizer
    # permutes a Resize's sizes by the rank of its input and fails to load the model when they are two.
    nchw = b.to_nchw(node, x)
    batch_channels, sizes = b.fresh(f"{node.name}/nc"), b.fresh(f"{node.name}/sizes")
    b.emit("Shape", [nchw], [batch_channels], start=0, end=2)
    hw = b.initializer(f"{node.name}/hw", np.array([out_h, out_w], np.int64))
    b.emit("Concat", [batch_channels, hw], [sizes], axis=0)
    result = b.fresh(f"{node.name}/result")
    b.emit("Resize", [nchw, "", "", sizes], [result], mode="linear", coordinate_transformation_mode=mode)
    in_shape = b.shape(x)
    b.from_nchw(node, result, (in_shape[0], in_shape[3], out_h, out_w))


def _pad(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    x, paddings = inputs[0], inputs[1]
    pairs = b.const(paddings, f"{node.op} {node.name!r} paddings").astype(np.int64).reshape(-1, 2)
    onnx_inputs = [x, b.initializer(f"{node.name}/pads", np.concatenate([pairs[:, 0], pairs[:, 1]]))]
    if len(inputs) > 2:
        value = b.const(inputs[2], f"PadV2 {node.name!r} constant").astype(np.float32).reshape(())
        onnx_inputs.append(b.initializer(f"{node.name}/value", value))
    b.emit("Pad", onnx_inputs, [node.name], mode="constant")
    b.shapes[node.name] = tuple(
        None if d is None else d + int(lo) + int(hi) for d, (lo, hi) in zip(b.shape(x), pairs, strict=True)
    )


def _transpose(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    x, perm_name = inputs
    perm = [int(p) for p in b.const(perm_name, f"Transpose {node.name!r} perm")]
    if x in b.consts:
        b.consts[node.name] = np.transpose(b.consts[x], perm)
        return
    b.emit("Transpose", [x], [node.name], perm=perm)
    shape = b.shape(x)
    b.shapes[node.name] = tuple(shape[p] for p in perm)


def _reshape(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    x, shape_name = inputs
    target = b.const(shape_name, f"Reshape {node.name!r} shape").astype(np.int64).copy()
    if x in b.consts:
        b.consts[node.name] = b.consts[x].reshape(target)
        return
    in_shape = b.shape(x)
    # The graph was traced at batch 1: a leading 1 over the batch dim becomes 0, "keep the input's".
    batched = len(in_shape) > 0 and in_shape[0] is None and len(target) > 0 and target[0] == 1
    if batched:
        target[0] = 0
    b.emit("Reshape", [x, b.initializer(f"{node.name}/shape", target)], [node.name])
    out: list[int | None] = [None if (batched and i == 0) else int(d) for i, d in enumerate(target)]
    if -1 in out:
        source = in_shape[1:] if batched else in_shape
        fixed = [d for d in out if d is not None and d != -1]
        total = None if None in source else int(np.prod([d for d in source if d is not None]))
        out[out.index(-1)] = None if total is None else total // max(1, int(np.prod(fixed)))
    b.shapes[node.name] = tuple(out)


def _concat(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    *parts, axis_name = inputs
    axis = int(b.const(axis_name, f"ConcatV2 {node.name!r} axis"))
    if all(p in b.consts for p in parts):
        b.consts[node.name] = np.concatenate([b.consts[p] for p in parts], axis=axis)
        return
    shapes = [b.shape(p) for p in parts]
    axis %= len(shapes[0])
    b.emit("Concat", parts, [node.name], axis=axis)
    sizes = [s[axis] for s in shapes]
    total = None if any(s is None for s in sizes) else sum(int(s) for s in sizes if s is not None)
    b.shapes[node.name] = tuple(total if i == axis else d for i, d in enumerate(shapes[0]))


def _split_v(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    x, sizes_name, axis_name = inputs
    sizes = b.const(sizes_name, f"SplitV {node.name!r} sizes").astype(np.int64)
    shape = b.shape(x)
    axis = int(b.const(axis_name, f"SplitV {node.name!r} axis")) % len(shape)
    if (sizes < 0).any():
        raise UnsupportedGraphError(f"SplitV {node.name!r}: inferred (-1) split sizes")
    outputs = [node.name if i == 0 else f"{node.name}:{i}" for i in range(len(sizes))]
    b.emit("Split", [x, b.initializer(f"{node.name}/split", sizes)], outputs, axis=axis)
    for name, size in zip(outputs, sizes, strict=True):
        b.shapes[name] = tuple(int(size) if i == axis else d for i, d in enumerate(shape))


def _elementwise(
    onnx_op: str, fold: Callable[..., NDArray[Any]] | None
) -> Callable[[_Builder, TfjsNode, list[str]], None]:
    def convert(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
        if all(i in b.consts for i in inputs):
            if fold is None:
                raise UnsupportedGraphError(f"{node.op} {node.name!r} of constants")
            b.consts[node.name] = np.asarray(fold(*(b.consts[i] for i in inputs)))
            return
        names = []
        for name in inputs:
            if name in b.consts:
                names.append(b.initializer(f"{node.name}/const", b.consts[name].astype(np.float32)))
                b.shapes[names[-1]] = b.consts[name].shape
            else:
                names.append(name)
        attrs = {"alpha": float(node.attr.get("alpha", {}).get("f", 0.2))} if node.op == "LeakyRelu" else {}
        b.emit(onnx_op, names, [node.name], **attrs)
        b.shapes[node.name] = _broadcast([b.shape(n) for n in names])

    return convert


def _broadcast(shapes: Iterable[Shape]) -> Shape:
    shapes = list(shapes)
    rank = max(len(s) for s in shapes)
    out: list[int | None] = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        if any(d is None for d in dims):
            out.append(None)
        else:
            out.append(max(int(d) for d in dims if d is not None))
    return tuple(out)


def _sparse_to_dense(b: _Builder, node: TfjsNode, inputs: list[str]) -> None:
    indices, out_shape, values, default = (b.const(i, f"SparseToDense {node.name!r} input") for i in inputs)
    dense = np.full(tuple(int(d) for d in out_shape.reshape(-1)), default.reshape(()), dtype=values.dtype)
    # TF: indices are 0-D (one index), 1-D (one scalar index each) or 2-D (one row each); a scalar value goes to all.
    index = indices.reshape(-1, indices.shape[1] if indices.ndim == 2 else 1)
    flat = values.reshape(-1)
    if values.ndim == 0:
        flat = np.broadcast_to(flat, (len(index),))
    if len(flat) != len(index):
        raise UnsupportedGraphError(f"SparseToDense {node.name!r}: {len(index)} indices for {len(flat)} values")
    for position, value in zip(index, flat, strict=True):
        dense[tuple(int(p) for p in position)] = value
    b.consts[node.name] = dense


_CONVERTERS: dict[str, Callable[[_Builder, TfjsNode, list[str]], None]] = {
    "Conv2D": _conv2d,
    "MaxPool": _maxpool,
    "ResizeBilinear": _resize_bilinear,
    "Pad": _pad,
    "PadV2": _pad,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "ConcatV2": _concat,
    "SplitV": _split_v,
    "SparseToDense": _sparse_to_dense,
    "Add": _elementwise("Add", np.add),
    "AddV2": _elementwise("Add", np.add),
    "LeakyRelu": _elementwise("LeakyRelu", None),
    "Sigmoid": _elementwise("Sigmoid", None),
    "Identity": _elementwise("Identity", lambda x: x),
}


# -- graph rewrites that change no value ------------------------------------------------------------------------------


def _optimise(
    nodes: list[onnx.NodeProto], initializers: dict[str, NDArray[Any]], keep: set[str]
) -> list[onnx.NodeProto]:
    nodes = _fold_conv_bias(nodes, initializers, keep)
    nodes = _cancel_transposes(nodes, keep)
    nodes = _fold_pad_into_conv(nodes, initializers, keep)
    return _dead_code(nodes, keep)


def _consumers(nodes: Sequence[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _producers(nodes: Sequence[onnx.NodeProto]) -> dict[str, onnx.NodeProto]:
    return {out: node for node in nodes for out in node.output}


def _rename_input(node: onnx.NodeProto, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new


def _fold_conv_bias(
    nodes: list[onnx.NodeProto], initializers: dict[str, NDArray[Any]], keep: set[str]
) -> list[onnx.NodeProto]:
    """Conv -> Transpose(NCHW->NHWC) -> Add(1-D constant of C) becomes Conv(bias) -> Transpose."""
    readers, producers = _consumers(nodes), _producers(nodes)
    dropped: set[int] = set()
    for add in nodes:
        if add.op_type != "Add":
            continue
        data = [n for n in add.input if n not in initializers]
        bias = [n for n in add.input if n in initializers]
        if len(data) != 1 or len(bias) != 1 or initializers[bias[0]].ndim != 1:
            continue
        transpose = producers.get(data[0])
        if (
            transpose is None
            or transpose.op_type != "Transpose"
            or list(transpose.attribute[0].ints) != list(_NCHW_TO_NHWC)
        ):
            continue
        conv = producers.get(transpose.input[0])
        if conv is None or conv.op_type != "Conv" or len(conv.input) != 2:
            continue
        if len(readers[conv.output[0]]) != 1 or len(readers[transpose.output[0]]) != 1 or data[0] in keep:
            continue
        weight = initializers[conv.input[1]]
        if initializers[bias[0]].shape != (weight.shape[0],):
            continue
        conv.input.append(bias[0])
        transpose.output[0] = add.output[0]
        dropped.add(id(add))
    return [n for n in nodes if id(n) not in dropped]


def _perm(node: onnx.NodeProto) -> list[int]:
    return list(next(a for a in node.attribute if a.name == "perm").ints)


def _cancel_transposes(nodes: list[onnx.NodeProto], keep: set[str]) -> list[onnx.NodeProto]:
    """Transpose(p2) of Transpose(p1): the pair's readers read the first's input when p1 then p2 is the identity,
    else one Transpose with the composed perm. Repeats until nothing changes."""
    changed = True
    while changed:
        changed = False
        producers = _producers(nodes)
        for node in nodes:
            if node.op_type != "Transpose":
                continue
            first = producers.get(node.input[0])
            if first is None or first.op_type != "Transpose":
                continue
            p1, p2 = _perm(first), _perm(node)
            composed = [p1[i] for i in p2]
            if composed == list(range(len(composed))) and node.output[0] not in keep:
                source, out = first.input[0], node.output[0]
                nodes = [n for n in nodes if n is not node]
                for reader in nodes:
                    _rename_input(reader, out, source)
            elif composed == list(range(len(composed))):  # a graph output keeps its name: a copy, not a transpose
                node.input[0] = first.input[0]
                node.op_type = "Identity"
                del node.attribute[:]
            else:
                node.input[0] = first.input[0]
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("perm", composed))
            changed = True
            break
        nodes = _dead_code(nodes, keep)
    return nodes


def _fold_pad_into_conv(
    nodes: list[onnx.NodeProto], initializers: dict[str, NDArray[Any]], keep: set[str]
) -> list[onnx.NodeProto]:
    """A zero Pad of H and W only, read only by a Conv without padding of its own, becomes the Conv's pads."""
    readers, producers = _consumers(nodes), _producers(nodes)
    for conv in nodes:
        if conv.op_type != "Conv" or any(a.name in ("pads", "auto_pad") for a in conv.attribute):
            continue
        pad = producers.get(conv.input[0])
        if pad is None or pad.op_type != "Pad" or len(readers[pad.output[0]]) != 1 or pad.output[0] in keep:
            continue
        if len(pad.input) > 2 and pad.input[2] and float(initializers[pad.input[2]]) != 0.0:
            continue
        pads = initializers[pad.input[1]]
        if len(pads) != 8 or pads[[0, 1, 4, 5]].any() or (pads < 0).any():
            continue
        conv.input[0] = pad.input[0]
        conv.attribute.append(helper.make_attribute("pads", [int(p) for p in pads[[2, 3, 6, 7]]]))
    return _dead_code(nodes, keep)


def _dead_code(nodes: list[onnx.NodeProto], keep: set[str]) -> list[onnx.NodeProto]:
    """Only the nodes some output depends on, in their order."""
    needed = set(keep)
    live: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(name for name in node.input if name)
    return live[::-1]
