"""Previews in the same pass (issue 16): ``run --preview`` against ``run`` followed by ``render``, same media.

  ours      ``preannotate run MEDIA --preview DIR``: the frames the model sees are kept (scaled) as they are
            decoded, and each item is drawn once it is tracked; nothing is decoded twice.
  baseline  ``preannotate run MEDIA`` then ``preannotate render MEDIA --predictions FILE``: what a user does
            without ``--preview`` (and what a script drawing a COCO file does): the sampled frames decoded again.
  plain     ``preannotate run MEDIA`` alone, for the cost of drawing at all.

Whole commands (a fresh process each, the default model, CPU), interleaved, on generated media: the demo's
photos and a pan across one at 1280x720, 25 fps, sampled at ``--fps``. Prints medians and the ratio
baseline / ours (>1: the same pass is faster); results with machine info go to benchmarks/results/.

    python -m benchmarks.bench_preview [--duration 20] [--fps 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import skimage.data

from benchmarks import common
from service.commands.demo import write_samples
from service.samples import write_pan_video


def _cli(*args: str | Path) -> None:
    subprocess.run([sys.executable, "-m", "service.cli", *map(str, args)], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of 1280x720 video (default 20)")
    parser.add_argument("--fps", type=float, default=5.0, help="sampling rate of the runs (default 5)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp:
        root = Path(tmp)
        media = root / "media"
        write_samples(media)
        photo = np.asarray(skimage.data.astronaut(), np.uint8)
        write_pan_video(photo, media / "pan-720p.mp4", width_px=1280, height_px=720, duration_s=args.duration)
        sampling = ("--fps", str(args.fps), "-q")

        def fresh(name: str) -> Path:
            path = root / name
            shutil.rmtree(path, ignore_errors=True)
            (root / f"{name}.json").unlink(missing_ok=True)
            return path

        def plain() -> None:
            fresh("plain")
            _cli("run", media, "--out", root / "plain.json", *sampling)

        def ours() -> None:
            previews = fresh("ours")
            _cli("run", media, "--out", root / "ours.json", "--preview", previews, *sampling)

        def baseline() -> None:
            previews = fresh("baseline")
            _cli("run", media, "--out", root / "baseline.json", *sampling)
            _cli("render", media, "--predictions", root / "baseline.json", "--out", previews)

        times = common.interleaved({"run": plain, "run --preview": ours, "run + render": baseline}, args.repeats)
        drawn = sorted(p.name for p in (root / "ours").iterdir())
        # both ways draw the same files (the same predictions on the same frames)
        if drawn != sorted(p.name for p in (root / "baseline").iterdir()):
            raise SystemExit("run --preview and run + render drew different files")

    medians = {name: common.summary(samples)["median_s"] for name, samples in times.items()}
    ratio = medians["run + render"] / medians["run --preview"]
    overhead = medians["run --preview"] / medians["run"] - 1
    for name, median in medians.items():
        print(f"{name:>14}: median {median:.2f} s")
    print(f"run + render / run --preview = {ratio:.2f}x; drawing adds {overhead:+.0%} to a plain run")
    payload = {
        "benchmark": "preview",
        "machine": common.machine_info(),
        "settings": {"duration_s": args.duration, "fps": args.fps, "repeats": args.repeats},
        "files_drawn": drawn,
        "results": {name: common.summary(samples) for name, samples in times.items()},
        "ratio_baseline_over_ours": ratio,
        "preview_overhead": overhead,
    }
    print(f"results: {common.write_results('preview', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
