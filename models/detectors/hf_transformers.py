"""``hf:DIR_OR_HUB_ID``: any transformers ``AutoModelForObjectDetection`` checkpoint (DETR, RT-DETR, ...), or an
instance-segmentation one (Mask2Former, through ``AutoModelForUniversalSegmentation``): its rows carry masks.

torch and transformers are imported when a detector is built, not when this module is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import DEFAULT_BATCH_SIZE, Detector, DetectorOptions
from models.detectors.hf_checkpoint import load_checkpoint, segments
from models.detectors.hf_instance_segmentation import InputGeometry, instance_detections
from models.errors import DeviceOutOfMemoryError
from models.ops.boxes import clip_xyxy
from models.runtimes.torch import to_device, torch_device_for
from models.runtimes.torch_preprocess import HostStaging, PreprocessSpec, preprocess
from models.types import Detections, ModelInfo, RGBImage

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# On CPU the forward pass is compute-bound, and DETR's processor would upscale 640x480 to 800x1066
# (about 3x the FLOPs); feed at most 640 px unless told otherwise.
CPU_DEFAULT_INPUT_SIZE_PX = 640
_STRIDE_PX = 32
_SIZE_KEYS = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
_FP32_OUTPUTS = ("logits", "pred_boxes", "class_queries_logits", "masks_queries_logits")


def _size_fields(size: Any) -> dict[str, int]:
    """A processor's ``size`` (a dict, or transformers 5's ``SizeDict``) -> its set fields."""
    fields = dict(size) if isinstance(size, Mapping) else {key: getattr(size, key, None) for key in _SIZE_KEYS}
    return {key: int(value) for key in _SIZE_KEYS if (value := fields.get(key))}


def processor_size_override(
    default: Mapping[str, int], requested_px: int | None
) -> tuple[dict[str, int] | None, int | None]:
    """The ``size`` to pass to the image processor so the longest side fed to the model is ``requested_px``.

    Never goes above the processor's own default long side (e.g. 1333 for DETR, 640 for RT-DETR).

    Args:
        default: the processor's size fields, e.g. ``{"shortest_edge": 800, "longest_edge": 1333}``.
        requested_px: the wanted longest side in pixels; None keeps the processor's size.

    Returns:
        The override (None = keep the default) and the effective longest side in pixels (None when
        the processor's size has no long-side bound).
    """
    cap: int | None
    if "height" in default and "width" in default:
        kind, cap = "square", max(default["height"], default["width"])
    elif "max_height" in default and "max_width" in default:
        kind, cap = "max", max(default["max_height"], default["max_width"])
    elif "shortest_edge" in default:
        kind, cap = "edges", default.get("longest_edge")
    else:
        if requested_px is not None:
            log.warning("cannot set the input size of an image processor with size %s; using its default", default)
        return None, None
    if requested_px is None:
        return None, cap
    size_px = min(requested_px, cap) if cap is not None else requested_px
    if kind == "square":
        # Fixed-size models (RT-DETR) need strides to divide the input.
        size_px = max(_STRIDE_PX, size_px // _STRIDE_PX * _STRIDE_PX)
        return {"height": size_px, "width": size_px}, size_px
    if kind == "max":
        return {"max_height": size_px, "max_width": size_px}, size_px
    # Both edges equal: the short side would overshoot first, so the long side binds.
    return {"shortest_edge": size_px, "longest_edge": size_px}, size_px


def dense_id2label(id2label: Mapping[Any, str], num_labels: int) -> tuple[str, ...]:
    """``config.id2label`` -> names indexed by class id, gaps filled with ``class_<i>``."""
    mapping = {int(k): str(v) for k, v in id2label.items()}
    count = max(num_labels, max(mapping, default=-1) + 1)
    return tuple(mapping.get(i, f"class_{i}") for i in range(count))


class HFTransformersDetector(Detector):
    """A transformers object-detection model behind its own image processor and post-processing."""

    def __init__(self, spec: str, target: str, options: DetectorOptions) -> None:
        device = torch_device_for(spec, device=options.device, num_threads=options.num_threads)
        checkpoint = load_checkpoint(target)
        self._device = device
        # fp16 through autocast rather than model.half(): matmuls and convolutions run in fp16 while
        # autocast keeps softmax, norms and sampling ops in fp32, so no model needs to be fp16-clean.
        self._autocast = device == "cuda" and options.fp16
        self._model = checkpoint.model.to(device=device).eval()
        if options.compile:
            import torch

            self._model = torch.compile(self._model, dynamic=True)
        self._processor = checkpoint.processor
        self._segments = segments(checkpoint.model)
        requested_px = options.input_size_px or (CPU_DEFAULT_INPUT_SIZE_PX if device == "cpu" else None)
        size_fields = _size_fields(self._processor.size)
        self._size, input_size_px = processor_size_override(size_fields, requested_px)
        # A {height, width} processor stretches every frame to that size (RT-DETR); edge and max fits keep aspect.
        stretches = "height" in size_fields and "width" in size_fields
        # Resize/normalize in torch on the model's device when we can reproduce the processor.
        self._preprocess = PreprocessSpec.from_processor(
            self._processor, self._size or _size_fields(self._processor.size)
        )
        self._staging = HostStaging(device)  # the pinned upload buffer, reused batch after batch
        config = self._model.config
        self.info = ModelInfo(
            spec=spec,
            name=checkpoint.name,
            version=checkpoint.version,
            class_names=dense_id2label(config.id2label, config.num_labels),
            runtime="torch",
            device=device,
            batch_size=options.batch_size or DEFAULT_BATCH_SIZE[device],
            input_size_px=input_size_px,
            dtype="float16" if self._autocast else "float32",
            keeps_aspect=stretches is False,
            makes_masks=self._segments,
        )

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        import torch

        with torch.inference_mode():
            try:
                feeds = self._pre_process(images)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self._autocast):
                    outputs = self._model(**feeds)
            except torch.cuda.OutOfMemoryError as exc:  # == torch.OutOfMemoryError; a smaller batch may fit
                raise DeviceOutOfMemoryError(
                    f"{self._device} out of memory on a batch of {len(images)} frames"
                ) from exc
            for name in _FP32_OUTPUTS:  # post-processing math (softmax, box scaling) in fp32
                if name in outputs and outputs[name].is_floating_point():
                    outputs[name] = outputs[name].float()
            if self._segments:
                try:  # each kept mask is resized to its frame on the device: a smaller batch may fit
                    return _instance_rows(outputs, feeds, images, threshold)
                except torch.cuda.OutOfMemoryError as exc:
                    raise DeviceOutOfMemoryError(
                        f"{self._device} out of memory resizing masks of {len(images)} frames"
                    ) from exc
            results = self._processor.post_process_object_detection(
                outputs, threshold=threshold, target_sizes=[image.shape[:2] for image in images]
            )
        return [_to_detections(result, image) for result, image in zip(results, images, strict=True)]

    def _pre_process(self, images: Sequence[RGBImage]) -> dict[str, torch.Tensor]:
        if self._preprocess is not None:
            return preprocess(images, self._preprocess, self._device, self._staging)
        size_kwargs = {"size": self._size} if self._size is not None else {}
        inputs = self._processor(
            images=list(images), return_tensors="pt", input_data_format="channels_last", **size_kwargs
        )
        return {name: to_device(tensor, self._device) for name, tensor in inputs.items()}

    def close(self) -> None:
        """Drop the model; on CUDA, hand cached blocks back to the driver."""
        import torch

        del self._model
        self._staging.release()
        if self._device == "cuda":
            torch.cuda.empty_cache()


def _instance_rows(
    outputs: Mapping[str, torch.Tensor], feeds: Mapping[str, torch.Tensor], images: Sequence[RGBImage], threshold: float
) -> list[Detections]:
    """Each frame's instances; where it sits in the padded input comes from ``pixel_mask`` (1 on the frame)."""
    padded_hw = (int(feeds["pixel_values"].shape[-2]), int(feeds["pixel_values"].shape[-1]))
    pixel_mask = feeds.get("pixel_mask")
    rows: list[Detections] = []
    for i, image in enumerate(images):
        valid_hw = padded_hw
        if pixel_mask is not None:
            valid_hw = (int(pixel_mask[i, :, 0].sum()), int(pixel_mask[i, 0, :].sum()))
        geometry = InputGeometry(valid_hw, padded_hw, frame_hw=(int(image.shape[0]), int(image.shape[1])))
        rows.append(
            instance_detections(
                outputs["class_queries_logits"][i], outputs["masks_queries_logits"][i], geometry, threshold
            )
        )
    return rows


def _to_detections(result: Mapping[str, torch.Tensor], image: RGBImage) -> Detections:
    height, width = image.shape[:2]
    xyxy = result["boxes"].detach().float().cpu().numpy().astype(np.float32)
    dets = Detections.from_arrays(
        clip_xyxy(xyxy.reshape(-1, 4), width, height),
        result["scores"].detach().float().cpu().numpy(),
        result["labels"].detach().cpu().numpy(),
    )
    return dets[np.argsort(-dets.confidence, kind="stable")]
