"""Shared benchmark plumbing: machine facts, interleaved timing, results files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"
CACHE_DIR = Path(__file__).parent / ".cache"


def machine_info() -> dict[str, Any]:
    """CPU, cores, GPUs, library versions and the commit: enough to tell two runs apart."""
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = [f for f in line.split(":", 1)[1].split() if f.startswith("avx512") or f in ("avx2",)]
                break
    except OSError:
        pass
    versions = {}
    for package in ("numpy", "av", "opencv-python", "onnxruntime", "torch", "transformers", "pydicom"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    try:
        import av

        versions["ffmpeg-libavcodec"] = ".".join(map(str, av.library_versions["libavcodec"]))
    except Exception:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "gpu": gpu_info(),
        "onnxruntime_providers": _onnxruntime_providers(),
        "versions": versions,
    }


def gpu_info() -> dict[str, Any]:
    """The GPUs (model, memory, compute capability), driver, CUDA and cuDNN versions; ``{}`` without a GPU.

    Devices come from torch when it is installed with CUDA, else from ``nvidia-smi`` (an ONNX Runtime-only
    install); the driver version always from ``nvidia-smi`` (torch does not report it). Nothing here may
    fail a benchmark: anything missing or broken leaves its key out.
    """
    info: dict[str, Any] = {}
    smi = _nvidia_smi()
    try:
        import torch  # lazily: seconds to import, and absent from CPU-only installs

        if torch.cuda.is_available():  # also initialises CUDA: benchmarks call this after measuring
            props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
            info["devices"] = [
                {
                    "name": p.name,
                    "memory_gib": round(p.total_memory / 2**30, 1),
                    "compute_capability": f"{p.major}.{p.minor}",
                }
                for p in props
            ]
            info["cuda"] = torch.version.cuda  # the toolkit torch was built with (None on ROCm)
            if getattr(torch.version, "hip", None):
                info["hip"] = torch.version.hip
            info["cudnn"] = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
    except Exception:  # ImportError, or a broken driver/CUDA install
        pass
    if smi:
        info.setdefault("devices", [{"name": name, "memory_gib": memory} for name, memory, _ in smi])
        info["driver"] = smi[0][2]
    return info


def _nvidia_smi() -> list[tuple[str, float, str]]:
    """(name, memory GiB, driver version) per GPU from ``nvidia-smi``; [] when it is missing or fails."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        rows = [[field.strip() for field in line.split(",")] for line in out.splitlines() if line.strip()]
        return [(name, round(float(mib) / 1024, 1), driver) for name, mib, driver in rows]
    except (OSError, subprocess.SubprocessError, ValueError):  # no driver, a hung GPU, an odd output format
        return []


def _onnxruntime_providers() -> list[str] | None:
    """ONNX Runtime's execution providers (CUDA, TensorRT, CPU, ...) in priority order; None if not installed."""
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except Exception:
        return None


def interleaved(methods: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each method ``repeats`` times, round-robin, after ``warmup`` untimed rounds."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(warmup + repeats):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": [round(s, 5) for s in samples],  # type: ignore[dict-item]
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path
