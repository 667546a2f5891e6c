"""A finished job's results in each format ``GET /v1/jobs/{id}/result?format=...`` serves."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from service.backends.encord import encord_ontology_from
from service.config import Settings
from service.convert.coco import frame_results_to_coco
from service.convert.coco_types import CocoDocument
from service.convert.darwin import item_to_darwin
from service.convert.label_studio import (
    ObjectKind,
    default_label_config_xml,
    item_to_ls_result,
    parse_label_config,
    with_region_ids,
)
from service.convert.label_studio_types import LsTask
from service.convert.types import ModelRef, UnsupportedByFormatError
from service.errors import ErrorCode
from service.jobs.output_types import JobResult, LsImport, Provenance, SkippedJson
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions, item_predictions_from_json
from service.pipeline.tracks import TrackerOptions
from service.queue.store import ItemResult, ItemState, JobRecord

log = logging.getLogger(__name__)
_T = TypeVar("_T")

FORMATS = ("coco", "darwin", "labelstudio", "encord")
_LS_KINDS: dict[MediaKind, ObjectKind] = {MediaKind.IMAGE: "image", MediaKind.VIDEO: "video"}


def job_items(results: Sequence[ItemResult], tracker: TrackerOptions | None) -> list[ItemPredictions]:
    """The succeeded items' predictions, in job order, with the tracker ids their worker stored (a result of an
    older release, stored without them, is linked here with the job's ``tracker``)."""
    return [
        item_predictions_from_json(r.name, r.result, tracker)
        for r in results
        if r.state is ItemState.SUCCEEDED and r.result is not None
    ]


def job_model(job: JobRecord) -> ModelRef:
    """The model the job's request pins. Unpinned (distributed, no item ever ran: e.g. every item failed before
    a worker took it up): no version and no classes, and no item result to use them."""
    return job.spec.model_ref


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


def job_result(fmt: str, job: JobRecord, results: Sequence[ItemResult], settings: Settings) -> JobResult:
    """The job's preannotations as ``fmt``; video detections in the tracks their worker linked them into.

    An item the format cannot hold (an Encord row of a video and a still) is listed in ``skipped_items``
    with a code and a reason; every other item is still served.
    """
    items, model = job_items(results, job.spec.tracker(settings)), job_model(job)
    provenance: Provenance = {"model": model.spec, "model_version": model.version, "job_id": job.id}
    if fmt == "coco":
        coco, skipped = _items_to_coco(items, model)
        coco["info"]["model"] = provenance["model"]
        coco["info"]["model_version"] = provenance["model_version"]
        coco["info"]["job_id"] = provenance["job_id"]
        return {**coco, "skipped_items": _listed(skipped)}
    if fmt == "darwin":
        darwin, skipped = convert_each(fmt, items, lambda item: item_to_darwin(item, model))
        return {**provenance, "items": darwin, "skipped_items": _listed(skipped)}
    if fmt == "labelstudio":  # LS video regions are tracks: with tracking off, one per detection
        ls = items_to_ls_import(items, model)  # a slot LS cannot show is listed in its skipped_slots
        return {**provenance, **ls, "skipped_items": []}
    from service.convert.encord import item_to_encord_label_row

    ontology = encord_ontology_from(settings, model.class_names)
    created_by = settings.encord_created_by
    rows, skipped = convert_each(
        fmt,
        items,
        lambda item: item_to_encord_label_row(item, model, ontology, created_by=created_by),
    )
    return {**provenance, "ontology": ontology.to_json(), "label_rows": rows, "skipped_items": _listed(skipped)}


def convert_each(
    fmt: str, items: Sequence[ItemPredictions], convert: Callable[[ItemPredictions], _T]
) -> tuple[list[_T], list[Skipped]]:
    """``convert`` applied item by item: an item that fails is skipped, the others are kept, in order."""
    done: list[_T] = []
    skipped: list[Skipped] = []
    for item in items:
        try:
            done.append(convert(item))
        except Exception as exc:  # one item must never cost the job's other items
            skipped.append(skipped_for(fmt, item.name, exc))
    return done, skipped


def skipped_for(fmt: str, item: str, exc: Exception, slot: SlotMeta | None = None) -> Skipped:
    """Why ``fmt`` left an item (or slot) out; call it in the ``except`` block (a bug is logged with its traceback)."""
    if isinstance(exc, UnsupportedByFormatError):  # the converters' word for "this format cannot hold it"
        return Skipped(item, ErrorCode.UNSUPPORTED_BY_FORMAT, f"{fmt}: {exc}", slot)
    log.exception("%s: converting item %r failed", fmt, item)
    return Skipped(item, ErrorCode.OUTPUT_FAILED, f"{fmt}: {type(exc).__name__} while converting the item", slot)


def _listed(skipped: Sequence[Skipped]) -> list[SkippedJson]:
    return [s.to_json() for s in skipped]


def _items_to_coco(items: Sequence[ItemPredictions], model: ModelRef) -> tuple[CocoDocument, list[Skipped]]:
    """One COCO file of every item; if that fails, the items are tried one by one and those at fault left out."""

    def coco(chosen: Sequence[ItemPredictions]) -> CocoDocument:
        return frame_results_to_coco(
            [frame for item in chosen for frame in item.frames],
            class_names=model.class_names,
            multi_slot_items=frozenset(item.name for item in chosen if len(item.slots) > 1),
        )

    def alone(item: ItemPredictions) -> ItemPredictions:
        coco([item])
        return item

    try:
        return coco(items), []
    except Exception:  # find the items at fault rather than lose them all
        kept, skipped = convert_each("coco", items, alone)
        return coco(kept), skipped


def items_to_ls_import(items: Sequence[ItemPredictions], model: ModelRef) -> LsImport:
    """Label Studio tasks with embedded predictions, for ``POST /api/projects/{id}/import`` as they are.

    One task per image or video slot, not per item: an LS task shows one medium per ``$key``, and the
    default configs (``label_configs``) put images and videos in separate projects, so an item with a
    video and stills becomes a video task and image tasks. Import the tasks whose ``data`` has ``image``
    into a project with ``label_configs.image``, those with ``video`` into one with ``label_configs.video``.
    ``data`` also names the item and slot. The media URL is the one the job fetched, without its query
    string (signatures are never stored): LS must be able to open it (or map it through its storage).
    Slots LS has no object for (DICOM, sequences, PDF) are listed in ``skipped_slots`` with a code and a reason.
    """
    xml: dict[ObjectKind, str] = {
        kind: default_label_config_xml(model.class_names, kind) for kind in ("image", "video")
    }
    configs = {kind: parse_label_config(text) for kind, text in xml.items()}
    tasks: list[LsTask] = []
    skipped: list[Skipped] = []
    for item in items:
        item = with_region_ids(item)  # numbered across the item, before it is split into tasks
        for meta in item.slots:
            kind = _LS_KINDS.get(meta.media)
            if kind is None or not meta.source_files:
                reason = f"labelstudio: no Label Studio object shows a {meta.media.value} slot"
                skipped.append(Skipped(item.name, ErrorCode.UNSUPPORTED_BY_FORMAT, reason, meta))
                continue
            config = configs[kind]
            (target,) = config.targets()
            assert target.value_key is not None  # the default configs read $image / $video
            data: dict[str, str | float] = {
                target.value_key: meta.source_files[0],
                "item": item.name,
                "slot": meta.slot,
            }
            fps_key = (target.frame_rate or "").removeprefix("$")
            if kind == "video" and fps_key and meta.fps:
                data[fps_key] = round(meta.fps, 6)  # what <Video framerate="$fps"> plays at; else LS uses 24
            slot = ItemPredictions(name=item.name, slots=(meta,), frames=tuple(item.frames_of_slot(meta.slot)))
            try:
                prediction = item_to_ls_result(slot, model, config, task_data=data)
            except Exception as exc:  # one slot must never cost the others
                skipped.append(skipped_for("labelstudio", item.name, exc, meta))
                continue
            tasks.append({"data": data, "predictions": [prediction.to_json()]})
    return {"label_configs": xml, "tasks": tasks, "skipped_slots": _listed(skipped)}
