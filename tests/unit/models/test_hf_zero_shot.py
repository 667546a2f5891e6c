"""``hf:`` open-vocabulary detectors (OWLv2, OWL-ViT, Grounding DINO): tiny random checkpoints saved to disk and loaded
back, judged against transformers' own processor + model + post-processing on the same frames."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from models.base import Detector, DetectorOptions
from models.detectors.hf_zero_shot import HFZeroShotDetector
from models.errors import ModelLoadError, PromptsRequiredError
from models.ops.boxes import clip_xyxy
from models.prompts import PromptSet
from models.registry import load_detector
from models.types import Detections
from tests.unit.models.zero_shot_checkpoints import (
    WORDS,
    write_tiny_grounding_dino,
    write_tiny_owlv2,
    write_tiny_owlvit,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Non-square both ways, so OWLv2's square padding and Grounding DINO's batch padding both show.
FRAMES_HW = [(50, 80), (70, 40), (64, 64)]
# Several prompts per class, and class names that are no prompt: outputs must carry the names.
PROMPTS = PromptSet.parse("PED=pedestrian|person walking, Auto=red car|car, dog, cat")
THRESHOLD = 0.3


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"unit test tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


WRITERS: dict[str, Callable[[Path], Path]] = {
    "owlv2": write_tiny_owlv2,
    "owlvit": write_tiny_owlvit,
    "grounding_dino": write_tiny_grounding_dino,
}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def checkpoint_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = str(request.param)
    return WRITERS[name](tmp_path_factory.mktemp(f"tiny_{name}"))


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_owlv2(tmp_path_factory.mktemp("tiny_owlv2_only"))


@pytest.fixture(scope="module")
def frames() -> list[NDArray[np.uint8]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in FRAMES_HW]


def _load(directory: Path, batch_size: int = 2) -> HFZeroShotDetector:
    detector = load_detector(f"hf:{directory}", DetectorOptions(device="cpu", batch_size=batch_size))
    assert isinstance(detector, HFZeroShotDetector)
    return detector


def _sorted(xyxy: NDArray[np.float32], scores: NDArray[np.float32], labels: NDArray[np.int64]) -> Detections:
    dets = Detections.from_arrays(xyxy, scores, labels)
    return dets[np.lexsort((dets.xyxy[:, 0], -dets.confidence))]


def _assert_same(ours: Detections, expected: Detections) -> None:
    ours = _sorted(ours.xyxy, ours.confidence, ours.class_id)
    assert len(ours) == len(expected) > 0
    np.testing.assert_allclose(ours.confidence, expected.confidence, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours.class_id, expected.class_id)
    np.testing.assert_allclose(ours.xyxy, expected.xyxy, rtol=1e-4, atol=1e-3)


def _owl_reference(directory: Path, images: Sequence[NDArray[np.uint8]], threshold: float) -> list[Detections]:
    """transformers' own OWL pipeline, its prompt indices mapped to classes (a class scores its best prompt)."""
    processor = transformers.AutoProcessor.from_pretrained(directory, local_files_only=True)
    model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(directory, local_files_only=True).eval()
    text_class = np.array(PROMPTS.text_class_ids)
    inputs = processor(text=[list(PROMPTS.texts)] * len(images), images=list(images), return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    results = processor.post_process_grounded_object_detection(
        outputs, threshold=threshold, target_sizes=[image.shape[:2] for image in images]
    )
    out = []
    for image, result in zip(images, results, strict=True):
        height, width = image.shape[:2]
        xyxy = clip_xyxy(result["boxes"].numpy().astype(np.float32).reshape(-1, 4), width, height)
        out.append(_sorted(xyxy, result["scores"].numpy(), text_class[result["labels"].numpy()]))
    return out


def _prompt_token_spans(tokenizer: Any, texts: Sequence[str]) -> list[tuple[int, int]]:
    """Where each prompt's tokens sit in "a. b. c." ([CLS] first, one "." after each), counted prompt by prompt."""
    spans, start = [], 1
    for text in texts:
        length = len(tokenizer.tokenize(text))
        spans.append((start, start + length))
        start += length + 1
    return spans


def _grounding_reference(
    directory: Path, prompts: PromptSet, images: Sequence[NDArray[np.uint8]], threshold: float
) -> list[Detections]:
    """transformers' own Grounding DINO pipeline; each query's class is the prompt whose tokens score best."""
    processor = transformers.AutoProcessor.from_pretrained(directory, local_files_only=True)
    model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(directory, local_files_only=True).eval()
    spans = _prompt_token_spans(processor.tokenizer, prompts.texts)
    # One batch, as the detector's: frames padded to a common size see that padding in the backbone.
    inputs = processor(text=[list(prompts.texts)] * len(images), images=list(images), return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    results = processor.post_process_grounded_object_detection(
        outputs, threshold=0.0, text_threshold=0.0, target_sizes=[image.shape[:2] for image in images]
    )
    out = []
    for i, (image, result) in enumerate(zip(images, results, strict=True)):
        probs = torch.sigmoid(outputs.logits[i]).numpy()
        per_prompt = np.stack([probs[:, a:b].max(axis=1) for a, b in spans], axis=1)  # (queries, prompts)
        best_prompt = per_prompt.argmax(axis=1)
        scores = per_prompt.max(axis=1)
        keep = scores >= threshold
        height, width = image.shape[:2]
        xyxy = clip_xyxy(result["boxes"].numpy().astype(np.float32).reshape(-1, 4), width, height)
        labels = np.array(prompts.text_class_ids)[best_prompt]
        out.append(_sorted(xyxy[keep], scores[keep], labels[keep]))
    return out


def _reference(directory: Path, images: Sequence[NDArray[np.uint8]], threshold: float) -> list[Detections]:
    if "grounding" in directory.name:
        return _grounding_reference(directory, PROMPTS, images, threshold)
    return _owl_reference(directory, images, threshold)


def test_detections_equal_transformers_own_pipeline_on_non_square_frames_in_batches(
    checkpoint_dir: Path, frames: list[NDArray[np.uint8]]
) -> None:
    detector = _load(checkpoint_dir, batch_size=2)  # 3 frames: a batch of 2, then 1
    view = detector.prompted(PROMPTS)
    ours = view.detect(frames, threshold=THRESHOLD)
    expected = _reference(checkpoint_dir, frames[:2], THRESHOLD) + _reference(checkpoint_dir, frames[2:], THRESHOLD)
    for got, want in zip(ours, expected, strict=True):
        _assert_same(got, want)


def test_load_detector_picks_the_zero_shot_detector_for_each_checkpoint(checkpoint_dir: Path) -> None:
    detector = load_detector(f"hf:{checkpoint_dir}", DetectorOptions(device="cpu"))
    assert isinstance(detector, HFZeroShotDetector)
    assert detector.info.open_vocabulary
    assert detector.info.class_names == ()


def test_a_view_is_named_by_the_prompt_sets_classes_and_versioned_by_its_key(
    checkpoint_dir: Path, frames: list[NDArray[np.uint8]]
) -> None:
    detector = _load(checkpoint_dir)
    view = detector.prompted(PROMPTS)
    assert view.info.class_names == ("PED", "Auto", "dog", "cat")
    assert view.info.version == f"{detector.info.version}+{PROMPTS.key}"
    assert not set(PROMPTS.texts) & set(view.info.class_names) - {"dog", "cat"}
    found = np.concatenate([d.class_id for d in view.detect(frames, threshold=0.0)])
    assert set(found.tolist()) <= set(range(len(PROMPTS.classes)))
    assert detector.prompted(PromptSet.parse(str(PROMPTS.class_names[0]))).info.version != view.info.version


def test_without_prompts_the_model_refuses_to_run(checkpoint_dir: Path, frames: list[NDArray[np.uint8]]) -> None:
    with pytest.raises(PromptsRequiredError, match="open-vocabulary"):
        _load(checkpoint_dir).detect(frames, threshold=0.5)


@pytest.mark.parametrize("names", ["A={long}", "dog, B=cat|{long}"])
def test_a_prompt_longer_than_the_text_window_is_refused_naming_it(
    checkpoint_dir: Path, tmp_path: Path, frames: list[NDArray[np.uint8]], names: str
) -> None:
    """Alone or beside short prompts (a batch of mixed lengths), a too-long prompt is a prompt error, not a crash."""
    if "grounding" in checkpoint_dir.name:
        checkpoint_dir = write_tiny_grounding_dino(tmp_path, max_text_len=12)
    long = " ".join(WORDS)  # 16 tokens: past OWL's window of 16 with its start and end tokens, and past 12
    detector = _load(checkpoint_dir)
    with pytest.raises(PromptsRequiredError, match=r"prompt 'person car red .* longer than the model's text window"):
        detector.prompted(PromptSet.parse(names.format(long=long)))
    assert detector.prompted(PromptSet.parse("dog, cat")).detect(frames[:1], threshold=0.0)  # the model still works


def test_owl_text_tower_runs_once_per_prompt_set_across_batches_and_views(
    owl_dir: Path, frames: list[NDArray[np.uint8]]
) -> None:
    detector = _load(owl_dir, batch_size=1)
    calls: list[int] = []
    detector._model.owlv2.text_model.register_forward_hook(lambda *_: calls.append(1))
    views: list[Detector] = [detector.prompted(PROMPTS) for _ in range(3)]
    for view in views:
        view.detect(frames, threshold=0.5)  # 3 batches each
    assert len(calls) == 1
    assert views[0] is views[1] is views[2]
    detector.prompted(PromptSet.parse("dog, cat")).detect(frames[:1], threshold=0.5)
    assert len(calls) == 2


def test_the_view_cache_keeps_as_many_prompt_sets_as_the_options_say(
    owl_dir: Path, frames: list[NDArray[np.uint8]]
) -> None:
    detector = load_detector(f"hf:{owl_dir}", DetectorOptions(device="cpu", max_prompt_sets=2))
    assert isinstance(detector, HFZeroShotDetector)
    calls: list[int] = []
    detector._model.owlv2.text_model.register_forward_hook(lambda *_: calls.append(1))
    sets = [PromptSet.parse(names) for names in ("dog", "cat", "dog, cat")]
    first = detector.prompted(sets[0])
    detector.prompted(sets[1])
    assert detector.prompted(sets[0]) is first
    assert len(calls) == 2
    detector.prompted(sets[2])  # a third set drops the least recently used: sets[1]
    assert detector.prompted(sets[0]) is first
    assert len(calls) == 3
    detector.prompted(sets[1])
    assert len(calls) == 4  # encoded again
    first.detect(frames[:1], threshold=0.5)  # a dropped view still runs for whoever holds it


def test_grounding_dino_splits_a_prompt_set_longer_than_its_text_window(
    tmp_path: Path, frames: list[NDArray[np.uint8]]
) -> None:
    directory = write_tiny_grounding_dino(tmp_path, max_text_len=12)
    prompts = PromptSet.parse(", ".join(WORDS[:9]))  # 2 + 9 * 2 tokens: windows of 5 and 4 prompts
    detector = _load(directory, batch_size=1)
    ours = detector.prompted(prompts).detect(frames, threshold=0.0)
    first, second = PromptSet(prompts.classes[:5]), PromptSet(prompts.classes[5:])
    for k, got in enumerate(ours):
        expected_first = _grounding_reference(directory, first, frames[k : k + 1], 0.0)[0]
        expected_second = _grounding_reference(directory, second, frames[k : k + 1], 0.0)[0]
        expected = Detections.from_arrays(
            np.concatenate([expected_first.xyxy, expected_second.xyxy]),
            np.concatenate([expected_first.confidence, expected_second.confidence]),
            np.concatenate([expected_first.class_id, expected_second.class_id + 5]),
        )
        _assert_same(got, _sorted(expected.xyxy, expected.confidence, expected.class_id))
        assert (got.class_id >= 5).any()  # the later window's classes are found


def test_grounding_dino_runs_its_text_encoder_once_per_batch_not_per_frame(
    tmp_path: Path, frames: list[NDArray[np.uint8]]
) -> None:
    detector = _load(write_tiny_grounding_dino(tmp_path), batch_size=3)
    rows: list[int] = []
    detector._model.model.text_backbone.embeddings.register_forward_hook(lambda _m, _a, out: rows.append(out.shape[0]))
    dets = detector.prompted(PROMPTS).detect(frames, threshold=0.0)  # one batch of 3 (the judge test checks values)
    assert rows == [1]
    assert len(dets) == 3


def test_frames_are_prepared_while_another_batch_holds_the_model(
    checkpoint_dir: Path, frames: list[NDArray[np.uint8]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pixel work (the processor's, or OWLv2's in torch) runs before the model lock is taken."""
    detector = _load(checkpoint_dir, batch_size=3)
    view = detector.prompted(PROMPTS)
    prepared = threading.Event()
    processor = detector._engine._processor
    image_processor = processor.image_processor

    def spy(*args: Any, **kwargs: Any) -> Any:
        prepared.set()
        return image_processor(*args, **kwargs)

    monkeypatch.setattr(processor, "image_processor", spy)  # on the CPU every family uses its processor
    with detector._lock:  # another view's batch is running
        worker = threading.Thread(target=view.detect, args=(frames,), kwargs={"threshold": 0.5})
        worker.start()
        assert prepared.wait(timeout=30)
    worker.join(timeout=60)
    assert not worker.is_alive()


@pytest.mark.parametrize(("frame_hw", "out_px"), [((1080, 1920), 960), ((50, 80), 64), ((301, 97), 40)])
def test_owlv2_pixels_in_torch_equal_its_image_processor(owl_dir: Path, frame_hw: tuple[int, int], out_px: int) -> None:
    """Pad square, scikit-image's anti-aliased resize (blur + linear zoom, mirrored edges), normalise: as the
    processor does, at full HD down to 960 px, upscaled, and shrunk by an odd factor."""
    from models.detectors.hf_zero_shot import _Owlv2Pixels

    image_processor = transformers.AutoProcessor.from_pretrained(owl_dir, local_files_only=True).image_processor
    image = np.random.default_rng(1).integers(0, 255, (*frame_hw, 3), dtype=np.uint8)
    size = {"height": out_px, "width": out_px}
    expected = image_processor(images=[image], return_tensors="pt", input_data_format="channels_last", size=size)
    pixels = _Owlv2Pixels.of(image_processor, size)
    assert pixels is not None
    np.testing.assert_allclose(pixels.prepare([image], "cpu").numpy(), expected["pixel_values"].numpy(), atol=1e-5)


def test_owl_runs_at_a_smaller_input_size_with_boxes_in_frame_pixels(
    owl_dir: Path, frames: list[NDArray[np.uint8]]
) -> None:
    detector = load_detector(f"hf:{owl_dir}", DetectorOptions(device="cpu", input_size_px=32))
    assert detector.info.input_size_px == 32
    assert isinstance(detector, HFZeroShotDetector)
    for image, dets in zip(frames, detector.prompted(PROMPTS).detect(frames, threshold=0.0), strict=True):
        height, width = image.shape[:2]
        assert len(dets) == (32 // 16) ** 2  # a 2 x 2 patch grid: the positions were interpolated
        assert (dets.xyxy >= 0).all()
        assert (dets.xyxy[:, [0, 2]] <= width).all()
        assert (dets.xyxy[:, [1, 3]] <= height).all()


def test_omdet_turbo_is_refused_with_a_clear_load_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "omdet-turbo"}')
    with pytest.raises(ModelLoadError, match=r"omdet-turbo .*timm"):
        load_detector(f"hf:{tmp_path}", DetectorOptions(device="cpu"))


def test_an_uncached_hub_id_is_told_apart_by_its_downloaded_config(
    owl_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zero-shot hub id not in the cache yet must reach the zero-shot loader, not fail in the detection one: its
    config.json alone is fetched first (the hub is stood in for: no network here), and never when offline."""
    import huggingface_hub

    from models.detectors.hf_checkpoint import checkpoint_model_type

    asked: list[tuple[str, str]] = []

    def download(repo_id: str, filename: str, **_: Any) -> str:
        asked.append((repo_id, filename))
        return str(owl_dir / filename)

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert checkpoint_model_type("acme/owlv2-tiny") == "owlv2"
    assert asked == [("acme/owlv2-tiny", "config.json")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert checkpoint_model_type("acme/owlv2-tiny") is None
    assert len(asked) == 1
