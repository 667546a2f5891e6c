"""A finished job's results in each format ``GET /v1/jobs/{id}/result?format=...`` serves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.config import Settings
from service.convert.coco import frame_results_to_coco
from service.convert.darwin import item_to_darwin
from service.convert.label_studio import default_label_config_xml, item_to_ls_result, parse_label_config
from service.convert.tracks import frames_to_tracks
from service.convert.types import ItemPredictions, ModelRef
from service.jobs.store import ItemResult, ItemState, JobRecord
from service.pipeline.frames import MediaKind

FORMATS = ("coco", "darwin", "labelstudio", "encord")


def job_items(results: Sequence[ItemResult]) -> list[ItemPredictions]:
    """The succeeded items' predictions, in job order."""
    return [
        ItemPredictions.from_result_json(r.name, r.result)
        for r in results
        if r.state is ItemState.SUCCEEDED and r.result is not None
    ]


def job_model(job: JobRecord) -> ModelRef:
    request = job.request
    return ModelRef(spec=request["model"], version=request["model_version"], class_names=tuple(request["class_names"]))


def job_result(fmt: str, job: JobRecord, results: Sequence[ItemResult], settings: Settings) -> dict[str, Any]:
    """The job's preannotations as ``fmt``; video detections are linked into tracks."""
    items, model = job_items(results), job_model(job)
    tracks = {item.name: frames_to_tracks(item.frames) for item in items}
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
        return {**provenance, "items": [item_to_darwin(item, model, tracks=tracks[item.name]) for item in items]}
    if fmt == "labelstudio":
        xml = {kind: default_label_config_xml(model.class_names, kind) for kind in ("image", "video")}
        configs = {kind: parse_label_config(text) for kind, text in xml.items()}
        tasks = []
        for item in items:
            kind = "video" if any(s.media is MediaKind.VIDEO for s in item.slots) else "image"
            prediction = item_to_ls_result(item, model, configs[kind], tracks=tracks[item.name])
            tasks.append({"item": item.name, "kind": kind, "predictions": [prediction.to_json()]})
        return {**provenance, "label_configs": xml, "tasks": tasks}
    from service.convert.encord import item_to_encord_label_row

    ontology = settings.encord_ontology(model.class_names)
    return {
        **provenance,
        "ontology": ontology.to_json(),
        "label_rows": [
            item_to_encord_label_row(
                item, model, ontology, tracks=tracks[item.name], created_by=settings.encord_created_by
            )
            for item in items
        ],
    }
