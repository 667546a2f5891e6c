"""`/v1/predict` throughput and latency, dynamic batching on vs off, same model, one run.

Two real `preannotate serve` processes on loopback (identical but for the batcher's knobs) take the
same requests at concurrency 1, 8 and 32, interleaved. On a CPU, batching is expected to lose (the
model is compute-bound at batch 1); on a GPU it is the main lever.

    python -m benchmarks.bench_serve [--requests 96] [--max-batch 16] [--max-wait-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import skimage.data

from benchmarks.common import machine_info, write_results
from tests.integration.servers import TOKEN, Server

CONCURRENCY = (1, 8, 32)


async def _load(url: str, body: bytes, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            start = time.perf_counter()
            response = await client.post("/v1/predict", files={"file": body})
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300, limits=limits
    ) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "requests": requests,
        "throughput_rps": requests / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "wall_s": wall,
    }


def _batch_stats(server: Server) -> dict[str, float]:
    with server.client() as client:
        text = client.get("/metrics").text

    def sample(name: str) -> float:
        line = next(line for line in text.splitlines() if line.startswith(name))
        return float(line.split()[-1])

    count = sample("preannotate_batch_size_count")
    return {"model_calls": count, "mean_batch_size": sample("preannotate_batch_size_sum") / max(1.0, count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level and server")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--model", default="builtin:centerface")
    args = parser.parse_args()

    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    body = cv2.imencode(".jpg", cv2.resize(image, (320, 320)))[1].tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        common = {"PREANNOTATE_MODEL": args.model, "PREANNOTATE_WORKERS": "0"}
        servers = {
            "batching": Server(
                db_path=Path(tmp) / "on.db",
                env={
                    **common,
                    "PREANNOTATE_MAX_BATCH_SIZE": str(args.max_batch),
                    "PREANNOTATE_MAX_WAIT_MS": str(args.max_wait_ms),
                },
            ),
            "no_batching": Server(
                db_path=Path(tmp) / "off.db",
                env={**common, "PREANNOTATE_MAX_BATCH_SIZE": "1", "PREANNOTATE_MAX_WAIT_MS": "0"},
            ),
        }
        results: dict[str, Any] = {}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():  # warm both: first requests pay for lazy allocations
                asyncio.run(_load(server.url, body, 8, 8))
            for concurrency in CONCURRENCY:
                for name, server in servers.items():
                    stats = asyncio.run(_load(server.url, body, args.requests, concurrency))
                    results.setdefault(f"c{concurrency}", {})[name] = stats
                row = results[f"c{concurrency}"]
                ratio = row["batching"]["throughput_rps"] / row["no_batching"]["throughput_rps"]
                row["throughput_ratio_batching_over_off"] = ratio
                print(
                    f"concurrency {concurrency:>2}: batching {row['batching']['throughput_rps']:.1f} req/s "
                    f"(p50 {row['batching']['p50_ms']:.0f} ms, p95 {row['batching']['p95_ms']:.0f} ms) vs off "
                    f"{row['no_batching']['throughput_rps']:.1f} req/s (p50 {row['no_batching']['p50_ms']:.0f} ms, "
                    f"p95 {row['no_batching']['p95_ms']:.0f} ms) -> {ratio:.2f}x",
                    flush=True,
                )
            batching = {name: _batch_stats(server) for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
    print(
        f"mean batch size: {batching['batching']['mean_batch_size']:.2f} with batching, "
        f"{batching['no_batching']['mean_batch_size']:.2f} without"
    )
    payload = {
        "benchmark": "serve",
        "baseline": "the same server with dynamic batching disabled (max batch 1, no wait)",
        "model": args.model,
        "image": "skimage astronaut resized to 320x320, JPEG, multipart upload",
        "max_batch_size": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "machine": machine_info(),
        "results": results,
        "batches": batching,
    }
    print(f"results: {write_results('serve', payload)}")


if __name__ == "__main__":
    main()
