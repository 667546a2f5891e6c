"""The detector interface every runtime implements, and the box-prompted segmenter's."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.errors import DeviceOutOfMemoryError, PromptsRequiredError
from models.masks import Masks
from models.prompts import PromptSet
from models.types import Detections, ModelInfo, RGBImage

log = logging.getLogger(__name__)

# Box prompts per mask-decoder call: 32 keep SAM-base's decoder near 1 GiB in fp32.
DEFAULT_SEGMENTER_MAX_BOXES = 32
MAX_SEGMENTER_MAX_BOXES = 1024
# Prompt sets an open-vocabulary detector keeps a view (and its encoded text) for; the server's default too.
DEFAULT_MAX_PROMPT_SETS = 16
MAX_MAX_PROMPT_SETS = 1000


@dataclass(frozen=True, slots=True)
class DetectorOptions:
    """How to load a detector. Plain values: ``models`` never reads settings itself.

    Attributes:
        device: ``auto`` (CUDA when usable, else CPU), ``cpu`` or ``cuda``.
        batch_size: frames per forward pass; None = the device default (CPU 1, CUDA 16).
        input_size_px: longest side fed to the network; None = the device/model default.
        num_threads: CPU threads for the runtime; None = the runtime's default.
        fp16: half precision on CUDA: autocast for torch (``hf:``) models; ONNX models only through
            TensorRT (``tensorrt``), else they run in the precision they were exported in.
        tensorrt: run ONNX models through ONNX Runtime's TensorRT provider on CUDA.
        compile: ``torch.compile`` torch models (slow first batch per shape; worth it on long runs).
        engine_cache_dir: where TensorRT engines are cached (built once per model, GPU and version).
        model_dir: where fetched models live (``preannotate models fetch``); None = ``DEFAULT_MODEL_DIR``.
        segmenter_max_boxes: box prompts per mask-decoder call of a box-prompted segmenter (SAM): each prompt
            holds its own copy of the frame's image embedding (~32 MiB for SAM-base in fp32), so this bounds
            the decoder's memory however crowded a frame is. Detectors ignore it.
        max_prompt_sets: prompt sets an open-vocabulary detector keeps a view (and its encoded text) for, least
            recently used dropped first; fixed-class detectors ignore it.
    """

    device: str = "auto"
    batch_size: int | None = None
    input_size_px: int | None = None
    num_threads: int | None = None
    fp16: bool = True
    tensorrt: bool = False
    engine_cache_dir: str | None = None
    model_dir: str | None = None
    compile: bool = False
    segmenter_max_boxes: int = DEFAULT_SEGMENTER_MAX_BOXES
    max_prompt_sets: int = DEFAULT_MAX_PROMPT_SETS

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.input_size_px is not None and not 32 <= self.input_size_px <= 8192:
            raise ValueError(f"input_size_px must be in [32, 8192], got {self.input_size_px}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        if not 1 <= self.segmenter_max_boxes <= MAX_SEGMENTER_MAX_BOXES:
            raise ValueError(
                f"segmenter_max_boxes must be in [1, {MAX_SEGMENTER_MAX_BOXES}], got {self.segmenter_max_boxes}"
            )
        if not 1 <= self.max_prompt_sets <= MAX_MAX_PROMPT_SETS:
            raise ValueError(f"max_prompt_sets must be in [1, {MAX_MAX_PROMPT_SETS}], got {self.max_prompt_sets}")


# Measured on a 2-core CPU, batching loses (DETR-R50 batch 4 = 0.7x the images/s of batch 1);
# on a GPU it is the main lever.
DEFAULT_BATCH_SIZE = {"cpu": 1, "cuda": 16}


class Detector(ABC):
    """Detects objects in RGB frames.

    ``detect`` takes any number of frames (of any sizes) and returns one ``Detections`` per
    frame, in input order, with boxes in the pixels of each input frame. Implementations split
    into ``info.batch_size`` chunks themselves, so callers may pass whatever they have.
    """

    info: ModelInfo

    def detect(self, images: Sequence[RGBImage], *, threshold: float) -> list[Detections]:
        """Run the model on ``images`` ((H, W, 3) uint8 RGB) and keep boxes scoring >= threshold."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        size = self.info.batch_size
        results: list[Detections] = []
        for start in range(0, len(images), size):
            results.extend(self._detect_batch(images[start : start + size], threshold))
        return results

    @abstractmethod
    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        """Detect on at most ``info.batch_size`` validated frames."""

    def warmup(self, height_px: int = 480, width_px: int = 640) -> None:
        """Run every size in ``warmup_batch_sizes`` so lazy allocations, kernel selection and compilation
        happen before real work.

        A size that runs out of device memory ends the warm-up (bigger ones would too); a real batch of
        that size is split when it comes (``models.oom``). A single frame that does not fit raises.
        """
        blank = np.zeros((height_px, width_px, 3), np.uint8)
        for size in self.warmup_batch_sizes():
            try:
                self._detect_batch([blank] * size, 1.0)
            except DeviceOutOfMemoryError:
                if size == 1:
                    raise
                log.warning("model %s: warm-up out of device memory at batch %d; stopping there", self.info.name, size)
                return

    def warmup_batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes ``warmup`` runs, ascending.

        On CPU a single frame and a full batch (the two shapes a server sees most; CPU warm-up stays
        cheap). On CUDA every size in ``batch_buckets``: each new batch shape pays for kernel selection
        (cuDNN autotuning, compiled graphs) the first time it is seen.
        """
        if self.info.device != "cuda":
            return tuple(sorted({1, self.info.batch_size}))
        return batch_buckets(self.info.batch_size)

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes need nothing
        """Release runtime resources (sessions, GPU memory)."""


class PromptableDetector(Detector):
    """An open-vocabulary detector (OWLv2, Grounding DINO, OmDet-Turbo): it finds what text prompts describe.

    It has no classes of its own (``info.class_names == ()``, ``info.open_vocabulary``); ``prompted`` gives the
    ``Detector`` for one prompt set, whose ``class_names`` are the set's names (the project's labels, never the
    prompt text) and whose ``version`` is this model's plus the set's ``key`` (a different prompt set is a
    different model to dedupe, pins and calibrated thresholds). Views share this model's weights and its caches:
    each prompt set's text embeddings are computed once; calls from several views' threads run one at a time.
    """

    @abstractmethod
    def prompted(self, prompts: PromptSet) -> Detector:
        """The detector for ``prompts`` (cheap: the weights are shared)."""

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        raise PromptsRequiredError(
            f'{self.info.spec} is an open-vocabulary model: give it prompts (--prompts "person, car", a job\'s '
            '"prompts", or a labeling project to take its labels from)'
        )

    def warmup_batch_sizes(self) -> tuple[int, ...]:
        return ()  # nothing to run without prompts; a prompted view warms itself up


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """The batch sizes a run with ceiling ``max_batch`` sees most, ascending: the ceiling and every power
    of two below it (short last batches, and what out-of-memory halving comes down to). Batches are
    not padded to these sizes; warming them covers the common shapes, not every one.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes = {max_batch}
    size = 1
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


@dataclass(frozen=True, slots=True)
class SegmenterInfo:
    """What a loaded box-prompted segmenter is (SAM family), for outputs and provenance.

    Attributes:
        spec: the spec it was loaded from, e.g. ``hf:/models/sam-vit-base``.
        name: a short human name.
        version: stable id of the weights (content hash prefix).
        runtime: ``torch`` or ``onnxruntime``.
        device: ``cpu`` or ``cuda``.
        batch_size: frames per image-encoder call.
        dtype: the compute dtype (``float32``, ``float16``, ``bfloat16``).
        input_size_px: the longest side its image encoder works at (SAM: 1024); frames smaller than this lose
            mask detail, so the flow decodes frames at least this large for it (None: any size).
    """

    spec: str
    name: str
    version: str
    runtime: str
    device: str
    batch_size: int
    dtype: str = "float32"
    input_size_px: int | None = None


class Segmenter(ABC):
    """Turns boxes into instance masks (a promptable segmenter: SAM, SAM 2, EdgeTAM ...).

    ``segment`` takes frames and, per frame, the boxes to segment (float32 (n, 4) xyxy in that frame's
    pixels), and returns one ``Masks`` per frame with one row per box, in that frame's pixels. Each frame's
    image embedding is computed once and its boxes are decoded from it in chunks; implementations chunk frames
    into ``info.batch_size`` themselves.
    """

    info: SegmenterInfo

    def segment(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        """One ``Masks`` per image, a row per box (an empty mask where the model finds none)."""
        if len(images) != len(boxes_xyxy):
            raise ValueError(f"{len(images)} images but {len(boxes_xyxy)} box sets")
        for image, boxes in zip(images, boxes_xyxy, strict=True):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"expected (n, 4) boxes, got shape {boxes.shape}")
        out: list[Masks] = [Masks.empty() for _ in images]
        todo = [k for k, boxes in enumerate(boxes_xyxy) if len(boxes)]  # frames without boxes cost nothing
        size = self.info.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            masks = self._segment_batch([images[k] for k in chunk], [boxes_xyxy[k] for k in chunk])
            for k, m in zip(chunk, masks, strict=True):
                out[k] = m
        return out

    @abstractmethod
    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        """Segment at most ``info.batch_size`` validated frames, each with at least one box."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""
