"""``hf:`` SAM-family segmenters: tiny randomly initialised SAM and SAM 2 saved to disk and loaded back (no downloads).

Random weights give random masks: these tests check the plumbing (calls, shapes, placement, consistency), not quality.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from models.base import DetectorOptions, Segmenter
from models.errors import (
    DeviceOutOfMemoryError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    ModelSpecError,
)
from models.registry import load_segmenter
from models.segmenters.hf_sam import mask_region
from tests.unit.models.hf_checkpoints import write_tiny_rtdetr, write_tiny_sam, write_tiny_sam2

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FRAMES_HW = [(120, 200), (90, 90), (200, 150)]
IMAGE_SIZE_PX = 128


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the Hub fails loudly instead of downloading."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"unit test tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


WRITERS: dict[str, Callable[[Path, int], Path]] = {"sam": write_tiny_sam, "sam2": write_tiny_sam2}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def checkpoint_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = str(request.param)
    return WRITERS[name](tmp_path_factory.mktemp(f"tiny_{name}"), IMAGE_SIZE_PX)


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam(tmp_path_factory.mktemp("tiny_sam_only"), IMAGE_SIZE_PX)


@pytest.fixture(scope="module")
def frames() -> list[NDArray[np.uint8]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in FRAMES_HW]


def random_boxes(rng: np.random.Generator, n: int, height_px: int, width_px: int) -> NDArray[np.float32]:
    x0 = rng.uniform(0, width_px * 0.7, n)
    y0 = rng.uniform(0, height_px * 0.7, n)
    w = rng.uniform(8, width_px * 0.5, n)
    h = rng.uniform(8, height_px * 0.5, n)
    boxes = np.stack([x0, y0, np.minimum(x0 + w, width_px), np.minimum(y0 + h, height_px)], axis=1)
    return boxes.astype(np.float32)


@pytest.fixture(scope="module")
def boxes(frames: list[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
    """1, 7 and 3 boxes: uneven counts, so a batch pads its prompts."""
    rng = np.random.default_rng(1)
    return [random_boxes(rng, n, *f.shape[:2]) for n, f in zip((1, 7, 3), frames, strict=True)]


@contextmanager
def encoder_batches(segmenter: Segmenter) -> Iterator[list[int]]:
    """The batch size of every call to the real model's image encoder while the block runs."""
    seen: list[int] = []

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        pixels = args[0] if args else kwargs["pixel_values"]
        seen.append(int(pixels.shape[0]))

    handle = segmenter._model.vision_encoder.register_forward_pre_hook(hook, with_kwargs=True)  # type: ignore[attr-defined]
    try:
        yield seen
    finally:
        handle.remove()


def test_info(checkpoint_dir: Path, tmp_path: Path) -> None:
    segmenter = load_segmenter(f"hf:{checkpoint_dir}")
    info = segmenter.info
    assert (info.runtime, info.device, info.batch_size, info.dtype) == ("torch", "cpu", 1, "float32")
    assert info.input_size_px == IMAGE_SIZE_PX  # the processor's longest side
    assert info.name == checkpoint_dir.name
    assert info.version.startswith(f"{checkpoint_dir.name}-")
    # the version is a content hash: the same files give the same one, other weights another
    assert load_segmenter(f"hf:{checkpoint_dir}").info.version == info.version
    other = shutil.copytree(checkpoint_dir, tmp_path / "edited")
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    assert load_segmenter(f"hf:{other}").info.version.split("-")[-1] != info.version.split("-")[-1]


def test_one_encoder_call_per_frame_whatever_the_box_count(
    checkpoint_dir: Path, frames: list[NDArray[np.uint8]], boxes: list[NDArray[np.float32]]
) -> None:
    segmenter = load_segmenter(f"hf:{checkpoint_dir}", DetectorOptions(batch_size=2))
    with encoder_batches(segmenter) as seen:
        masks = segmenter.segment(frames, boxes)
    assert seen == [2, 1]  # 3 frames, 11 boxes: two encoder calls in batches of 2
    assert [len(m) for m in masks] == [len(b) for b in boxes]


def test_masks_are_in_each_frames_pixels(checkpoint_dir: Path, frames: list[NDArray[np.uint8]]) -> None:
    segmenter = load_segmenter(f"hf:{checkpoint_dir}")
    frame = frames[0]
    height, width = frame.shape[:2]
    # a box on the right edge, one on the bottom-left corner, one wholly outside the frame
    edge = np.asarray([[width - 40, 10, width, 70], [0, height - 30, 30, height], [width + 10, 0, width + 50, 40]])
    (masks,) = segmenter.segment([frame], [edge.astype(np.float32)])
    assert len(masks) == 3
    assert masks.has_mask()[:2].all(), "random weights still give some mask inside a large box"
    assert not masks.has_mask()[2], "a box outside the frame has no pixels to segment"
    for i in range(2):
        x0, y0, x1, y1 = masks.xyxy()[i]
        assert 0 <= x0 < x1 <= width
        assert 0 <= y0 < y1 <= height
        region = mask_region(edge[i].astype(np.float32), height, width)
        assert region is not None
        assert x0 >= region[0]
        assert y0 >= region[1]
        assert x1 <= region[2]
        assert y1 <= region[3]
        assert masks.full(i, height, width).sum() == masks.area_px()[i] > 0


def test_batched_equals_one_at_a_time(
    checkpoint_dir: Path, frames: list[NDArray[np.uint8]], boxes: list[NDArray[np.float32]]
) -> None:
    batched = load_segmenter(f"hf:{checkpoint_dir}", DetectorOptions(batch_size=4)).segment(frames, boxes)
    single = load_segmenter(f"hf:{checkpoint_dir}", DetectorOptions(batch_size=1))
    for frame, frame_boxes, got in zip(frames, boxes, batched, strict=True):
        # one frame at a time, and one box at a time: padding prompts and batching frames change nothing
        (alone,) = single.segment([frame], [frame_boxes])
        assert got.to_json() == alone.to_json()
        for i in range(len(frame_boxes)):
            (one,) = single.segment([frame], [frame_boxes[i : i + 1]])
            assert one.to_json() == alone[np.asarray([i])].to_json()


@contextmanager
def decoder_prompts(segmenter: Segmenter, *, oom_above: int | None = None) -> Iterator[list[int]]:
    """The box prompts of every call to the real model's mask decoder while the block runs; with ``oom_above``,
    a call with more prompts than that raises torch's out-of-memory error, as CUDA would."""
    seen: list[int] = []

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sparse = kwargs["sparse_prompt_embeddings"]  # (frames, prompts, tokens, channels)
        prompts = int(sparse.shape[0] * sparse.shape[1])
        seen.append(prompts)
        if oom_above is not None and prompts > oom_above:
            raise torch.OutOfMemoryError(f"CUDA out of memory decoding {prompts} prompts (test)")

    handle = segmenter._model.mask_decoder.register_forward_pre_hook(hook, with_kwargs=True)  # type: ignore[attr-defined]
    try:
        yield seen
    finally:
        handle.remove()


def test_boxes_are_decoded_in_chunks_of_at_most_the_setting_with_the_same_masks(
    checkpoint_dir: Path, frames: list[NDArray[np.uint8]], boxes: list[NDArray[np.float32]]
) -> None:
    # Given 3 frames with 1, 7 and 3 boxes, in one encoder batch
    chunked = load_segmenter(f"hf:{checkpoint_dir}", DetectorOptions(batch_size=4, segmenter_max_boxes=3))
    whole = load_segmenter(f"hf:{checkpoint_dir}", DetectorOptions(batch_size=4, segmenter_max_boxes=1024))

    with decoder_prompts(chunked) as seen:
        got = chunked.segment(frames, boxes)
    with decoder_prompts(whole) as seen_whole:
        expected = whole.segment(frames, boxes)

    # Then no decoder call holds more than 3 prompts, nor pads one frame's prompts to another's count
    assert seen == [1, 3, 3, 1, 3]
    assert seen_whole == [1, 7, 3]
    assert [m.to_json() for m in got] == [m.to_json() for m in expected]


def test_a_decoder_call_out_of_memory_decodes_the_boxes_in_halves_from_the_same_embedding(
    checkpoint_dir: Path, frames: list[NDArray[np.uint8]], boxes: list[NDArray[np.float32]]
) -> None:
    segmenter = load_segmenter(f"hf:{checkpoint_dir}", DetectorOptions(segmenter_max_boxes=8))
    (expected,) = load_segmenter(f"hf:{checkpoint_dir}").segment([frames[1]], [boxes[1]])

    with encoder_batches(segmenter) as encoded, decoder_prompts(segmenter, oom_above=2) as seen:
        (got,) = segmenter.segment([frames[1]], [boxes[1]])
        (again,) = segmenter.segment([frames[1]], [boxes[1]])

    # 7 and 4 prompts ran out; the rest went 2 at a time, and so did the next call: the ceiling stays down
    assert seen == [7, 4, 2, 2, 2, 1, 2, 2, 2, 1]
    assert encoded == [1, 1], "the image embedding is not recomputed for the retries"
    assert got.to_json() == expected.to_json()
    assert again.to_json() == expected.to_json()


def test_a_single_box_that_does_not_fit_the_decoder_is_a_device_out_of_memory_error(
    sam_dir: Path, frames: list[NDArray[np.uint8]], boxes: list[NDArray[np.float32]]
) -> None:
    segmenter = load_segmenter(f"hf:{sam_dir}")
    with decoder_prompts(segmenter, oom_above=0), pytest.raises(DeviceOutOfMemoryError, match="1 box prompts"):
        segmenter.segment([frames[2]], [boxes[2]])


def test_frames_without_boxes_cost_nothing(checkpoint_dir: Path, frames: list[NDArray[np.uint8]]) -> None:
    segmenter = load_segmenter(f"hf:{checkpoint_dir}", DetectorOptions(batch_size=4))
    no_boxes = np.zeros((0, 4), np.float32)
    with encoder_batches(segmenter) as seen:
        empty = segmenter.segment(frames, [no_boxes] * len(frames))
        some = segmenter.segment(frames, [no_boxes, np.asarray([[5, 5, 40, 40]], np.float32), no_boxes])
    assert seen == [1]  # only the frame with a box reached the encoder
    assert [len(m) for m in empty] == [0, 0, 0]
    assert [len(m) for m in some] == [0, 1, 0]


def test_agrees_with_the_processors_post_processing(
    sam_dir: Path, frames: list[NDArray[np.uint8]], boxes: list[NDArray[np.float32]]
) -> None:
    """Our crop-local resample of the logits places masks where SamProcessor's full-frame post-processing does."""
    segmenter = load_segmenter(f"hf:{sam_dir}")
    processor = transformers.SamProcessor.from_pretrained(sam_dir)
    model = transformers.SamModel.from_pretrained(sam_dir).eval()
    frame, frame_boxes = frames[1], boxes[1]
    height, width = frame.shape[:2]
    (ours,) = segmenter.segment([frame], [frame_boxes])
    inputs = processor(images=frame, input_boxes=[frame_boxes.tolist()], return_tensors="pt")
    with torch.inference_mode():
        out = model(
            pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"].float(), multimask_output=False
        )
    (theirs,) = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    for i, box in enumerate(frame_boxes):
        region = mask_region(box, height, width)
        assert region is not None
        x0, y0, x1, y1 = region
        mine = ours.full(i, height, width)[y0:y1, x0:x1]
        reference = theirs[i, 0].numpy()[y0:y1, x0:x1]
        # PIL vs torch resizing and one resample vs two: boundary pixels may differ, nothing more
        assert (mine == reference).mean() >= 0.95
        assert abs(int(mine.sum()) - int(reference.sum())) <= 0.05 * max(int(reference.sum()), 1) + 10


def test_not_a_sam_checkpoint(tmp_path: Path) -> None:
    detector_dir = write_tiny_rtdetr(tmp_path / "rtdetr")
    with pytest.raises(ModelSpecError, match=r"rtdetr.* is a rt_detr checkpoint, not a SAM-family segmenter"):
        load_segmenter(f"hf:{detector_dir}")


def test_not_an_hf_spec() -> None:
    with pytest.raises(ModelSpecError, match="hf:DIR_OR_HUB_ID"):
        load_segmenter("onnx:/models/sam.onnx")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_segmenter(f"hf:{tmp_path / 'missing'}")


def test_directory_without_processor_config(sam_dir: Path, tmp_path: Path) -> None:
    shutil.copy(sam_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match=r"preprocessor_config\.json or processor_config\.json"):
        load_segmenter(f"hf:{tmp_path}")


def test_uncached_hub_id_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_segmenter("hf:preannotate-tests/sam-not-cached")


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_missing_optional_dependency(sam_dir: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'preannotate\[hf\]'"):
        load_segmenter(f"hf:{sam_dir}")


def test_mask_region_keeps_a_margin_inside_the_frame() -> None:
    assert mask_region(np.asarray([10, 20, 110, 70], np.float32), 100, 200) == (0, 10, 120, 80)
    assert mask_region(np.asarray([190, 90, 200, 100], np.float32), 100, 200) == (186, 86, 200, 100)
    assert mask_region(np.asarray([210, 0, 250, 40], np.float32), 100, 200) is None
