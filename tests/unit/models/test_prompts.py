"""``PromptSet``'s invariants: what every way prompts enter the service (CLI, job body, ML backend, a project)
relies on."""

from __future__ import annotations

import pytest

from models.prompts import PromptSet


@pytest.mark.parametrize(
    "build",
    [
        lambda: PromptSet.parse("Vehicle=car, Car=car"),
        lambda: PromptSet.parse("Vehicle=car|truck, Car"),  # casefolded: "Car" prompts for itself
        lambda: PromptSet.parse("Vehicle=truck| Car , Car=automobile|car"),
        lambda: PromptSet.from_mapping({"Vehicle": ["car", "truck"], "Car": "CAR"}),
        lambda: PromptSet.from_names(["Vehicle", "Car"], {"vehicle": "car"}),
        lambda: PromptSet.from_json([{"name": "Vehicle", "prompts": ["car"]}, {"name": "Car", "prompts": ["car"]}]),
    ],
)
def test_a_prompt_given_for_two_classes_is_refused(build: object) -> None:
    """A detector gives a tie to the first class, so the second would never be predicted."""
    with pytest.raises(ValueError, match=r"is given for both 'Vehicle' and 'Car'"):
        build()  # type: ignore[operator]


def test_a_prompt_repeated_within_one_class_and_distinct_prompts_are_fine() -> None:
    prompts = PromptSet.parse("Vehicle=car|Car|truck, Car=automobile")
    assert prompts.class_names == ("Vehicle", "Car")
    assert prompts.text_class_ids == (0, 0, 0, 1)
