"""The process's Prometheus metrics, created once at import in the default registry.

Every name starts with ``preannotate_``. Labels are low-cardinality only (a model's short name):
never job, item or request ids, URLs or file names, which would grow the series without bound.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

# `_created` timestamps double the series for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

MODEL_LABELS = ("model",)

# Inference: recorded by service.pipeline.batching.DynamicBatcher, one series per model.
BATCH_SIZE = Histogram(
    "preannotate_batch_size",
    "Frames per model call made by the dynamic batcher (after any out-of-memory split).",
    MODEL_LABELS,
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
INFERENCE_SECONDS = Histogram(
    "preannotate_inference_seconds",
    "Wall time of one successful model call (one batch), in seconds.",
    MODEL_LABELS,
    # CPU DETR-R50 takes ~0.5-2.5 s per frame; GPU batches take milliseconds.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
QUEUE_WAIT_SECONDS = Histogram(
    "preannotate_queue_wait_seconds",
    "Time a frame waited in the batcher between submit and the start of its model call, in seconds.",
    MODEL_LABELS,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FRAMES_PROCESSED = Counter(
    "preannotate_frames_processed",
    "Frames the model returned detections for.",
    MODEL_LABELS,
)
DEVICE_OOM = Counter(
    "preannotate_device_oom",
    "Model calls that ran out of accelerator memory (each one is retried as two halves).",
    MODEL_LABELS,
)
DEADLINE_EXCEEDED = Counter(
    "preannotate_deadline_exceeded",
    "Frames dropped or abandoned because their deadline passed before the model returned.",
    MODEL_LABELS,
)

# HTTP: recorded by the app's middleware, labelled by route template (never the concrete path).
HTTP_REQUESTS = Counter("preannotate_http_requests", "HTTP requests answered.", ("method", "route", "status"))
HTTP_SECONDS = Histogram(
    "preannotate_http_request_seconds",
    "Time to answer an HTTP request, in seconds.",
    ("method", "route"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# Jobs
ITEMS_FINISHED = Counter(
    "preannotate_job_items", "Job items finished by this process's workers, by outcome.", ("outcome",)
)
JOB_OUTCOMES = ("succeeded", "failed", "partially_failed", "cancelled")
JOBS_FINISHED = Counter(
    "preannotate_jobs_finished",
    "Jobs that reached a final state, by status. Counted once, by the process whose store call finished the job's"
    " last item (a worker) or cancelled it (an API process): sum over processes.",
    ("status",),
)
for _status in JOB_OUTCOMES:
    JOBS_FINISHED.labels(status=_status)  # every series from the start, so rate() sees the first job
QUEUE_DEPTH = Gauge("preannotate_queue_depth", "Job items queued or leased (all tenants), read at scrape time.")
BUSY_WORKERS = Gauge("preannotate_busy_workers", "Items this process is working on, read at scrape time.")
GPU_MEMORY_BYTES = Gauge(
    "preannotate_gpu_memory_bytes",
    "GPU memory in use, read at scrape time through NVML (nvidia-ml-py, if installed): this process's, or, where"
    " NVML does not list this process (a container's pid), the used memory of the GPUs it can see. Without NVML,"
    " what torch has allocated (when torch is loaded). Unset on CPU-only hosts.",
)


def job_finished(status: str) -> None:
    """Count a job that just reached its final status (the store calls it once per job)."""
    JOBS_FINISHED.labels(status=status).inc()


class QueueHealth:
    """The Redis queue's health (``RedisJobStore.queue_stats``) as of the last scrape, as gauges.

    A collector rather than plain gauges, so a series that is unknown is absent, not a misleading 0: all of them
    with the SQLite store (no stream) or while Redis is unreachable, and the lag when Redis cannot tell it.
    """

    _GAUGES = (
        ("lag", "preannotate_queue_lag", "Stream entries not yet delivered to any worker (KEDA scales on this)."),
        ("pending", "preannotate_queue_pending", "Stream entries delivered to a worker and not yet acknowledged."),
        ("delayed", "preannotate_queue_delayed_retries", "Items waiting out a retry backoff before re-entering."),
        ("dead", "preannotate_queue_dead_letters", "Entries in the dead-letter stream (failed for good)."),
    )

    def __init__(self) -> None:
        self._stats: Mapping[str, int | None] = {}

    def update(self, stats: Mapping[str, int | None] | None) -> None:
        self._stats = dict(stats or {})

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        for key, name, documentation in self._GAUGES:
            value = stats.get(key)
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=value)


QUEUE_HEALTH = QueueHealth()
REGISTRY.register(QUEUE_HEALTH)

_nvml_lock = threading.Lock()
_nvml: Any = None  # the initialised pynvml module; False once it proved unusable (not installed, no driver)


def _nvml_module() -> Any:
    global _nvml
    with _nvml_lock:
        if _nvml is None:
            try:
                module = importlib.import_module("pynvml")  # nvidia-ml-py: optional, never a dependency
                module.nvmlInit()
            except Exception:  # ImportError, or NVMLError: no driver library, no GPU
                _nvml = False
            else:
                _nvml = module
        return _nvml or None


def _nvml_used_bytes() -> int | None:
    nvml = _nvml_module()
    if nvml is None:
        return None
    try:
        devices = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        if not devices:
            return None
        pid = os.getpid()
        mine = [
            p.usedGpuMemory or 0
            for device in devices
            for p in nvml.nvmlDeviceGetComputeRunningProcesses(device)
            if p.pid == pid
        ]
        if mine:
            return int(sum(mine))
        # NVML reports host pids, so a container never finds its own; but it lists only the container's GPUs.
        return int(sum(nvml.nvmlDeviceGetMemoryInfo(device).used for device in devices))
    except Exception:  # NVMLError: a GPU lost, a driver reloaded; the gauge keeps its last value
        return None


def gpu_memory_bytes() -> int | None:
    """GPU memory in use (see ``GPU_MEMORY_BYTES``), or None when nothing can tell."""
    used = _nvml_used_bytes()
    if used is not None:
        return used
    # ONNX Runtime's CUDA memory is invisible to torch: torch only when NVML is missing, and only if a torch
    # model already imported it (never import it here).
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated())
    return None


def observe_scrape(*, queue_depth: int, busy_workers: int, queue_stats: Mapping[str, int | None] | None = None) -> None:
    """Refresh the gauges that are read rather than counted; ``queue_stats`` from ``RedisJobStore.queue_stats``
    (None: no such store, or it is unreachable)."""
    QUEUE_DEPTH.set(queue_depth)
    BUSY_WORKERS.set(busy_workers)
    QUEUE_HEALTH.update(queue_stats)
    used = gpu_memory_bytes()
    if used is not None:
        GPU_MEMORY_BYTES.set(used)
