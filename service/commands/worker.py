"""``preannotate worker``: a (GPU) worker process for distributed mode, fed by Redis Streams.

It loads the configured models, publishes them for the API pods (which never load models in this
mode), and runs a ``WorkerPool`` against the Redis store from ``PREANNOTATE_QUEUE_URL``. On SIGTERM or
SIGINT it stops leasing, lets in-flight items finish until ``PREANNOTATE_WORKER_GRACE_S`` is nearly spent,
hands back what is still running (another worker takes it at once, the attempt uncounted) and exits 0.
A Redis outage is ridden out (see ``ResilientStore``); a crash (kill -9) is covered by lease expiry.

With ``--port`` it serves probes for Kubernetes: ``/healthz`` (alive), ``/readyz`` (models loaded, queue
reachable, not draining) and ``/metrics`` (Prometheus), unauthenticated: bind it to the pod network only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.backends.media import BackendMediaFetcher
from service.backends.registry import Backends
from service.commands.common import load_settings
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.jobs.worker import WorkerConfig, WorkerPool
from service.loaded_models import ModelRegistry
from service.metrics import observe_scrape
from service.queue.redis_store import RedisJobStore
from service.queue.resilient_store import ResilientStore
from service.queue.stores import open_redis_store
from service.remote_models import PublishedModel

log = logging.getLogger(__name__)

_STOP_MARGIN_S = 1.0  # of the grace period, kept for releasing items and closing connections
_CONSUMER_SWEEP_S = 300.0
_CONSUMER_IDLE_S = 3600.0  # crashed workers' consumers hold nothing after a reclaim; forget them after this


@dataclass
class _State:
    store: RedisJobStore
    stopping: threading.Event = field(default_factory=threading.Event)
    models: list[str] = field(default_factory=list)  # set once loaded and warm
    pool: WorkerPool | None = None


def worker_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.queue_url is None:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            "`preannotate worker` needs PREANNOTATE_QUEUE_URL, e.g. redis://redis:6379/0 (the API must use the same)",
        )
    concurrency = getattr(args, "concurrency", None) or settings.workers
    if concurrency < 1:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a worker needs PREANNOTATE_WORKERS (or --concurrency) >= 1")
    state = _State(open_redis_store(settings))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        state.stopping.set()

    # Before loading models, so a SIGTERM during a slow load still ends in a clean exit.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    probes = (
        _start_probes(state, getattr(args, "host", "127.0.0.1"), args.port) if getattr(args, "port", None) else None
    )
    try:
        models = ModelRegistry.load(settings)
        try:
            if not state.stopping.is_set():
                _serve(settings, state, models, concurrency)
        finally:
            models.close()
    finally:
        if probes is not None:
            probes.shutdown()
        state.store.close()
    return 0


def _serve(settings: Settings, state: _State, models: ModelRegistry, concurrency: int) -> None:
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    store = state.store
    resilient = ResilientStore(store, state.stopping, give_up_s=max(settings.lease_s, 30.0))
    published = [PublishedModel(m.spec, m.info, m.batcher.max_batch_size) for m in models.all()]
    publisher = threading.Thread(
        target=_publish, args=(state, worker_id, published, settings.model_ttl_s), name="publisher", daemon=True
    )
    backends = Backends(settings, concurrency=concurrency)  # all threads in one Encord bundle: write it at once
    fetcher = BackendMediaFetcher(settings)  # plain URLs, and the label-studio+/v7+ ones webhook jobs carry
    state.pool = WorkerPool(
        resilient,
        models,
        fetcher,
        WorkerConfig(
            concurrency=concurrency,
            lease_s=settings.lease_s,
            heartbeat_s=settings.heartbeat_s,
            limits=settings.media_limits(),
            work_dir=settings.work_dir,
            decoder=settings.decoder,
            default_tracker=settings.tracker_options(),
            decode_workers=settings.decode_workers,
            prefetch_frames=settings.prefetch_frames,
        ),
        backends,
    )
    publisher.start()
    state.pool.start()
    state.models = [m.spec for m in published]
    log.info("worker %s: %d threads on %s", worker_id, concurrency, ", ".join(state.models))
    try:
        while not state.stopping.wait(0.5):
            pass
        _drain(settings.worker_grace_s, state.pool, resilient)
    finally:
        try:
            store.forget_worker(worker_id, sorted(resilient.consumers))
        except PreannotateError as exc:  # its publication lapses with the TTL anyway
            log.info("could not unregister: %s", exc)
        backends.close()
        fetcher.close()


def _drain(grace_s: float, pool: WorkerPool, resilient: ResilientStore) -> None:
    """Stop leasing, give in-flight items the grace period, then hand back whatever still runs."""
    deadline = time.monotonic() + grace_s
    log.info("stopping: in-flight items get %.0f s", grace_s)
    # WorkerPool.stop may overrun its budget by a few seconds (it joins each thread after asking it to stop);
    # run it aside so the process still exits within the grace period.
    stopper = threading.Thread(target=pool.stop, args=(max(0.0, grace_s - 2 * _STOP_MARGIN_S),), daemon=True)
    stopper.start()
    stopper.join(timeout=max(0.0, deadline - time.monotonic() - _STOP_MARGIN_S))
    resilient.abort()
    released = resilient.release_held()
    log.info("stopped; %d unfinished items handed back", released)


def _publish(state: _State, worker_id: str, models: list[PublishedModel], ttl_s: float) -> None:
    """Refresh this worker's publication three times per TTL; sweep dead consumers now and then."""
    last_sweep = float("-inf")
    while True:
        try:
            state.store.publish_models(worker_id, models, ttl_s=ttl_s)
            if time.monotonic() - last_sweep > _CONSUMER_SWEEP_S:
                state.store.drop_idle_consumers(_CONSUMER_IDLE_S)
                last_sweep = time.monotonic()
        except PreannotateError as exc:  # Redis is down: the lease loop reports it; try again next round
            log.debug("publishing models failed: %s", exc)
        if state.stopping.wait(ttl_s / 3):
            return


def _start_probes(state: _State, host: str, port: int) -> ThreadingHTTPServer:
    class Probes(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, "application/json", json.dumps({"status": "ok"}).encode())
            elif path == "/readyz":
                status = (
                    "draining" if state.stopping.is_set()
                    else "loading" if not state.models
                    else "queue_unavailable" if not state.store.ping()
                    else "ready"
                )  # fmt: skip
                body = {"status": status, "models": state.models}
                self._send(200 if status == "ready" else 503, "application/json", json.dumps(body).encode())
            elif path == "/metrics":
                try:
                    depth, stats = state.store.depth(), state.store.queue_stats()
                except PreannotateError:
                    # The queue is unreachable: the depth gauge says so and the queue-health series vanish,
                    # rather than going stale.
                    depth, stats = -1, None
                busy = state.pool.busy if state.pool else 0
                observe_scrape(queue_depth=depth, busy_workers=busy, queue_stats=stats)
                self._send(200, CONTENT_TYPE_LATEST, generate_latest())
            else:
                self._send(404, "application/json", json.dumps({"status": "not_found"}).encode())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not worth a line
            pass

    try:
        server = ThreadingHTTPServer((host, port), Probes)
    except OSError as exc:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"cannot serve probes on {host}:{port}: {exc.strerror}"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
