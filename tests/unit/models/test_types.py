"""Detections: parallel arrays, validated; tracker ids ride along with their rows."""

from __future__ import annotations

import numpy as np
import pytest

from models.types import Detections


def _dets(tracker_id: list[int] | None = None) -> Detections:
    return Detections.from_arrays(
        np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]]),
        np.array([0.9, 0.5, 0.7]),
        np.array([0, 1, 0]),
        None if tracker_id is None else np.array(tracker_id),
    )


def test_untracked_by_default() -> None:
    assert _dets().tracker_id is None
    assert Detections.empty().tracker_id is None


def test_from_arrays_casts_tracker_id_to_int64() -> None:
    dets = _dets([1, -1, 2])
    assert dets.tracker_id is not None
    assert dets.tracker_id.dtype == np.int64
    assert dets.tracker_id.tolist() == [1, -1, 2]


def test_selection_keeps_tracker_ids_with_their_rows() -> None:
    dets = _dets([1, -1, 2])
    picked = dets[dets.confidence > 0.6]
    assert picked.tracker_id is not None
    assert picked.tracker_id.tolist() == [1, 2]
    assert picked.class_id.tolist() == [0, 0]
    assert _dets()[np.array([0])].tracker_id is None


def test_empty_tracked_has_an_empty_tracker_id() -> None:
    dets = Detections.empty(tracked=True)
    assert dets.tracker_id is not None
    assert dets.tracker_id.shape == (0,)


def test_with_tracker_id_sets_and_clears() -> None:
    dets = _dets().with_tracker_id(np.array([3, 4, 5], np.int64))
    assert dets.tracker_id is not None
    assert dets.tracker_id.tolist() == [3, 4, 5]
    assert dets.with_tracker_id(None).tracker_id is None


@pytest.mark.parametrize(
    ("tracker_id", "message"),
    [
        (np.array([1, 2], np.int64), "tracker_id must be None or int64 of shape"),
        (np.array([1, 2, 3], np.int32), "tracker_id must be None or int64 of shape"),
    ],
)
def test_tracker_id_is_validated(tracker_id: np.ndarray, message: str) -> None:
    dets = _dets()
    with pytest.raises(ValueError, match=message):
        Detections(dets.xyxy, dets.confidence, dets.class_id, tracker_id)
