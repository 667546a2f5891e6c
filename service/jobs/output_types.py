"""The bodies of ``GET /v1/jobs/{id}/result?format=...`` (TypedDicts over the converters' documents).

Every format but COCO carries the job's provenance at its top level (COCO has it in ``info``); every one lists
the items it could not hold in ``skipped_items`` (``Skipped.to_json``).
"""

from __future__ import annotations

from typing import TypedDict

from service.convert.coco_types import CocoDocument
from service.convert.darwin_types import DarwinDocument
from service.convert.encord_types import EncordLabelRowJson, EncordOntologyJson
from service.convert.label_studio import ObjectKind
from service.convert.label_studio_types import LsTask

SkippedJson = dict[str, str]
"""``{"item", ["slot", "media",] "code", "reason"}``."""


class Provenance(TypedDict):
    model: str
    model_version: str
    job_id: str


class CocoResult(CocoDocument):
    skipped_items: list[SkippedJson]


class DarwinResult(Provenance):
    items: list[DarwinDocument]
    skipped_items: list[SkippedJson]


class LsImport(TypedDict):
    """Tasks to import into projects with ``label_configs[kind]``; slots LS cannot show in ``skipped_slots``."""

    label_configs: dict[ObjectKind, str]
    tasks: list[LsTask]
    skipped_slots: list[SkippedJson]


class LsResult(Provenance, LsImport):
    skipped_items: list[SkippedJson]


class EncordResult(Provenance):
    ontology: EncordOntologyJson
    label_rows: list[EncordLabelRowJson]
    skipped_items: list[SkippedJson]


JobResult = CocoResult | DarwinResult | LsResult | EncordResult
