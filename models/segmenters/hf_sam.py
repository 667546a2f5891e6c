"""transformers' SAM family as a ``Segmenter``: one image embedding per frame, all its boxes decoded at once.

Placeholder for issue 14's SAM work (the helper replaces it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from models.base import DetectorOptions, Segmenter
from models.masks import Masks
from models.types import RGBImage


class HFSamSegmenter(Segmenter):
    def __init__(self, spec: str, target: str, options: DetectorOptions) -> None:
        raise NotImplementedError("hf SAM segmenter: not written yet")

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        raise NotImplementedError
