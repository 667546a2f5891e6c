"""``hf:`` checkpoints: a tiny randomly initialised RT-DETR (and Mask2Former) saved to disk and loaded back (no
downloads)."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from models.base import Detector, DetectorOptions
from models.detectors.hf_transformers import dense_id2label, processor_size_override
from models.errors import DeviceUnavailableError, MissingDependencyError, ModelLoadError, ModelNotFoundError
from models.registry import load_detector
from tests.unit.models.hf_checkpoints import ID2LABEL, write_tiny_mask2former, write_tiny_rtdetr

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FRAMES_HW = [(480, 640), (300, 200), (64, 64)]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the Hub fails loudly instead of downloading."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"unit test tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_rtdetr(tmp_path_factory.mktemp("tiny_rtdetr"), ID2LABEL)


@pytest.fixture(scope="module")
def frames() -> list[NDArray[np.uint8]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in FRAMES_HW]


# Small inputs keep the forward passes cheap; the wiring is the same at any size.
SMALL_INPUT_PX = 128


@pytest.fixture(scope="module")
def detector(checkpoint_dir: Path) -> Detector:
    """Batch size 2, so three frames split unevenly."""
    return load_detector(f"hf:{checkpoint_dir}", DetectorOptions(batch_size=2, input_size_px=SMALL_INPUT_PX))


def test_defaults_and_description(checkpoint_dir: Path) -> None:
    info = load_detector(f"hf:{checkpoint_dir}").info
    assert info.class_names == ("cat", "dog", "car")
    assert info.runtime == "torch"
    assert info.device == "cpu"
    assert info.batch_size == 1
    assert info.input_size_px == 640  # the CPU default; RT-DETR's own is 640 too
    assert info.dtype == "float32"
    assert info.version.startswith(f"{checkpoint_dir.name}-")


def test_detection_checkpoints_make_no_masks(detector: Detector, frames: list[NDArray[np.uint8]]) -> None:
    assert not detector.info.makes_masks
    assert all(d.masks is None for d in detector.detect(frames, threshold=0.0))


@pytest.fixture(scope="module")
def mask2former_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mask2former(tmp_path_factory.mktemp("tiny_m2f") / "m2f")


def test_instance_segmentation_checkpoint_gives_a_mask_per_row(
    mask2former_dir: Path, frames: list[NDArray[np.uint8]]
) -> None:
    # Given a tiny random Mask2Former (AutoModelForUniversalSegmentation) saved with its processor
    detector = load_detector(f"hf:{mask2former_dir}", DetectorOptions(batch_size=2))
    assert detector.info.makes_masks
    assert detector.info.class_names == ("cat", "dog", "car")
    # When frames of three shapes go through in batches of two (the first batch padded to its larger frame)
    results = detector.detect(frames, threshold=0.0)
    # Then every frame has rows (random weights: geometry and plumbing, not quality), each with a mask on its own
    # frame whose tight box is the row's box, best first
    for dets, (h, w) in zip(results, FRAMES_HW, strict=True):
        assert len(dets) > 0
        assert dets.masks is not None
        assert dets.masks.has_mask().all()
        np.testing.assert_array_equal(dets.masks.xyxy(), dets.xyxy)
        assert (dets.xyxy[:, :2] >= 0).all()
        assert (dets.xyxy[:, 2:] <= [w, h]).all()
        assert ((dets.class_id >= 0) & (dets.class_id < 3)).all()
        assert ((dets.confidence >= 0) & (dets.confidence <= 1)).all()
        assert (np.diff(dets.confidence) <= 0).all()
    # And the threshold holds
    strict = detector.detect(frames, threshold=0.2)
    assert all((d.confidence >= 0.2).all() for d in strict)
    assert sum(map(len, strict)) < sum(map(len, results))


def test_unsupported_segmentation_checkpoint_is_a_load_error(mask2former_dir: Path, tmp_path: Path) -> None:
    # A OneFormer config (universal segmentation, but it needs text task inputs) next to an image processor
    directory = tmp_path / "oneformer"
    directory.mkdir()
    shutil.copy(mask2former_dir / "preprocessor_config.json", directory)
    transformers.OneFormerConfig().save_pretrained(directory)
    with pytest.raises(ModelLoadError, match=r"oneformer segmentation checkpoints are not supported.*mask2former"):
        load_detector(f"hf:{directory}")


def test_input_size_option(detector: Detector) -> None:
    assert detector.info.input_size_px == SMALL_INPUT_PX
    assert detector.info.batch_size == 2


def test_one_detections_per_frame_inside_the_frame(detector: Detector, frames: list[NDArray[np.uint8]]) -> None:
    # When frames of three sizes are detected together
    results = detector.detect(frames, threshold=0.0)
    # Then each frame has its own boxes, within its bounds, best first
    assert len(results) == len(frames)
    for dets, (h, w) in zip(results, FRAMES_HW, strict=True):
        assert len(dets) > 0
        assert dets.xyxy.dtype == np.float32
        assert (dets.xyxy[:, [0, 2]] >= 0).all()
        assert (dets.xyxy[:, [0, 2]] <= w).all()
        assert (dets.xyxy[:, [1, 3]] >= 0).all()
        assert (dets.xyxy[:, [1, 3]] <= h).all()
        assert (dets.class_id < len(detector.info.class_names)).all()
        assert (np.diff(dets.confidence) <= 0).all()


def test_batched_equals_one_at_a_time(detector: Detector, frames: list[NDArray[np.uint8]]) -> None:
    batched = detector.detect(frames, threshold=0.3)
    single = [detector.detect([frame], threshold=0.3)[0] for frame in frames]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b.confidence, s.confidence, atol=1e-4)
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=1e-2)


def test_threshold_is_respected(detector: Detector, frames: list[NDArray[np.uint8]]) -> None:
    (everything,) = detector.detect(frames[:1], threshold=0.0)
    threshold = float(np.median(everything.confidence))
    (kept,) = detector.detect(frames[:1], threshold=threshold)
    assert 0 < len(kept) < len(everything)
    assert (kept.confidence >= threshold).all()


def test_hub_id_from_local_cache_uses_snapshot_commit(
    checkpoint_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Hugging Face cache holding the checkpoint as a snapshot of acme/tiny-rtdetr
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-rtdetr"
    shutil.copytree(checkpoint_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    # When it is loaded by hub id, then it comes from the cache (the socket guard forbids the network)
    info = load_detector("hf:acme/tiny-rtdetr").info
    assert info.version == f"tiny-rtdetr-{commit[:12]}"
    assert info.class_names == ("cat", "dog", "car")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_detector(f"hf:{tmp_path / 'missing'}")


def test_directory_without_processor_config(checkpoint_dir: Path, tmp_path: Path) -> None:
    shutil.copy(checkpoint_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match=r"preprocessor_config\.json"):
        load_detector(f"hf:{tmp_path}")


def test_uncached_hub_id_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_detector("hf:preannotate-tests/not-cached")


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_missing_optional_dependency(checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'preannotate\[hf\]'"):
        load_detector(f"hf:{checkpoint_dir}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error path")
def test_cuda_requested_without_cuda(checkpoint_dir: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match="cuda"):
        load_detector(f"hf:{checkpoint_dir}", DetectorOptions(device="cuda"))


@pytest.mark.parametrize(
    ("default", "requested", "expected"),
    [
        pytest.param({"height": 640, "width": 640}, 320, ({"height": 320, "width": 320}, 320), id="rt-detr-smaller"),
        pytest.param({"height": 640, "width": 640}, 1000, ({"height": 640, "width": 640}, 640), id="rt-detr-capped"),
        pytest.param({"height": 640, "width": 640}, 500, ({"height": 480, "width": 480}, 480), id="rt-detr-stride"),
        pytest.param({"height": 640, "width": 640}, None, (None, 640), id="rt-detr-default"),
        pytest.param(
            {"shortest_edge": 800, "longest_edge": 1333},
            640,
            ({"shortest_edge": 640, "longest_edge": 640}, 640),
            id="detr-long-side-binds",
        ),
        pytest.param(
            {"shortest_edge": 800, "longest_edge": 1333},
            2000,
            ({"shortest_edge": 1333, "longest_edge": 1333}, 1333),
            id="detr-capped",
        ),
        pytest.param({"shortest_edge": 800, "longest_edge": 1333}, None, (None, 1333), id="detr-default"),
        pytest.param(
            {"max_height": 1333, "max_width": 1333}, 640, ({"max_height": 640, "max_width": 640}, 640), id="max-hw"
        ),
        pytest.param({}, 640, (None, None), id="unknown-size-kept"),
    ],
)
def test_processor_size_override(
    default: dict[str, int], requested: int | None, expected: tuple[dict[str, int] | None, int | None]
) -> None:
    assert processor_size_override(default, requested) == expected


@pytest.mark.parametrize(
    ("id2label", "num_labels", "expected"),
    [
        ({0: "a", 1: "b"}, 2, ("a", "b")),
        ({"1": "b", "0": "a"}, 2, ("a", "b")),
        ({0: "a", 2: "c"}, 3, ("a", "class_1", "c")),
        ({0: "a"}, 3, ("a", "class_1", "class_2")),
    ],
)
def test_dense_id2label(id2label: dict[object, str], num_labels: int, expected: tuple[str, ...]) -> None:
    assert dense_id2label(id2label, num_labels) == expected
