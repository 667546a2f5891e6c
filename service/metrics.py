"""The process's Prometheus metrics, created once at import in the default registry.

Every name starts with ``preannotate_``. Labels are low-cardinality only (a model's short name):
never job, item or request ids, URLs or file names, which would grow the series without bound.
"""

from __future__ import annotations

import sys

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

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
QUEUE_DEPTH = Gauge("preannotate_queue_depth", "Job items queued or leased (all tenants), read at scrape time.")
BUSY_WORKERS = Gauge("preannotate_busy_workers", "Items this process is working on, read at scrape time.")
GPU_MEMORY_BYTES = Gauge("preannotate_gpu_memory_bytes", "CUDA memory allocated by torch, read at scrape time.")


def observe_scrape(*, queue_depth: int, busy_workers: int) -> None:
    """Refresh the gauges that are read rather than counted."""
    QUEUE_DEPTH.set(queue_depth)
    BUSY_WORKERS.set(busy_workers)
    torch = sys.modules.get("torch")  # only if a torch model is loaded: never import it here
    if torch is not None and torch.cuda.is_available():
        GPU_MEMORY_BYTES.set(torch.cuda.memory_allocated())
