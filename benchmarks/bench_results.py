"""Results at scale (issue 13): Redis memory per item and result fetch time, results in Redis (the baseline, as
before issue 13: ``P:result:<n>`` by value) vs results in object storage (``PREANNOTATE_RESULTS_URL``), one run.

    python -m benchmarks.bench_results [--items 1000] [--frames 3600] [--boxes 5]
                                       [--fetch-items 1000] [--stream-items 100]

Everything is real and on loopback: a ``redis-server``, an S3-compatible server (moto's server mode, a subprocess,
reached over HTTP by the same boto3 client users run against AWS or MinIO) and, for the HTTP parts, a distributed
``preannotate serve``. Items are settled through ``RedisJobStore.complete`` exactly as a worker settles them.

1. **Redis memory**: a job of ``--items`` items, each completed with the result of a 1-hour video sampled at 1 fps
   with ``--boxes`` tracked boxes a frame; ``INFO memory`` ``used_memory`` before the job (after a 2-item warm-up
   job: the scripts, the stream and its group are not per item) and after its last item, divided by the items.
   Also the worker's time to settle one item (serialise, compress and write it).
2. **Store read**: every result of that job read back the way ``GET /result`` reads them (``succeeded_items``,
   pages sized by ``PREANNOTATE_RESULT_PAGE_ITEMS`` and ``_PAGE_FRAMES``).
3. **GET /result**: ``GET /v1/jobs/{id}/result?format=coco`` of a ``--fetch-items`` job of image-sized results,
   and of a ``--stream-items`` job of 1-hour results, with the API process's peak RSS (``VmHWM``): the stream
   holds a page, never the job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import machine_info, write_results
from models.types import Detections
from service.api.auth import TokenAuth
from service.config import Settings
from service.jobs.result_stream import PageBudget, succeeded_items
from service.pipeline.frames import FrameInfo, FrameResult, MediaKind, SlotMeta
from service.pipeline.options import SamplingMode
from service.pipeline.predictions import ItemPredictions, item_predictions_to_json
from service.queue.redis_store import RedisJobStore
from service.queue.results import result_to_bytes
from service.queue.s3_results import S3ResultStore
from service.spec.job import JobSpec
from service.spec.requests import ItemIn
from tests.integration.servers import TOKEN, Server
from tests.redis_server import RedisServer
from tests.s3_server import MotoServer, boto3_client, client_env

TENANT = TokenAuth([TOKEN]).tenant_for(TOKEN)
_DEFAULTS = Settings.model_fields
BUDGET = PageBudget(_DEFAULTS["result_page_items"].default, _DEFAULTS["result_page_frames"].default)
MODES = ("redis", "s3")
_MIB = 1024 * 1024


def item_result(frames: int, boxes: int, media: MediaKind = MediaKind.VIDEO, seed: int = 0) -> dict[str, Any]:
    """An item's stored result (``item_predictions_to_json``): a 1920x1080 clip sampled at 1 fps with ``boxes``
    tracked boxes on every sampled frame, or (``MediaKind.IMAGE``) one photo with ``boxes`` boxes."""
    rng = np.random.default_rng(seed)
    video = media is MediaKind.VIDEO
    source = "https://media.example.com/clips/an-hour.mp4" if video else "https://media.example.com/a.jpg"
    slot = SlotMeta(
        "item", "0", media, (source,), 1920, 1080, 25.0 if video else None, frames * 25 if video else 1, frames,
        float(frames) if video else None,
    )  # fmt: skip
    out = []
    for i in range(frames):
        xy, wh = rng.uniform(0, 1700, (boxes, 2)), rng.uniform(20, 200, (boxes, 2))
        detections = Detections.from_arrays(
            np.hstack([xy, xy + wh]).astype(np.float32),
            rng.uniform(0.5, 1.0, boxes).astype(np.float32),
            np.zeros(boxes, np.int64),
            np.arange(boxes, dtype=np.int64) if video else None,
        )
        info = FrameInfo("item", "0", source, media, i * 25, float(i) if video else None, 1920, 1080)
        out.append(FrameResult(info, detections))
    return item_predictions_to_json(ItemPredictions(name="item", slots=(slot,), frames=tuple(out)))


def spec() -> JobSpec:
    return JobSpec(model="builtin:centerface", fps=1.0, sampling=SamplingMode.EXACT, threshold=0.5).pinned(
        "bench", ("face",)
    )


def fill_job(store: RedisJobStore, n: int, result: dict[str, Any], tag: str) -> tuple[str, list[float]]:
    """A job of ``n`` items, each leased and completed with ``result``; its id and each complete's seconds."""
    items = [
        ItemIn.model_validate({"name": f"{tag}-{i}", "slots": [{"url": f"s3://in/{tag}-{i}.mp4"}]}) for i in range(n)
    ]
    job, _ = store.create_job(tenant=TENANT, idem_key=f"bench:{tag}", spec=spec(), items=items)
    seconds = []
    while leases := store.lease("bench-worker", max_items=64, lease_s=600.0):
        for lease in leases:
            start = time.perf_counter()
            assert store.complete("bench-worker", lease.item_id, result)
            seconds.append(time.perf_counter() - start)
    return job.id, seconds


def used_memory(store: RedisJobStore) -> int:
    return int(store._r.info("memory")["used_memory"])


def read_all(store: RedisJobStore, job_id: str) -> tuple[int, float]:
    """Every succeeded item read as ``GET /result`` reads them, a page at a time; (items, seconds)."""
    start = time.perf_counter()
    items = succeeded_items(store, tenant=TENANT, job_id=job_id, budget=BUDGET)
    count = sum(1 for _ in items or ())
    return count, time.perf_counter() - start


def status_mib(pid: int, field: str) -> float:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``: the peak resident set), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fetch(server: Server, job_id: str) -> dict[str, float]:
    """``GET .../result?format=coco`` streamed to nowhere; seconds, bytes and the API's RSS before and at peak."""
    assert server.process is not None
    before = status_mib(server.process.pid, "VmRSS")
    start, size = time.perf_counter(), 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        httpx.Client(base_url=server.url, headers=headers, timeout=1800) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/result", params={"format": "coco"}) as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
    return {
        "seconds": time.perf_counter() - start,
        "mib": size / _MIB,
        "api_rss_before_mib": before,
        "api_peak_rss_mib": status_mib(server.process.pid, "VmHWM"),
    }


@contextmanager
def stores(redis_url: str, bucket_url: str | None) -> Iterator[RedisJobStore]:
    results = None if bucket_url is None else S3ResultStore(bucket_url, concurrency=16)
    store = RedisJobStore(redis_url, retention_s=None, results=results)
    try:
        yield store
    finally:
        store.close()
        if results is not None:
            results.close()


@contextmanager
def api(redis_url: str, moto: MotoServer, bucket_url: str | None, work: Path) -> Iterator[Server]:
    env = {"PREANNOTATE_QUEUE_URL": redis_url, "PREANNOTATE_WORKERS": "0", "PREANNOTATE_CPU_THREADS": "1"}
    if bucket_url is not None:
        env |= client_env(moto.endpoint) | {"PREANNOTATE_RESULTS_URL": bucket_url}
    server = Server(db_path=work / "unused.db", env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_mode(
    mode: str, args: argparse.Namespace, moto: MotoServer, work: Path, results: dict[str, dict[str, Any]]
) -> None:
    bucket_url = None
    if mode == "s3":
        bucket = f"bench-{int(time.time())}"
        boto3_client(moto.endpoint).create_bucket(Bucket=bucket)
        bucket_url = f"s3://{bucket}/results/"
    redis_server = RedisServer()
    redis_server.start()
    try:
        out: dict[str, Any] = {}
        with stores(redis_server.url, bucket_url) as store:
            hour = item_result(args.frames, args.boxes)
            out["result_json_bytes"] = len(json.dumps(hour, separators=(",", ":")))
            out["result_object_bytes"] = len(result_to_bytes(hour))
            fill_job(store, 2, hour, "warm-up")  # scripts loaded, the stream and its group made: not per item
            before = used_memory(store)
            job_id, complete_s = fill_job(store, args.items, hour, "hour")
            after = used_memory(store)
            out["redis_used_memory_before_bytes"] = before
            out["redis_used_memory_after_bytes"] = after
            out["redis_bytes_per_item"] = (after - before) / args.items
            out["complete_ms_median"] = statistics.median(complete_s) * 1000
            items, seconds = read_all(store, job_id)
            out["store_read"] = {"items": items, "seconds": seconds}
            print(
                f"{mode:5} redis {out['redis_bytes_per_item']:12,.0f} B/item   complete "
                f"{out['complete_ms_median']:6.1f} ms/item   read {items} x 1-hour results {seconds:6.1f} s",
                flush=True,
            )
            fetch_job, _ = fill_job(store, args.fetch_items, item_result(1, args.boxes, MediaKind.IMAGE), "image")
            stream_job, _ = fill_job(store, args.stream_items, hour, "stream") if args.stream_items else ("", [])
        with api(redis_server.url, moto, bucket_url, work) as server:
            out["get_result_images"] = fetch(server, fetch_job) | {"items": args.fetch_items}
            print(f"{mode:5} GET /result {args.fetch_items} image items: {out['get_result_images']}", flush=True)
            if stream_job:
                out["get_result_hours"] = fetch(server, stream_job) | {"items": args.stream_items}
                print(f"{mode:5} GET /result {args.stream_items} 1-hour items: {out['get_result_hours']}", flush=True)
        results[mode] = out
    finally:
        redis_server.cleanup()


def ratio(results: dict[str, dict[str, Any]], pick: Callable[[dict[str, Any]], float]) -> float:
    return pick(results["redis"]) / pick(results["s3"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000, help="items of 1-hour results in the memory job")
    parser.add_argument("--frames", type=int, default=3600, help="sampled frames per 1-hour result (1 fps)")
    parser.add_argument("--boxes", type=int, default=5, help="boxes per frame")
    parser.add_argument("--fetch-items", type=int, default=1000, help="image items in the GET /result job")
    parser.add_argument("--stream-items", type=int, default=100, help="1-hour items in the second GET /result job")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="pa-bench-results-") as tmp:
        moto = MotoServer()
        moto.start()
        os.environ.update(client_env(moto.endpoint))  # the store's boto3 client finds the server as a MinIO
        try:
            for mode in MODES:
                run_mode(mode, args, moto, Path(tmp), results)
        finally:
            moto.cleanup()
    summary = {
        "redis_memory_ratio": ratio(results, lambda r: r["redis_bytes_per_item"]),
        "store_read_ratio": ratio(results, lambda r: r["store_read"]["seconds"]),
        "get_result_images_ratio": ratio(results, lambda r: r["get_result_images"]["seconds"]),
    }
    print(
        f"Redis bytes per item: {results['redis']['redis_bytes_per_item']:,.0f} in Redis -> "
        f"{results['s3']['redis_bytes_per_item']:,.0f} with object storage ({summary['redis_memory_ratio']:,.0f}x less)"
    )
    print(
        f"read {args.items} 1-hour results: Redis {results['redis']['store_read']['seconds']:.1f} s, "
        f"object storage {results['s3']['store_read']['seconds']:.1f} s (ratio {summary['store_read_ratio']:.2f})"
    )
    path = write_results(
        "results",
        {
            "machine": machine_info(),
            "args": vars(args),
            "page_budget": {"max_items": BUDGET.max_items, "max_frames": BUDGET.max_frames},
            "modes": results,
            "summary": summary,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
