"""``GET /v1/jobs/{id}/result`` as bytes written item by item: a 10,000-item job never sits in memory.

The document is the one ``job_result`` builds (the same ``ResultLayout``, so the same conversions); only the
serialising differs. The first array is written as its items come; later arrays (COCO's ``annotations``, built
from the same items in the same pass) go to a spool file, in memory up to ``SPOOL_MEMORY_BYTES``, then on disk,
and are copied out after it. The skipped lists are small and come last.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any

from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.jobs.outputs import DEFAULT_MASKS, ItemEntries, MaskStyles, ResultLayout, Skipped, listed, result_layout
from service.queue.store import ItemResult, ItemState, JobRecord, JobStore

log = logging.getLogger(__name__)

SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
_COPY_BYTES = 64 * 1024
# What Starlette's JSONResponse writes: the bytes the in-memory route served.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def job_result_chunks(
    fmt: str, job: JobRecord, items: Iterable[ItemResult], settings: Settings, masks: MaskStyles = DEFAULT_MASKS
) -> Iterator[bytes]:
    """``job_result(fmt, job, items, settings)`` as JSON bytes, pulling ``items`` one at a time; a chunk per item
    (none for an item that adds nothing to the first array), so the caller holds one item, never the job.

    The layout is made now (an unreadable Encord ontology fails here, before a response has started)."""
    return _written(result_layout(fmt, job, settings, masks), items)


@dataclass(frozen=True, slots=True)
class PageBudget:
    """How many items a page of ``succeeded_items`` reads: at most ``max_items``, and about ``max_frames`` sampled
    frames' worth (what a decoded result's memory grows with: a photo is one frame, an hour of video at 1 fps is
    3,600). The first page, whose items' sizes are unknown, is ``first_items``; each next one is sized on the
    frames per item the last one had, so a job of photos reads hundreds of items per round trip while a job of
    long videos reads a few."""

    max_items: int
    max_frames: int
    first_items: int = 8

    def first(self) -> int:
        return min(self.first_items, self.max_items)

    def after(self, page: Sequence[ItemResult]) -> int:
        frames = sum(len(item.result.get("frames", ())) for item in page if item.result is not None)
        per_item = max(1.0, frames / max(1, len(page)))
        return max(1, min(self.max_items, int(self.max_frames / per_item)))


def succeeded_items(store: JobStore, *, tenant: str, job_id: str, budget: PageBudget) -> Iterator[ItemResult] | None:
    """The job's succeeded items in job order, read from ``store`` a page at a time (``budget``) as they are
    pulled; None for an unknown job. The first page is read now, so a store outage is the caller's error to answer;
    an item is let go once pulled, so at most one page is held."""

    def read(after: int, limit: int) -> list[ItemResult] | None:
        return store.results(tenant=tenant, job_id=job_id, states={ItemState.SUCCEEDED}, after=after, limit=limit)

    limit = budget.first()
    first = read(-1, limit)
    if first is None:
        return None

    def pages(page: list[ItemResult], limit: int) -> Iterator[ItemResult]:
        while page:
            last, full, limit = page[-1].position, len(page) == limit, budget.after(page)
            queue = deque(page)
            del page  # the deque alone holds the page: an item is let go once pulled
            while queue:
                yield queue.popleft()
            if not full:
                return
            more = read(last, limit)
            if more is None:  # deleted meanwhile: cut the body short rather than end a valid, partial document
                raise PreannotateError(ErrorCode.JOB_NOT_FOUND, f"job {job_id} was removed while its result was read")
            page = more

    return pages(first, limit)


def coalesced(chunks: Iterable[bytes], min_bytes: int = _COPY_BYTES) -> Iterator[bytes]:
    """``chunks`` joined into pieces of at least ``min_bytes`` (the last may be shorter): Starlette hands each piece
    of a sync iterator through a worker thread, and a job of 10,000 small items would make 10,000 such trips."""
    pending: list[bytes] = []
    size = 0
    try:
        for chunk in chunks:
            pending.append(chunk)
            size += len(chunk)
            if size >= min_bytes:
                yield b"".join(pending)
                pending, size = [], 0
    except Exception:
        if pending:  # what was written before a failure still goes out
            yield b"".join(pending)
        raise
    if pending:
        yield b"".join(pending)


def logged_to_end(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    """``chunks``; a failure once the body has started (its status can no longer say so) is logged and raised
    again, so the server drops the connection before the body's end: the client sees an incomplete response (an
    incomplete chunked read), never a download that looks whole."""
    try:
        yield from chunks
    except Exception as exc:
        log.error("%s: the result stream failed after its response started; the body is cut short: %s", what, exc)
        raise


def _written(layout: ResultLayout, items: Iterable[ItemResult]) -> Iterator[bytes]:
    first, *later = layout.arrays
    with ExitStack() as stack:
        spools = [stack.enter_context(tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES)) for _ in later]
        counts = [0] * len(layout.arrays)
        skipped: list[Skipped] = []
        slots: list[Skipped] = []
        yield _open(layout.head, first)
        for entries in layout.entries(items):
            chunk = _entries(_array(entries, 0), counts, 0)
            for i, spool in enumerate(spools, start=1):
                spool.write(_entries(_array(entries, i), counts, i))
            skipped.extend([] if entries.skipped is None else [entries.skipped])
            slots.extend(entries.skipped_slots)
            if chunk:
                yield chunk
        yield b"]"
        for name, spool in zip(later, spools, strict=True):
            yield b"," + _key(name) + b"["
            yield from _copied(spool)
            yield b"]"
    yield _close(layout, slots, skipped)


def _array(entries: ItemEntries, index: int) -> Sequence[Any]:
    return entries.arrays[index] if index < len(entries.arrays) else ()


def _entries(values: Sequence[Any], counts: list[int], index: int) -> bytes:
    """``values`` as array elements, after the ``counts[index]`` already written (a comma before all but the first)."""
    if not values:
        return b""
    text = ",".join(_ENCODER.encode(v) for v in values)
    comma = "," if counts[index] else ""
    counts[index] += len(values)
    return (comma + text).encode()


def _key(name: str) -> bytes:
    return (_ENCODER.encode(name) + ":").encode()


def _open(head: dict[str, Any], first: str) -> bytes:
    fields = "".join(f"{_ENCODER.encode(k)}:{_ENCODER.encode(v)}," for k, v in head.items())
    return ("{" + fields).encode() + _key(first) + b"["


def _close(layout: ResultLayout, slots: list[Skipped], skipped: list[Skipped]) -> bytes:
    tail: dict[str, Any] = dict(layout.tail)
    if layout.lists_slots:
        tail["skipped_slots"] = listed(slots)
    tail["skipped_items"] = listed(skipped)
    return b"".join(b"," + _key(k) + _ENCODER.encode(v).encode() for k, v in tail.items()) + b"}"


def _copied(spool: IO[bytes]) -> Iterator[bytes]:
    spool.seek(0)
    while block := spool.read(_COPY_BYTES):
        yield block
