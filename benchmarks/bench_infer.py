"""The project's batched detector vs a per-image transformers ``pipeline("object-detection")``.

The baseline is how the Label Studio ML backend's YOLO example and CVAT's functions call models: one
image per call, through the model's own image processor (DETR: shortest edge 800, longest 1333).
Same architecture, same frames, one process, interleaved repeats. Targets: CPU >= 0.95x (batching
must not be forced on a CPU); GPU >= 10x at batch >= 8 with fp16 and GPU preprocessing.

    python -m benchmarks.bench_infer [--arch detr-r50] [--frames 16] [--batch-sizes 1,4,8] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.checkpoints import ARCHITECTURES
from benchmarks.common import interleaved, machine_info, summary, write_results
from models.base import DetectorOptions
from models.registry import load_detector
from service.samples import render_frame, textured_background


def frames(count: int, height_px: int = 480, width_px: int = 640) -> list[np.ndarray]:
    background = textured_background(height_px, width_px, seed=3)
    return [render_frame(background, i / 4, ()) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="detr-r50")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-sizes", default=None, help="comma-separated; default CPU 1,4,8 / CUDA 1,8,16,32")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForObjectDetection, pipeline

    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    sizes = [int(s) for s in (args.batch_sizes or ("1,8,16,32" if device == "cuda" else "1,4,8")).split(",")]
    images = frames(args.frames)
    pil_images = [Image.fromarray(image) for image in images]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = ARCHITECTURES[args.arch](Path(tmp))
        pipe = pipeline(
            "object-detection",
            model=AutoModelForObjectDetection.from_pretrained(checkpoint),
            image_processor=AutoImageProcessor.from_pretrained(checkpoint),
            device=0 if device == "cuda" else -1,
        )
        detectors = {
            bs: load_detector(f"hf:{checkpoint}", DetectorOptions(device=device, batch_size=bs)) for bs in sizes
        }
        for detector in detectors.values():
            detector.warmup()
        pipe(pil_images[0], threshold=0.5)  # warm-up

        methods: dict[str, Any] = {"baseline": lambda: [pipe(im, threshold=0.5) for im in pil_images]}
        for bs, detector in detectors.items():
            methods[f"ours_bs{bs}"] = lambda d=detector: d.detect(images, threshold=0.5)
        times = interleaved(methods, repeats=args.repeats, warmup=0)
        info = next(iter(detectors.values())).info

    base = statistics.median(times["baseline"])
    rows = {
        name: {
            **summary(samples),
            "images_per_s": args.frames / statistics.median(samples),
            "ratio_vs_baseline": base / statistics.median(samples),
        }
        for name, samples in times.items()
    }
    for name, row in rows.items():
        print(f"{name:>12}: {row['images_per_s']:.2f} img/s ({row['ratio_vs_baseline']:.2f}x the per-image pipeline)")
    payload = {
        "benchmark": "infer",
        "baseline": "transformers pipeline('object-detection'), one PIL image per call, the model's own processor",
        "architecture": args.arch,
        "weights": "random (timing only)",
        "frames": {"count": args.frames, "height": 480, "width": 640},
        "device": device,
        "ours": {"input_size_px": info.input_size_px, "dtype": info.dtype, "preprocessing": "torch on device"},
        "machine": machine_info(),
        "results": rows,
    }
    print(f"results: {write_results('infer', payload)}")


if __name__ == "__main__":
    main()
