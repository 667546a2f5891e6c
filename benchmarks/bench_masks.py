"""Box -> mask with a SAM-family model (issue 14): our batched stage vs the peers' pattern, same frames and boxes.

  ours   ``HFSamSegmenter.segment``: frames batched through the image encoder (``info.batch_size``), each frame's
         embedding computed once, all its boxes decoded in one call, masks sampled only around each box.
  peers  one ``SamModel`` call per box with ``SamProcessor`` run each time (preprocess the frame, encode it, decode
         the box, ``post_process_masks`` to the full frame), as label-studio-ml-backend's SAM example and
         X-AnyLabeling do.

The model is a SAM built at run time (randomly initialised; nothing is downloaded): ``tiny`` (a few channels at
SAM's real 1024 px input and 256 px mask logits, so pre/post-processing cost what they cost for real) or
``sam-vit-base`` (``facebook/sam-vit-base``'s architecture, 94 M parameters: for a GPU). Random weights give
random masks; the two methods' masks are compared (mean IoU around each box) to show they compute the same thing.
Reports masks/s for both and the ratio (target >= 5x on a CPU with the tiny model). Exits 0 either way.

    python -m benchmarks.bench_masks [--arch tiny] [--frames 8] [--boxes 10] [--repeats 3] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks import common
from models.base import DetectorOptions, Segmenter
from models.masks import Masks
from models.registry import load_segmenter
from models.segmenters.hf_sam import mask_region

FRAME_HW = (480, 640)
SAM_INPUT_PX = 1024
TARGET_RATIO = 5.0


def tiny_sam(directory: Path) -> Path:
    from tests.unit.models.hf_checkpoints import write_tiny_sam

    return write_tiny_sam(directory, SAM_INPUT_PX)


def sam_vit_base(directory: Path) -> Path:
    """``facebook/sam-vit-base``'s architecture with SAM's processor (random weights)."""
    import torch
    import transformers

    torch.manual_seed(0)
    vision = transformers.SamVisionConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11]
    )
    transformers.SamModel(transformers.SamConfig(vision_config=vision)).eval().save_pretrained(directory)
    transformers.SamProcessor(image_processor=transformers.SamImageProcessorPil()).save_pretrained(directory)
    return directory


ARCHITECTURES: dict[str, Callable[[Path], Path]] = {"tiny": tiny_sam, "sam-vit-base": sam_vit_base}


def workload(frames: int, boxes: int, seed: int = 0) -> tuple[list[NDArray[np.uint8]], list[NDArray[np.float32]]]:
    """``frames`` textured 640x480 frames with ``boxes`` boxes each (20-200 px a side)."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_HW
    images = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(frames)]
    out = []
    for _ in range(frames):
        xy = rng.uniform(0, [width - 200, height - 200], (boxes, 2))
        wh = rng.uniform(20, 200, (boxes, 2))
        out.append(np.hstack([xy, xy + wh]).astype(np.float32))
    return images, out


class PerBoxPeer:
    """The peers' pattern: processor + full model + full-frame post-processing for every box."""

    def __init__(self, directory: Path, device: str) -> None:
        import transformers

        self._processor = transformers.SamProcessor.from_pretrained(directory)
        self._model = transformers.SamModel.from_pretrained(directory).to(device).eval()
        self._device = device

    def segment(self, images: list[NDArray[np.uint8]], boxes: list[NDArray[np.float32]]) -> list[list[np.ndarray]]:
        import torch

        out: list[list[np.ndarray]] = []
        for image, frame_boxes in zip(images, boxes, strict=True):
            masks = []
            for box in frame_boxes:
                inputs = self._processor(images=image, input_boxes=[[box.tolist()]], return_tensors="pt")
                with torch.inference_mode():
                    result = self._model(
                        pixel_values=inputs["pixel_values"].to(self._device),
                        input_boxes=inputs["input_boxes"].float().to(self._device),
                        multimask_output=False,
                    )
                (full,) = self._processor.post_process_masks(
                    result.pred_masks.cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
                )
                masks.append(full[0, 0].numpy())
            out.append(masks)
        return out


def mean_iou_in_regions(ours: list[Masks], peers: list[list[np.ndarray]], boxes: list[NDArray[np.float32]]) -> float:
    """Mean IoU of our masks against the peers' inside each box's region (the box plus our margin: all our stage
    keeps; random weights spill masks over the whole frame, trained ones stay near the box). 1.0 where both are
    empty."""
    ious = []
    height, width = FRAME_HW
    for frame_masks, peer_masks, frame_boxes in zip(ours, peers, boxes, strict=True):
        for i, (theirs, box) in enumerate(zip(peer_masks, frame_boxes, strict=True)):
            region = mask_region(box, height, width)
            if region is None:
                continue
            x0, y0, x1, y1 = region
            mine, near = frame_masks.full(i, height, width)[y0:y1, x0:x1], theirs[y0:y1, x0:x1]
            union = np.logical_or(mine, near).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(mine, near).sum() / union))
    return statistics.fmean(ious)


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    images, boxes = workload(args.frames, args.boxes)
    segmenter: Segmenter = load_segmenter(f"hf:{directory}", DetectorOptions(device=args.device))
    peer = PerBoxPeer(directory, segmenter.info.device)
    n_masks = args.frames * args.boxes

    def ours() -> list[Masks]:
        return segmenter.segment(images, boxes)

    def peers() -> list[list[np.ndarray]]:
        return peer.segment(images, boxes)

    iou = mean_iou_in_regions(ours(), peers(), boxes)
    times = common.interleaved({"ours": ours, "peers": peers}, repeats=args.repeats, warmup=1)
    methods = {
        name: common.summary(samples) | {"masks_per_s": n_masks / statistics.median(samples)}
        for name, samples in times.items()
    }
    ratio = methods["ours"]["masks_per_s"] / methods["peers"]["masks_per_s"]
    return {
        "segmenter": {
            "device": segmenter.info.device,
            "dtype": segmenter.info.dtype,
            "batch_size": segmenter.info.batch_size,
            "input_size_px": segmenter.info.input_size_px,
        },
        "masks": n_masks,
        "methods": methods,
        "ratio": ratio,
        "mean_iou_in_box_regions": iou,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="tiny")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--boxes", type=int, default=10, help="boxes per frame")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pa-bench-masks-") as tmp:
        result = run(args, ARCHITECTURES[args.arch](Path(tmp)))
    print(f"{'method':8} {'median s':>9} {'masks/s':>9}   ({args.frames} frames x {args.boxes} boxes, {args.arch})")
    for name, method in result["methods"].items():
        print(f"{name:8} {method['median_s']:9.3f} {method['masks_per_s']:9.1f}")
    verdict = "meets" if result["meets_target"] else "misses"
    print(
        f"ratio {result['ratio']:.1f}x ({verdict} the {TARGET_RATIO:.0f}x target); "
        f"mean IoU ours vs peers around the boxes {result['mean_iou_in_box_regions']:.3f}"
    )
    path = common.write_results("masks", {"machine": common.machine_info(), "args": vars(args)} | result)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
