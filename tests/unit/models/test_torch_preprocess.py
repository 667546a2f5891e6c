"""Torch preprocessing reproduces the Hugging Face processors: same sizes, near-identical pixels; the staging
buffer that uploads frames on CUDA packs and reuses correctly (its CUDA copy itself runs in tests/gpu)."""

from __future__ import annotations

import numpy as np
import pytest

from models.runtimes.torch_preprocess import (
    HostStaging,
    PreprocessSpec,
    ResizeRule,
    frame_offsets,
    grown_capacity,
    prepare_on_device,
    preprocess,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES_HW = [(480, 640), (640, 480), (512, 512), (300, 451), (1080, 1920), (100, 2000), (801, 799), (64, 48)]


def _processors() -> dict[str, object]:
    return {
        "detr": transformers.DetrImageProcessor(),
        "detr-640": transformers.DetrImageProcessor(size={"shortest_edge": 640, "longest_edge": 640}),
        "rtdetr": transformers.RTDetrImageProcessor(),
    }


def _size(processor: object) -> dict[str, int]:
    size = processor.size  # type: ignore[attr-defined]
    keys = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
    return {k: int(v) for k in keys if (v := getattr(size, k, None) if not isinstance(size, dict) else size.get(k))}


@pytest.mark.parametrize("name", ["detr", "detr-640", "rtdetr"])
@pytest.mark.parametrize("hw", SIZES_HW)
def test_output_size_matches_the_processor(name: str, hw: tuple[int, int]) -> None:
    processor = _processors()[name]
    image = np.zeros((*hw, 3), np.uint8)
    expected = processor(images=[image], return_tensors="pt")["pixel_values"].shape[2:]  # type: ignore[operator]
    rule = ResizeRule.from_size(_size(processor))
    assert rule is not None
    assert rule.output_hw(*hw) == tuple(expected)


@pytest.mark.parametrize("name", ["detr", "rtdetr"])
@pytest.mark.parametrize("hw", [(300, 451), (1080, 1440)])  # enlarged and shrunk
def test_pixels_match_the_processor(name: str, hw: tuple[int, int]) -> None:
    processor = _processors()[name]
    rng = np.random.default_rng(0)
    # smooth content: PIL and torch bilinear differ most on pixel noise, which is not what frames hold
    small = rng.integers(0, 255, (hw[0] // 16, hw[1] // 16, 3), dtype=np.uint8)
    image = np.ascontiguousarray(np.kron(small, np.ones((16, 16, 1), np.uint8)))
    theirs = processor(images=[image], return_tensors="pt")  # type: ignore[operator]
    spec = PreprocessSpec.from_processor(processor, _size(processor))
    assert spec is not None
    ours = preprocess([image], spec, "cpu")
    assert ours["pixel_values"].shape == theirs["pixel_values"].shape
    diff = (ours["pixel_values"] - theirs["pixel_values"]).abs()
    scale = 1 / 0.225 if spec.std else 1.0  # one 8-bit level in the model's units is 1/255 of this
    assert float(diff.mean()) < 2 / 255 * scale
    assert float(torch.quantile(diff.flatten()[:200_000], 0.99)) < 12 / 255 * scale


def test_batch_of_different_sizes_is_padded_with_a_mask() -> None:
    processor = transformers.DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    spec = PreprocessSpec.from_processor(processor, {"shortest_edge": 64, "longest_edge": 128})
    assert spec is not None
    images = [np.full((64, 128, 3), 255, np.uint8), np.full((128, 64, 3), 255, np.uint8)]
    out = preprocess(images, spec, "cpu")
    assert out["pixel_values"].shape == (2, 3, 128, 128)
    assert out["pixel_mask"][0, :64, :].all()
    assert not out["pixel_mask"][0, 64:, :].any()
    assert float(out["pixel_values"][0, :, 64:, :].abs().max()) == 0.0  # padding is zero after normalizing
    theirs = processor(images=images, return_tensors="pt")
    assert torch.equal(out["pixel_mask"], theirs["pixel_mask"])


def _mask2former() -> object:
    return transformers.Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (300, 451), (100, 2000), (801, 799), (64, 48), (37, 53)])
def test_mask2former_sizes_are_rounded_up_to_its_size_divisor(hw: tuple[int, int]) -> None:
    processor = _mask2former()
    expected = processor(images=[np.zeros((*hw, 3), np.uint8)], return_tensors="pt")["pixel_values"].shape[2:]  # type: ignore[operator]
    spec = PreprocessSpec.from_processor(processor, _size(processor))
    assert spec is not None
    assert spec.resize.output_hw(*hw) == tuple(expected)
    assert all(side % 32 == 0 for side in expected)


def test_mask2former_batches_of_mixed_sizes_match_the_processor() -> None:
    # Mask2Former's processor has no do_pad, yet pads every batch to its largest (rounded-up) frame
    processor = _mask2former()
    spec = PreprocessSpec.from_processor(processor, _size(processor))
    assert spec is not None
    assert spec.pad
    rng = np.random.default_rng(5)
    images = [
        np.ascontiguousarray(np.kron(rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8), np.ones((8, 8, 1), np.uint8)))
        for h, w in [(480, 640), (640, 480), (200, 960)]
    ]
    theirs = processor(images=images, return_tensors="pt")  # type: ignore[operator]
    ours = preprocess(images, spec, "cpu")
    assert ours["pixel_values"].shape == theirs["pixel_values"].shape == (3, 3, 96, 96)
    assert torch.equal(ours["pixel_mask"], theirs["pixel_mask"])
    diff = (ours["pixel_values"] - theirs["pixel_values"]).abs()
    scale = 1 / 0.225
    assert float(diff.mean()) < 2 / 255 * scale
    assert float(torch.quantile(diff.flatten(), 0.99)) < 12 / 255 * scale


def test_other_size_divisors_are_left_to_the_processor() -> None:
    # GLPN's size_divisor rounds down: not what ResizeRule.multiple_px does
    processor = transformers.DetrImageProcessor()
    processor.size_divisor = 32  # type: ignore[attr-defined]
    assert PreprocessSpec.from_processor(processor, _size(processor)) is None
    assert PreprocessSpec.from_processor(transformers.DetrImageProcessor(), _size(processor)) is not None


def _smooth_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [
        np.ascontiguousarray(np.kron(rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8), np.ones((8, 8, 1), np.uint8)))
        for h, w in [(480, 640), (640, 480), (360, 640)]
    ]


def test_the_upload_path_gives_the_cpu_path_tensors_exactly() -> None:
    """What runs on CUDA (uint8 packed into the staging buffer, then prepared where it landed), run on CPU tensors."""
    processor = transformers.DetrImageProcessor(size={"shortest_edge": 320, "longest_edge": 480})
    spec = PreprocessSpec.from_processor(processor, {"shortest_edge": 320, "longest_edge": 480})
    assert spec is not None
    frames = _smooth_frames()
    uploaded = HostStaging("cpu").upload(frames)
    assert all(t.dtype == torch.uint8 and t.device.type == "cpu" for t in uploaded)
    ours = prepare_on_device(uploaded, spec)
    reference = preprocess(frames, spec, "cpu")
    assert torch.equal(ours["pixel_values"], reference["pixel_values"])
    assert torch.equal(ours["pixel_mask"], reference["pixel_mask"])


def test_fp16_inputs_are_the_float32_ones_rounded() -> None:
    processor = transformers.RTDetrImageProcessor(size={"height": 320, "width": 320})
    spec = PreprocessSpec.from_processor(processor, {"height": 320, "width": 320})
    assert spec is not None
    frames = _smooth_frames()
    full = preprocess(frames, spec, "cpu")["pixel_values"]
    half = preprocess(frames, spec, "cpu", dtype=torch.float16)["pixel_values"]
    assert half.dtype == torch.float16
    assert torch.equal(half, full.to(torch.float16))


MIB = 1024 * 1024


def test_frame_offsets_pack_frames_back_to_back() -> None:
    images = [np.zeros((2, 3, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)]
    assert frame_offsets(images) == [0, 18, 78]
    assert frame_offsets([]) == [0]


@pytest.mark.parametrize(
    ("needed", "capacity", "grown"),
    [
        (10, 0, MIB),  # first batch: rounded up to 1 MiB
        (MIB, MIB, MIB),  # fits: kept
        (100, 4 * MIB, 4 * MIB),  # a smaller batch keeps the big buffer (no churn of pinned memory)
        (4 * MIB + 1, 4 * MIB, 6 * MIB),  # grows by at least half
        (20 * MIB + 5, 4 * MIB, 21 * MIB),  # or to what is needed, rounded up
    ],
)
def test_staging_capacity_grows_geometrically_and_never_shrinks(needed: int, capacity: int, grown: int) -> None:
    assert grown_capacity(needed, capacity) == grown


def test_staging_packs_frames_and_reuses_its_buffer() -> None:
    staging = HostStaging("cpu")  # unpinned on the CPU; the packing is the same
    rng = np.random.default_rng(0)
    big = [rng.integers(0, 255, (64, 48, 3), dtype=np.uint8) for _ in range(3)]
    uploaded = staging.upload(big)
    for frame, tensor in zip(big, uploaded, strict=True):
        assert tensor.dtype == torch.uint8
        np.testing.assert_array_equal(tensor.numpy(), frame)
    capacity = staging.capacity
    assert capacity >= sum(frame.nbytes for frame in big)

    # A smaller batch, one frame a non-contiguous view, goes into the same buffer.
    host_before = staging.pack(big[:1])[0].data_ptr()
    small = [np.ascontiguousarray(big[0][:5, :7]), big[1][::2, ::3]]
    host, offsets = staging.pack(small)
    assert host.data_ptr() == host_before
    assert staging.capacity == capacity
    assert offsets == [0, 105, 105 + small[1].nbytes]
    for frame, tensor in zip(small, staging.upload(small), strict=True):
        np.testing.assert_array_equal(tensor.numpy(), frame)

    staging.release()
    assert staging.capacity == 0


def test_uploaded_frames_do_not_change_when_the_buffer_is_reused() -> None:
    staging = HostStaging("cpu")
    first = staging.upload([np.full((4, 4, 3), 7, np.uint8)])
    staging.upload([np.full((4, 4, 3), 9, np.uint8)])
    assert int(first[0].max()) == 7
