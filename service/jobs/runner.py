"""One job item end to end: fetch each slot -> sample frames -> detect through the batcher -> track."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from service.errors import PreannotateError
from service.loaded_models import LoadedModel
from service.pipeline.fetch import Fetcher
from service.pipeline.frames import Frame, FrameResult, SlotMeta
from service.pipeline.media import PdfReader, SlotSpec, open_slot
from service.pipeline.options import DecoderChoice, MediaLimits, SamplingOptions
from service.pipeline.predictions import ItemPredictions, at_stored_precision, item_predictions_to_json
from service.pipeline.readers import SlotReader
from service.pipeline.run import class_filter, detect_frames, keep_partial
from service.pipeline.tracks import TrackerOptions, assign_tracker_ids
from service.queue.store import Lease

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], bool]
"""``(frames_done, frames_planned) -> keep going``; False stops the item (cancelled or lease lost)."""


class ItemStoppedError(Exception):
    """The job was cancelled or the lease was lost: stop and store nothing."""


@dataclass(frozen=True, slots=True)
class ItemRun:
    """A finished item: its predictions (tracked, at the precision the store keeps) and what did not decode."""

    predictions: ItemPredictions
    warnings: tuple[PreannotateError, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The item's result as the job store keeps it."""
        item_json = item_predictions_to_json(self.predictions)
        if self.warnings:  # the item succeeds with what decoded; the result says what did not
            item_json["warnings"] = [{"code": w.code.code, "message": w.message} for w in self.warnings]
        return item_json


def display_source(url: str) -> str:
    """The URL without query string or credentials: names the file in results, leaks no signature."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def run_item(
    lease: Lease,
    *,
    model: LoadedModel,
    fetcher: Fetcher,
    limits: MediaLimits,
    work_dir: Path | None,
    on_progress: ProgressCallback,
    decoder: DecoderChoice = DecoderChoice.PYAV,
    tracker: TrackerOptions | None = None,
) -> ItemRun:
    """Preannotate every slot of the leased item, its video detections linked by ``tracker`` (the job's:
    ``JobSpec.tracker``; None: untracked); raises PreannotateError (naming the file; INVALID_ARGUMENT for a class
    the model lacks) or ItemStoppedError."""
    spec = lease.spec
    classes = None if spec.classes is None else list(spec.classes)
    # Before any fetch: a job submitted before its model was published had its class names checked by no one.
    class_filter(model.info.class_names, classes)
    sampling = SamplingOptions(fps=spec.fps, mode=spec.sampling, decoder=decoder)
    name = lease.item.name
    slots: list[SlotMeta] = []
    frames: list[FrameResult] = []
    warnings: list[PreannotateError] = []
    planned = 0
    for slot in lease.item.slots:
        urls = slot.all_urls()
        sources = tuple(display_source(u) for u in urls)
        if slot.type == "pdf":
            # Listed with the item so converters can show it; never fetched or decoded.
            slots.append(replace(PdfReader(name, slot.name, Path(sources[0])).meta, source_files=sources))
            continue
        with TemporaryDirectory(dir=work_dir, prefix="preannotate-") as tmp:
            paths = tuple(fetcher.fetch(url, Path(tmp)).path for url in urls)
            by_path = {str(p): s for p, s in zip(paths, sources, strict=True)}
            with _named_by_url(by_path, warnings):
                reader = open_slot(name, SlotSpec(slot.name, paths), sampling, limits)
                try:
                    # The reader may reorder a DICOM series (anatomical order): list the URLs the same way.
                    ordered = tuple(by_path[f] for f in reader.meta.source_files if f in by_path)
                    meta = replace(reader.meta, source_files=ordered if len(ordered) == len(sources) else sources)
                    slots.append(meta)
                    planned += meta.planned_frames
                    if not on_progress(len(frames), planned):
                        raise ItemStoppedError
                    renamed = keep_partial(_with_sources(reader, by_path, sources[0]), warnings)
                    for result in detect_frames(
                        renamed,
                        model.batcher,
                        threshold=spec.threshold,
                        classes=classes,
                        batch_size=model.batcher.max_batch_size,
                    ):
                        frames.append(result)
                        if not on_progress(len(frames), max(planned, len(frames))):
                            raise ItemStoppedError
                finally:
                    reader.close()
    # Tracked once, here, on what the store keeps: pushes and `GET /result` read these ids, never re-link.
    tracked = assign_tracker_ids([at_stored_precision(f) for f in frames], tracker)
    return ItemRun(ItemPredictions(name=name, slots=tuple(slots), frames=tuple(tracked)), tuple(warnings))


@contextmanager
def _named_by_url(by_path: Mapping[str, str], warnings: list[PreannotateError]) -> Iterator[None]:
    """Errors raised and warnings added inside name the URL (``display_source``) instead of the scratch file it
    was fetched to: the worker's temporary paths mean nothing to a client."""
    first = len(warnings)
    try:
        yield
    except PreannotateError as exc:
        raise _renamed(exc, by_path) from exc
    finally:
        warnings[first:] = [_renamed(w, by_path) for w in warnings[first:]]


def _renamed(exc: PreannotateError, by_path: Mapping[str, str]) -> PreannotateError:
    message = exc.message
    for path in sorted(by_path, key=len, reverse=True):  # a longer path first, should one contain another
        message = message.replace(path, by_path[path])
    if message == exc.message:
        return exc
    return PreannotateError(exc.code, message, retry_after_s=exc.retry_after_s)


def _with_sources(reader: SlotReader, by_path: Mapping[str, str], first: str) -> Iterator[Frame]:
    """Frames re-labelled with the URL they came from (``by_path``: scratch path -> URL) instead of the scratch
    file's path; ``first`` for a frame that names no fetched file."""
    for frame in reader:
        source = by_path.get(frame.info.source, first)
        yield replace(frame, info=replace(frame.info, source=source))
