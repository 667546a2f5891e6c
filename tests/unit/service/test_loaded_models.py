"""``ModelRegistry.prompted``: an open-vocabulary model's view per prompt set, each behind its own batcher, kept in
a least-recently-used cache of ``PREANNOTATE_MAX_PROMPT_SETS``; evicted views' batchers close, the base never."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from models.prompts import PromptSet
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from tests.fakes.promptable import BASE_VERSION, GridPrompts
from tests.unit.service.intake.helpers import CentreBox

FRAME = np.zeros((40, 80, 3), np.uint8)


@pytest.fixture
def grid() -> GridPrompts:
    return GridPrompts()


def _registry(grid: GridPrompts, max_prompt_sets: int) -> ModelRegistry:
    models = []
    for spec, detector in (("fake:centre", CentreBox()), ("fake:gridprompts", grid)):
        batcher = DynamicBatcher(detector, max_batch_size=4, max_wait_ms=0, name=detector.info.name)
        batcher.start()
        models.append(LoadedModel(spec, batcher))
    return ModelRegistry(models, max_prompt_sets=max_prompt_sets)


@pytest.fixture
def registry(grid: GridPrompts) -> Iterator[ModelRegistry]:
    models = _registry(grid, max_prompt_sets=2)
    yield models
    models.close()


def test_a_view_runs_the_prompts_under_their_names_and_its_own_version(
    registry: ModelRegistry, grid: GridPrompts
) -> None:
    prompts = PromptSet.parse("person, PED=pedestrian|person walking")
    view = registry.prompted("gridprompts", prompts)

    assert view.spec == "fake:gridprompts"
    assert view.info.class_names == ("person", "PED")
    assert view.info.version == f"{BASE_VERSION}+{prompts.key}"
    (dets,) = view.batcher.detect([FRAME], threshold=0.0)
    assert dets.class_id.tolist() == [0, 1]
    assert view.batcher.name == registry.get("gridprompts").batcher.name  # metrics: the base model's label
    assert grid.frames_seen == 1


def test_the_same_prompts_get_the_same_batcher_and_other_prompts_another(
    registry: ModelRegistry, grid: GridPrompts
) -> None:
    first = registry.prompted("fake:gridprompts", PromptSet.parse("person, car"))
    again = registry.prompted("gridprompts", PromptSet.from_names(["person", "car"]))
    other = registry.prompted("gridprompts", PromptSet.parse("car, person"))

    assert again.batcher is first.batcher
    assert other.batcher is not first.batcher
    assert sorted(grid.encoded.values()) == [1, 1]


def test_the_cache_is_bounded_and_evicts_the_least_recently_used_closing_its_batcher_only(
    registry: ModelRegistry, grid: GridPrompts
) -> None:
    a, b, c = (PromptSet.parse(text) for text in ("a", "b", "c"))
    view_a = registry.prompted("gridprompts", a)
    view_b = registry.prompted("gridprompts", b)
    assert registry.prompted("gridprompts", a) is view_a  # a used last: b is the oldest now
    registry.prompted("gridprompts", c)

    with pytest.raises(PreannotateError) as closed:
        view_b.batcher.detect([FRAME], threshold=0.5)
    assert closed.value.code is ErrorCode.NOT_READY
    assert registry.prompted("gridprompts", a) is view_a
    assert len(view_a.batcher.detect([FRAME], threshold=0.5)) == 1  # the shared base detector still runs
    assert registry.prompted("gridprompts", b) is not view_b  # made again
    assert grid.encoded[b.key] == 1  # the base model keeps its own view cache (a real one: text embeddings)


def test_the_bound_is_the_setting(grid: GridPrompts, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_prompt_sets == 16
    monkeypatch.setenv("PREANNOTATE_MAX_PROMPT_SETS", "1")
    assert Settings().max_prompt_sets == 1
    monkeypatch.setenv("PREANNOTATE_MAX_PROMPT_SETS", "0")
    with pytest.raises(ValueError, match="max_prompt_sets"):
        Settings()
    models = _registry(grid, max_prompt_sets=1)
    try:
        first = models.prompted("gridprompts", PromptSet.parse("a"))
        models.prompted("gridprompts", PromptSet.parse("b"))
        with pytest.raises(PreannotateError):
            first.batcher.detect([FRAME], threshold=0.5)
    finally:
        models.close()


def test_prompts_for_a_fixed_class_model_and_none_for_an_open_vocabulary_one_are_invalid_prompts(
    registry: ModelRegistry,
) -> None:
    with pytest.raises(PreannotateError) as fixed:
        registry.prompted("centre", PromptSet.parse("person"))
    assert fixed.value.code is ErrorCode.INVALID_PROMPTS
    assert "'fake:centre' has classes of its own (face)" in fixed.value.message
    with pytest.raises(PreannotateError) as unprompted:
        registry.for_run("gridprompts", None)
    assert unprompted.value.code is ErrorCode.INVALID_PROMPTS
    assert registry.for_run("centre", None) is registry.get("centre")


def test_closing_the_registry_closes_views_and_bases(grid: GridPrompts) -> None:
    models = _registry(grid, max_prompt_sets=4)
    view = models.prompted("gridprompts", PromptSet.parse("a"))
    models.close()
    with pytest.raises(PreannotateError):
        view.batcher.detect([FRAME], threshold=0.5)
