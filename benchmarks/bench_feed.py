"""Feed rate: how fast ``preannotate run`` hands frames to a model that costs nothing, vs decoding alone.

The model is a null ONNX graph in the YOLOv8 layout (input ``images`` [N, 3, 640, 640], output
[N, 5, 8400], one class, every score 0) that reads one pixel, so what is measured is the pipeline:
decode, colour conversion, scaling, letterbox, blob, batching, post-processing, COCO out. Built here
with onnx.helper; the clip is encoded here (``benchmarks/.cache``, never committed).

Whole processes, timed from outside, interleaved, median of ``--repeats``:
  (a) every frame: ``preannotate run --model onnx:NULL --fps 0`` vs a PyAV process decoding the same clip to
      RGB arrays with frame threading on (``thread_type=AUTO``, ``to_ndarray(format="rgb24")``);
  (b) ``--fps 1``: the same run vs the project's exact sampler alone (``VideoReader``, full-size RGB);
  (c) four videos in one run vs one (frames/s of each).
Targets (issue 11, 2-core machine): (a) >= 0.9x, (c) >= 1.6x. Process start (imports, model load) is
inside every time, ours and the baselines'; CPU seconds (user + sys of the child) are recorded too, being
steadier than the wall clock on a shared machine.

    python -m benchmarks.bench_feed [--quick] [--duration 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CACHE_DIR, machine_info, write_results

CLIP = {"width_px": 1280, "height_px": 720, "fps": 30, "gop": 60, "bframes": 2}
VIDEOS_PER_JOB = 4
NULL_CLASSES = 1
NULL_ANCHORS = 8400
NULL_INPUT_PX = 640


def null_yolo_model(path: Path) -> Path:
    """A YOLOv8-layout graph whose output is zeros plus 0 x one input pixel: it costs nothing, yet reads its input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = [
        numpy_helper.from_array(np.zeros((1, 4 + NULL_CLASSES, NULL_ANCHORS), np.float32), "zeros"),
        numpy_helper.from_array(np.zeros(4, np.int64), "starts"),
        numpy_helper.from_array(np.array([2**62, 1, 1, 1], np.int64), "ends"),
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        numpy_helper.from_array(np.array([3], np.int64), "last_axis"),
    ]
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends"], ["pixel"]),  # [N, 1, 1, 1]
        helper.make_node("Mul", ["pixel", "zero"], ["nil"]),
        helper.make_node("Squeeze", ["nil", "last_axis"], ["nil_n11"]),  # [N, 1, 1]
        helper.make_node("Add", ["nil_n11", "zeros"], ["output0"]),  # [N, 5, 8400]
    ]
    size = NULL_INPUT_PX
    graph = helper.make_graph(
        nodes,
        "null_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + NULL_CLASSES, NULL_ANCHORS])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in {"names": "{0: 'object'}", "imgsz": f"[{size}, {size}]", "task": "detect"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def clip_paths(duration_s: float, count: int) -> list[Path]:
    """``count`` copies of one 720p30 clip (distinct files: a job of several videos)."""
    from service.samples import write_video

    first = CACHE_DIR / f"feed-720p30-gop60-{duration_s:g}s.mp4"
    if not first.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        print(f"encoding {first.name} (once; cached) ...", flush=True)
        tmp = first.with_suffix(".tmp.mp4")
        write_video(tmp, duration_s=duration_s, **CLIP)  # type: ignore[arg-type]
        tmp.rename(first)
    paths = [first]
    for n in range(1, count):
        copy = first.with_name(f"{first.stem}-copy{n}.mp4")
        if not copy.exists():
            shutil.copyfile(first, copy)
        paths.append(copy)
    return paths


def pyav_decode(path: Path) -> int:
    """The baseline: PyAV with frame threading, every frame to an RGB array; returns the frame count."""
    import av

    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            count += 1
    return count


def sampler_only(path: Path, fps: float) -> int:
    """The project's exact sampler alone (full-size RGB frames, no model); returns the frame count."""
    from service.pipeline.options import MediaLimits, SamplingOptions
    from service.pipeline.video import VideoReader

    reader = VideoReader("bench", "0", path, SamplingOptions(fps=fps), MediaLimits())
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()


def timed(command: list[str]) -> tuple[float, float, str]:
    """Run a process; its wall seconds, its CPU seconds (user + sys, threads included) and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


def run_command(model: Path, videos: list[Path], fps: float, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service.cli",
        "run",
        "--model",
        f"onnx:{model}",
        "--fps",
        f"{fps:g}",
        "--quiet",
        "--out",
        str(out),
        *map(str, videos),
    ]


def baseline_command(kind: str, video: Path, fps: float) -> list[str]:
    return [sys.executable, "-m", "benchmarks.bench_feed", "--baseline", kind, "--fps", f"{fps:g}", str(video)]


def measure(commands: dict[str, list[str]], repeats: int, frames_of: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each command ``repeats`` times, interleaved; frames from ``frames_of[name](stdout)``."""
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    frames: dict[str, int] = {}
    for repeat in range(repeats):
        for name, command in commands.items():
            wall, cpu, stdout = timed(command)
            walls[name].append(wall)
            cpus[name].append(cpu)
            frames[name] = frames_of[name](stdout)
            print(f"  [{repeat + 1}/{repeats}] {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, {frames[name]} frames")
    results = {}
    for name in commands:
        wall = statistics.median(walls[name])
        results[name] = {
            "frames": frames[name],
            "wall_s": walls[name],
            "cpu_s": cpus[name],
            "median_wall_s": round(wall, 3),
            "median_cpu_s": round(statistics.median(cpus[name]), 3),
            "frames_per_s": round(frames[name] / wall, 1),
        }
    return results


def _coco_frames(out: Path) -> Any:
    def count(_stdout: str) -> int:
        return len(json.loads(out.read_text())["images"])

    return count


def _printed_frames(stdout: str) -> int:
    return int(stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="clip length in seconds (60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a 20 s clip, 1 repeat")
    parser.add_argument("--baseline", choices=["pyav", "sampler"], help=argparse.SUPPRESS)
    parser.add_argument("--fps", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("video", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:  # one baseline process, run by the benchmark itself
        print(pyav_decode(args.video) if args.baseline == "pyav" else sampler_only(args.video, args.fps))
        return
    duration_s, repeats = (20.0, 1) if args.quick else (args.duration, args.repeats)

    videos = clip_paths(duration_s, VIDEOS_PER_JOB)
    model = null_yolo_model(CACHE_DIR / "feed-null-yolov8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        outs = {name: Path(tmp) / f"{name}.json" for name in ("every", "fps1", "four")}
        commands = {
            "run_every_frame": run_command(model, videos[:1], 0, outs["every"]),
            "pyav_decode_rgb": baseline_command("pyav", videos[0], 0),
            "run_fps1": run_command(model, videos[:1], 1, outs["fps1"]),
            "sampler_fps1": baseline_command("sampler", videos[0], 1),
            "run_4_videos": run_command(model, videos, 0, outs["four"]),
        }
        frames_of = {
            "run_every_frame": _coco_frames(outs["every"]),
            "pyav_decode_rgb": _printed_frames,
            "run_fps1": _coco_frames(outs["fps1"]),
            "sampler_fps1": _printed_frames,
            "run_4_videos": _coco_frames(outs["four"]),
        }
        print(f"{duration_s:g} s 720p30 clip, {repeats} interleaved repeats, whole processes", flush=True)
        results = measure(commands, repeats, frames_of)

    def rate(name: str) -> float:
        return float(results[name]["frames_per_s"])

    ratios = {
        "every_frame_vs_pyav": round(rate("run_every_frame") / rate("pyav_decode_rgb"), 3),
        "fps1_vs_sampler": round(rate("run_fps1") / rate("sampler_fps1"), 3),
        "four_videos_vs_one": round(rate("run_4_videos") / rate("run_every_frame"), 3),
    }
    print("\nframes/s (median wall):")
    for name, result in results.items():
        print(f"  {name:18s} {result['frames_per_s']:8.1f}   ({result['frames']} frames)")
    print(
        f"\nevery frame: {ratios['every_frame_vs_pyav']:.2f}x PyAV decode-to-RGB (target >= 0.9x)\n"
        f"--fps 1:     {ratios['fps1_vs_sampler']:.2f}x the exact sampler alone\n"
        f"4 videos:    {ratios['four_videos_vs_one']:.2f}x the frames/s of one (target >= 1.6x)"
    )
    payload = {
        "benchmark": "feed",
        "machine": machine_info(),
        "clip": {**CLIP, "duration_s": duration_s, "codec": "libx264"},
        "model": f"null YOLOv8 layout, {NULL_INPUT_PX}px, {NULL_CLASSES} class, reads one pixel",
        "repeats": repeats,
        "results": results,
        "ratios": ratios,
        "targets": {"every_frame_vs_pyav": 0.9, "four_videos_vs_one": 1.6},
    }
    print(f"results: {write_results('feed', payload)}")


if __name__ == "__main__":
    main()
