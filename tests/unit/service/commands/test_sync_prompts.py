"""``sync label-studio --prompts``: prompts the model cannot take exit 2 with one line, before Label Studio is
contacted (nothing listens at the URL: a connection attempt would be another error)."""

from __future__ import annotations

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
