"""``sync label-studio --prompts``: prompts the model cannot take exit 2 with one line, before Label Studio is
contacted (nothing listens at the URL: a connection attempt would be another error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.service.commands.test_run_prompts import _preannotate


@pytest.mark.parametrize(
    ("prompts", "line"),
    [
        ("person, Person", "error: invalid_prompts: --prompts: class 'Person' is given twice"),
        (
            "person",
            "error: invalid_prompts: model 'builtin:centerface' has classes of its own (face) and takes no prompts; "
            "name an open-vocabulary model, or leave prompts out",
        ),
    ],
)
def test_prompts_the_model_cannot_take_exit_2_before_label_studio_is_contacted(prompts: str, line: str) -> None:
    result = _preannotate(
        "sync", "label-studio", "--url", "http://127.0.0.1:9", "--api-key", "k" * 40, "--project", "1",
        "--model", "builtin:centerface", "--prompts", prompts, "-q",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line]


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (
            ["--prompts", "Car=automobile", "--prompt-map", "{map}"],
            "error: invalid_argument: --prompt-map changes the prompts of the project's labels, which --prompts "
            "replaces: give one of them",
        ),
        (
            ["--prompts", "Car=automobile", "--alias", "car=Car"],
            "error: invalid_argument: --alias maps model classes to labels; --prompts names its classes itself "
            "(LABEL=prompt): give one",
        ),
        (
            ["--prompt-map", "{map}"],
            "error: invalid_prompts: --prompt-map: model 'builtin:centerface' has classes of its own (face) and "
            "takes no prompts; name an open-vocabulary model, or leave prompts out",
        ),
        (
            ["--prompts", "Vehicle=car, Car=car"],
            "error: invalid_prompts: --prompts: prompt 'car' is given for both 'Vehicle' and 'Car': each prompt may "
            "describe one class only",
        ),
    ],
)
def test_flags_that_would_do_nothing_exit_2_before_label_studio_is_contacted(
    flags: list[str], line: str, tmp_path: Path
) -> None:
    """A prompt map or an alias map is never silently ignored: not with --prompts (which replaces what they
    change), not with a model that takes no prompts."""
    prompt_map = tmp_path / "map.json"
    prompt_map.write_text('{"Car": "automobile"}')
    result = _preannotate(
        "sync", "label-studio", "--url", "http://127.0.0.1:9", "--api-key", "k" * 40, "--project", "1",
        "--model", "builtin:centerface", *[f.format(map=prompt_map) for f in flags], "-q",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line]
