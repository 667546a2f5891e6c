"""A finished job's results in each format ``GET /v1/jobs/{id}/result?format=...`` serves.

Every format is one ``ResultLayout``: fields before its arrays, the arrays each item adds entries to, fields after,
then the skipped lists. ``job_result`` fills it in memory (one item's result for ``GET .../items?format=``);
``service.jobs.result_stream`` writes the same document item by item, so a job's size never sits in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from service.backends.encord import encord_ontology_from
from service.config import Settings
from service.convert.coco import frame_results_to_coco
from service.convert.coco_types import CocoMaskStyle
from service.convert.darwin import item_to_darwin
from service.convert.darwin_types import DarwinMaskStyle
from service.convert.label_studio import (
    LabelConfig,
    ObjectKind,
    default_label_config_xml,
    item_to_ls_result,
    parse_label_config,
    with_region_ids,
)
from service.convert.label_studio_types import LsTask
from service.convert.types import ModelRef, UnsupportedByFormatError
from service.errors import ErrorCode
from service.jobs.output_types import JobResult, Provenance, SkippedJson
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions, item_predictions_from_json
from service.pipeline.tracks import TrackerOptions
from service.queue.store import ItemResult, ItemState, JobRecord

log = logging.getLogger(__name__)

FORMATS = ("coco", "darwin", "labelstudio", "encord")
_LS_KINDS: dict[MediaKind, ObjectKind] = {MediaKind.IMAGE: "image", MediaKind.VIDEO: "video"}


def job_model(job: JobRecord) -> ModelRef:
    """The model the job's request pins. Unpinned (distributed, no item ever ran: e.g. every item failed before
    a worker took it up): no version and no classes, and no item result to use them."""
    return job.spec.model_ref


@dataclass(frozen=True, slots=True)
class MaskStyles:
    """How each format writes detections with masks (``?coco_masks=`` and ``?darwin_masks=`` on the result)."""

    coco: CocoMaskStyle = "rle"
    darwin: DarwinMaskStyle = "polygon"


DEFAULT_MASKS = MaskStyles()


@dataclass(frozen=True, slots=True)
class Skipped:
    """An item, or one slot of it, that a result format cannot express: listed with a code, never a 500."""

    item: str
    code: ErrorCode
    reason: str
    slot: SlotMeta | None = None

    def to_json(self) -> SkippedJson:
        where = {"item": self.item}
        if self.slot is not None:
            where |= {"slot": self.slot.slot, "media": self.slot.media.value}
        return where | {"code": self.code.code, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ItemEntries:
    """What one item adds to a result document: its entries of each of the layout's arrays (in order), or why it
    was left out, and the slots of it the format could not hold."""

    arrays: tuple[list[Any], ...] = ()
    skipped: Skipped | None = None
    skipped_slots: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ResultLayout:
    """A format's result document: ``head`` fields, then ``arrays`` (every item adds to each, in item order),
    then ``tail`` fields, then ``skipped_slots`` (where ``lists_slots``) and ``skipped_items``."""

    head: dict[str, Any]
    arrays: tuple[str, ...]
    tail: dict[str, Any]
    convert: Callable[[ItemPredictions], ItemEntries]
    tracker: TrackerOptions | None
    lists_slots: bool = False

    def entries(self, results: Iterable[ItemResult]) -> Iterator[ItemEntries]:
        """Each succeeded item's entries, in job order, converted only when pulled (one item in memory)."""
        for r in results:
            if r.state is not ItemState.SUCCEEDED:
                continue
            if r.result is None:  # its object is gone from object storage: the others are still served
                reason = f"the stored result of item {r.name!r} is gone (removed from the result store)"
                yield ItemEntries(skipped=Skipped(r.name, ErrorCode.RESULT_MISSING, reason))
                continue
            yield self.convert(item_predictions_from_json(r.name, r.result, self.tracker))


def result_layout(fmt: str, job: JobRecord, settings: Settings, masks: MaskStyles = DEFAULT_MASKS) -> ResultLayout:
    """``fmt``'s document for ``job``: video detections in the tracks their worker linked them into, masks as
    ``masks`` says; an item the format cannot hold (an Encord row of a video and a still) is skipped with a code
    and a reason."""
    model, tracker = job_model(job), job.spec.tracker(settings)
    provenance: dict[str, Any] = dict(Provenance(model=model.spec, model_version=model.version, job_id=job.id))
    if fmt == "coco":
        empty = frame_results_to_coco([], class_names=model.class_names)  # the info and categories of any job
        head = {"info": {**empty["info"], **provenance}}
        return ResultLayout(
            head,
            ("images", "annotations"),
            {"categories": empty["categories"]},
            _CocoNumbering(model, masks.coco),
            tracker,
        )
    if fmt == "darwin":
        darwin = _each(fmt, lambda item: item_to_darwin(item, model, masks=masks.darwin))
        return ResultLayout(provenance, ("items",), {}, darwin, tracker)
    if fmt == "labelstudio":  # LS video regions are tracks: with tracking off, one per detection
        ls = _LsTasks(model, masks=job.spec.makes_masks)  # a slot LS cannot show is listed in skipped_slots
        return ResultLayout({**provenance, "label_configs": ls.xml}, ("tasks",), {}, ls, tracker, lists_slots=True)
    from service.convert.encord import item_to_encord_label_row

    ontology = encord_ontology_from(settings, model.class_names, masks=job.spec.makes_masks)
    created_by = settings.encord_created_by

    def row(item: ItemPredictions) -> Any:
        return item_to_encord_label_row(item, model, ontology, created_by=created_by)

    return ResultLayout({**provenance, "ontology": ontology.to_json()}, ("label_rows",), {}, _each(fmt, row), tracker)


def job_result(
    fmt: str, job: JobRecord, results: Iterable[ItemResult], settings: Settings, masks: MaskStyles = DEFAULT_MASKS
) -> JobResult:
    """The job's preannotations as ``fmt``, in memory (``result_layout``); a succeeded item whose stored result is
    gone is listed in ``skipped_items`` as ``result_missing``."""
    layout = result_layout(fmt, job, settings, masks)
    arrays: list[list[Any]] = [[] for _ in layout.arrays]
    skipped: list[Skipped] = []
    slots: list[Skipped] = []
    for entries in layout.entries(results):
        for into, added in zip(arrays, entries.arrays, strict=False):
            into.extend(added)
        skipped.extend([] if entries.skipped is None else [entries.skipped])
        slots.extend(entries.skipped_slots)
    document = {**layout.head, **dict(zip(layout.arrays, arrays, strict=True)), **layout.tail}
    if layout.lists_slots:
        document["skipped_slots"] = listed(slots)
    return cast(JobResult, document | {"skipped_items": listed(skipped)})


def _each(fmt: str, convert: Callable[[ItemPredictions], object]) -> Callable[[ItemPredictions], ItemEntries]:
    """One entry per item, ``convert``'s; an item it fails on is skipped (one item never costs the others)."""

    def entries(item: ItemPredictions) -> ItemEntries:
        try:
            return ItemEntries(arrays=([convert(item)],))
        except Exception as exc:  # one item must never cost the job's other items
            return ItemEntries(skipped=skipped_for(fmt, item.name, exc))

    return entries


def skipped_for(fmt: str, item: str, exc: Exception, slot: SlotMeta | None = None) -> Skipped:
    """Why ``fmt`` left an item (or slot) out; call it in the ``except`` block (a bug is logged with its traceback)."""
    if isinstance(exc, UnsupportedByFormatError):  # the converters' word for "this format cannot hold it"
        return Skipped(item, ErrorCode.UNSUPPORTED_BY_FORMAT, f"{fmt}: {exc}", slot)
    log.exception("%s: converting item %r failed", fmt, item)
    return Skipped(item, ErrorCode.OUTPUT_FAILED, f"{fmt}: {type(exc).__name__} while converting the item", slot)


def listed(skipped: Sequence[Skipped]) -> list[SkippedJson]:
    return [s.to_json() for s in skipped]


class _CocoNumbering:
    """COCO images and annotations item by item, numbered on from the items before as one whole-job
    ``frame_results_to_coco`` numbers them; an item that fails is skipped and takes no ids."""

    def __init__(self, model: ModelRef, masks: CocoMaskStyle = "rle") -> None:
        self._model = model
        self._masks: CocoMaskStyle = masks
        self._images = 0
        self._annotations = 0

    def __call__(self, item: ItemPredictions) -> ItemEntries:
        try:
            coco = frame_results_to_coco(
                item.frames,
                class_names=self._model.class_names,
                multi_slot_items=frozenset({item.name} if len(item.slots) > 1 else ()),
                masks=self._masks,
            )
        except Exception as exc:  # find the items at fault rather than lose them all
            return ItemEntries(skipped=skipped_for("coco", item.name, exc))
        images, annotations = coco["images"], coco["annotations"]
        for image in images:
            image["id"] += self._images
        for annotation in annotations:
            annotation["id"] += self._annotations
            annotation["image_id"] += self._images
        self._images += len(images)
        self._annotations += len(annotations)
        return ItemEntries(arrays=(list(images), list(annotations)))


class _LsTasks:
    """Label Studio tasks with embedded predictions, item by item, for ``POST /api/projects/{id}/import`` as they are.

    One task per image or video slot, not per item: an LS task shows one medium per ``$key``, and the
    default configs (``label_configs``) put images and videos in separate projects, so an item with a
    video and stills becomes a video task and image tasks. Import the tasks whose ``data`` has ``image``
    into a project with ``label_configs.image``, those with ``video`` into one with ``label_configs.video``.
    ``data`` also names the item and slot. The media URL is the one the job fetched, without its query
    string (signatures are never stored): LS must be able to open it (or map it through its storage).
    Slots LS has no object for (DICOM, sequences, PDF) are listed in ``skipped_slots`` with a code and a reason.
    """

    def __init__(self, model: ModelRef, *, masks: bool = False) -> None:
        self._model = model
        self._masks = masks
        self.xml: dict[ObjectKind, str] = {  # a job that makes masks gets a brush control for them
            kind: default_label_config_xml(model.class_names, kind, masks=masks) for kind in ("image", "video")
        }
        self._configs: dict[ObjectKind, LabelConfig] = {kind: parse_label_config(t) for kind, t in self.xml.items()}

    def __call__(self, item: ItemPredictions) -> ItemEntries:
        tasks: list[LsTask] = []
        skipped: list[Skipped] = []
        item = with_region_ids(item)  # numbered across the item, before it is split into tasks
        for meta in item.slots:
            kind = _LS_KINDS.get(meta.media)
            if kind is None or not meta.source_files:
                reason = f"labelstudio: no Label Studio object shows a {meta.media.value} slot"
                skipped.append(Skipped(item.name, ErrorCode.UNSUPPORTED_BY_FORMAT, reason, meta))
                continue
            try:
                tasks.append(self._task(item, meta, kind))
            except Exception as exc:  # one slot must never cost the others
                skipped.append(skipped_for("labelstudio", item.name, exc, meta))
        return ItemEntries(arrays=(tasks,), skipped_slots=skipped)

    def _task(self, item: ItemPredictions, meta: SlotMeta, kind: ObjectKind) -> LsTask:
        config = self._configs[kind]
        (target,) = config.targets()
        assert target.value_key is not None  # the default configs read $image / $video
        data: dict[str, str | float] = {target.value_key: meta.source_files[0], "item": item.name, "slot": meta.slot}
        fps_key = (target.frame_rate or "").removeprefix("$")
        if kind == "video" and fps_key and meta.fps:
            data[fps_key] = round(meta.fps, 6)  # what <Video framerate="$fps"> plays at; else LS uses 24
        slot = ItemPredictions(name=item.name, slots=(meta,), frames=tuple(item.frames_of_slot(meta.slot)))
        prediction = item_to_ls_result(slot, self._model, config, task_data=data, masks=self._masks)
        return {"data": data, "predictions": [prediction.to_json()]}
