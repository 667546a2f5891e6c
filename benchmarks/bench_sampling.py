"""Frame sampling vs the Pixeltable-style baseline (decode every frame, convert only the kept ones).

Same clip, same selection rule, one process, interleaved repeats; frames must be identical.
Targets (core pipeline issue): on a 720p 30 fps clip with a 3 s key-frame interval, exact >= 1.6x
the baseline at 0.25 fps and never slower at 1 fps; key-frame mode >= 7x.

    python -m benchmarks.bench_sampling [--duration 120] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.baselines import decode_all_sampler
from benchmarks.common import CACHE_DIR, interleaved, machine_info, summary, write_results
from service.pipeline.options import MediaLimits, SamplingMode, SamplingOptions
from service.pipeline.video import VideoReader
from service.samples import write_video

CLIP = {"width_px": 1280, "height_px": 720, "fps": 30, "gop": 90, "bframes": 2, "preset": "veryfast", "crf": 23}


def clip_path(duration_s: float) -> Path:
    path = CACHE_DIR / f"sampling-720p30-gop90-{duration_s:g}s.mp4"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        print(f"encoding {path.name} (once; cached) ...", flush=True)
        write_video(path.with_suffix(".tmp.mp4"), duration_s=duration_s, **CLIP)  # type: ignore[arg-type]
        path.with_suffix(".tmp.mp4").rename(path)
    return path


def ours(path: Path, options: SamplingOptions) -> tuple[list[tuple[int, float, np.ndarray]], VideoReader]:
    reader = VideoReader("bench", "0", path, options, MediaLimits())
    try:
        frames = [(f.info.frame_index, f.info.timestamp_s or 0.0, f.image) for f in reader]
    finally:
        reader.close()
    return frames, reader


def baseline(path: Path, options: SamplingOptions) -> list[tuple[int, float, np.ndarray]]:
    return list(decode_all_sampler(path, options))


def same_frames(a: list[tuple[int, float, np.ndarray]], b: list[tuple[int, float, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        abs(x[1] - y[1]) < 1e-6 and np.array_equal(x[2], y[2]) for x, y in zip(a, b, strict=True)
    )


def cli_import_s() -> dict[str, Any]:
    """Whole-process overhead: what `preannotate frames` imports before sampling."""
    code = (
        "import sys, service.cli, service.commands.frames; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    times = []
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "imports_torch": out[0] == "True",
        "imports_onnxruntime": out[1] == "True",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0, help="clip length in seconds")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    path = clip_path(args.duration)

    cases: dict[str, Any] = {}
    for label, mode, fps, target in [
        ("exact@0.25fps", SamplingMode.EXACT, 0.25, 1.6),
        ("exact@1fps", SamplingMode.EXACT, 1.0, 1.0),
        ("keyframes@0.25fps", SamplingMode.KEYFRAMES, 0.25, 7.0),
        ("keyframes@1fps", SamplingMode.KEYFRAMES, 1.0, 7.0),
    ]:
        options = SamplingOptions(fps=fps, mode=mode)
        ours_frames, reader = ours(path, options)
        stats, total_frames = reader.stats, reader.meta.frame_count
        base_frames = baseline(path, options)
        identical = same_frames(ours_frames, base_frames)
        times = interleaved(
            {"ours": lambda o=options: ours(path, o), "baseline": lambda o=options: baseline(path, o)},
            repeats=args.repeats,
        )
        ratio = statistics.median(times["baseline"]) / statistics.median(times["ours"])
        cases[label] = {
            "mode": mode.value,
            "fps": fps,
            "sampled_frames": len(ours_frames),
            "frames_identical": identical,
            "decoded_per_sampled": {
                "ours": stats.decoded_frames / max(1, len(ours_frames)),
                "baseline": total_frames / max(1, len(base_frames)),
            },
            "seeks": stats.seeks,
            "ours": summary(times["ours"]),
            "baseline": summary(times["baseline"]),
            "ratio_baseline_over_ours": ratio,
            "target_ratio": target,
            "meets_target": identical and ratio >= target,
        }
        print(
            f"{label:>18}: ours {statistics.median(times['ours']):.3f} s, baseline "
            f"{statistics.median(times['baseline']):.3f} s -> {ratio:.2f}x (target >= {target}x), "
            f"decoded/sampled {cases[label]['decoded_per_sampled']['ours']:.1f} vs "
            f"{cases[label]['decoded_per_sampled']['baseline']:.1f}, identical={identical}",
            flush=True,
        )
    imports = cli_import_s()
    print(f"`preannotate frames` imports: {imports['median_s']:.2f} s, torch={imports['imports_torch']}")
    result = {
        "benchmark": "sampling",
        "baseline": "Pixeltable-style: PyAV decode every frame, convert only the kept ones (same selection rule)",
        "clip": {
            **CLIP,
            "duration_s": args.duration,
            "codec": "libx264",
            "scenecut": 0,
            "content": "textured pan + boxes",
        },
        "repeats": args.repeats,
        "machine": machine_info(),
        "cases": cases,
        "cli_imports": imports,
    }
    print(f"results: {write_results('sampling', result)}")


if __name__ == "__main__":
    main()
