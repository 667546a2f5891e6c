"""crops_to_appearance: boxes' pixels as unit-norm descriptors that tell objects apart (real photos)."""

from __future__ import annotations

import numpy as np
import skimage.data

from service.pipeline.appearance import APPEARANCE_DIM, cosine_similarity, crops_to_appearance

ASTRONAUT_FACE = (173.0, 82.0, 274.0, 180.0)


def test_one_unit_descriptor_per_box() -> None:
    image = skimage.data.astronaut()
    boxes = np.array([ASTRONAUT_FACE, (0, 0, 100, 100), (300, 300, 420, 500)], np.float32)
    looks = crops_to_appearance(image, boxes)
    assert looks.shape == (3, APPEARANCE_DIM)
    assert looks.dtype == np.float32
    assert np.allclose(np.linalg.norm(looks, axis=1), 1.0, atol=1e-5)


def test_the_same_face_shifted_and_rescaled_looks_alike_and_another_face_does_not() -> None:
    # Given the astronaut's face, the same face 4 px off and 10 % larger (a detector's box on the next sample),
    # and the cameraman's face from another photo
    astronaut = skimage.data.astronaut()
    cameraman = np.repeat(skimage.data.camera()[:, :, None], 3, axis=2)
    face = crops_to_appearance(astronaut, np.array([ASTRONAUT_FACE], np.float32))
    moved = crops_to_appearance(astronaut, np.array([(169.0, 78.0, 283.0, 188.0)], np.float32))
    other = crops_to_appearance(cameraman, np.array([(200.0, 60.0, 290.0, 160.0)], np.float32))

    same, different = cosine_similarity(face, moved)[0, 0], cosine_similarity(face, other)[0, 0]
    assert same > 0.9
    assert different < same - 0.3


def test_a_box_with_no_pixels_in_the_image_matches_nothing() -> None:
    image = skimage.data.astronaut()
    looks = crops_to_appearance(image, np.array([(600.0, 600.0, 700.0, 700.0), (10.0, 10.0, 10.5, 40.0)], np.float32))
    assert not looks.any()
    face = crops_to_appearance(image, np.array([ASTRONAUT_FACE], np.float32))
    assert not cosine_similarity(face, looks).any()
