"""Encord pushes of items that finish at about the same time, gathered into one bundle of label rows.

Why not the model batcher (``service.pipeline.batching.DynamicBatcher``)? Both collect until full or until a
wait ends, but little else is shared: the batcher runs its batches on its own thread, per frame, with deadlines and
out-of-memory splitting, while a bundle is written by the first caller's thread, closes early once every worker
thread is inside (no one else can come), must never hold one row twice, and must not be saved while another bundle
saving the same row is in flight (saves replace whole rows). A generic primitive serving both would carry all of
those hooks; this module keeps the bundle rules in one place instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from service.backends.base import EncordPushRecord
from service.backends.encord import EncordItemError, EncordPush, EncordPushResult
from service.backends.retry import BackendError, backend_error_to_preannotate
from service.convert.encord import EncordOntology
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError

log = logging.getLogger(__name__)

PushEach = Callable[[Sequence[EncordPush], ModelRef, EncordOntology], list[EncordPushResult | EncordItemError]]


@dataclass(slots=True)
class _Waiter:
    push: EncordPush
    done: threading.Event = field(default_factory=threading.Event)
    outcome: EncordPushResult | Exception | None = None
    rows: int = 0  # items in the bundle it was written with


@dataclass(slots=True)
class _Bundle:
    model: ModelRef
    ontology: EncordOntology
    deadline: float
    waiters: list[_Waiter] = field(default_factory=list)
    sealed: bool = False  # no one joins any more: full, or its writer took it

    def has(self, data_hash: str) -> bool:
        return any(w.push.data_hash == data_hash for w in self.waiters)


class EncordBundler:
    """Gathers the Encord pushes of items that finish at about the same time into one bundle: 3 or 4 requests
    (list, create and/or get, save) for up to ``bundle_size`` rows instead of 3 per item.

    The first push of a bundle writes it: it waits up to ``wait_s`` for others to join, less once the bundle is
    full or every worker thread is in here (no one else can come), then writes it on its own thread and hands
    every push of the bundle its own outcome. A failed request fails exactly the items of its bundle; an item
    the project lacks or whose row it does not fit fails alone. Pushes of one model share bundles; one row is
    never in two bundles being written at once (saves replace whole rows: the second waits for the first).
    """

    def __init__(
        self,
        push_each: PushEach,
        *,
        bundle_size: int,
        wait_s: float,
        concurrency: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._push_each = push_each
        self._size, self._wait_s, self._concurrency, self._clock = bundle_size, wait_s, concurrency, clock
        self._cond = threading.Condition()
        self._open: dict[ModelRef, _Bundle] = {}
        self._inside = 0  # threads in push(): waiting to join, writing, or waiting for their bundle's writer
        self._writing: set[str] = set()  # data hashes of the bundles being written

    def push(self, push: EncordPush, model: ModelRef, ontology: EncordOntology) -> EncordPushRecord:
        """Write one item's row with whatever bundle it joins; returns its record, raises PreannotateError."""
        waiter = _Waiter(push)
        with self._cond:
            self._inside += 1
            bundle = self._open.get(model)
            writes = bundle is None or bundle.has(push.data_hash)
            if writes:
                if bundle is not None:  # the same row twice in one save would lose one: it goes in the next
                    self._seal(bundle)
                bundle = _Bundle(model, ontology, deadline=self._clock() + self._wait_s)
                self._open[model] = bundle
            assert bundle is not None
            bundle.waiters.append(waiter)
            if len(bundle.waiters) >= self._size:
                self._seal(bundle)
            if self._inside >= self._concurrency:
                for other in list(self._open.values()):
                    self._seal(other)
            self._cond.notify_all()
            rows: set[str] = set()
            if writes:
                while not bundle.sealed and (left := bundle.deadline - self._clock()) > 0:
                    self._cond.wait(left)
                self._seal(bundle)
                # A save replaces the whole row: a row another bundle is saving now is read after that save.
                rows = {w.push.data_hash for w in bundle.waiters}
                while rows & self._writing:
                    self._cond.wait()
                self._writing |= rows
        try:
            if writes:
                self._write(bundle)
            else:
                waiter.done.wait()
        finally:
            with self._cond:
                self._inside -= 1
                self._writing -= rows
                self._cond.notify_all()
        return _outcome(waiter)

    def _seal(self, bundle: _Bundle) -> None:
        bundle.sealed = True
        if self._open.get(bundle.model) is bundle:
            del self._open[bundle.model]

    def _write(self, bundle: _Bundle) -> None:
        waiters = bundle.waiters  # sealed: no one appends any more
        outcomes: Sequence[EncordPushResult | Exception] = ()
        try:
            try:
                outcomes = self._push_each([w.push for w in waiters], bundle.model, bundle.ontology)
            except Exception as exc:  # whatever it is, every item of the bundle gets it as its answer
                log.exception("encord: writing a bundle of %d rows failed", len(waiters))
                outcomes = [exc] * len(waiters)
        finally:  # even on an interrupt: the waiting threads must never hang
            for waiter, outcome in zip(waiters, outcomes, strict=False):
                waiter.outcome, waiter.rows = outcome, len(waiters)
            for waiter in waiters:
                waiter.done.set()


def _outcome(waiter: _Waiter) -> EncordPushRecord:
    outcome = waiter.outcome
    if outcome is None:  # the writer died before answering (an interrupt)
        raise PreannotateError(ErrorCode.BACKEND_UNAVAILABLE, "encord: the bundle write was interrupted")
    if isinstance(outcome, Exception):
        raise push_error(outcome)
    return encord_record(outcome, waiter.rows)


def encord_record(result: EncordPushResult, rows: int) -> EncordPushRecord:
    """The record of one row saved in a bundle of ``rows`` items."""
    return EncordPushRecord(
        data_hash=result.data_hash, label_hash=result.label_hash, objects=result.stats.objects, bundle_items=rows
    )


def push_error(exc: Exception) -> PreannotateError:
    """A new error per item (one exception object must not be raised in several threads)."""
    if isinstance(exc, BackendError):
        return backend_error_to_preannotate(exc)
    if isinstance(exc, PreannotateError):
        return PreannotateError(exc.code, exc.message, retry_after_s=exc.retry_after_s)
    if isinstance(exc, ValueError):  # the item does not fit its label row (build_encord_label_row)
        return PreannotateError(ErrorCode.BACKEND_REJECTED, f"encord: {exc}")
    return PreannotateError(ErrorCode.INTERNAL, f"{type(exc).__name__} while pushing to Encord")
