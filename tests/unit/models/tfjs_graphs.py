"""Tiny TF.js graph models written by tests (``model.json`` + weight shards), and the TF ops they use in plain
numpy, written from TensorFlow's kernels (NHWC), as the judges of ``models.tfjs_graph``'s conversion."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
NCHW_TO_NHWC = [0, 2, 3, 1]
NHWC_TO_NCHW = [0, 3, 1, 2]


def s_attr(text: str) -> dict[str, str]:
    return {"s": base64.b64encode(text.encode()).decode()}


def ints_attr(*values: int) -> dict[str, dict[str, list[str]]]:
    return {"list": {"i": [str(v) for v in values]}}


@dataclass
class TfjsGraphBuilder:
    """Nodes and weights of a TF.js graph model, in the layout ``tensorflowjs_converter`` writes."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    specs: list[dict[str, Any]] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)

    def placeholder(self, name: str, shape: tuple[int, ...]) -> str:
        dims = {"dim": [{"size": str(d)} for d in shape]}
        self.nodes.append({"name": name, "op": "Placeholder", "attr": {"shape": {"shape": dims}}})
        return name

    def const(self, name: str, value: NDArray[Any], *, quantization: dict[str, Any] | None = None) -> str:
        """A weight. ``quantization``: ``{"dtype": "float16"}`` stores float16; ``{"dtype": "uint8", "scale": s,
        "min": m}`` stores ``value`` as given (already the quantised integers)."""
        dtype = "int32" if np.issubdtype(value.dtype, np.integer) and not quantization else "float32"
        spec: dict[str, Any] = {"name": name, "shape": list(value.shape), "dtype": dtype}
        if quantization:
            spec["quantization"] = quantization
            stored = {"float16": "<f2", "uint8": "u1", "uint16": "<u2"}[quantization["dtype"]]
        else:
            stored = "<i4" if dtype == "int32" else "<f4"
        self.specs.append(spec)
        self.data.append(np.ascontiguousarray(value).astype(stored).tobytes())
        self.nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": f"DT_{dtype.upper()}"}}})
        return name

    def ints(self, name: str, *values: int) -> str:
        return self.const(name, np.array(values, np.int32))

    def op(self, name: str, op: str, *inputs: str, **attr: Any) -> str:
        self.nodes.append({"name": name, "op": op, "input": list(inputs), "attr": attr})
        return name

    def transpose(self, name: str, x: str, perm: list[int]) -> str:
        return self.op(name, "Transpose", x, self.ints(f"{name}/perm", *perm))

    def conv2d(
        self, name: str, x: str, weight: str, *, stride: int = 1, padding: str = "VALID", dilation: int = 1
    ) -> str:
        return self.op(
            name,
            "Conv2D",
            x,
            weight,
            padding=s_attr(padding),
            data_format=s_attr("NHWC"),
            strides=ints_attr(1, stride, stride, 1),
            dilations=ints_attr(1, dilation, dilation, 1),
        )

    def write(self, root: Path, outputs: list[str], *, shards: int = 2) -> Path:
        """``root/model.json`` and its weights split over ``shards`` files; returns the json's path."""
        blob = b"".join(self.data)
        step = -(-len(blob) // shards) if blob else 0
        paths = []
        for i in range(shards):
            path = f"group1-shard{i + 1}of{shards}.bin"
            (root / path).write_bytes(blob[i * step : (i + 1) * step])
            paths.append(path)
        document = {
            "format": "graph-model",
            "generatedBy": "tests",
            "convertedBy": "tests",
            "signature": {"outputs": {o: {"name": o} for o in outputs}},
            "modelTopology": {"node": self.nodes, "library": {}, "versions": {}},
            "weightsManifest": [{"paths": paths, "weights": self.specs}],
        }
        model_json = root / "model.json"
        model_json.write_text(json.dumps(document))
        return model_json


# -- TF's kernels in numpy (float64, NHWC) ---------------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF's SAME: the output has ceil(size / stride) cells, the odd pixel of padding goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def conv2d_nhwc(x: NDArray[Any], w: NDArray[Any], *, stride: int = 1, padding: str = "VALID") -> NDArray[np.float64]:
    """TF Conv2D: ``x`` NHWC, ``w`` HWIO; I < C makes it grouped (C / I groups of I input channels)."""
    kh, kw, per_group, out_ch = w.shape
    if padding == "SAME":
        x = np.pad(x, [(0, 0), _same_pads(x.shape[1], kh, stride), _same_pads(x.shape[2], kw, stride), (0, 0)])
    groups = x.shape[3] // per_group
    out_per_group = out_ch // groups
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (kh, kw), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (N, OH, OW, C, kh, kw)
    parts = []
    for g in range(groups):
        xs = windows[:, :, :, g * per_group : (g + 1) * per_group]
        ws = w[:, :, :, g * out_per_group : (g + 1) * out_per_group].astype(np.float64)
        parts.append(np.einsum("nhwckl,klco->nhwo", xs, ws))
    return np.concatenate(parts, axis=3)


def maxpool_nhwc(x: NDArray[Any], *, kernel: int, stride: int, padding: str) -> NDArray[np.float64]:
    """TF MaxPool: SAME padding never wins the max."""
    if padding == "SAME":
        pads = [(0, 0), _same_pads(x.shape[1], kernel, stride), _same_pads(x.shape[2], kernel, stride), (0, 0)]
        x = np.pad(x.astype(np.float64), pads, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (kernel, kernel), axis=(1, 2))
    return windows[:, ::stride, ::stride].max(axis=(4, 5))


def _bilinear_taps(in_size: int, out_size: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """TF's ``compute_interpolation_weights`` with half_pixel_centers: source (out + 0.5) * scale - 0.5, the lower
    tap floored and clamped at 0, the upper ceiled and clamped at the last pixel, the fraction from the floor."""
    scale = in_size / out_size
    source = (np.arange(out_size) + 0.5) * scale - 0.5
    floor = np.floor(source)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(source), in_size - 1).astype(np.int64)
    return lower, upper, source - floor


def resize_bilinear_half_pixel(x: NDArray[Any], out_h: int, out_w: int) -> NDArray[np.float64]:
    x = x.astype(np.float64)
    top, bottom, dy = _bilinear_taps(x.shape[1], out_h)
    left, right, dx = _bilinear_taps(x.shape[2], out_w)
    dx = dx[None, None, :, None]
    upper_row = x[:, top][:, :, left] + (x[:, top][:, :, right] - x[:, top][:, :, left]) * dx
    lower_row = x[:, bottom][:, :, left] + (x[:, bottom][:, :, right] - x[:, bottom][:, :, left]) * dx
    return upper_row + (lower_row - upper_row) * dy[None, :, None, None]


def leaky_relu(x: NDArray[Any], alpha: float) -> NDArray[np.float64]:
    x = x.astype(np.float64)
    return np.where(x > 0, x, alpha * x)
