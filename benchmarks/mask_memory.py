"""Peak memory of SAM's mask decoder on one crowded frame (issue 14): boxes decoded in chunks of
``PREANNOTATE_SEGMENTER_MAX_BOXES`` (32) vs all of a frame's boxes in one call (the baseline: max 1024).

transformers' mask decoder copies the image embedding once per box prompt, so one call over many boxes costs
memory in proportion to them. Each measurement runs in a fresh process (peak RSS cannot go down): one warm-up call
with one box, then one ``segment`` call on a 640x480 frame with N boxes; the extra peak RSS over the warm-up is
the figure. The model is a SAM with SAM-base's prompt encoder and mask decoder (256 channels, a 64x64 embedding)
behind a token-size image encoder, random weights, built at run time (nothing is downloaded). CPU, one thread.

    python -m benchmarks.mask_memory [--boxes 1 32 128]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common

CHUNKED = 32
ALL_AT_ONCE = 1024


def write_sam_base_decoder(directory: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    vision = transformers.SamVisionConfig(
        hidden_size=32,
        output_channels=256,
        num_hidden_layers=1,
        num_attention_heads=1,
        image_size=1024,
        patch_size=16,
        window_size=16,
        global_attn_indexes=[],
        num_pos_feats=128,
        mlp_dim=64,
    )
    transformers.SamModel(transformers.SamConfig(vision_config=vision)).eval().save_pretrained(directory)
    processor = transformers.SamImageProcessorPil(size={"longest_edge": 1024}, pad_size={"height": 1024, "width": 1024})
    transformers.SamProcessor(image_processor=processor).save_pretrained(directory)
    return directory


def measure(directory: Path, boxes: int, max_boxes: int) -> dict[str, Any]:
    """One fresh process: the extra peak RSS (MiB) of one ``segment`` call with ``boxes`` boxes."""
    import numpy as np
    import torch

    from models.base import DetectorOptions
    from models.registry import load_segmenter

    torch.set_num_threads(1)
    segmenter = load_segmenter(
        f"hf:{directory}", DetectorOptions(device="cpu", num_threads=1, segmenter_max_boxes=max_boxes)
    )
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    x0, y0 = rng.uniform(0, 500, boxes), rng.uniform(0, 380, boxes)
    prompts = np.stack([x0, y0, x0 + 100, y0 + 80], 1).astype(np.float32)
    segmenter.segment([frame], [prompts[:1]])  # warm: weights, one prompt
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (masks,) = segmenter.segment([frame], [prompts])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert len(masks) == boxes
    return {"boxes": boxes, "max_boxes": max_boxes, "extra_peak_mib": round((after - before) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--one", nargs=3, metavar=("DIR", "BOXES", "MAX_BOXES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process
        print(json.dumps(measure(Path(args.one[0]), int(args.one[1]), int(args.one[2]))))
        return
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_sam_base_decoder(Path(tmp) / "sam")
        for boxes in args.boxes:
            for max_boxes in (CHUNKED, ALL_AT_ONCE):
                child = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.mask_memory",
                        "--one",
                        str(directory),
                        str(boxes),
                        str(max_boxes),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
                rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(f"{'boxes':>6} {'chunks of 32 MiB':>17} {'all at once MiB':>16}")
    for boxes in args.boxes:
        ours, base = (
            next(r for r in rows if r["boxes"] == boxes and r["max_boxes"] == m) for m in (CHUNKED, ALL_AT_ONCE)
        )
        print(f"{boxes:>6} {ours['extra_peak_mib']:>17} {base['extra_peak_mib']:>16}")
    path = common.write_results("mask-memory", {"machine": common.machine_info(), "rows": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
