"""A video preannotated end to end (decode -> detect -> COCO) vs a Pixeltable-style pipeline.

Baseline (performance.md, baseline (c)): decode EVERY frame with PyAV and keep the frames displayed at
1 fps as PIL images; fixed batches of 4 in order through the model's own image processor (DETR: 800/1333,
padded) and the model in fp32 under no_grad; per-frame post-processing into dicts of Python lists;
decode and inference in sequence. Ours: the service path (``service.pipeline.flow``: the sampler on decode workers, the
detector at its device defaults, COCO out). Same clip, same architecture (random weights), one process.
Targets: CPU >= 1.5x; GPU: ours >= 80 % of the model-only throughput.

    python -m benchmarks.bench_e2e [--arch detr-r50] [--duration 60] [--fps 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.baselines import decode_all_sampler
from benchmarks.checkpoints import ARCHITECTURES
from benchmarks.common import CACHE_DIR, interleaved, machine_info, summary, write_results
from models.base import DetectorOptions
from models.registry import load_detector
from service.config import get_settings
from service.convert.coco import frame_results_to_coco
from service.pipeline.flow import detector_sampling, run_flow, slot_opener
from service.pipeline.media import item_from_path
from service.pipeline.options import MediaLimits, SamplingOptions
from service.samples import write_video

CLIP = {"width_px": 640, "height_px": 480, "fps": 30, "gop": 60, "bframes": 2}


def clip_path(duration_s: float) -> Path:
    path = CACHE_DIR / f"e2e-480p30-gop60-{duration_s:g}s.mp4"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        write_video(path.with_suffix(".tmp.mp4"), duration_s=duration_s, **CLIP)  # type: ignore[arg-type]
        path.with_suffix(".tmp.mp4").rename(path)
    return path


def pixeltable_style(path: Path, fps: float, processor: Any, model: Any, device: str) -> list[list[dict[str, Any]]]:
    import torch
    from PIL import Image

    frames = [Image.fromarray(rgb) for _, _, rgb in decode_all_sampler(path, SamplingOptions(fps=fps))]
    out: list[list[dict[str, Any]]] = []
    for start in range(0, len(frames), 4):
        batch = frames[start : start + 4]
        inputs = processor(images=batch, return_tensors="pt").to(device)
        with torch.no_grad():
            outputs = model(**inputs)
        results = processor.post_process_object_detection(
            outputs, threshold=0.5, target_sizes=[(im.height, im.width) for im in batch]
        )
        for result in results:
            out.append(
                [
                    {"score": s.item(), "label": model.config.id2label[int(lb.item())], "box": b.tolist()}
                    for s, lb, b in zip(result["scores"], result["labels"], result["boxes"], strict=True)
                ]
            )
    return out


def ours(path: Path, fps: float, detector: Any) -> str:
    """The service path: the one flow the CLI, workers and routes run (decode workers -> batch -> detect)."""
    opener = slot_opener(detector_sampling(SamplingOptions(fps=fps), detector.info), MediaLimits())
    options = get_settings().flow_options(threshold=0.5)
    results = [
        frame for item in run_flow([item_from_path(path)], detector, options, open_slot=opener) for frame in item.frames
    ]
    return json.dumps(frame_results_to_coco(results, class_names=detector.info.class_names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="detr-r50")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    path = clip_path(args.duration)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = ARCHITECTURES[args.arch](Path(tmp))
        processor = AutoImageProcessor.from_pretrained(checkpoint)
        model = AutoModelForObjectDetection.from_pretrained(checkpoint).to(device).eval()
        detector = load_detector(f"hf:{checkpoint}", DetectorOptions(device=device))
        detector.warmup()

        # Model-only throughput on frames already decoded: the ceiling the pipeline should approach.
        decoded = [rgb for _, _, rgb in decode_all_sampler(path, SamplingOptions(fps=args.fps))]
        start = time.perf_counter()
        detector.detect(decoded, threshold=0.5)
        model_only_fps = len(decoded) / (time.perf_counter() - start)

        times = interleaved(
            {
                "ours": lambda: ours(path, args.fps, detector),
                "baseline": lambda: pixeltable_style(path, args.fps, processor, model, device),
            },
            repeats=args.repeats,
            warmup=0,
        )
    ratio = statistics.median(times["baseline"]) / statistics.median(times["ours"])
    ours_fps = len(decoded) / statistics.median(times["ours"])
    print(
        f"ours {statistics.median(times['ours']):.1f} s, Pixeltable-style {statistics.median(times['baseline']):.1f} s"
        f" -> {ratio:.2f}x; ours {ours_fps:.2f} frames/s = {ours_fps / model_only_fps:.0%} of model-only "
        f"{model_only_fps:.2f} frames/s"
    )
    payload = {
        "benchmark": "e2e",
        "baseline": "Pixeltable-style: decode every frame, keep 1 fps as PIL, HF processor + model in batches of 4, "
        "per-frame dicts",
        "architecture": args.arch,
        "weights": "random (timing only)",
        "clip": {**CLIP, "duration_s": args.duration, "sampled_fps": args.fps, "sampled_frames": len(decoded)},
        "device": device,
        "ours": {"input_size_px": detector.info.input_size_px, "batch_size": detector.info.batch_size},
        "machine": machine_info(),
        "ours_s": summary(times["ours"]),
        "baseline_s": summary(times["baseline"]),
        "ratio_baseline_over_ours": ratio,
        "model_only_frames_per_s": model_only_fps,
        "ours_frames_per_s": ours_fps,
        "share_of_model_only": ours_fps / model_only_fps,
    }
    print(f"results: {write_results('e2e', payload)}")


if __name__ == "__main__":
    main()
