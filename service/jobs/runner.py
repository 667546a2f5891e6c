"""One job item end to end: fetch each slot -> sample frames -> detect through the batcher -> result JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from service.config import Settings
from service.convert.tracks import TrackerOptions
from service.errors import PreannotateError
from service.jobs.results import item_result_to_json
from service.jobs.store import Lease
from service.loaded_models import LoadedModel
from service.pipeline.fetch import Fetcher
from service.pipeline.flow import FlowOptions, ItemOutput, run_flow
from service.pipeline.frames import Frame, FrameResult, SlotMeta
from service.pipeline.media import ItemSpec, PdfReader, SlotSpec, open_slot
from service.pipeline.options import DecoderChoice, MediaLimits, SamplingMode, SamplingOptions
from service.pipeline.readers import SlotReader
from service.pipeline.run import class_filter
from service.spec.job import JobSpec
from service.spec.requests import ItemIn, SlotIn, TracksIn

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], bool]
"""``(frames_done, frames_planned) -> keep going``; False stops the item (cancelled or lease lost)."""


class ItemStoppedError(Exception):
    """The job was cancelled or the lease was lost: stop and store nothing."""


@dataclass(frozen=True, slots=True)
class JobParams:
    """A job's stored request, parsed: what every item of the job shares."""

    model: str
    fps: float
    sampling: SamplingMode
    threshold: float
    classes: list[str] | None

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> JobParams:
        return cls(
            model=request["model"],
            fps=float(request["fps"]),
            sampling=SamplingMode(request["sampling"]),
            threshold=float(request["threshold"]),
            classes=request.get("classes"),
        )


def pinned_tracks(tracks: TracksIn | None, settings: Settings) -> dict[str, Any]:
    """The tracker stored with a job (its request's ``tracks``): the body's fields, else the settings'.

    Pinned at submit so every item of the job, on any worker, is linked the same way.
    """
    tracks = tracks or TracksIn()
    return {
        "enabled": settings.tracks if tracks.enabled is None else tracks.enabled,
        "iou": settings.track_iou if tracks.iou is None else tracks.iou,
        "max_gap": settings.track_max_gap if tracks.max_gap is None else tracks.max_gap,
        "min_length": settings.track_min_length if tracks.min_length is None else tracks.min_length,
    }


def job_tracker(request: Mapping[str, Any], settings: Settings) -> TrackerOptions | None:
    """The tracker a job's items are linked with, None when off. A job stored before trackers were pinned
    has none in its request: it takes this process's settings."""
    pinned = request.get("tracks")
    if not isinstance(pinned, Mapping):
        return settings.tracker_options()
    if not pinned.get("enabled", True):
        return None
    return TrackerOptions(
        iou_gate=float(pinned["iou"]), max_gap=int(pinned["max_gap"]), min_length=int(pinned["min_length"])
    )


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
    decode_workers: int = 2,
    queue_frames: int = 16,
) -> dict[str, Any]:
    """Preannotate every slot of the leased item; raises PreannotateError (naming the file; INVALID_ARGUMENT for a
    class the model lacks) or ItemStoppedError."""
    spec = JobSpec.from_stored(lease.request)
    # Before any fetch: a job submitted before its model was published had its class names checked by no one.
    class_filter(model.info.class_names, spec.classes)
    item = ItemIn.model_validate(lease.item)
    options = FlowOptions(
        threshold=spec.threshold,
        classes=spec.classes,
        decode_workers=decode_workers,
        queue_frames=queue_frames,
    )
    sampling = SamplingOptions(fps=spec.fps, mode=spec.sampling, decoder=decoder)
    output = predict_item(
        item, model, options, sampling, fetcher=fetcher, limits=limits, work_dir=work_dir, on_progress=on_progress
    )
    item_json = item_result_to_json(list(output.slots), list(output.frames))
    if output.warnings:  # the item succeeds with what decoded; the result says what did not
        item_json["warnings"] = [{"code": w.code.code, "message": w.message} for w in output.warnings]
    return item_json


def predict_item(
    item: ItemIn,
    model: LoadedModel,
    options: FlowOptions,
    sampling: SamplingOptions,
    *,
    fetcher: Fetcher,
    limits: MediaLimits,
    work_dir: Path | None,
    on_progress: ProgressCallback,
) -> ItemOutput:
    """One job item through the flow: each slot fetched to scratch on a decode worker, then decoded and detected
    with the other slots'. Errors and warnings name the URL, never the scratch file."""
    class_filter(model.info.class_names, options.classes)  # before any fetch
    by_path: dict[str, str] = {}  # scratch path -> URL shown, filled by the workers as they fetch
    slots = {slot.name: slot for slot in item.slots}
    counts = {"done": 0, "planned": 0}

    def open_fetched(name: str, spec: SlotSpec) -> SlotReader:
        return _FetchedSlot.open(name, slots[spec.name], fetcher, sampling, limits, work_dir, by_path)

    def on_slot(meta: SlotMeta) -> None:
        counts["planned"] += meta.planned_frames
        if not on_progress(counts["done"], counts["planned"]):
            raise ItemStoppedError

    def on_frame(_: FrameResult) -> None:
        counts["done"] += 1
        if not on_progress(counts["done"], max(counts["planned"], counts["done"])):
            raise ItemStoppedError

    spec = ItemSpec(item.name, tuple(SlotSpec(slot.name, ()) for slot in item.slots))
    try:
        (output,) = run_flow([spec], model.batcher, options, open_slot=open_fetched, on_slot=on_slot, on_frame=on_frame)
    except PreannotateError as exc:
        raise _renamed(exc, by_path) from exc
    return replace(output, warnings=tuple(_renamed(w, by_path) for w in output.warnings))


class _FetchedSlot:
    """A slot's reader over the files fetched for it: frames and metadata name the URLs (``display_source``), and
    closing it removes its scratch directory."""

    def __init__(
        self,
        reader: SlotReader,
        scratch: TemporaryDirectory[str] | None,
        by_path: Mapping[str, str],
        sources: tuple[str, ...],
    ) -> None:
        self._reader = reader
        self._scratch = scratch
        self._by_path = by_path
        self._first = sources[0]
        # The reader may reorder a DICOM series (anatomical order): list the URLs the same way.
        ordered = tuple(by_path[f] for f in reader.meta.source_files if f in by_path)
        self.meta = replace(reader.meta, source_files=ordered if len(ordered) == len(sources) else sources)

    @classmethod
    def open(
        cls,
        item: str,
        slot: SlotIn,
        fetcher: Fetcher,
        sampling: SamplingOptions,
        limits: MediaLimits,
        work_dir: Path | None,
        by_path: dict[str, str],
    ) -> _FetchedSlot:
        urls = slot.all_urls()
        sources = tuple(display_source(u) for u in urls)
        if slot.type == "pdf":
            # Listed with the item so converters can show it; never fetched or decoded.
            return cls(PdfReader(item, slot.name, Path(sources[0])), None, by_path, sources)
        scratch = TemporaryDirectory(dir=work_dir, prefix="preannotate-")
        try:
            paths = tuple(fetcher.fetch(url, Path(scratch.name)).path for url in urls)
            by_path.update({str(p): s for p, s in zip(paths, sources, strict=True)})
            return cls(open_slot(item, SlotSpec(slot.name, paths), sampling, limits), scratch, by_path, sources)
        except BaseException:
            scratch.cleanup()
            raise

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._reader:
            source = self._by_path.get(frame.info.source, self._first)
            yield replace(frame, info=replace(frame.info, source=source))

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            if self._scratch is not None:
                self._scratch.cleanup()


def _renamed(exc: PreannotateError, by_path: Mapping[str, str]) -> PreannotateError:
    message = exc.message
    for path in sorted(by_path, key=len, reverse=True):  # a longer path first, should one contain another
        message = message.replace(path, by_path[path])
    if message == exc.message:
        return exc
    return PreannotateError(exc.code, message, retry_after_s=exc.retry_after_s)
