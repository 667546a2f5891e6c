"""The project's detector vs a per-image transformers ``pipeline("object-detection")``.

The baseline is how the Label Studio ML backend's YOLO example and CVAT's functions call models: one
image per call, through the model's own image processor (DETR: shortest edge 800, longest 1333), on
``--arch`` built locally with random weights (nothing is downloaded). Ours is, by default, the ``hf:``
detector on the same architecture (targets: CPU >= 0.95x, batching must not be forced on a CPU; GPU
>= 10x at batch >= 8 with fp16 and GPU preprocessing); with ``--model SPEC``, that model instead, e.g.
``builtin:nanodet`` (fetched once with ``preannotate models fetch nanodet``; ``--model-dir`` or
``PREANNOTATE_MODEL_DIR`` say where). Same frames, one process, interleaved repeats.

    python -m benchmarks.bench_infer [--arch detr-r50] [--model builtin:nanodet] [--frames 16]
        [--batch-sizes 1,4,8] [--device auto] [--content synthetic|photos]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.checkpoints import ARCHITECTURES
from benchmarks.common import interleaved, machine_info, summary, write_results
from models.base import Detector, DetectorOptions
from models.errors import ModelError
from models.registry import parse_spec
from models.types import RGBImage
from service.samples import render_frame, textured_background

FRAME_HW = (480, 640)
PHOTOS = ("astronaut", "chelsea", "coffee")
"""scikit-image's photos with COCO objects in them (person, cat, cup): a real detector finds real candidates."""


def frames(count: int, height_px: int = FRAME_HW[0], width_px: int = FRAME_HW[1]) -> list[RGBImage]:
    """Synthetic frames: a textured background panned (no objects; enough for a model with random weights)."""
    background = textured_background(height_px, width_px, seed=3)
    return [render_frame(background, i / 4, ()) for i in range(count)]


def photo_frames(count: int, height_px: int = FRAME_HW[0], width_px: int = FRAME_HW[1]) -> list[RGBImage]:
    """``PHOTOS`` cycled: each centre-cropped to the frame's aspect (objects keep their shape), then resized."""
    import skimage.data

    sized: list[RGBImage] = []
    for name in PHOTOS:
        photo = np.asarray(getattr(skimage.data, name)(), np.uint8)
        height, width = photo.shape[:2]
        crop_w = min(width, round(height * width_px / height_px))
        crop_h = min(height, round(crop_w * height_px / width_px))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        crop = photo[top : top + crop_h, left : left + crop_w]
        resized = cv2.resize(crop, (width_px, height_px), interpolation=cv2.INTER_AREA)
        sized.append(np.ascontiguousarray(resized, dtype=np.uint8))
    return [sized[i % len(sized)] for i in range(count)]


def _model_spec(value: str) -> str:
    try:
        parse_spec(value)
    except ModelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(s) for s in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be comma-separated integers, not {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, not {value!r}")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_infer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="detr-r50", help="the baseline's model")
    parser.add_argument(
        "--model",
        type=_model_spec,
        default=None,
        help="ours: a model spec (e.g. builtin:nanodet); default: hf: on --arch's random-weight checkpoint",
    )
    parser.add_argument("--model-dir", type=Path, default=None, help="fetched models (default PREANNOTATE_MODEL_DIR)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument(
        "--batch-sizes", type=_batch_sizes, default=None, help="comma-separated; CPU 1,4,8 / CUDA 1,8,16,32"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.5, help="for both sides (the service's default)")
    parser.add_argument(
        "--content",
        choices=["synthetic", "photos"],
        default=None,
        help="frames: scikit-image photos (default with --model) or a synthetic panned texture (default without)",
    )
    parser.add_argument("--note", default="", help="free text kept in the results file (e.g. the machine's load)")
    args = parser.parse_args(argv)
    if args.content is None:
        args.content = "photos" if args.model else "synthetic"
    return args


def _device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"  # no torch import: the model-not-fetched exit stays cheap
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(spec: str, device: str, sizes: list[int], model_dir: Path | None) -> dict[int, Detector]:
    from models.registry import load_detector

    directory = str(model_dir) if model_dir is not None else None
    return {bs: load_detector(spec, DetectorOptions(device=device, batch_size=bs, model_dir=directory)) for bs in sizes}


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model_dir is not None:
        return Path(args.model_dir)
    from service.config import get_settings

    return get_settings().model_dir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = _device(args.device)
    sizes = args.batch_sizes or ([1, 8, 16, 32] if device == "cuda" else [1, 4, 8])
    images = (photo_frames if args.content == "photos" else frames)(args.frames)
    ours: dict[int, Detector] = {}
    if args.model:  # first, before torch and the baseline's checkpoint: a model that is not there exits at once
        try:
            ours = _load(args.model, device, sizes, _model_dir(args))
        except ModelError as exc:
            print(
                f"bench infer: {exc} (or point --model-dir / PREANNOTATE_MODEL_DIR at where it was fetched)",
                file=sys.stderr,
            )
            return 2

    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForObjectDetection, pipeline

    pil_images = [Image.fromarray(image) for image in images]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = ARCHITECTURES[args.arch](Path(tmp))
        pipe = pipeline(
            "object-detection",
            model=AutoModelForObjectDetection.from_pretrained(checkpoint),
            image_processor=AutoImageProcessor.from_pretrained(checkpoint),
            device=0 if device == "cuda" else -1,
        )
        detectors = ours or _load(f"hf:{checkpoint}", device, sizes, None)
        for detector in detectors.values():
            detector.warmup()
        pipe(pil_images[0], threshold=args.threshold)  # warm-up

        methods: dict[str, Any] = {"baseline": lambda: [pipe(im, threshold=args.threshold) for im in pil_images]}
        for bs, detector in detectors.items():
            methods[f"ours_bs{bs}"] = lambda d=detector: d.detect(images, threshold=args.threshold)
        times = interleaved(methods, repeats=args.repeats, warmup=0)
        first = next(iter(detectors.values()))
        info = first.info
        found = _found(first, images, args.threshold) if args.content == "photos" else None
        for detector in detectors.values():
            detector.close()

    rows = _rows(times, args.frames)
    for name, row in rows.items():
        print(f"{name:>12}: {row['images_per_s']:.2f} img/s ({row['ratio_vs_baseline']:.2f}x the per-image pipeline)")
    payload = {
        "benchmark": "infer",
        "baseline": "transformers pipeline('object-detection'), one PIL image per call, the model's own processor",
        "architecture": args.arch,
        "model": args.model or f"hf: {args.arch}",
        "weights": (
            {"baseline": "random (timing only)", "ours": f"{args.model} as fetched/installed"}
            if args.model
            else "random (timing only)"
        ),
        "frames": {
            "count": args.frames,
            "height": FRAME_HW[0],
            "width": FRAME_HW[1],
            "content": (
                f"scikit-image photos {', '.join(PHOTOS)}, centre-cropped to 4:3, resized, cycled"
                if args.content == "photos"
                else "synthetic panned texture"
            ),
        },
        "threshold": args.threshold,
        "device": device,
        "ours": {
            "input_size_px": info.input_size_px,
            "dtype": info.dtype,
            "batch_sizes": sizes,
            "preprocessing": "letterbox on the CPU, ONNX Runtime" if args.model else "torch on device",
        },
        "ours_detections": found,
        "note": args.note,
        "machine": machine_info(),
        "results": rows,
    }
    print(f"results: {write_results('infer', payload)}")
    return 0


def _rows(times: dict[str, list[float]], count: int) -> dict[str, dict[str, Any]]:
    base = statistics.median(times["baseline"])
    return {
        name: {
            **summary(samples),
            "images_per_s": count / statistics.median(samples),
            "ratio_vs_baseline": base / statistics.median(samples),
        }
        for name, samples in times.items()
    }


def _found(detector: Detector, images: list[RGBImage], threshold: float) -> dict[str, dict[str, int]]:
    """Ours' detections per class on each photo: evidence that it did real work (real candidates, NMS)."""
    names = detector.info.class_names
    found = detector.detect(images[: len(PHOTOS)], threshold=threshold)
    return {
        photo: dict(Counter(names[int(c)] for c in detections.class_id))
        for photo, detections in zip(PHOTOS, found, strict=False)
    }


if __name__ == "__main__":
    raise SystemExit(main())
