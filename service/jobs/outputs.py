"""A finished job's results in each format ``GET /v1/jobs/{id}/result?format=...`` serves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.config import Settings
from service.convert.coco import frame_results_to_coco
from service.convert.darwin import item_to_darwin
from service.convert.label_studio import (
    ObjectKind,
    default_label_config_xml,
    item_to_ls_result,
    parse_label_config,
)
from service.convert.tracks import frames_to_tracks, region_tracks
from service.convert.types import ItemPredictions, ModelRef, Track
from service.jobs.runner import job_tracker
from service.jobs.store import ItemResult, ItemState, JobRecord
from service.pipeline.frames import MediaKind

FORMATS = ("coco", "darwin", "labelstudio", "encord")
_LS_KINDS: dict[MediaKind, ObjectKind] = {MediaKind.IMAGE: "image", MediaKind.VIDEO: "video"}


def job_items(results: Sequence[ItemResult]) -> list[ItemPredictions]:
    """The succeeded items' predictions, in job order."""
    return [
        ItemPredictions.from_result_json(r.name, r.result)
        for r in results
        if r.state is ItemState.SUCCEEDED and r.result is not None
    ]


def job_model(job: JobRecord) -> ModelRef:
    """The model the job's request pins. Unpinned (distributed, no item ever ran: e.g. every item failed before
    a worker took it up): no version and no classes, and no item result to use them."""
    request = job.request
    return ModelRef(
        spec=request["model"],
        version=request.get("model_version") or "",
        class_names=tuple(request.get("class_names") or ()),
    )


def job_result(fmt: str, job: JobRecord, results: Sequence[ItemResult], settings: Settings) -> dict[str, Any]:
    """The job's preannotations as ``fmt``; video detections are linked into tracks as the job says."""
    items, model = job_items(results), job_model(job)
    tracker = job_tracker(job.request, settings)
    # None (tracking off): one annotation per detection
    tracks = None if tracker is None else {item.name: frames_to_tracks(item.frames, tracker) for item in items}
    provenance = {"model": model.spec, "model_version": model.version, "job_id": job.id}
    if fmt == "coco":
        coco = frame_results_to_coco(
            [frame for item in items for frame in item.frames],
            class_names=model.class_names,
            multi_slot_items=frozenset(item.name for item in items if len(item.slots) > 1),
            tracks=tracks,
        )
        coco["info"] |= provenance
        return coco
    if fmt == "darwin":
        darwin = [item_to_darwin(item, model, tracks=None if tracks is None else tracks[item.name]) for item in items]
        return {**provenance, "items": darwin}
    if fmt == "labelstudio":  # LS video regions are tracks: with tracking off, one per detection
        ls_tracks = {item.name: region_tracks(item.frames, tracker) for item in items}
        return {**provenance, **items_to_ls_import(items, model, ls_tracks)}
    from service.convert.encord import item_to_encord_label_row

    ontology = settings.encord_ontology(model.class_names)
    return {
        **provenance,
        "ontology": ontology.to_json(),
        "label_rows": [
            item_to_encord_label_row(
                item,
                model,
                ontology,
                tracks=None if tracks is None else tracks[item.name],
                created_by=settings.encord_created_by,
            )
            for item in items
        ],
    }


def items_to_ls_import(
    items: Sequence[ItemPredictions], model: ModelRef, tracks: Mapping[str, Sequence[Track]]
) -> dict[str, Any]:
    """Label Studio tasks with embedded predictions, for ``POST /api/projects/{id}/import`` as they are.

    One task per image or video slot, not per item: an LS task shows one medium per ``$key``, and the
    default configs (``label_configs``) put images and videos in separate projects, so an item with a
    video and stills becomes a video task and image tasks. Import the tasks whose ``data`` has ``image``
    into a project with ``label_configs.image``, those with ``video`` into one with ``label_configs.video``.
    ``data`` also names the item and slot. The media URL is the one the job fetched, without its query
    string (signatures are never stored): LS must be able to open it (or map it through its storage).
    Slots LS has no object for (DICOM, sequences, PDF) are listed in ``skipped_slots``, not dropped silently.
    """
    xml: dict[ObjectKind, str] = {
        kind: default_label_config_xml(model.class_names, kind) for kind in ("image", "video")
    }
    configs = {kind: parse_label_config(text) for kind, text in xml.items()}
    tasks: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for item in items:
        for meta in item.slots:
            kind = _LS_KINDS.get(meta.media)
            if kind is None or not meta.source_files:
                skipped.append({"item": item.name, "slot": meta.slot, "media": meta.media.value})
                continue
            config = configs[kind]
            (target,) = config.targets()
            assert target.value_key is not None  # the default configs read $image / $video
            data: dict[str, Any] = {target.value_key: meta.source_files[0], "item": item.name, "slot": meta.slot}
            fps_key = (target.frame_rate or "").removeprefix("$")
            if kind == "video" and fps_key and meta.fps:
                data[fps_key] = round(meta.fps, 6)  # what <Video framerate="$fps"> plays at; else LS uses 24
            slot = ItemPredictions(name=item.name, slots=(meta,), frames=tuple(item.frames_of_slot(meta.slot)))
            prediction = item_to_ls_result(slot, model, config, tracks=tracks.get(item.name), task_data=data)
            tasks.append({"data": data, "predictions": [prediction.to_json()]})
    return {"label_configs": xml, "tasks": tasks, "skipped_slots": skipped}
