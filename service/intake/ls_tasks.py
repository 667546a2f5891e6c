"""One Label Studio task to its prediction: the objects its labeling config boxes, fetched, decoded, detected,
tracked and converted.

Shared by ``preannotate sync label-studio`` (``ls_sync``) and the ML backend's ``/predict``. Nothing here
prints: warnings come back with the prediction, and each caller says them its own way (stderr, or the log).
Errors and warnings name the task's media by its redacted URL, never the scratch file it was fetched to: the
ML backend answers them to Label Studio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory

from models.base import Segmenter
from service.convert.label_studio import LabelConfig, LsObject, LsPrediction, item_to_ls_result
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError, error_with_paths_shown, with_paths_shown
from service.pipeline.fetch import redact_url
from service.pipeline.flow import FlowOptions, ItemOutput, detector_sampling, run_flow, track_stage
from service.pipeline.frames import Frame, FrameResult, MediaKind, SlotMeta
from service.pipeline.media import ItemSpec, SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.predictions import ItemPredictions
from service.pipeline.readers import SlotReader
from service.pipeline.run import FrameDetector
from service.pipeline.tracks import TrackerOptions

_KINDS = {"image": MediaKind.IMAGE, "video": MediaKind.VIDEO}


@dataclass(frozen=True, slots=True)
class TaskFile:
    """A task's media fetched to scratch, and the absolute URL it came from (shown redacted)."""

    path: Path
    url: str


Downloader = Callable[[str, Path], TaskFile]
"""``(task data value, scratch dir) -> the fetched file``; raises PreannotateError or BackendError."""


@dataclass(frozen=True, slots=True)
class TaskPrediction:
    """A task's prediction, and the objects that decoded only in part (their frames are in it)."""

    prediction: LsPrediction
    warnings: tuple[PreannotateError, ...] = ()


def has_prediction(task: Mapping[str, object], model_version: str) -> bool:
    """Whether a task listed with ``fields=all`` carries a prediction of ``model_version``."""
    predictions = task.get("predictions")
    if not isinstance(predictions, list):
        return False
    return any(isinstance(p, Mapping) and p.get("model_version") == model_version for p in predictions)


def task_prediction(
    task: Mapping[str, object],
    config: LabelConfig,
    *,
    model: ModelRef,
    download: Downloader,
    detector: FrameDetector,
    sampling: SamplingOptions,
    limits: MediaLimits,
    options: FlowOptions,
    tracker: TrackerOptions | None,
    aliases: Mapping[str, str] | None = None,
    work_dir: Path | None = None,
    on_slot: Callable[[SlotMeta], None] | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    segmenter: Segmenter | None = None,
) -> TaskPrediction:
    """Fetch, decode, detect and track every object of one task that a control points at; convert the
    result to the task's prediction (LS video regions are the tracks ``tracker`` links; None: one per box).
    ``segmenter`` masks the kept boxes of the image objects a brush or polygon control points at (LS video
    regions and rectangles are boxes: their frames never reach it). A run that makes no masks (no segmenter, a
    boxes-only detector) fills box controls only, as before masks (``LabelConfig.for_run``).

    Each object becomes a slot named after it, which is how ``item_to_ls_result`` matches them. Files are
    fetched first, in order (a download's ``BackendError`` leaves unchanged: ``sync`` counts outages by it);
    then the objects are decoded in parallel and detected together.

    Raises:
        PreannotateError: the task has none of the data keys, a file failed to fetch or decode, or a file is
            not the kind its object shows (a video in an ``<Image>``); ``INTERNAL`` for a decoder's surprise,
            naming the URL (the cause is chained, for the caller's log).
    """
    item = _detect_task(
        task,
        config,
        download=download,
        detector=detector,
        sampling=sampling,
        limits=limits,
        options=options,
        tracker=tracker,
        work_dir=work_dir,
        on_slot=on_slot,
        on_frame=on_frame,
        segmenter=segmenter,
    )
    data = task.get("data")
    prediction = item_to_ls_result(
        item.item,
        model,
        config,
        aliases=aliases,
        task_data=data if isinstance(data, dict) else {},  # framerate="$fps" reads LS's fps from it
        masks=makes_masks(detector, segmenter),
    )
    return TaskPrediction(prediction=prediction, warnings=item.warnings)


def makes_masks(detector: FrameDetector, segmenter: Segmenter | None) -> bool:
    """Whether a run with this detector and segmenter makes masks (``LabelConfig.for_run``)."""
    return segmenter is not None or detector.info.makes_masks


@dataclass(frozen=True, slots=True)
class _Detected:
    item: ItemPredictions
    warnings: tuple[PreannotateError, ...]


def _detect_task(
    task: Mapping[str, object],
    config: LabelConfig,
    *,
    download: Downloader,
    detector: FrameDetector,
    sampling: SamplingOptions,
    limits: MediaLimits,
    options: FlowOptions,
    tracker: TrackerOptions | None,
    work_dir: Path | None,
    on_slot: Callable[[SlotMeta], None] | None,
    on_frame: Callable[[FrameResult], None] | None,
    segmenter: Segmenter | None = None,
) -> _Detected:
    name = f"task-{task.get('id')}"
    data = task.get("data")
    data = data if isinstance(data, dict) else {}
    config = config.for_run(masks=makes_masks(detector, segmenter))
    targets: list[tuple[LsObject, str]] = []
    for obj in config.targets():
        value = data.get(obj.value_key) if obj.value_key else None
        if isinstance(value, str) and value.strip():
            targets.append((obj, value))
    if not targets:
        keys = ", ".join(f"${o.value_key}" for o in config.targets() if o.value_key) or "none"
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{name}: no media in the task data (looked for {keys})")
    objects = {obj.name: obj for obj, _ in targets}
    # Only image objects a brush or polygon control points at take masks: the others run without the segmenter,
    # on frames sized for the detector alone (only the detector and segmenter see these frames).
    masked = {o.name for o, _ in targets if segmenter is not None and o.kind == "image" and config.takes_masks(o.name)}
    sampled = {
        True: detector_sampling(sampling, detector.info, None if segmenter is None else segmenter.info),
        False: detector_sampling(sampling, detector.info, None),
    }
    shown: dict[str, str] = {}  # scratch path -> redacted URL

    def open_object(item: str, slot: SlotSpec) -> SlotReader:
        return _ObjectReader.open(item, objects[slot.name], slot, sampled[slot.name in masked], limits, shown)

    with TemporaryDirectory(dir=work_dir, prefix="preannotate-ls-") as scratch:
        slots = []
        for obj, value in targets:
            fetched = download(value, Path(scratch))
            shown[str(fetched.path)] = redact_url(fetched.url)
            slots.append(SlotSpec(obj.name, (fetched.path,)))
        outputs: list[ItemOutput] = []
        try:
            for with_masks in (True, False):
                group = tuple(slot for slot in slots if (slot.name in masked) is with_masks)
                if not group:
                    continue
                (output,) = run_flow(
                    [ItemSpec(name, group)],
                    detector,
                    options,
                    open_slot=open_object,
                    on_slot=on_slot,
                    on_frame=on_frame,
                    finish_item=track_stage(tracker),  # LS video regions are the tracks
                    segmenter=segmenter if with_masks else None,
                )
                outputs.append(output)
        except PreannotateError as exc:
            renamed = error_with_paths_shown(exc, shown)
            if renamed is exc:
                raise
            raise renamed from exc
    item = _in_config_order(name, [slot.name for slot in slots], outputs)
    warnings = tuple(error_with_paths_shown(w, shown) for output in outputs for w in output.warnings)
    return _Detected(item=item, warnings=warnings)


def _in_config_order(name: str, order: Sequence[str], outputs: Sequence[ItemOutput]) -> ItemPredictions:
    """The task's objects (detected in one or two runs: with and without the segmenter) as one item, in the
    config's object order, so region order does not depend on which objects took masks."""
    place = {slot: n for n, slot in enumerate(order)}
    metas = sorted((m for output in outputs for m in output.slots), key=lambda m: place[m.slot])
    frames = sorted((f for output in outputs for f in output.frames), key=lambda f: place[f.info.slot])  # stable
    return ItemPredictions(name=name, slots=tuple(metas), frames=tuple(frames))


class _ObjectReader:
    """A reader for one LS object: refuses a file of the wrong kind; frames and metadata name the object and its
    URL, not the scratch file (which means nothing in Label Studio: the task id names the item). A decoder's
    surprise becomes this object's ``INTERNAL`` error, naming the URL, with the original as its cause."""

    def __init__(self, item: str, obj: LsObject, reader: SlotReader, shown: Mapping[str, str]) -> None:
        self._item = item
        self._shown = shown
        self._reader = reader
        self._name = obj.name
        if reader.meta.media is not _KINDS[obj.kind]:
            reader.close()
            raise PreannotateError(
                ErrorCode.UNSUPPORTED_MEDIA,
                f"{item}: <{obj.kind.title()} name={obj.name!r}> got a {reader.meta.media.value} file",
            )
        files = tuple(shown.get(f, f) for f in reader.meta.source_files)
        self.meta = replace(reader.meta, source_files=files)

    @classmethod
    def open(
        cls,
        item: str,
        obj: LsObject,
        slot: SlotSpec,
        sampling: SamplingOptions,
        limits: MediaLimits,
        shown: Mapping[str, str],
    ) -> _ObjectReader:
        try:
            reader = open_slot(item, slot, sampling, limits)
        except PreannotateError:
            raise
        except Exception as exc:
            raise _unexpected(item, str(slot.paths[0]), exc, shown) from exc
        return cls(item, obj, reader, shown)

    def __iter__(self) -> Iterator[Frame]:
        try:
            for frame in self._reader:
                yield replace(frame, info=replace(frame.info, source=self._name))
        except PreannotateError:
            raise
        except Exception as exc:
            source = self._reader.meta.source_files[0] if self._reader.meta.source_files else self._name
            raise _unexpected(self._item, source, exc, self._shown) from exc

    def close(self) -> None:
        self._reader.close()


def _unexpected(item: str, path: str, exc: Exception, shown: Mapping[str, str]) -> PreannotateError:
    detail = with_paths_shown(f"{path}: {type(exc).__name__}: {exc}", shown)
    return PreannotateError(ErrorCode.INTERNAL, f"{item}: {detail}")
