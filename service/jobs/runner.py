"""One job item end to end: fetch each slot -> sample frames -> detect through the batcher -> track."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TypedDict
from urllib.parse import urlsplit, urlunsplit

from models.base import Segmenter
from service.backends.base import PushJson
from service.errors import PreannotateError, error_with_paths_shown
from service.loaded_models import LoadedModel
from service.pipeline.fetch import Fetcher
from service.pipeline.flow import (
    FinishItem,
    FlowOptions,
    ItemOutput,
    detector_sampling,
    options_filter,
    run_flow,
    track_stage,
)
from service.pipeline.frames import Frame, FrameResult, SlotMeta
from service.pipeline.media import ItemSpec, PdfReader, SlotSpec, open_slot
from service.pipeline.options import DecoderChoice, MediaLimits, SamplingOptions
from service.pipeline.predictions import ItemPredictions, item_predictions_to_json
from service.pipeline.readers import SlotReader
from service.pipeline.run import FrameDetector
from service.pipeline.tracks import TrackerOptions, needs_appearance
from service.queue.store import Lease
from service.spec.requests import ItemIn, SlotIn

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], bool]
"""``(frames_done, frames_planned) -> keep going``; False stops the item (cancelled or lease lost)."""


class ItemWarningJson(TypedDict):
    """A file of the item that did not decode (in full): the item succeeded with the rest."""

    code: str
    message: str


class ItemStoppedError(Exception):
    """The job was cancelled or the lease was lost: stop and store nothing."""


@dataclass(frozen=True, slots=True)
class ItemRun:
    """A finished item: its predictions (tracked, at the precision the store keeps) and what did not decode."""

    predictions: ItemPredictions
    warnings: tuple[PreannotateError, ...] = ()

    def to_json(self, pushes: Sequence[PushJson] | None = None) -> Mapping[str, object]:
        """The item's result as the job store keeps it, with the records of its pushes when it had destinations."""
        item_json = item_predictions_to_json(self.predictions)
        if self.warnings:  # the item succeeds with what decoded; the result says what did not
            item_json["warnings"] = [ItemWarningJson(code=w.code.code, message=w.message) for w in self.warnings]
        if pushes is not None:
            item_json["pushes"] = list(pushes)
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
    decode_workers: int = 2,
    queue_frames: int = 16,
    segmenter: Segmenter | None = None,
) -> ItemRun:
    """Preannotate every slot of the leased item, its video detections linked by ``tracker`` (the job's:
    ``JobSpec.tracker``; None: untracked); raises PreannotateError (naming the file; INVALID_ARGUMENT for a class
    the model lacks) or ItemStoppedError. ``segmenter`` (the job's, ``JobSpec.segmenter``) masks each kept box."""
    spec = lease.spec
    options = FlowOptions(
        threshold=spec.threshold,
        classes=spec.classes,
        class_thresholds=spec.class_thresholds,
        decode_workers=decode_workers,
        queue_frames=queue_frames,
        describe_boxes=needs_appearance(tracker),
    )
    sampling = detector_sampling(
        SamplingOptions(fps=spec.fps, mode=spec.sampling, decoder=decoder),
        model.info,
        None if segmenter is None else segmenter.info,
    )
    # Before the model is touched: a job submitted before its model was published had its classes checked by no one.
    options_filter(model.info.class_names, options)
    output = predict_item(
        lease.item,
        model.batcher,
        options,
        sampling,
        fetcher=fetcher,
        limits=limits,
        work_dir=work_dir,
        on_progress=on_progress,
        # Tracked once, in the flow, on what the store keeps: pushes and `GET /result` read these ids.
        finish_item=track_stage(tracker, stored_precision=True),
        segmenter=segmenter,
    )
    predictions = ItemPredictions(name=output.name, slots=output.slots, frames=output.frames)
    return ItemRun(predictions, output.warnings)


def predict_item(
    item: ItemIn,
    detector: FrameDetector,
    options: FlowOptions,
    sampling: SamplingOptions,
    *,
    fetcher: Fetcher,
    limits: MediaLimits,
    work_dir: Path | None,
    on_progress: ProgressCallback,
    finish_item: FinishItem | None = None,
    segmenter: Segmenter | None = None,
) -> ItemOutput:
    """One job item through the flow: each slot fetched to scratch on a decode worker, then decoded and detected
    with the other slots'; ``finish_item`` runs on the result (the track stage). Errors and warnings name the URL,
    never the scratch file."""
    # Before any fetch: a job submitted before its model was published had its class names checked by no one.
    options_filter(detector.info.class_names, options)
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
        (output,) = run_flow(
            [spec],
            detector,
            options,
            open_slot=open_fetched,
            on_slot=on_slot,
            on_frame=on_frame,
            finish_item=finish_item,
            segmenter=segmenter,
        )
    except PreannotateError as exc:
        raise error_with_paths_shown(exc, by_path) from exc
    return replace(output, warnings=tuple(error_with_paths_shown(w, by_path) for w in output.warnings))


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
