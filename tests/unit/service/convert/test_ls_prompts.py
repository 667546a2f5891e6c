"""Prompts from a Label Studio labeling config: the receiving controls' labels, with the prompt map, the ``prompt``
attribute and the alias map each taking precedence in that order (configs as in label_studio.md §4.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.convert.ls_prompts import ls_config_to_prompts, prompt_map_from_json, read_prompt_map
from service.errors import ErrorCode, PreannotateError

IMAGE = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="car"/><Label value="person"/></RectangleLabels>
</View>"""
VIDEO = """<View>
  <Labels name="videoLabels" toName="video"><Label value="car"/><Label value="person"/></Labels>
  <Video name="video" value="$video" framerate="$fps"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""
SHAPES = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="road"/><Label value="Car"/></BrushLabels>
  <PolygonLabels name="poly" toName="image"><Label value="building"/></PolygonLabels>
  <RectangleLabels name="label" toName="image"><Label value="car"/><Label value="hard hat"/></RectangleLabels>
  <Choices name="weather" toName="image"><Choice value="rain"/></Choices>
  <Labels name="unused" toName="nothing"><Label value="ghost"/></Labels>
</View>"""
PROJECT = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="PED" prompt="pedestrian|person walking"/>
    <Label value="vehicle" predicted_values="car,truck"/>
    <Label value="hard hat"/>
  </RectangleLabels>
</View>"""


def pairs(xml: str, **kwargs: object) -> list[tuple[str, tuple[str, ...]]]:
    prompts = ls_config_to_prompts(xml, **kwargs)  # type: ignore[arg-type]
    return [(c.name, c.prompts) for c in prompts.classes]


@pytest.mark.parametrize(
    ("xml", "masks", "expected"),
    [
        (IMAGE, False, [("car", ("car",)), ("person", ("person",))]),
        (VIDEO, False, [("car", ("car",)), ("person", ("person",))]),
        # boxes only: brush/polygon controls receive nothing from a run without masks; choices never do
        (SHAPES, False, [("car", ("car",)), ("hard hat", ("hard hat",))]),
        # with masks, every image control in config order; "Car" and "car" are one class (the converter's match)
        (
            SHAPES,
            True,
            [("road", ("road",)), ("Car", ("Car",)), ("building", ("building",)), ("hard hat", ("hard hat",))],
        ),
    ],
)
def test_the_receiving_controls_labels_prompt_for_themselves(
    xml: str, masks: bool, expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    assert pairs(xml, masks=masks) == expected


def test_attribute_and_predicted_values_prompt_for_their_labels() -> None:
    assert pairs(PROJECT) == [
        ("PED", ("pedestrian", "person walking")),
        ("vehicle", ("car", "truck")),
        ("hard hat", ("hard hat",)),
    ]


def test_an_alias_makes_the_model_class_the_prompt() -> None:
    got = pairs(IMAGE, aliases={"automobile": "CAR", "auto": "car", "dog": "no such label"})
    assert got == [("car", ("automobile", "auto")), ("person", ("person",))]


def test_precedence_map_over_attribute_over_alias_over_label() -> None:
    aliases = {"walker": "PED", "helmet": "hard hat", "lorry": "vehicle"}
    # aliases replace the label itself, joined by predicted_values (the converter sends all of them there);
    # the attribute beats them
    assert pairs(PROJECT, aliases=aliases) == [
        ("PED", ("pedestrian", "person walking")),
        ("vehicle", ("lorry", "car", "truck")),
        ("hard hat", ("helmet",)),
    ]
    # the map beats everything, matched ignoring case; the names written stay the project's
    overrides = {"ped": "a pedestrian", "HARD HAT": ["hard hat", "safety helmet"]}
    assert pairs(PROJECT, aliases=aliases, overrides=overrides) == [
        ("PED", ("a pedestrian",)),
        ("vehicle", ("lorry", "car", "truck")),
        ("hard hat", ("hard hat", "safety helmet")),
    ]


def test_an_alias_elsewhere_wins_over_predicted_values() -> None:
    # "car" is aliased to PED: it is PED's prompt, no longer vehicle's
    assert pairs(PROJECT, aliases={"car": "PED"})[1] == ("vehicle", ("truck",))


VEHICLE_AND_CAR = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Vehicle" predicted_values="car,truck"/><Label value="Car"/>
  </RectangleLabels>
</View>"""


@pytest.mark.parametrize(
    ("xml", "aliases", "expected"),
    [
        (VEHICLE_AND_CAR, {}, [("Vehicle", ("truck",)), ("Car", ("Car",))]),
        (VEHICLE_AND_CAR, {"Car": "vehicle", "lorry": "Vehicle"}, [("Vehicle", ("lorry", "truck")), ("Car", ("Car",))]),
        # nothing derived is left: the label prompts for itself
        (VEHICLE_AND_CAR.replace(",truck", ""), {}, [("Vehicle", ("Vehicle",)), ("Car", ("Car",))]),
    ],
)
def test_a_model_class_that_is_another_label_prompts_for_that_label_only(
    xml: str, aliases: dict[str, str], expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    """A prompt asked for twice would only ever predict its first class (ties go to the first), so the model
    class ``car`` sent to Vehicle is left to the label Car."""
    assert pairs(xml, aliases=aliases) == expected


@pytest.mark.parametrize(
    ("xml", "overrides", "fragment"),
    [
        ('<View><Image name="image" value="$image"/></View>', None, "no labels on a control"),
        (IMAGE, {"bus": "bus"}, "do not have: bus"),
        (IMAGE, {"car": "x" * 201}, "longer than 200"),
        (IMAGE.replace('value="car"', 'value="car" prompt=" | "'), None, "blank prompt"),
        # stated by hand, not derived: refused, naming both classes
        (IMAGE.replace('value="car"', 'value="car" prompt="Person"'), None, "given for both 'car' and 'person'"),
        (IMAGE, {"person": "CAR"}, "given for both 'car' and 'person'"),
    ],
)
def test_unusable_prompts_are_invalid_prompts(xml: str, overrides: dict[str, str] | None, fragment: str) -> None:
    with pytest.raises(PreannotateError) as caught:
        ls_config_to_prompts(xml, overrides=overrides)
    assert caught.value.code is ErrorCode.INVALID_PROMPTS
    assert fragment in caught.value.message


def test_a_config_that_does_not_parse_is_invalid_argument() -> None:
    with pytest.raises(PreannotateError) as caught:
        ls_config_to_prompts("<View>")
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_the_key_is_stable_and_tells_prompt_sets_apart() -> None:
    assert ls_config_to_prompts(PROJECT).key == ls_config_to_prompts(PROJECT).key
    assert ls_config_to_prompts(PROJECT).key != ls_config_to_prompts(PROJECT, overrides={"PED": "walker"}).key


def test_a_prompt_map_file(tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"PED": ["pedestrian", "person walking"], "hard hat": "safety helmet"}))
    assert read_prompt_map(path, max_bytes=1000) == {
        "PED": ["pedestrian", "person walking"],
        "hard hat": "safety helmet",
    }


def test_a_prompt_map_over_the_size_setting_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"PED": "pedestrian"}))
    assert read_prompt_map(path, max_bytes=path.stat().st_size) == {"PED": "pedestrian"}
    with pytest.raises(PreannotateError) as caught:
        read_prompt_map(path, max_bytes=path.stat().st_size - 1)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert str(path) in caught.value.message
    assert "PREANNOTATE_MAX_PROMPT_MAP_BYTES" in caught.value.message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("{", "not JSON"), ("[1]", "expected a JSON object"), ('{"PED": []}', "'PED' needs a prompt"), (None, "cannot")],
)
def test_a_bad_prompt_map_file_names_the_file(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "prompts.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PreannotateError) as caught:
        read_prompt_map(path, max_bytes=1000)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert str(path) in caught.value.message
    assert fragment in caught.value.message


def test_a_prompt_map_from_json_refuses_non_strings() -> None:
    with pytest.raises(PreannotateError, match=r"extra_params\.prompt_map: label 'PED'"):
        prompt_map_from_json({"PED": [1]}, where="extra_params.prompt_map")
