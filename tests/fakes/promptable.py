"""An open-vocabulary detector for plumbing tests (CLI, jobs, registry, backends): not the thing under test there.

``GridPrompts`` puts one box per prompted class on every frame: class ``i`` in column ``i`` of a grid across the top
of the frame, scored ``0.9 - 0.1 * (i % 5)``, so tests can tell classes apart and see thresholds act. It counts text
encodings per prompt set, as a real one caches them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from models.base import Detector, PromptableDetector
from models.prompts import PromptSet
from models.types import Detections, ModelInfo, RGBImage

BASE_VERSION = "gridprompts-00000001"


def grid_score(class_id: int) -> float:
    return 0.9 - 0.1 * (class_id % 5)


class GridPrompts(PromptableDetector):
    """The base model: no classes of its own."""

    def __init__(self, *, spec: str = "fake:gridprompts", batch_size: int = 4) -> None:
        self.info = ModelInfo(
            spec=spec,
            name="gridprompts",
            version=BASE_VERSION,
            class_names=(),
            runtime="numpy",
            device="cpu",
            batch_size=batch_size,
            input_size_px=None,
            keeps_aspect=True,
            open_vocabulary=True,
        )
        self.encoded: Counter[str] = Counter()  # prompt-set key -> text encodings
        self.frames_seen = 0
        self._lock = threading.Lock()
        self._views: dict[str, _GridView] = {}

    def prompted(self, prompts: PromptSet) -> Detector:
        with self._lock:
            view = self._views.get(prompts.key)
            if view is None:
                self.encoded[prompts.key] += 1
                view = self._views[prompts.key] = _GridView(self, prompts)
            return view


class _GridView(Detector):
    def __init__(self, base: GridPrompts, prompts: PromptSet) -> None:
        self._base = base
        self.prompts = prompts
        self.info = replace(base.info, class_names=prompts.class_names, version=f"{base.info.version}+{prompts.key}")

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        self._base.frames_seen += len(images)
        out = []
        n = len(self.prompts.classes)
        for image in images:
            height, width = image.shape[:2]
            cell = width / n
            xyxy = np.array([[i * cell, 0, (i + 1) * cell - 1, height / 4] for i in range(n)], np.float32)
            scores = np.array([grid_score(i) for i in range(n)], np.float32)
            dets = Detections.from_arrays(xyxy, scores, np.arange(n))
            out.append(dets[dets.confidence >= threshold])
        return out


class GatedPrompts(GridPrompts):
    """``GridPrompts`` whose text encoding of the prompt set ``gated`` (a ``PromptSet.key``) waits for ``gate``, as a
    real model's waits for its lock; ``entered`` is set once that encoding started. ``error``: raised instead of
    encoding any set (a model refusing the prompts, or running out of memory)."""

    def __init__(self, gated: str | None = None, error: Exception | None = None) -> None:
        super().__init__()
        self.gated, self.error = gated, error
        self.gate, self.entered = threading.Event(), threading.Event()

    def prompted(self, prompts: PromptSet) -> Detector:
        if self.error is not None:
            raise self.error
        if prompts.key == self.gated:
            self.entered.set()
            self.gate.wait(timeout=30)
        return super().prompted(prompts)
