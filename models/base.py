"""The one detector interface every runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.types import Detections, ModelInfo, RGBImage


@dataclass(frozen=True, slots=True)
class DetectorOptions:
    """How to load a detector. Plain values: ``models`` never reads settings itself.

    Attributes:
        device: ``auto`` (CUDA when usable, else CPU), ``cpu`` or ``cuda``.
        batch_size: frames per forward pass; None = the device default (CPU 1, CUDA 16).
        input_size_px: longest side fed to the network; None = the device/model default.
        num_threads: CPU threads for the runtime; None = the runtime's default.
        fp16: use half precision on CUDA where the model allows it.
        tensorrt: run ONNX models through ONNX Runtime's TensorRT provider on CUDA.
        compile: ``torch.compile`` torch models (slow first batch per shape; worth it on long runs).
        engine_cache_dir: where TensorRT engines are cached (built once per model, GPU and version).
    """

    device: str = "auto"
    batch_size: int | None = None
    input_size_px: int | None = None
    num_threads: int | None = None
    fp16: bool = True
    tensorrt: bool = False
    engine_cache_dir: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.input_size_px is not None and not 32 <= self.input_size_px <= 8192:
            raise ValueError(f"input_size_px must be in [32, 8192], got {self.input_size_px}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")


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
        """Run a single frame and a full batch (the two shapes a server sees most) so lazy allocations,
        kernel selection and compilation happen before real work."""
        blank = np.zeros((height_px, width_px, 3), np.uint8)
        for size in sorted({1, self.info.batch_size}):
            self._detect_batch([blank] * size, 1.0)

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes need nothing
        """Release runtime resources (sessions, GPU memory)."""
