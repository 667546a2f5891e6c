"""Image-processor work done in torch, on the model's device: uint8 frames in, model inputs out.

The Hugging Face processors our torch build can use are the PIL ones: on the CPU they cost ~4x this
(resize + rescale + normalize in PIL/numpy), and on a GPU they would ship fp32 tensors of the
upscaled frame over PCIe (11x the bytes of the uint8 frame). Here the uint8 frames are uploaded
(on CUDA: packed into one reusable pinned buffer, one non-blocking copy on a side stream), then
resized, rescaled, normalized and padded where the model runs. Sizes follow the processor's own
rules, so the model sees the same shapes it was trained with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.types import RGBImage

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class ResizeRule:
    """How a processor sizes a frame: a fixed size, short/long edge bounds, a bounding box, or a long side.

    Attributes:
        kind: ``fixed`` (plain resize to height x width), ``edges`` (keep the aspect ratio, shortest
            side ``shortest_px`` unless that makes the longest exceed ``longest_px``), ``fit``
            (keep the aspect ratio, fit inside height x width) or ``longest`` (keep the aspect ratio,
            longest side ``longest_px``: SAM's processor).
        height_px: fixed/fit height.
        width_px: fixed/fit width.
        shortest_px: edges: target shortest side.
        longest_px: edges: cap on the longest side (None = no cap).
        multiple_px: after the rule, round each side up to a multiple of this, stretching the frame a little
            (MaskFormer-family processors' ``size_divisor``); None keeps the rule's size.
    """

    kind: Literal["fixed", "edges", "fit", "longest"]
    height_px: int | None = None
    width_px: int | None = None
    shortest_px: int | None = None
    longest_px: int | None = None
    multiple_px: int | None = None

    @classmethod
    def from_size(cls, size: Mapping[str, int]) -> ResizeRule | None:
        if "height" in size and "width" in size:
            return cls("fixed", height_px=size["height"], width_px=size["width"])
        if "shortest_edge" in size:
            return cls("edges", shortest_px=size["shortest_edge"], longest_px=size.get("longest_edge"))
        if "max_height" in size and "max_width" in size:
            return cls("fit", height_px=size["max_height"], width_px=size["max_width"])
        return None

    def output_hw(self, height_px: int, width_px: int) -> tuple[int, int]:
        """The resized (height, width) of a height x width frame."""
        out_h, out_w = self._rule_hw(height_px, width_px)
        if self.multiple_px is None:
            return out_h, out_w
        step = self.multiple_px
        return -(-out_h // step) * step, -(-out_w // step) * step

    def _rule_hw(self, height_px: int, width_px: int) -> tuple[int, int]:
        if self.kind == "longest":
            assert self.longest_px is not None
            scale = self.longest_px / max(height_px, width_px)
            # SAM's processor rounds both sides half up
            return max(1, int(height_px * scale + 0.5)), max(1, int(width_px * scale + 0.5))
        if self.kind != "edges":
            box_h, box_w = self.height_px, self.width_px
            assert box_h is not None
            assert box_w is not None
            if self.kind == "fixed":
                return box_h, box_w
            scale = min(box_h / height_px, box_w / width_px)
            return max(1, int(height_px * scale)), max(1, int(width_px * scale))
        assert self.shortest_px is not None
        short, long = min(height_px, width_px), max(height_px, width_px)
        target = float(self.shortest_px)
        if self.longest_px is not None and long / short * target > self.longest_px:
            target = self.longest_px * short / long  # the long side binds; the short side follows
        if short == round(target):
            return height_px, width_px
        # DETR-family processors round the bound side and truncate the other one.
        new_short, new_long = round(target), int(target * long / short)
        return (new_short, new_long) if height_px <= width_px else (new_long, new_short)


# Image processors (and their PIL variants) that pad every batch and resize to multiples of ``size_divisor``.
_MASKFORMER_PROCESSORS = ("Mask2FormerImageProcessor", "MaskFormerImageProcessor")


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """What the processor does to pixels, read once from it.

    ``pad_to_hw``: a fixed (height, width) every frame is padded to (bottom and right), as SAM's processor
    pads to 1024 x 1024; None pads only to the batch's largest frame (when ``pad``).

    MaskFormer-family processors (Mask2Former, MaskFormer) have no ``do_pad`` yet always pad to the batch's
    largest frame, and their ``size_divisor`` resizes (not pads) each side up to a multiple of it.
    """

    resize: ResizeRule
    rescale: float | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    pad: bool
    pad_to_hw: tuple[int, int] | None = None

    @classmethod
    def from_processor(cls, processor: Any, size: Mapping[str, int]) -> PreprocessSpec | None:
        """None when the processor does something this module does not reproduce (then use it)."""
        resize = ResizeRule.from_size(size)
        if resize is None or not getattr(processor, "do_resize", True):
            return None
        maskformer = type(processor).__name__.startswith(_MASKFORMER_PROCESSORS)
        divisor = int(getattr(processor, "size_divisor", None) or 0)
        if divisor and not maskformer:
            return None  # other processors' size_divisor rounds differently (down, or by padding)
        if divisor:
            resize = replace(resize, multiple_px=divisor)
        normalize = bool(getattr(processor, "do_normalize", False))
        mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
        if normalize and (mean is None or std is None or len(mean) != 3 or len(std) != 3):
            return None
        return cls(
            resize=resize,
            rescale=float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else None,
            mean=tuple(float(v) for v in mean) if normalize and mean is not None else None,  # type: ignore[arg-type]
            std=tuple(float(v) for v in std) if normalize and std is not None else None,  # type: ignore[arg-type]
            pad=maskformer or bool(getattr(processor, "do_pad", False)),
        )


_MIB = 1024 * 1024


def frame_offsets(images: Sequence[RGBImage]) -> list[int]:
    """Byte offsets of ``images`` packed back to back: ``len(images) + 1`` entries, the last the total."""
    offsets = [0]
    for image in images:
        offsets.append(offsets[-1] + image.nbytes)
    return offsets


def grown_capacity(needed: int, capacity: int) -> int:
    """The staging buffer size for a batch of ``needed`` bytes: ``capacity`` when it fits, else at least
    1.5x it (rounded up to 1 MiB), so a run whose batches grow reallocates pinned memory only a few times."""
    if needed <= capacity:
        return capacity
    target = max(needed, capacity + capacity // 2)
    return -(-target // _MIB) * _MIB


class HostStaging:
    """A reusable host buffer a batch of frames is packed into for one host->device copy.

    Pinned (page-locked) on CUDA: ``pin_memory()`` per frame paid a ``cudaHostAlloc`` and a synchronous
    copy for every frame; here the buffer is allocated once (grown when a batch needs more) and each
    batch is one ``non_blocking`` upload. One per detector, used from one thread.
    """

    def __init__(self, device: str) -> None:
        self._device = device
        self._host: torch.Tensor | None = None
        self._stream: torch.cuda.Stream | None = None
        self._uploaded: torch.cuda.Event | None = None  # recorded after the last upload out of the buffer

    @property
    def capacity(self) -> int:
        """Bytes allocated (0 before the first batch)."""
        return 0 if self._host is None else int(self._host.numel())

    def pack(self, images: Sequence[RGBImage]) -> tuple[torch.Tensor, list[int]]:
        """Copy ``images`` back to back into the buffer: the used bytes (a view) and ``frame_offsets``."""
        import torch

        if self._uploaded is not None:
            self._uploaded.synchronize()  # the last upload may still be reading the buffer
        offsets = frame_offsets(images)
        size = grown_capacity(offsets[-1], self.capacity)
        if self._host is None or size != self.capacity:
            self._host = torch.empty(size, dtype=torch.uint8, pin_memory=self._device != "cpu")
        host = self._host[: offsets[-1]]
        flat = host.numpy()
        for image, start, end in zip(images, offsets, offsets[1:], strict=False):
            np.copyto(flat[start:end].reshape(image.shape), image)
        return host, offsets

    def upload(self, images: Sequence[RGBImage]) -> list[torch.Tensor]:
        """``images`` as (H, W, 3) uint8 tensors on the device: views into one buffer, one copy for the batch.

        The copy runs on a side stream, so it overlaps work already queued on the current stream;
        the current stream waits for it before anything reads the frames.
        """
        import torch

        host, offsets = self.pack(images)
        if self._device == "cpu":
            on_device = host.clone()  # the buffer is reused by the next batch
        else:
            if self._stream is None:
                self._stream = torch.cuda.Stream(device=self._device)  # type: ignore[no-untyped-call]
            current = torch.cuda.current_stream(self._device)
            with torch.cuda.stream(self._stream):
                on_device = host.to(device=self._device, non_blocking=True)
                uploaded = torch.cuda.Event()  # type: ignore[no-untyped-call]
                uploaded.record(self._stream)
            self._uploaded = uploaded
            current.wait_stream(self._stream)
            # Allocated on the side stream, read on the current one: without this the caching allocator
            # could hand the memory out again while the current stream still reads it.
            on_device.record_stream(current)
        return [
            on_device[start:end].view(image.shape)
            for image, start, end in zip(images, offsets, offsets[1:], strict=False)
        ]

    def release(self) -> None:
        """Drop the buffer (pinned memory is scarce); the next batch allocates a new one."""
        if self._uploaded is not None:
            self._uploaded.synchronize()
        self._host, self._stream, self._uploaded = None, None, None


def preprocess(
    images: Sequence[RGBImage],
    spec: PreprocessSpec,
    device: str,
    staging: HostStaging | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """(H, W, 3) uint8 RGB frames -> ``pixel_values`` (B, 3, H', W') on ``device`` (and ``pixel_mask``
    (B, H', W') when the processor pads the batch to its largest frame).

    Off the CPU the frames go up as uint8 through ``staging`` (pass the detector's, so its pinned buffer is
    reused; None makes a throwaway one) and ``prepare_on_device`` does the rest there. On the CPU the
    numpy frames are used in place.
    """
    import torch

    if device == "cpu":
        frames = [torch.from_numpy(image) for image in images]
    else:
        frames = (staging or HostStaging(device)).upload(images)
    return prepare_on_device(frames, spec, dtype=dtype)


def prepare_on_device(
    frames: Sequence[torch.Tensor], spec: PreprocessSpec, *, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """(H, W, 3) uint8 tensors (one device, any) -> the model's inputs on that device: resize, rescale,
    normalise and pad as ``spec`` says, in float32; ``pixel_values`` cast to ``dtype`` at the end (fp16 for
    a model whose weights are fp16; under autocast keep float32: the first layers cast it themselves).
    """
    import torch
    import torch.nn.functional as functional

    device = frames[0].device
    resized: list[torch.Tensor] = []
    for uploaded in frames:
        frame = uploaded.permute(2, 0, 1).unsqueeze(0).float()
        in_hw = (int(uploaded.shape[0]), int(uploaded.shape[1]))
        out_hw = spec.resize.output_hw(*in_hw)
        if out_hw != in_hw:
            # antialias matches PIL's bilinear filter when shrinking (and is a no-op when enlarging)
            frame = functional.interpolate(frame, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
        resized.append(frame[0])
    pad_h, pad_w = spec.pad_to_hw if spec.pad and spec.pad_to_hw is not None else (0, 0)
    height = max(pad_h, *(t.shape[1] for t in resized))
    width = max(pad_w, *(t.shape[2] for t in resized))
    if not spec.pad and any(t.shape[1:] != (height, width) for t in resized):
        raise ValueError("frames of different sizes need a padding processor")
    batch = torch.zeros((len(resized), 3, height, width), device=device, dtype=torch.float32)
    mask = torch.zeros((len(resized), height, width), device=device, dtype=torch.int64)
    for i, frame in enumerate(resized):
        batch[i, :, : frame.shape[1], : frame.shape[2]] = frame
        mask[i, : frame.shape[1], : frame.shape[2]] = 1
    if spec.rescale is not None:
        batch.mul_(spec.rescale)
    if spec.mean is not None and spec.std is not None:
        mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
        batch.sub_(mean).div_(std)
        # Padding stays 0 after normalization, as the processor pads normalized pixels with 0.
        batch.mul_(mask.unsqueeze(1))
    inputs = {"pixel_values": batch if dtype is None else batch.to(dtype)}
    if spec.pad:
        inputs["pixel_mask"] = mask
    return inputs


def mirror_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """``index`` folded into [0, size) the way scipy.ndimage's ``mirror`` mode extends an axis (d c b | a b c d |
    c b a): the edge sample is not repeated."""
    import torch

    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    folded = index.remainder(period)
    return torch.where(folded >= size, period - folded, folded)


def _gaussian_blur_axis(image: torch.Tensor, dim: int, sigma: float) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter along one axis (truncate 4, mode mirror), weights computed in float64."""
    import torch

    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * offsets**2 / sigma**2)
    weights /= weights.sum()
    size = image.shape[dim]
    source = mirror_index(torch.arange(-radius, size + radius, device=image.device), size)
    padded = image.index_select(dim, source)
    out = torch.zeros_like(image)
    for k, weight in enumerate(weights.tolist()):
        out.add_(padded.narrow(dim, k, size), alpha=weight)
    return out


def _linear_zoom_axis(image: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
    """scipy.ndimage.zoom along one axis with order 1, ``grid_mode=True`` (pixel centres at half steps) and
    mode mirror: each output sample interpolates its two nearest inputs, mirrored at the edges."""
    import torch

    size = image.shape[dim]
    coords = (np.arange(out_size, dtype=np.float64) + 0.5) * (size / out_size) - 0.5
    low = np.floor(coords)
    shape = [1] * image.dim()
    shape[dim] = out_size
    frac = torch.from_numpy(coords - low).to(device=image.device, dtype=image.dtype).view(shape)
    low_index = torch.from_numpy(low.astype(np.int64)).to(image.device)
    below = image.index_select(dim, mirror_index(low_index, size))
    above = image.index_select(dim, mirror_index(low_index + 1, size))
    return below + (above - below) * frac


def antialiased_resize(image: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) float -> (C, out_h, out_w), as OWLv2's processor resizes (scikit-image's ``resize`` with
    anti-aliasing, done in scipy): a Gaussian blur of sigma (factor - 1) / 2 per shrunk axis, linear
    interpolation, then clipped to the input's value range."""
    out = image
    for dim, out_size in ((1, out_hw[0]), (2, out_hw[1])):
        sigma = max(0.0, (image.shape[dim] / out_size - 1) / 2)
        if sigma > 0:
            out = _gaussian_blur_axis(out, dim, sigma)
    for dim, out_size in ((1, out_hw[0]), (2, out_hw[1])):
        if out.shape[dim] != out_size:
            out = _linear_zoom_axis(out, dim, out_size)
    return out.clamp_(image.min(), image.max())
