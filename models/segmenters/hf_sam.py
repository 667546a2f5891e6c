"""``hf:DIR_OR_HUB_ID`` as a ``Segmenter``: transformers' SAM family (``SamModel``, ``Sam2Model``, ``EdgeTamModel``,
whatever ``AutoModelForMaskGeneration`` resolves), boxes in, one mask per box out.

Per batch of frames: one image-encoder call (``get_image_embeddings``), then, frame by frame, prompt-encoder/
mask-decoder calls on at most ``DetectorOptions.segmenter_max_boxes`` boxes each (``input_boxes`` (1, k, 4),
``multimask_output=False``). transformers' decoder copies the frame's image embedding once per prompt (SAM-base:
~32 MiB each in fp32), so the decoder's memory follows that chunk, not frames x boxes. A chunk that runs out of
device memory is decoded in halves from the same embedding, and the ceiling stays down for the segmenter's life
(``models.oom``). Each mask's low-resolution logits are sampled at the frame's pixel centres only inside its box
plus a margin, so the masks' memory follows the boxes too.

The processor's pixel work is done in torch (``models.runtimes.torch_preprocess``) from its saved settings: the
SAM 2 / EdgeTAM image processors need torchvision, which the ``hf`` extra does not bring.
torch and transformers are imported when a segmenter is built, not when this module is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from models.base import DEFAULT_BATCH_SIZE, DetectorOptions, Segmenter, SegmenterInfo
from models.detectors.hf_checkpoint import CheckpointKind, load_checkpoint
from models.errors import DeviceOutOfMemoryError, ModelLoadError, ModelSpecError
from models.masks import Masks
from models.oom import BatchCeiling, run_splitting_on_oom
from models.runtimes.torch import autocast_dtype, torch_device_for
from models.runtimes.torch_preprocess import HostStaging, PreprocessSpec, ResizeRule, preprocess
from models.types import RGBImage

if TYPE_CHECKING:
    import torch

# A box prompt's mask may spill a little past the box (a detector's box is rarely tight): keep this much around it.
MASK_MARGIN_FRACTION = 0.1
MIN_MASK_MARGIN_PX = 4
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _load_sam(transformers: Any, source: str, local_files_only: bool) -> tuple[Any, Any]:
    """(the image processor's saved settings, the model) of a SAM-family checkpoint."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASK_GENERATION_MAPPING_NAMES

    config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_files_only)
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_MASK_GENERATION_MAPPING_NAMES:
        raise ModelSpecError(
            f"hf:{source} is a {model_type} checkpoint, not a SAM-family segmenter "
            f"(a mask-generation model: {', '.join(sorted(MODEL_FOR_MASK_GENERATION_MAPPING_NAMES))})"
        )
    settings, _ = transformers.ImageProcessingMixin.get_image_processor_dict(source, local_files_only=local_files_only)
    model = transformers.AutoModelForMaskGeneration.from_pretrained(source, local_files_only=local_files_only)
    return settings, model


SAM_FAMILY = CheckpointKind(
    "SAM-family",
    (("config.json",), ("preprocessor_config.json", "processor_config.json")),
    _load_sam,
    example_hub_id="facebook/sam-vit-base",
)


def preprocess_spec(settings: Mapping[str, Any], source: str) -> PreprocessSpec:
    """The pixel work a SAM-family image processor does, from its saved settings.

    SAM: longest side to ``size.longest_edge``, normalised, padded bottom-right to ``pad_size``; SAM 2 and
    EdgeTAM: stretched to ``size.height`` x ``size.width``.
    """
    size = settings.get("size") or {}
    if size.get("longest_edge"):
        resize = ResizeRule("longest", longest_px=int(size["longest_edge"]))
    elif size.get("height") and size.get("width"):
        resize = ResizeRule("fixed", height_px=int(size["height"]), width_px=int(size["width"]))
    else:
        raise ModelLoadError(f"hf:{source}: unsupported image processor size {size!r} for a SAM-family model")
    pad_size = settings.get("pad_size") or {}
    pad = bool(settings.get("do_pad")) and bool(pad_size.get("height")) and bool(pad_size.get("width"))
    normalize = settings.get("do_normalize", True)
    mean = tuple(float(v) for v in settings.get("image_mean") or _IMAGENET_MEAN)
    std = tuple(float(v) for v in settings.get("image_std") or _IMAGENET_STD)
    return PreprocessSpec(
        resize=resize,
        rescale=float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else None,
        mean=(mean[0], mean[1], mean[2]) if normalize else None,
        std=(std[0], std[1], std[2]) if normalize else None,
        pad=pad,
        pad_to_hw=(int(pad_size["height"]), int(pad_size["width"])) if pad else None,
    )


class HFSamSegmenter(Segmenter):
    """A transformers SAM-family model prompted with boxes."""

    def __init__(self, spec: str, target: str, options: DetectorOptions) -> None:
        device = torch_device_for(spec, device=options.device, num_threads=options.num_threads)
        checkpoint = load_checkpoint(target, SAM_FAMILY)
        self._device = device
        # autocast, as the detectors: matmuls in half precision, norms and softmax kept in fp32
        self._autocast = autocast_dtype(device, options.fp16)
        self._model = checkpoint.model.to(device=device).eval()
        self._model_type = str(self._model.config.model_type)
        self._preprocess = preprocess_spec(checkpoint.processor, target)
        self._staging = HostStaging(device)
        # box prompts per decoder call; lowered on out-of-memory only, for the segmenter's life
        self._box_ceiling = BatchCeiling(options.segmenter_max_boxes, name=f"{checkpoint.name} (mask decoder, boxes)")
        resize = self._preprocess.resize
        self.info = SegmenterInfo(
            spec=spec,
            name=checkpoint.name,
            version=checkpoint.version,
            runtime="torch",
            device=device,
            batch_size=options.batch_size or DEFAULT_BATCH_SIZE[device],
            dtype=str(self._autocast).removeprefix("torch.") if self._autocast is not None else "float32",
            input_size_px=resize.longest_px or max(resize.height_px or 0, resize.width_px or 0),
        )

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        import torch

        cover_hw = self._padded_hw(images)
        with torch.inference_mode():
            embeddings, scales = self._encode(images)
            return [
                self._segment_frame(_frame_of(embeddings, b), boxes, image.shape[:2], scales[b], cover_hw)
                for b, (image, boxes) in enumerate(zip(images, boxes_xyxy, strict=True))
            ]

    def _padded_hw(self, images: Sequence[RGBImage]) -> tuple[int, int]:
        """The (height, width) of the encoder's input, which the low-resolution logits cover."""
        resize, pad_to = self._preprocess.resize, self._preprocess.pad_to_hw
        sizes = [resize.output_hw(*image.shape[:2]) for image in images]
        height = max(pad_to[0] if pad_to else 0, *(h for h, _ in sizes))
        width = max(pad_to[1] if pad_to else 0, *(w for _, w in sizes))
        return height, width

    def _encode(self, images: Sequence[RGBImage]) -> tuple[Any, list[tuple[float, float]]]:
        """The frames' image embeddings (as ``get_image_embeddings`` returns them), and each frame's (x, y) scale
        from its pixels to the encoder's.

        Raises:
            DeviceOutOfMemoryError: the batch of frames does not fit (a smaller one may).
        """
        import torch

        scales: list[tuple[float, float]] = []
        for image in images:
            height, width = image.shape[:2]
            out_h, out_w = self._preprocess.resize.output_hw(height, width)
            scales.append((out_w / width, out_h / height))
        try:
            feeds = preprocess(images, self._preprocess, self._device, self._staging)
            with self._autocast_context():
                return self._model.get_image_embeddings(feeds["pixel_values"]), scales
        except torch.cuda.OutOfMemoryError as exc:  # == torch.OutOfMemoryError; a smaller batch may fit
            raise DeviceOutOfMemoryError(
                f"{self._device} out of memory encoding a batch of {len(images)} frames"
            ) from exc

    def _segment_frame(
        self,
        embeddings: Any,
        boxes_xyxy: NDArray[np.float32],
        frame_hw: tuple[int, ...],
        scale_xy: tuple[float, float],
        cover_hw: tuple[int, int],
    ) -> Masks:
        """One frame's masks, its boxes decoded from its embedding in chunks under the box ceiling (halved on
        out-of-memory, the embedding kept).

        Raises:
            DeviceOutOfMemoryError: a single box does not fit.
        """
        sx, sy = scale_xy
        prompts = np.asarray(boxes_xyxy, np.float32) * np.asarray([sx, sy, sx, sy], np.float32)
        parts: list[Masks] = []

        def run(chunk: Sequence[int]) -> None:
            import torch

            rows = np.asarray(chunk, np.intp)
            logits = self._decode(embeddings, prompts[rows])
            try:  # sampling the logits on the device costs memory too: fewer boxes may fit
                parts.append(_masks_from_logits(logits, boxes_xyxy[rows], frame_hw, scale_xy, cover_hw))
            except torch.cuda.OutOfMemoryError as exc:
                raise DeviceOutOfMemoryError(f"{self._device} out of memory sampling {len(rows)} masks") from exc

        run_splitting_on_oom(range(len(prompts)), run, self._box_ceiling)
        return Masks.concat(parts)

    def _decode(self, embeddings: Any, prompts: NDArray[np.float32]) -> torch.Tensor:
        """(k, h, w) float32 mask logits of one frame's ``prompts`` (k, 4), in the encoder's pixels.

        Raises:
            DeviceOutOfMemoryError: these prompts do not fit (fewer may).
        """
        import torch

        try:
            with self._autocast_context():
                outputs = self._model(
                    input_boxes=torch.from_numpy(prompts[None]).to(self._device),
                    multimask_output=False,
                    **self._embedding_kwargs(embeddings),
                )
            logits: torch.Tensor = outputs.pred_masks[0, :, 0].float()
            return logits
        except torch.cuda.OutOfMemoryError as exc:
            raise DeviceOutOfMemoryError(f"{self._device} out of memory decoding {len(prompts)} box prompts") from exc

    def _autocast_context(self) -> Any:
        import torch

        return torch.autocast(
            device_type="cuda", dtype=self._autocast or torch.float16, enabled=self._autocast is not None
        )

    def _embedding_kwargs(self, embeddings: Any) -> dict[str, Any]:
        """``get_image_embeddings``' result as the model's forward takes it (SAM-HQ also returns its ViT's
        intermediate features)."""
        if self._model_type == "sam_hq":
            image_embeddings, intermediate = embeddings
            return {"image_embeddings": image_embeddings, "intermediate_embeddings": intermediate}
        return {"image_embeddings": embeddings}

    def close(self) -> None:
        """Drop the model; on CUDA, hand cached blocks back to the driver."""
        import torch

        del self._model
        self._staging.release()
        if self._device == "cuda":
            torch.cuda.empty_cache()


def _frame_of(embeddings: Any, b: int) -> Any:
    """Frame ``b``'s slice (batch of one) of ``get_image_embeddings``' result: a tensor, or (SAM 2, SAM-HQ)
    lists and tuples of them."""
    if isinstance(embeddings, (list, tuple)):
        return type(embeddings)(_frame_of(e, b) for e in embeddings)
    return embeddings[b : b + 1]


def mask_region(box_xyxy: NDArray[np.float32], height_px: int, width_px: int) -> tuple[int, int, int, int] | None:
    """The pixels (x0, y0, x1, y1), end-exclusive, a box's mask is kept in: the box plus a margin, inside the
    frame; None when that is empty (a box wholly outside the frame)."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    margin = max(MIN_MASK_MARGIN_PX, MASK_MARGIN_FRACTION * max(x1 - x0, y1 - y0))
    left, top = max(0, math.floor(x0 - margin)), max(0, math.floor(y0 - margin))
    right, bottom = min(width_px, math.ceil(x1 + margin)), min(height_px, math.ceil(y1 + margin))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def _masks_from_logits(
    logits: torch.Tensor,
    boxes_xyxy: NDArray[np.float32],
    frame_hw: tuple[int, ...],
    scale_xy: tuple[float, float],
    logits_cover_hw: tuple[int, int],
) -> Masks:
    """One frame's (n, h, w) low-resolution logits -> ``Masks`` in its pixels.

    The logits span the encoder's (padded) input; a frame pixel's centre (x + 0.5) sits at (x + 0.5) * scale
    there. Sampling them bilinearly at those centres, inside each box's region only, is what the processor's
    ``post_process_masks`` does over whole frames (upscale, unpad, resize) in one resample.
    """
    import torch
    import torch.nn.functional as functional

    height, width = int(frame_hw[0]), int(frame_hw[1])
    cover_h, cover_w = logits_cover_hw
    crops: list[NDArray[np.bool_]] = []
    origins: list[tuple[int, int]] = []
    for i, box in enumerate(boxes_xyxy):
        region = mask_region(box, height, width)
        if region is None:
            crops.append(np.zeros((0, 0), np.bool_))
            origins.append((0, 0))
            continue
        left, top, right, bottom = region
        device = logits.device
        xs = (torch.arange(left, right, device=device, dtype=torch.float32) + 0.5) * (2 * scale_xy[0] / cover_w) - 1
        ys = (torch.arange(top, bottom, device=device, dtype=torch.float32) + 0.5) * (2 * scale_xy[1] / cover_h) - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).unsqueeze(0)
        sampled = functional.grid_sample(logits[i][None, None], grid, mode="bilinear", align_corners=False)
        crops.append((sampled[0, 0] > 0).cpu().numpy())
        origins.append((left, top))
    return Masks.from_crops(crops, np.asarray(origins, np.int64).reshape(-1, 2))
