"""The built-in CenterFace detector on real photos shipped with scikit-image and matplotlib."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest
import skimage.data
from numpy.typing import NDArray
from PIL import Image

from models.base import Detector, DetectorOptions
from models.registry import load_detector


def _rgb(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


def _grace_hopper() -> NDArray[np.uint8]:
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return np.asarray(Image.open(path).convert("RGB"))


PHOTOS = {
    "astronaut": lambda: skimage.data.astronaut(),
    "camera": lambda: _rgb(skimage.data.camera()),
    "grace_hopper": _grace_hopper,
    "coffee": lambda: skimage.data.coffee(),
    "page": lambda: _rgb(skimage.data.page()),
}


def _iou(a: NDArray[np.float32], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return load_detector("builtin:centerface")


@pytest.mark.parametrize(
    ("photo", "face_region_xyxy"),
    [
        ("astronaut", (173, 82, 274, 180)),
        ("camera", (182, 128, 267, 197)),
        ("grace_hopper", None),
    ],
)
def test_finds_the_one_face(
    detector: Detector, photo: str, face_region_xyxy: tuple[float, float, float, float] | None
) -> None:
    (dets,) = detector.detect([PHOTOS[photo]()], threshold=0.5)
    assert len(dets) == 1
    assert detector.info.class_names[dets.class_id[0]] == "face"
    if face_region_xyxy is not None:
        assert _iou(dets.xyxy[0], face_region_xyxy) > 0.4


@pytest.mark.parametrize("photo", ["coffee", "page"])
def test_no_face_where_there_is_none(detector: Detector, photo: str) -> None:
    (dets,) = detector.detect([PHOTOS[photo]()], threshold=0.5)
    assert len(dets) == 0


def test_batch_of_mixed_sizes_matches_single_frames() -> None:
    # Given frames of three sizes (astronaut and camera share one), detected in one batch
    frames = [PHOTOS[name]() for name in ("astronaut", "coffee", "camera", "grace_hopper", "page")]
    batched = load_detector("builtin:centerface", DetectorOptions(batch_size=len(frames))).detect(frames, threshold=0.3)
    # Then results come back in input order, equal to one-at-a-time runs
    single = load_detector("builtin:centerface").detect(frames, threshold=0.3)
    assert [len(d) for d in batched] == [len(d) for d in single] == [1, 0, 1, 1, 0]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=1e-2)
        np.testing.assert_allclose(b.confidence, s.confidence, atol=1e-4)
