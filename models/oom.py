"""Out-of-device-memory splitting: the one mechanism the CLI, jobs and the server's batcher share.

A batch that runs out of device memory is retried in halves, and the ceiling on later batches comes
down with it: the same model on frames of the same size would run out again. No frame is dropped;
only a frame that alone does not fit fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from models.errors import DeviceOutOfMemoryError
from models.types import Detections, RGBImage

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchCeiling:
    """The most frames one model call may take; only ever lowered, for the rest of the run.

    Attributes:
        name: the model, for the log line when the ceiling comes down.
    """

    def __init__(self, size: int, *, name: str) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch ceiling must be an integer >= 1, got {size!r}")
        self._size = size
        self.name = name

    @property
    def size(self) -> int:
        return self._size

    def lower(self, size: int, *, failed: int) -> None:
        """Lower the ceiling to ``size`` (never raises it) after a batch of ``failed`` frames ran out of memory."""
        if size < self._size:
            log.warning(
                "model %s: out of device memory on a batch of %d; max batch size %d -> %d",
                self.name,
                failed,
                self._size,
                size,
            )
            self._size = max(1, size)


def run_splitting_on_oom(
    items: Sequence[T],
    run: Callable[[Sequence[T]], None],
    ceiling: BatchCeiling,
    *,
    on_oom: Callable[[int], None] | None = None,
    fail_one: Callable[[T, DeviceOutOfMemoryError], None] | None = None,
) -> None:
    """Call ``run`` on consecutive chunks of ``items``, in order, each at most ``ceiling.size`` long.

    A chunk that raises DeviceOutOfMemoryError lowers the ceiling to half its length and is retried
    in chunks of the new ceiling; every item is run exactly once by a call that returned.

    Args:
        items: what to run, in order.
        run: runs one chunk and keeps its results (called again only for chunks it did not finish).
        ceiling: shared with later calls, which start at the lowered size.
        on_oom: called with the chunk length on every out-of-memory (metrics).
        fail_one: takes an item that alone ran out of memory; without it, that error is raised.

    Raises:
        DeviceOutOfMemoryError: a single item does not fit and ``fail_one`` is None.
        Exception: whatever ``run`` raises other than DeviceOutOfMemoryError, unchanged.
    """
    start = 0
    while start < len(items):
        chunk = items[start : start + ceiling.size]
        message = _oom_message(run, chunk)
        if message is None:
            start += len(chunk)
            continue
        if on_oom is not None:
            on_oom(len(chunk))
        if len(chunk) == 1:
            log.warning("model %s: out of device memory on a single frame", ceiling.name)
            error = DeviceOutOfMemoryError(message)
            if fail_one is None:
                raise error
            fail_one(chunk[0], error)
            start += 1
            continue
        ceiling.lower((len(chunk) + 1) // 2, failed=len(chunk))


def _oom_message(run: Callable[[Sequence[T]], None], chunk: Sequence[T]) -> str | None:
    """Run ``chunk``; the out-of-memory message, or None when it ran.

    Only the message leaves: the exception's traceback pins the failed call's frames, and with them
    its device tensors, so the retry must not start while it is alive.
    """
    try:
        run(chunk)
    except DeviceOutOfMemoryError as exc:
        return str(exc)
    return None


def detect_splitting_on_oom(
    detect: Callable[[Sequence[RGBImage]], list[Detections]],
    images: Sequence[RGBImage],
    ceiling: BatchCeiling,
) -> list[Detections]:
    """``detect(images)`` in chunks under ``ceiling``, split on device OOM; one result per image, in order.

    Raises:
        DeviceOutOfMemoryError: a single frame does not fit.
    """
    results: list[Detections] = []

    def run(chunk: Sequence[RGBImage]) -> None:
        out = detect(chunk)
        if len(out) != len(chunk):
            raise RuntimeError(f"the detector returned {len(out)} results for {len(chunk)} frames")
        results.extend(out)

    run_splitting_on_oom(images, run, ceiling)
    return results
