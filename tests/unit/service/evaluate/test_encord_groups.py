"""Encord image groups are one unit per image (slot = data_sequence), so they pair with multi-slot Darwin items."""

from __future__ import annotations

from typing import Any

import pytest

from service.evaluate.evaluation import evaluate, evaluation_to_summary
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.pairing import pair_units
from service.evaluate.seed_csv import pairing_to_seed_rows, seed_rows_to_csv
from service.evaluate.types import Dataset
from tests.unit.service.evaluate.fixtures import CAR, PERSON, darwin_box, darwin_item, encord_box, encord_group

# Normalised top-left boxes (dyadic: the seed's IoU is exact) and the same boxes in pixels of a 640 x 480 image.
CAR_N, PERSON_N = (0.125, 0.125, 0.25, 0.25), (0.5, 0.5, 0.25, 0.25)
CAR_PX, PERSON_PX = (80.0, 60.0, 240.0, 180.0), (320.0, 240.0, 480.0, 360.0)


def load(doc: Any, role: str = BENCHMARK, benchmark: Dataset | None = None) -> Dataset:
    return documents_to_datasets([("f.json", doc)], name="x", role=role, benchmark=benchmark)[0]


def group(label_hash: str = "lg", by: str = "alice@example.com") -> dict[str, Any]:
    """Two images: a car on image 0, a person on image 1."""
    return encord_group(
        data_hash="dg",
        title="pair",
        label_hash=label_hash,
        images=[[encord_box("C0000000", CAR, CAR_N, by=by)], [encord_box("P0000000", PERSON, PERSON_N, by=by)]],
    )


def test_an_image_group_is_one_unit_per_image_in_data_sequence_order() -> None:
    row = group()
    row["classification_answers"] = {
        "cl1": {
            "classificationHash": "cl1",
            "featureHash": "f",
            "range": [[1, 1]],
            "classifications": [{"name": "Blurry", "featureHash": "q", "answers": [{"name": "Yes"}]}],
        }
    }
    first, second = load([row]).units
    assert (first.slot, second.slot) == ("0", "1")  # stored image 1 first
    assert [s.label for s in first.frames[0]] == ["Car"]
    assert [s.label for s in second.frames[0]] == ["Person"]
    assert second.frames[0][0].xyxy == pytest.approx(PERSON_PX)
    assert (first.in_seed, second.in_seed) == (True, False)
    assert (first.tags, second.tags) == (set(), {(-1, "Blurry", "Yes")})  # a still's tag is on its slot


@pytest.mark.parametrize("slots", [("0", "1"), ("left", "right")])
def test_an_image_group_pairs_slot_by_slot_with_a_two_slot_darwin_item(slots: tuple[str, str]) -> None:
    # Darwin's i-th slot is the group's image i: by name when they are called "0", "1", else in order.
    darwin = darwin_item(
        "pair", [darwin_box("Car", CAR_PX, slot=slots[0]), darwin_box("Person", PERSON_PX, slot=slots[1])], slots=slots
    )
    for bench, cand in ((darwin, [group()]), ([group()], darwin)):
        b = load(bench)
        s = evaluation_to_summary(evaluate(b, [load(cand, CANDIDATE, b)], iou_threshold=0.5))
        assert (s["tp"], s["fp"], s["fn"]) == (2, 0, 0)
        assert s["items"]["scored_units"] == 2
        assert s["mean_iou"] == pytest.approx(1.0)


def test_the_seed_csv_reads_an_image_group_on_image_0_under_its_title() -> None:
    bench = load([group("lb", by="expert@example.com")])
    cand = load([group("lc")], CANDIDATE, bench)
    # The script's frame 0 of an image group is image 0: the car row only, named by the row's data_title.
    assert seed_rows_to_csv(pairing_to_seed_rows(pair_units(bench, cand), candidate_name="alice")) == (
        "training_email,data_unit_name,label_id,iou_score,class_score\nalice@example.com,pair,lc,1.0,1.0\n"
    )
