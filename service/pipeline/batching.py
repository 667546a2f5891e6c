"""Dynamic batching across callers: every request for one model goes through one queue and one thread.

Same two knobs as Triton, Ray Serve and LitServe: a batch closes when it holds ``max_batch_size`` requests or
``max_wait_ms`` after its first request arrived, whichever comes first. On CPU use 1 and 0 (batching loses
there, performance.md §4); on a GPU 16-32 and 5-20 ms (§5).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from models.base import Detector
from models.errors import DeviceOutOfMemoryError, ModelError
from models.oom import BatchCeiling, run_splitting_on_oom
from models.types import Detections, RGBImage
from service import metrics
from service.errors import ErrorCode, PreannotateError, from_model_error

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _Request:
    image: RGBImage
    threshold: float
    deadline: float | None  # time.monotonic() seconds
    enqueued_at: float
    future: Future[Detections] = field(default_factory=Future)


class DynamicBatcher(Detector):
    """All concurrent callers for one model share it: /v1/predict requests and job frames.

    It is a ``Detector`` itself, so code written for one (the flow, ``warmup``) takes it
    unchanged. The wrapped detector is used from the batcher's thread only and is not closed by
    ``close``: its owner closes it after the batcher.

    Attributes:
        info: the wrapped detector's.
        name: the ``model`` label of this batcher's metrics.
        max_batch_size: the current ceiling; lowered for good when a batch runs out of device memory.
    """

    def __init__(self, detector: Detector, *, max_batch_size: int, max_wait_ms: float, name: str | None = None) -> None:
        if not isinstance(detector, Detector):
            raise TypeError(f"detector must be a Detector, got {type(detector).__name__}")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        if not (math.isfinite(max_wait_ms) and max_wait_ms >= 0):
            raise ValueError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")
        if name is not None and not name.strip():
            raise ValueError("name must not be blank")
        self.info = detector.info
        self.name = name or detector.info.name
        self._ceiling = BatchCeiling(max_batch_size, name=self.name)
        self._detector = detector
        self._max_wait_s = max_wait_ms / 1000
        self._pending: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._m_batch_size = metrics.BATCH_SIZE.labels(model=self.name)
        self._m_inference = metrics.INFERENCE_SECONDS.labels(model=self.name)
        self._m_queue_wait = metrics.QUEUE_WAIT_SECONDS.labels(model=self.name)
        self._m_frames = metrics.FRAMES_PROCESSED.labels(model=self.name)
        self._m_oom = metrics.DEVICE_OOM.labels(model=self.name)
        self._m_deadline = metrics.DEADLINE_EXCEEDED.labels(model=self.name)

    @property
    def max_batch_size(self) -> int:
        """The current ceiling; lowered for good when a batch runs out of device memory."""
        return self._ceiling.size

    @property
    def max_wait_ms(self) -> float:
        """How long a batch waits for company."""
        return self._max_wait_s * 1000

    @property
    def detector(self) -> Detector:
        """The wrapped detector (its owner closes it after the batcher)."""
        return self._detector

    def start(self) -> None:
        """Start the thread that runs the model."""
        with self._cond:
            if self._closed or self._thread is not None:
                raise RuntimeError(f"batcher {self.name} was already started")
            self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.name}", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking work, fail queued requests with NOT_READY, let the running batch finish, join."""
        with self._cond:
            self._closed = True
            queued = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        live = [request for request in queued if request.future.set_running_or_notify_cancel()]
        self._fail(live, PreannotateError(ErrorCode.NOT_READY, f"model {self.name} is shutting down"))
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("batcher %s: a model call was still running after %.1f s", self.name, timeout_s)

    def submit(self, image: RGBImage, *, threshold: float, deadline: float | None = None) -> Future[Detections]:
        """Queue one frame.

        Args:
            image: (H, W, 3) uint8 RGB.
            threshold: keep boxes scoring >= this, in [0, 1].
            deadline: ``time.monotonic()`` after which the frame is dropped instead of run; None = no limit.

        Returns:
            A future with the frame's detections, or a PreannotateError (DEADLINE_EXCEEDED,
            DEVICE_OUT_OF_MEMORY, NOT_READY, INTERNAL or the model's own code).

        Raises:
            ValueError: a bad image or threshold (checked here so it cannot fail a shared batch).
            PreannotateError: NOT_READY when the batcher is not started or is closed.
        """
        _check_input(image, threshold)
        return self._enqueue([_Request(image, threshold, deadline, time.monotonic())])[0]

    def detect(self, images: Sequence[RGBImage], *, threshold: float) -> list[Detections]:
        """Submit every frame, wait for all, return them in input order (the ``Detector`` contract)."""
        if not images:
            return []
        for image in images:
            _check_input(image, threshold)
        now = time.monotonic()
        futures = self._enqueue([_Request(image, threshold, None, now) for image in images])
        return [future.result() for future in futures]

    async def detect_async(self, image: RGBImage, *, threshold: float, timeout_s: float | None) -> Detections:
        """Detect on one frame from an event loop without blocking a thread; for HTTP routes.

        Raises:
            PreannotateError: DEADLINE_EXCEEDED when no result came within ``timeout_s``, or as ``submit``.
        """
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s!r}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        future = asyncio.wrap_future(self.submit(image, threshold=threshold, deadline=deadline))
        try:
            # On timeout wait_for cancels the future, and a request still queued is then never run.
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self._m_deadline.inc()
            raise PreannotateError(
                ErrorCode.DEADLINE_EXCEEDED, f"model {self.name} did not answer within {timeout_s:g} s"
            ) from None

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        return self.detect(images, threshold=threshold)

    def _enqueue(self, requests: list[_Request]) -> list[Future[Detections]]:
        with self._cond:
            if self._thread is None or self._closed:
                raise PreannotateError(ErrorCode.NOT_READY, f"model {self.name} is not running")
            self._pending.extend(requests)
            # The loop waits either for a first request or for a full batch; wake it only then.
            if len(self._pending) == len(requests) or len(self._pending) >= self.max_batch_size:
                self._cond.notify()
        return [request.future for request in requests]

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            try:
                self._run(batch)
            except Exception:  # a bug here must not kill the thread and strand every later caller
                log.exception("batcher %s failed on a batch of %d", self.name, len(batch))
                unfinished = [request for request in batch if not request.future.done()]
                self._fail(unfinished, PreannotateError(ErrorCode.INTERNAL, "internal error"))

    def _next_batch(self) -> list[_Request] | None:
        """Wait for a batch; None once closed. Expired and cancelled requests are taken but not returned."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            # The window counts from the first request's arrival, not from when the loop got free: a
            # request that already waited behind a long model call is not held back any further.
            flush_at = self._pending[0].enqueued_at + self._max_wait_s
            while len(self._pending) < self.max_batch_size and not self._closed:
                remaining = flush_at - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None
            now = time.monotonic()
            batch: list[_Request] = []
            expired: list[_Request] = []
            while self._pending and len(batch) < self.max_batch_size:
                request = self._pending.popleft()
                if not request.future.set_running_or_notify_cancel():
                    continue  # the caller gave up (async timeout, client gone)
                late = request.deadline is not None and request.deadline <= now
                (expired if late else batch).append(request)
        if expired:
            self._m_deadline.inc(len(expired))
            message = f"the deadline passed before model {self.name} could run the frame"
            self._fail(expired, PreannotateError(ErrorCode.DEADLINE_EXCEEDED, message))
        return batch

    def _run(self, batch: list[_Request]) -> None:
        started = time.monotonic()
        for request in batch:
            self._m_queue_wait.observe(started - request.enqueued_at)
        # The split-and-retry every caller of a detector shares (the flow's infer stage uses it too); it
        # lowers self._ceiling, which the queue reads for the next batches.
        run_splitting_on_oom(
            batch,
            self._infer_or_fail,
            self._ceiling,
            on_oom=lambda _: self._m_oom.inc(),
            fail_one=lambda request, error: self._fail([request], from_model_error(error)),
        )

    def _infer_or_fail(self, batch: Sequence[_Request]) -> None:
        """Run ``batch``; any error but device OOM (which splits it) fails just this batch."""
        try:
            self._infer(batch)
        except DeviceOutOfMemoryError:
            raise
        except Exception as exc:
            self._fail(batch, self._to_error(exc))

    def _infer(self, batch: Sequence[_Request]) -> None:
        # One call at the lowest threshold serves everyone; each result is then cut to its own threshold.
        # Exact for threshold-then-greedy-NMS post-processing: boxes below a threshold never suppress
        # boxes above it.
        threshold = min(request.threshold for request in batch)
        started = time.monotonic()
        results = self._detector.detect([request.image for request in batch], threshold=threshold)
        elapsed = time.monotonic() - started
        if len(results) != len(batch):
            raise RuntimeError(f"{type(self._detector).__name__} returned {len(results)} results for {len(batch)}")
        self._m_inference.observe(elapsed)
        self._m_batch_size.observe(len(batch))
        self._m_frames.inc(len(batch))
        for request, dets in zip(batch, results, strict=True):
            keep = dets if request.threshold == threshold else dets[dets.confidence >= request.threshold]
            request.future.set_result(keep)

    def _to_error(self, exc: Exception) -> PreannotateError:
        if isinstance(exc, PreannotateError):
            return exc
        if isinstance(exc, ModelError):
            return from_model_error(exc)
        # The stack goes to the log only: messages reach API clients.
        log.error("model %s failed on a batch", self.name, exc_info=exc)
        return PreannotateError(ErrorCode.INTERNAL, f"model {self.name} failed; see the server log")

    @staticmethod
    def _fail(requests: Sequence[_Request], error: PreannotateError) -> None:
        for request in requests:
            # A fresh exception per future: callers on different threads raise it concurrently.
            request.future.set_exception(PreannotateError(error.code, error.message))


def _check_input(image: RGBImage, threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
