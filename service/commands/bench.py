"""``preannotate bench NAME|all``: run the benchmarks in ``benchmarks/`` (a source checkout has them)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from service.errors import ErrorCode, PreannotateError

BENCHMARKS = ("sampling", "feed", "infer", "e2e", "serve", "memory", "tracks", "results", "masks", "preview")


def bench_command(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "bench_sampling.py").is_file():
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, "the benchmarks ship with the source, not the package: run from a clone"
        )
    names = BENCHMARKS if args.name == "all" else (args.name,)
    worst = 0
    for name in names:
        print(f"== {name}", flush=True)
        result = subprocess.run([sys.executable, "-m", f"benchmarks.bench_{name}", *args.extra], cwd=root)
        worst = max(worst, result.returncode)
    return worst
