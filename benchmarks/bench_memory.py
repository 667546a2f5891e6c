"""Peak memory of `preannotate run` on a 1 min and a 30 min video: streaming must keep it flat.

Each run is a fresh process (the CLI, default model, 1 fps) that reports its own peak RSS. Baseline:
the 1 min video. Target: ratio <= 1.5.

    python -m benchmarks.bench_memory [--long-minutes 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import CACHE_DIR, machine_info, write_results
from service.samples import write_video

CLIP = {"width_px": 640, "height_px": 360, "fps": 30, "gop": 60, "bframes": 2, "preset": "ultrafast"}
_CHILD = (
    "import resource, sys\n"
    "from service.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def clip_path(minutes: float) -> Path:
    path = CACHE_DIR / f"memory-360p30-{minutes:g}min.mp4"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        print(f"encoding {path.name} (once; cached) ...", flush=True)
        write_video(path.with_suffix(".tmp.mp4"), duration_s=minutes * 60, **CLIP)  # type: ignore[arg-type]
        path.with_suffix(".tmp.mp4").rename(path)
    return path


def peak_rss_mb(video: Path, out: Path) -> tuple[float, int]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, "run", str(video), "--fps", "1", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    kb = int(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB")))
    frames = len(json.loads(out.read_text())["images"])
    return kb / 1024, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long-minutes", type=float, default=30.0)
    args = parser.parse_args()
    short, long = clip_path(1.0), clip_path(args.long_minutes)
    with tempfile.TemporaryDirectory() as tmp:
        short_mb, short_frames = peak_rss_mb(short, Path(tmp) / "short.json")
        long_mb, long_frames = peak_rss_mb(long, Path(tmp) / "long.json")
    ratio = long_mb / short_mb
    print(
        f"peak RSS: 1 min ({short_frames} frames) {short_mb:.0f} MB, {args.long_minutes:g} min ({long_frames} frames) "
        f"{long_mb:.0f} MB -> {ratio:.2f}x (target <= 1.5x)"
    )
    payload = {
        "benchmark": "memory",
        "baseline": "the same command on a 1 min video",
        "clip": {**CLIP, "short_min": 1.0, "long_min": args.long_minutes},
        "command": "preannotate run VIDEO --fps 1 --out OUT.json (default model)",
        "machine": machine_info(),
        "short": {"peak_rss_mb": short_mb, "sampled_frames": short_frames},
        "long": {"peak_rss_mb": long_mb, "sampled_frames": long_frames},
        "ratio_long_over_short": ratio,
        "meets_target": ratio <= 1.5,
    }
    print(f"results: {write_results('memory', payload)}")


if __name__ == "__main__":
    main()
