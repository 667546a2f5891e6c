"""uint8 image inputs for ONNX graphs, and device buffers to feed them through IO binding.

On CUDA the float (N, 3, H, W) blob costs a conversion pass on the feeding thread and 4x the bytes of
the uint8 frames over PCIe. ``with_uint8_image_input`` prepends Transpose -> Cast -> Mul(1/255)
(-> Cast to fp16) to the graph, so the session takes the letterboxed uint8 frames as they are, in
(N, H, W, 3), and the GPU does the rest. The values it computes are those of
``frame.astype(float32) * float32(1 / 255)`` (then ``.astype(float16)``): the CPU blob's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnx

_SCALE = np.float32(1 / 255)
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16 / FLOAT / UINT8, spelled here so importing this module stays cheap
_FLOAT = 1
_UINT8 = 2


def with_uint8_image_input(model: onnx.ModelProto, input_name: str) -> onnx.ModelProto:
    """A copy of ``model`` whose ``input_name`` (float or fp16, (N, 3, H, W)) is fed as uint8 (N, H, W, 3).

    The input keeps its name (feeds and TensorRT profiles address it as before); the nodes that read
    it now read the normalised tensor the prepended nodes compute.

    Raises:
        ValueError: ``input_name`` is not a rank-4 float/fp16 graph input with 3 channels (or a symbolic channel dim).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    value = next((v for v in graph.input if v.name == input_name), None)
    if value is None:
        raise ValueError(f"graph has no input {input_name!r}")
    tensor_type = value.type.tensor_type
    dims = list(tensor_type.shape.dim)
    if tensor_type.elem_type not in (_FLOAT, _FLOAT16) or len(dims) != 4:
        raise ValueError(f"input {input_name!r} is not a float (N, 3, H, W) image")
    if dims[1].HasField("dim_value") and dims[1].dim_value != 3:
        raise ValueError(f"input {input_name!r} has {dims[1].dim_value} channels, not 3")
    normalised = _unique_name(model, f"{input_name}__normalised")
    _rename_reads(graph, input_name, normalised)

    prefix = _unique_name(model, f"{input_name}__uint8")
    scale = numpy_helper.from_array(np.array(_SCALE, np.float32), f"{prefix}_scale")
    scaled = normalised if tensor_type.elem_type == _FLOAT else f"{prefix}_scaled"
    nodes = [
        helper.make_node("Transpose", [input_name], [f"{prefix}_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", [f"{prefix}_nchw"], [f"{prefix}_float"], to=_FLOAT),
        helper.make_node("Mul", [f"{prefix}_float", scale.name], [scaled]),
    ]
    if tensor_type.elem_type == _FLOAT16:
        nodes.append(helper.make_node("Cast", [scaled], [normalised], to=_FLOAT16))
    graph.initializer.append(scale)
    for node in reversed(nodes):
        graph.node.insert(0, node)

    nhwc = [dims[0], dims[2], dims[3], dims[1]]
    tensor_type.elem_type = _UINT8
    del tensor_type.shape.dim[:]
    for dim in nhwc:
        new = tensor_type.shape.dim.add()
        new.CopyFrom(dim)
    if not new.HasField("dim_value"):  # the channel dim, symbolic in some exports: uint8 frames are RGB
        new.Clear()
        new.dim_value = 3
    return model


def _rename_reads(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Point every node input (subgraphs included) and graph output named ``old`` at ``new``."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _rename_reads(attribute.g, old, new)
            for subgraph in attribute.graphs:
                _rename_reads(subgraph, old, new)
    for output in graph.output:
        if output.name == old:
            output.name = new


def _unique_name(model: onnx.ModelProto, base: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {v.name for v in model.graph.input}
    taken |= {name for node in model.graph.node for name in (*node.input, *node.output)}
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


class DeviceInputs:
    """Reused device buffers (``OrtValue``) that inputs are copied into and bound from, one per input name.

    A buffer is reallocated only when its input's shape or type changes (a video's batches share one),
    so each run is one host->device copy into memory ORT already holds, and no allocation. One per
    feeding thread: ``run_with_iobinding`` returns after the run, so the next copy cannot race it.
    """

    def __init__(self, device: str, device_id: int = 0) -> None:
        self.device = device
        self._device_id = device_id
        self._values: dict[str, ort.OrtValue] = {}

    def bind(self, binding: ort.IOBinding, feeds: Mapping[str, NDArray[Any]]) -> None:
        """Copy each feed into its buffer and bind it as the session input of that name."""
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            value = self._values.get(name)
            if value is None or value.shape() != list(array.shape) or value.data_type() != _ort_type(array.dtype):
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    array.shape, array.dtype, self.device, self._device_id
                )
                self._values[name] = value
            value.update_inplace(array)
            binding.bind_ortvalue_input(name, value)

    def clear(self) -> None:
        """Drop the buffers (device memory goes back to ORT's arena)."""
        self._values.clear()


def _ort_type(dtype: np.dtype[Any]) -> str:
    """ORT's spelling of a numpy element type (``OrtValue.data_type()``), e.g. ``tensor(uint8)``."""
    names = {"float32": "float", "float64": "double"}
    return f"tensor({names.get(dtype.name, dtype.name)})"
