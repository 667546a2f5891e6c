"""Shared batching for ONNX detectors: per-frame pre-process, stacked runs, per-frame post-process."""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from models.base import DEFAULT_BATCH_SIZE, Detector, DetectorOptions
from models.provenance import files_digest
from models.runtimes.onnx import SessionIO, create_session, run_session
from models.runtimes.onnx_uint8 import DeviceInputs, with_uint8_image_input
from models.types import Detections, ModelInfo, RGBImage

log = logging.getLogger(__name__)

MetaT = TypeVar("MetaT")


@dataclass(frozen=True, slots=True)
class PaddedImage:
    """A frame's image input before normalisation: uint8 RGB placed at (``left_px``, ``top_px``) of a
    ``width_px x height_px`` canvas filled with ``pad_value`` (a letterbox), or filling it."""

    image: RGBImage
    height_px: int
    width_px: int
    top_px: int = 0
    left_px: int = 0
    pad_value: int = 0

    @classmethod
    def whole(cls, image: RGBImage) -> PaddedImage:
        """An image that is the whole input (no padding)."""
        return cls(image, image.shape[0], image.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The canvas, (H, W, 3): frames of one shape run together."""
        return (self.height_px, self.width_px, 3)


Feeds = dict[str, NDArray[Any]]
"""Input name -> array, per run (with the batch dim)."""
FrameFeeds = dict[str, NDArray[Any] | PaddedImage]
"""Input name -> one frame's input (no batch dim); the image input as a PaddedImage, normalised when batched."""


class OnnxDetector(Detector, Generic[MetaT]):
    """An ONNX detector as ``pre_process`` (one frame) -> ``forward`` (stacked) -> ``post_process`` (one frame).

    Frames whose inputs have equal shapes run together. A fixed batch dim (static exports) sets the
    batch size, and short batches are padded by repeating the last frame; a dynamic one takes
    ``options.batch_size`` or the device default.

    On CUDA (without TensorRT) the session takes the image as uint8 (N, H, W, 3) and normalises it on the
    GPU (``with_uint8_image_input``); the feeds go through reused device buffers (``DeviceInputs``).
    """

    uint8_image_feed: ClassVar[bool] = True
    """False for detectors whose image feed is not a PaddedImage normalised to [0, 1]."""
    makes_masks: ClassVar[bool] = False
    """True for instance-segmentation layouts, whose detections carry ``masks``."""

    def __init__(
        self, *, model_path: Path, session: ort.InferenceSession, io: SessionIO, device: str, options: DetectorOptions
    ) -> None:
        self._model_path = model_path
        self._session = session
        self._io = io
        self._device = device
        self._options = options
        self._fixed_batch = io.input_shape[0] if io.input_shape else None
        if self._fixed_batch is not None and options.batch_size not in (None, self._fixed_batch):
            log.warning("%s has a fixed batch size of %d; ignoring batch_size", model_path, self._fixed_batch)
        self._batch_size = self._fixed_batch or options.batch_size or DEFAULT_BATCH_SIZE[device]
        self._buffers = threading.local()  # per calling thread: the reused blob and device buffers
        self._uint8_input = self.uint8_image_feed and wants_uint8_input(device, options)
        if self._uint8_input:
            self._session = uint8_input_session(model_path, io.input_name, device, options)

    def warmup_batch_sizes(self) -> tuple[int, ...]:
        """A fixed batch dim pads every batch to it: one shape to warm."""
        if self._fixed_batch is not None:
            return (self._fixed_batch,)
        return super().warmup_batch_sizes()

    def _make_info(
        self,
        *,
        spec: str,
        class_names: tuple[str, ...],
        input_hw: tuple[int, int],
        keeps_aspect: bool,
        extra_files: Sequence[Path] = (),
    ) -> ModelInfo:
        """Describe the model; the version hashes the ONNX file and the sidecars that shaped its labels."""
        return ModelInfo(
            spec=spec,
            name=self._model_path.stem,
            version=f"{self._model_path.stem}-{files_digest([self._model_path, *extra_files])}",
            class_names=class_names,
            runtime="onnxruntime",
            device=self._device,
            batch_size=self._batch_size,
            input_size_px=max(input_hw),
            dtype=np.dtype(self._io.input_dtype).name,
            keeps_aspect=keeps_aspect,
            makes_masks=self.makes_masks,
        )

    @abstractmethod
    def _pre_process(self, image: RGBImage) -> tuple[FrameFeeds, MetaT]:
        """One frame -> its per-frame feeds (no batch dim) and what post-processing needs to map boxes back.

        The image input is a PaddedImage (uint8): batching writes it into a reused float blob, one pass
        over the frame's own pixels (the padding is written once per buffer row and layout).
        """

    @abstractmethod
    def _post_process(self, outputs: list[NDArray[Any]], meta: MetaT, threshold: float) -> Detections:
        """One frame's rows of every output (batch dim removed) -> detections in source pixels."""

    def _forward(self, feeds: Feeds) -> list[NDArray[Any]]:
        """Run stacked feeds, padding to a fixed batch size and dropping the padded rows."""
        count = len(next(iter(feeds.values())))
        if self._fixed_batch is not None and count < self._fixed_batch:
            pad = self._fixed_batch - count
            feeds = {name: np.concatenate([arr, np.repeat(arr[-1:], pad, axis=0)]) for name, arr in feeds.items()}
        outputs = run_session(self._session, None, feeds, self._device_inputs())
        return [np.asarray(out)[:count] for out in outputs]

    def _stack(self, feeds: Sequence[FrameFeeds]) -> Feeds:
        """Per-frame feeds -> one batch; PaddedImages become the float (N, 3, H, W) blob here."""
        stacked: Feeds = {}
        for name in feeds[0]:
            values = [f[name] for f in feeds]
            images = [v for v in values if isinstance(v, PaddedImage)]
            if images:
                if len(images) != len(values):
                    raise TypeError(f"input {name!r}: a PaddedImage for some frames only")
                if self._uint8_input:
                    stacked[name] = hwc_blob(images, self._buffers)
                else:
                    stacked[name] = chw_blob(images, self._io.input_dtype, self._buffers)
            else:
                stacked[name] = np.stack([v for v in values if not isinstance(v, PaddedImage)])
        return stacked

    def _device_inputs(self) -> DeviceInputs | None:
        """This thread's device buffers on CUDA; None on the CPU, where ORT reads the numpy arrays in place."""
        if self._device != "cuda":
            return None
        inputs: DeviceInputs | None = getattr(self._buffers, "device_inputs", None)
        if inputs is None:
            inputs = self._buffers.device_inputs = DeviceInputs("cuda")
        return inputs

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        prepared = [self._pre_process(image) for image in images]
        groups: dict[tuple[tuple[str, tuple[int, ...]], ...], list[int]] = {}
        for i, (feeds, _) in enumerate(prepared):
            key = tuple(sorted((name, arr.shape) for name, arr in feeds.items()))
            groups.setdefault(key, []).append(i)
        results: list[Detections] = [Detections.empty()] * len(images)
        for members in groups.values():
            outputs = self._forward(self._stack([prepared[i][0] for i in members]))
            for row, i in enumerate(members):
                results[i] = self._post_process([out[row] for out in outputs], prepared[i][1], threshold)
        return results

    def _probe_output_shapes(self, input_hw: tuple[int, int]) -> list[tuple[int, ...]]:
        """Output shapes for one blank frame; for exports whose class count is a symbolic dim."""
        feeds, _ = self._pre_process(np.zeros((*input_hw, 3), np.uint8))
        outputs = self._forward(self._stack([feeds]))
        return [out.shape for out in outputs]


def chw_blob(images: Sequence[PaddedImage], dtype: type[np.floating], buffers: threading.local) -> NDArray[Any]:
    """uint8 RGB images on canvases of one size -> (N, 3, H, W) in [0, 1] of the session's input dtype.

    Written into a float32 buffer kept in ``buffers`` (grown, never shrunk): each image's pixels are
    copied (HWC -> CHW, uint8 -> float32) into its place and scaled in place; a row's padding is
    written only when its layout changes (a video's frames share one). The values are those of
    ``letterboxed.astype(float32) * (1 / 255)``. The result is a view of the buffer, valid until the
    next call on this thread; fp16 exports get a cast copy.
    """
    scale = np.float32(1 / 255)
    first = images[0]
    blob: NDArray[np.float32] = _reused_batch(
        buffers, "chw", (len(images), 3, first.height_px, first.width_px), np.float32
    )
    for row, placed in _placed_rows(images, buffers, "chw"):
        if placed is not None:
            blob[row].fill(np.float32(placed.pad_value) * scale)
    for row, placed in enumerate(images):
        height, width = placed.image.shape[:2]
        inner = blob[row, :, placed.top_px : placed.top_px + height, placed.left_px : placed.left_px + width]
        np.copyto(inner, placed.image.transpose(2, 0, 1))
        inner *= scale
    return blob if dtype is np.float32 else blob.astype(dtype)


def wants_uint8_input(device: str, options: DetectorOptions) -> bool:
    """Feed uint8 and normalise in the graph: on CUDA, unless TensorRT builds the engine (its profiles and
    fp16 engine describe the exported float input)."""
    return device == "cuda" and not options.tensorrt


def uint8_input_session(
    model_path: Path, input_name: str, device: str, options: DetectorOptions
) -> ort.InferenceSession:
    """A session on ``model_path`` with ``input_name`` taken as uint8 (N, H, W, 3) (``with_uint8_image_input``)."""
    import onnx  # here: importing it costs half a second, and only this path needs it

    model = with_uint8_image_input(onnx.load(str(model_path)), input_name)
    log.info("%s: %s fed as uint8 (N, H, W, 3), normalised on %s", model_path, input_name, device)
    return create_session(model.SerializeToString(), device=device, num_threads=options.num_threads)


def hwc_blob(images: Sequence[PaddedImage], buffers: threading.local) -> NDArray[np.uint8]:
    """uint8 RGB images on canvases of one size -> (N, H, W, 3) uint8, the canvases with their padding.

    The uint8 twin of ``chw_blob`` for graphs that normalise on the device (``with_uint8_image_input``):
    no transpose and no float pass here, only row copies. Kept in ``buffers`` (grown, never shrunk), a
    row's padding written only when its layout changes. A view of the buffer, valid until the next call
    on this thread.
    """
    first = images[0]
    shape = (len(images), first.height_px, first.width_px, 3)
    blob: NDArray[np.uint8] = _reused_batch(buffers, "hwc", shape, np.uint8)
    for row, placed in _placed_rows(images, buffers, "hwc"):
        if placed is not None:
            blob[row].fill(placed.pad_value)
    for row, placed in enumerate(images):
        height, width = placed.image.shape[:2]
        blob[row, placed.top_px : placed.top_px + height, placed.left_px : placed.left_px + width] = placed.image
    return blob


def _reused_batch(buffers: threading.local, key: str, shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
    """The first ``shape[0]`` rows of a batch buffer kept in ``buffers`` under ``key`` (grown, never shrunk; a new
    canvas size makes a new one, whose rows' layouts are then unknown)."""
    buffer: NDArray[Any] | None = getattr(buffers, key, None)
    if buffer is None or buffer.shape[1:] != shape[1:] or len(buffer) < shape[0]:
        buffer = np.empty(shape, dtype)
        setattr(buffers, key, buffer)
        setattr(buffers, f"{key}_layouts", [None] * shape[0])
    return buffer[: shape[0]]


def _placed_rows(
    images: Sequence[PaddedImage], buffers: threading.local, key: str
) -> list[tuple[int, PaddedImage | None]]:
    """Each row with its image where the row's padding must be (re)written, None where the buffer's row already
    holds this layout's padding (a video's frames share one) or the image fills its canvas; records the layouts."""
    layouts: list[tuple[int, ...] | None] = getattr(buffers, f"{key}_layouts")
    rows: list[tuple[int, PaddedImage | None]] = []
    for row, placed in enumerate(images):
        height, width = placed.image.shape[:2]
        layout = (placed.top_px, placed.left_px, height, width, placed.pad_value)
        stale = layouts[row] != layout and (height, width) != (placed.height_px, placed.width_px)
        layouts[row] = layout
        rows.append((row, placed if stale else None))
    return rows
