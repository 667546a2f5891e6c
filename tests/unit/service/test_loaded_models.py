"""``ModelRegistry.prompted``: an open-vocabulary model's view per prompt set, each behind its own batcher, kept in
a least-recently-used cache of ``PREANNOTATE_MAX_PROMPT_SETS``; evicted views' batchers close, the base never. A view
held by a run (``acquire``/``leased``) is never evicted, and views are made outside the registry's lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from models.errors import DeviceOutOfMemoryError, PromptsRequiredError
from models.prompts import PromptSet
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.loaded_models import DEFAULT_MAX_PROMPT_SETS, LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from tests.fakes.promptable import BASE_VERSION, GatedPrompts, GridPrompts
from tests.unit.service.intake.helpers import CentreBox

FRAME = np.zeros((40, 80, 3), np.uint8)


@pytest.fixture
def grid() -> GridPrompts:
    return GridPrompts()


def _registry(grid: GridPrompts, max_prompt_sets: int, max_prompt_classes: int = 200) -> ModelRegistry:
    models = []
    for spec, detector in (("fake:centre", CentreBox()), ("fake:gridprompts", grid)):
        batcher = DynamicBatcher(detector, max_batch_size=4, max_wait_ms=0, name=detector.info.name)
        batcher.start()
        models.append(LoadedModel(spec, batcher))
    return ModelRegistry(models, max_prompt_sets=max_prompt_sets, max_prompt_classes=max_prompt_classes)


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


def test_the_cache_is_bounded_and_evicts_the_least_recently_used_idle_view_closing_its_batcher_only(
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


def test_a_view_in_use_is_never_evicted_and_closes_once_its_last_user_lets_go(grid: GridPrompts) -> None:
    models = _registry(grid, max_prompt_sets=DEFAULT_MAX_PROMPT_SETS)
    a = PromptSet.parse("a")
    try:
        with models.leased("gridprompts", a) as view_a:  # a job's long video, say
            with models.leased("gridprompts", a) as again:  # and a request with the same prompts
                assert again is view_a
            for i in range(DEFAULT_MAX_PROMPT_SETS):  # A is the least recently used, by far
                models.prompted("gridprompts", PromptSet.parse(f"other{i}"))
            for _ in range(3):  # A's frames still run
                assert len(view_a.batcher.detect([FRAME], threshold=0.5)) == 1
        assert len(view_a.batcher.detect([FRAME], threshold=0.5)) == 1  # let go, but within the bound: kept
        models.prompted("gridprompts", PromptSet.parse("one more"))  # A is the oldest idle view now
        with pytest.raises(PreannotateError) as closed:
            view_a.batcher.detect([FRAME], threshold=0.5)
        assert closed.value.code is ErrorCode.NOT_READY
        assert models.prompted("gridprompts", a) is not view_a
    finally:
        models.close()


def _in_thread(work: object) -> threading.Thread:
    assert callable(work)
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_view_is_made_outside_the_registry_lock_and_once() -> None:
    slow, fast = PromptSet.parse("slow"), PromptSet.parse("fast")
    gated = GatedPrompts(gated=slow.key)
    models = _registry(gated, max_prompt_sets=4)
    got: list[LoadedModel] = []
    try:
        first = _in_thread(lambda: got.append(models.prompted("gridprompts", slow)))
        assert gated.entered.wait(timeout=5)  # its encoding waits for the model
        second = _in_thread(lambda: got.append(models.prompted("gridprompts", slow)))
        other = _in_thread(lambda: got.append(models.prompted("gridprompts", fast)))
        other.join(timeout=5)
        assert not other.is_alive()  # another prompt set is not held up by the slow one
        assert second.is_alive()
        assert first.is_alive()
        gated.gate.set()
        first.join(timeout=5)
        second.join(timeout=5)
        assert len(got) == 3
        assert got[1] is got[2]
        assert gated.encoded[slow.key] == 1
    finally:
        gated.gate.set()
        models.close()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PromptsRequiredError("prompt 'red car' is 18 tokens; the model reads 16"), ErrorCode.INVALID_PROMPTS),
        (DeviceOutOfMemoryError("CUDA out of memory while encoding"), ErrorCode.DEVICE_OUT_OF_MEMORY),
    ],
)
def test_a_model_error_while_prompting_is_converted_and_the_next_try_makes_the_view_again(
    error: Exception, code: ErrorCode
) -> None:
    failing = GatedPrompts(error=error)
    models = _registry(failing, max_prompt_sets=4)
    try:
        for _ in range(2):  # no view half-made: the second try fails the same way instead of waiting forever
            with pytest.raises(PreannotateError) as refused:
                models.prompted("gridprompts", PromptSet.parse("red car"))
            assert refused.value.code is code
            assert str(error) in refused.value.message
    finally:
        models.close()


def test_prompt_sets_over_max_prompt_classes_are_invalid_prompts(
    grid: GridPrompts, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().max_prompt_classes == 200
    monkeypatch.setenv("PREANNOTATE_MAX_PROMPT_CLASSES", "3")
    assert Settings().max_prompt_classes == 3
    monkeypatch.setenv("PREANNOTATE_MAX_PROMPT_CLASSES", "0")
    with pytest.raises(ValueError, match="max_prompt_classes"):
        Settings()
    models = _registry(grid, max_prompt_sets=4, max_prompt_classes=3)
    try:
        assert models.prompted("gridprompts", PromptSet.parse("a, b, c")).info.class_names == ("a", "b", "c")
        with pytest.raises(PreannotateError) as refused:
            models.prompted("gridprompts", PromptSet.parse("a, b, c, d"))
        assert refused.value.code is ErrorCode.INVALID_PROMPTS
        assert "4 prompted classes; at most 3 (PREANNOTATE_MAX_PROMPT_CLASSES)" in refused.value.message
        assert PromptSet.parse("a, b, c, d").key not in grid.encoded  # refused before any encoding
    finally:
        models.close()
