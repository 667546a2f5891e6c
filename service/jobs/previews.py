"""Pictures of a stored job item: one frame with its predictions drawn, or a slot's contact sheet, as JPEG.

The pixels come from the item's media, fetched as its worker fetched them (the submitted URLs, query strings and
tool credentials included, through the same fetcher and rules) into a ``MediaCache``, and decoded again at just
the frames needed (``SamplingOptions.frame_indices``). The detections are the stored ones.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from models.types import RGBImage
from service.backends.media import BackendMediaFetcher
from service.config import Settings
from service.errors import ErrorCode, PreannotateError, with_paths_shown
from service.jobs.media_cache import MediaCache
from service.jobs.runner import display_source
from service.pipeline.fetch import Fetcher, redact_url
from service.pipeline.frames import FrameResult, MediaKind
from service.pipeline.media import SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.predictions import frame_result_to_json, item_predictions_from_json
from service.queue.store import ItemState, JobStore
from service.render.annotate import draw_detections
from service.render.encode import fit_within, rgb_to_jpeg
from service.render.previews import PreviewOptions, frame_caption
from service.render.sheet import contact_sheet, pick_evenly
from service.spec.requests import ItemIn, SlotIn

# A fetch or decode failure of media that once worked: the job's input is gone or changed, not the request's fault
_MEDIA_GONE = frozenset({ErrorCode.INPUT_NOT_FOUND, ErrorCode.FETCH_DENIED, ErrorCode.URL_NOT_ALLOWED})
_PASSED_ON = frozenset(
    {
        ErrorCode.FETCH_FAILED,
        ErrorCode.FETCH_TIMEOUT,
        ErrorCode.MISSING_DEPENDENCY,
        ErrorCode.BACKEND_NOT_CONFIGURED,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.PREVIEW_UNAVAILABLE,
        ErrorCode.MEDIA_UNREACHABLE,
    }
)


@dataclass(frozen=True, slots=True)
class StoredSlot:
    """One slot of a succeeded item: what was submitted for it, and its stored frames in time order."""

    job_id: str
    position: int
    item: str
    spec: SlotIn
    media: MediaKind | None  # None: a slot the worker stored no metadata for
    frames: tuple[FrameResult, ...]
    class_names: tuple[str, ...]

    def frame(self, frame_index: int | None) -> FrameResult:
        """The stored frame of that source frame index (None: the first), else ``frame_not_found``."""
        if not self.frames:
            raise PreannotateError(
                ErrorCode.PREVIEW_UNAVAILABLE, f"{self.item}/{self.spec.name}: the slot has no frames (a PDF)"
            )
        if frame_index is None:
            return self.frames[0]
        for frame in self.frames:
            if frame.info.frame_index == frame_index:
                return frame
        raise PreannotateError(
            ErrorCode.FRAME_NOT_FOUND,
            f"{self.item}/{self.spec.name}: no stored frame {frame_index} (GET .../frames lists the slot's frames)",
        )

    def etag(self, kind: str, frames: tuple[FrameResult, ...], options: PreviewOptions) -> str:
        """Changes with the frames' stored detections and the drawing options, not with the request."""
        digest = hashlib.sha256(f"{kind}\0{self.job_id}\0{self.position}\0{self.spec.name}\0{options}".encode())
        for frame in frames:
            digest.update(json.dumps(frame_result_to_json(frame), sort_keys=True).encode())
        return f'"{digest.hexdigest()[:32]}"'


@dataclass(frozen=True, slots=True)
class StoredItem:
    """A succeeded item as previews need it: its submitted form, its slots with their stored frames, and the
    warnings its run stored (a file that decoded only in part), as ``(code, message)``."""

    spec: ItemIn
    slots: list[StoredSlot]
    warnings: tuple[tuple[str, str], ...] = ()


STORED_ITEMS = 16
"""Succeeded items kept parsed (by tenant, job and position): paging through a long video's frames must not read
and parse its whole stored result (thousands of frames; an object-store read in Redis mode) for each one."""


class StoredItems:
    """A small LRU of parsed succeeded items; thread-safe. A succeeded item's result never changes, but its
    job may be deleted or expire: each hit still asks the store that the job exists (a cheap read)."""

    def __init__(self, max_items: int = STORED_ITEMS) -> None:
        self._max = max_items
        self._items: OrderedDict[tuple[str, str, int], StoredItem] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: JobStore, *, tenant: str, job_id: str, position: int) -> StoredItem:
        """As ``stored_item``, parsed once per item while it stays among the most recently used."""
        key = (tenant, job_id, position)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
        if found is None:
            found = stored_item(store, tenant=tenant, job_id=job_id, position=position)
            with self._lock:
                self._items[key] = found
                while len(self._items) > self._max:
                    self._items.popitem(last=False)
        elif store.get_job(tenant=tenant, job_id=job_id) is None:
            with self._lock:
                self._items.pop(key, None)
            raise PreannotateError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}")
        return found


def stored_item(store: JobStore, *, tenant: str, job_id: str, position: int) -> StoredItem:
    """A succeeded item of this tenant's job: its submitted form and its slots with their stored frames.

    Raises:
        PreannotateError: ``job_not_found``, ``item_not_found``, ``item_not_finished`` (queued or running),
            ``preview_unavailable`` (failed or cancelled), ``result_missing``.
    """
    rows = store.results(tenant=tenant, job_id=job_id, after=position - 1, limit=1) if position >= 0 else []
    if rows is None:
        raise PreannotateError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}")
    job = store.get_job(tenant=tenant, job_id=job_id)
    if job is None:
        raise PreannotateError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}")
    if not rows or rows[0].position != position:
        raise PreannotateError(ErrorCode.ITEM_NOT_FOUND, f"job {job_id} has no item at position {position}")
    row = rows[0]
    if row.state in (ItemState.QUEUED, ItemState.LEASED):
        raise PreannotateError(ErrorCode.ITEM_NOT_FINISHED, f"item {row.name} is {row.state.value}; try again later")
    if row.state is not ItemState.SUCCEEDED:
        raise PreannotateError(ErrorCode.PREVIEW_UNAVAILABLE, f"item {row.name} {row.state.value}: no predictions")
    if row.result is None:
        raise PreannotateError(ErrorCode.RESULT_MISSING, f"item {row.name}: its stored result is gone")
    spec = store.item_spec(tenant=tenant, job_id=job_id, position=position)
    if spec is None:
        raise PreannotateError(ErrorCode.PREVIEW_UNAVAILABLE, f"item {row.name}: its stored form cannot be read")
    predictions = item_predictions_from_json(row.name, row.result)
    media = {meta.slot: meta.media for meta in predictions.slots}
    names = job.spec.class_names or ()
    slots = [
        StoredSlot(
            job_id,
            position,
            row.name,
            slot,
            media.get(slot.name),
            tuple(predictions.frames_of_slot(slot.name)),
            names,
        )
        for slot in spec.slots
    ]
    return StoredItem(spec, slots, _stored_warnings(row.result))


def _stored_warnings(result: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The run's warnings kept with the result (``runner.ItemWarningJson``); anything else there is skipped."""
    listed = result.get("warnings")
    if not isinstance(listed, list):
        return ()
    return tuple(
        (str(w["code"]), str(w["message"])) for w in listed if isinstance(w, dict) and "code" in w and "message" in w
    )


def slot_named(slots: list[StoredSlot], name: str | None) -> StoredSlot:
    """The slot called ``name`` (None: the item's first), else ``slot_not_found``."""
    if name is None:
        return slots[0]
    for slot in slots:
        if slot.spec.name == name:
            return slot
    known = ", ".join(slot.spec.name for slot in slots)
    raise PreannotateError(ErrorCode.SLOT_NOT_FOUND, f"{slots[0].item} has no slot {name!r} (it has: {known})")


class PreviewRenderer:
    """Draws stored frames on their media (blocking: call it off the event loop)."""

    def __init__(self, cache: MediaCache, limits: MediaLimits, options: PreviewOptions) -> None:
        self.cache = cache
        self.limits = limits
        self.options = options

    def frame_jpeg(self, tenant: str, slot: StoredSlot, frame: FrameResult, deadline_s: float) -> bytes:
        """The frame, scaled to ``options.longest_px``, its detections drawn."""
        (picture,) = self._decode(tenant, slot, (frame,), self.options.longest_px, deadline_s)
        return rgb_to_jpeg(self._drawn(picture, slot, frame))

    def sheet_jpeg(self, tenant: str, slot: StoredSlot, deadline_s: float) -> tuple[bytes, tuple[FrameResult, ...]]:
        """The slot's contact sheet (at most ``options.sheet_tiles`` frames, spread evenly) and its frames."""
        chosen = self.sheet_frames(slot)
        if not chosen:
            slot.frame(None)  # raises: nothing to show
        pictures = self._decode(tenant, slot, chosen, self.options.tile_width_px, deadline_s)
        tiles = [self._drawn(picture, slot, frame) for frame, picture in zip(chosen, pictures, strict=True)]
        sheet = contact_sheet(
            tiles, captions=[frame_caption(f.info) for f in chosen], tile_width_px=self.options.tile_width_px
        )
        return rgb_to_jpeg(sheet), chosen

    def sheet_frames(self, slot: StoredSlot) -> tuple[FrameResult, ...]:
        return tuple(slot.frames[i] for i in pick_evenly(len(slot.frames), self.options.sheet_tiles))

    def _drawn(self, picture: RGBImage, slot: StoredSlot, frame: FrameResult) -> RGBImage:
        source_wh = (frame.info.width, frame.info.height)
        return draw_detections(picture, frame.detections, slot.class_names, source_wh=source_wh)

    def _decode(
        self, tenant: str, slot: StoredSlot, frames: tuple[FrameResult, ...], longest_px: int, deadline_s: float
    ) -> list[RGBImage]:
        """The frames' pixels scaled to ``longest_px``, each file fetched (or found in the cache) once and decoded
        at just those frames; each frame is scaled as it is decoded, so only the small copies are held."""
        wanted = [_source_url(slot, frame) for frame in frames]
        images: dict[tuple[str, int], RGBImage] = {}
        for url in dict.fromkeys(u for u, _ in wanted):
            indices = tuple(sorted({i for u, i in wanted if u == url}))
            decoded = self._decode_file(tenant, slot, url, indices, longest_px, deadline_s)
            images.update({(url, i): image for i, image in decoded})
        return [images[key] for key in wanted]

    def _decode_file(
        self, tenant: str, slot: StoredSlot, url: str, indices: tuple[int, ...], longest_px: int, deadline_s: float
    ) -> list[tuple[int, RGBImage]]:
        local: list[Path] = []
        try:
            with self.cache.local(tenant, url, deadline_s=deadline_s) as path:
                local.append(path)
                _check_deadline(deadline_s, redact_url(url))
                return self._read(slot, path, url, indices, longest_px, deadline_s)
        except PreannotateError as exc:
            raise _shown(exc, local, url) from None

    def _read(
        self, slot: StoredSlot, path: Path, url: str, indices: tuple[int, ...], longest_px: int, deadline_s: float
    ) -> list[tuple[int, RGBImage]]:
        sampling = SamplingOptions(frame_indices=indices)
        reader = open_slot(slot.item, SlotSpec(slot.spec.name, (path,)), sampling, self.limits)
        got: list[tuple[int, RGBImage]] = []
        try:
            for frame in reader:
                if frame.info.frame_index in indices:
                    got.append((frame.info.frame_index, fit_within(frame.image, longest_px)))
                _check_deadline(deadline_s, redact_url(url))
        finally:
            reader.close()
        missing = sorted(set(indices) - {i for i, _ in got})
        if missing:
            raise PreannotateError(ErrorCode.PREVIEW_UNAVAILABLE, f"{path}: frames {missing} no longer decode")
        return got


def _source_url(slot: StoredSlot, frame: FrameResult) -> tuple[str, int]:
    """The submitted URL a stored frame's pixels came from, and the frame's index in that file."""
    urls = slot.spec.all_urls()
    if len(urls) == 1:
        return urls[0], frame.info.frame_index
    where = f"{frame.info.item}/{frame.info.slot}"
    if frame.info.media is MediaKind.SEQUENCE:  # frame N is the slot's Nth URL (query strings may be all that differ)
        if frame.info.frame_index < len(urls):
            return urls[frame.info.frame_index], 0
        raise PreannotateError(
            ErrorCode.PREVIEW_UNAVAILABLE, f"{where}: frame {frame.info.frame_index} of {len(urls)} URLs"
        )
    # A DICOM series, in anatomical order: each file is named (query string dropped) in ``source``
    named = [url for url in urls if display_source(url) == frame.info.source]
    if len(named) == 1:
        return named[0], 0
    why = "several URLs of the slot are" if named else "no URL of the slot is"
    raise PreannotateError(ErrorCode.PREVIEW_UNAVAILABLE, f"{where}: {why} {frame.info.source}")


def _shown(exc: PreannotateError, local: list[Path], url: str) -> PreannotateError:
    """A fetch or decode error as a preview's: the URL named (redacted), never the cache's file; the job's media
    gone -> ``media_unreachable``, not decoding as the job saw them -> ``preview_unavailable``."""
    message = with_paths_shown(exc.message, {str(path): redact_url(url) for path in local})
    if exc.code in _PASSED_ON:
        return PreannotateError(exc.code, message, retry_after_s=exc.retry_after_s)
    if exc.code in _MEDIA_GONE:
        return PreannotateError(ErrorCode.MEDIA_UNREACHABLE, f"the job's media cannot be fetched any more: {message}")
    return PreannotateError(ErrorCode.PREVIEW_UNAVAILABLE, f"the job's media no longer decode as it did: {message}")


def _check_deadline(deadline_s: float, what: str) -> None:
    if time.monotonic() > deadline_s:
        raise PreannotateError(ErrorCode.DEADLINE_EXCEEDED, f"{what}: the preview took too long")


_T = TypeVar("_T")
JPEG_CACHE_BYTES = 32 * 1024**2
"""Rendered previews kept in memory (by tenant and ETag): a page showing an item twice draws it once."""


class _JpegCache:
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def put(self, key: tuple[str, str], jpeg: bytes) -> None:
        with self._lock:
            self._items[key] = jpeg
            total = sum(map(len, self._items.values()))
            while total > self._max and self._items:
                total -= len(self._items.popitem(last=False)[1])


class PreviewService:
    """What the preview routes share: the media cache, the renderer, a limit on previews drawn at once
    (``PREANNOTATE_PREVIEW_CONCURRENCY``) and their deadline (``PREANNOTATE_PREVIEW_TIMEOUT_S``).

    Make it inside the event loop (it holds an anyio limiter). ``fetcher`` defaults to the workers' kind
    (``BackendMediaFetcher``): the same URL rules, size limits and tool credentials the job was fetched with.
    """

    def __init__(self, settings: Settings, fetcher: Fetcher | None = None) -> None:
        self._own_fetcher = BackendMediaFetcher(settings) if fetcher is None else None
        self.cache = MediaCache(
            fetcher or self._own_fetcher or Fetcher(settings.fetch_policy()),
            max_bytes=settings.preview_cache_mb * 1024**2,
            work_dir=settings.work_dir,
        )
        options = PreviewOptions.from_settings(settings)
        self.renderer = PreviewRenderer(self.cache, settings.media_limits(), options)
        self.jpegs = _JpegCache(JPEG_CACHE_BYTES)
        self.items = StoredItems()
        self.timeout_s = settings.preview_timeout_s
        self._limiter = anyio.CapacityLimiter(settings.preview_concurrency)

    async def render(self, work: Callable[[float], _T], what: str) -> _T:
        """``work(deadline_s)`` on a thread of its own limiter, a 504 past the deadline.

        Never abandoned: the limiter's token goes back only when the thread is done, so at most
        ``PREANNOTATE_PREVIEW_CONCURRENCY`` fetch and decode at once, timeouts or not. The thread gets the
        deadline (its fetch stops there, its decoding at the next frame), so the 504 is barely late."""
        deadline_s = time.monotonic() + self.timeout_s
        late = PreannotateError(
            ErrorCode.DEADLINE_EXCEEDED, f"{what}: not drawn in {self.timeout_s:g} s (PREANNOTATE_PREVIEW_TIMEOUT_S)"
        )
        with anyio.move_on_after(self.timeout_s) as scope:  # also ends a wait for the limiter
            try:
                return await anyio.to_thread.run_sync(work, deadline_s, limiter=self._limiter)
            except PreannotateError:
                if time.monotonic() > deadline_s:  # the fetch's own timeout, cut short by the deadline
                    raise late from None
                raise
        assert scope.cancelled_caught
        raise late

    def close(self) -> None:
        self.cache.close()
        if self._own_fetcher is not None:
            self._own_fetcher.close()
