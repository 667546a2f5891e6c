"""A fake Encord ``POST /public`` RPC endpoint (what encord 0.1.211's SDK talks to) that keeps label rows and
checks every request: headers, envelope, the exact payload keys the SDK sends, and every saved row against
the label-row format of encord.md §1 (data units, frame keys, object entries, object answers).
"""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.fakes.http import FakeApp, Request, Response, expect, expect_keys

ROW_KEYS = {
    "label_hash",
    "branch_name",
    "created_at",
    "last_edited_at",
    "data_hash",
    "dataset_hash",
    "dataset_title",
    "data_title",
    "data_type",
    "annotation_task_status",
    "is_shadow_data",
    "object_answers",
    "classification_answers",
    "object_actions",
    "label_status",
    "data_units",
    "spaces",
}
UNIT_KEYS = {"data_hash", "data_title", "data_link", "data_type", "data_sequence", "width", "height", "labels"}
UNIT_OPTIONAL = {"data_duration", "data_fps"}
OBJECT_KEYS = {
    "name",
    "color",
    "shape",
    "value",
    "createdAt",
    "createdBy",
    "confidence",
    "objectHash",
    "featureHash",
    "manualAnnotation",
}
# The SDK writes these only when set (LabelRowV2._to_encord_object, encord 0.1.211).
OBJECT_OPTIONAL = {"lastEditedAt", "lastEditedBy", "isDeleted", "interpolate"}
LIST_KEYS = {
    "edited_before",
    "edited_after",
    "label_statuses",
    "shadow_data_state",
    "include_uninitialised_labels",
    "data_hashes",
    "label_hashes",
    "data_title_eq",
    "data_title_like",
    "workflow_graph_node_title_eq",
    "workflow_graph_node_title_like",
    "include_client_metadata",
    "include_images_data",
    "include_children",
    "include_workflow_graph_node",
    "include_all_label_branches",
    "branch_name",
    "client_metadata_as_signed_url",
}
GET_KEYS = {
    "get_signed_url",
    "multi_request",
    "include_object_feature_hashes",
    "include_classification_feature_hashes",
    "include_reviews",
    "include_export_history",
    "include_archived",
}
FRAME_KEYED = {"video", "dicom", "nifti"}
MAX_BUNDLE = 1000
_OBJECT_HASH = re.compile(r"^[A-Za-z0-9+/]{6}[A-Za-z0-9+/=]{2}$")
_TIME = "%a, %d %b %Y %H:%M:%S UTC"
STAMP = "Sun, 01 Jun 2025 12:00:00 UTC"


@dataclass
class DataRecord:
    """A registered media item of the project, and its label row once one exists."""

    data_hash: str
    data_type: str
    title: str
    units: dict[str, dict[str, Any]]  # data unit hash -> unit without labels
    label_hash: str | None = None
    row: dict[str, Any] | None = None
    saves: int = 0


@dataclass
class FakeEncord(FakeApp):
    """State: one project, its ontology, its data. Auth: a bearer token and/or an Ed25519 public key (hex)."""

    project_hash: str = field(default_factory=lambda: str(uuid.uuid4()))
    ontology: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    public_key_hex: str | None = None
    data: dict[str, DataRecord] = field(default_factory=dict)
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # (query_type, method, number of uids)

    def __post_init__(self) -> None:
        FakeApp.__init__(self)

    # -- setting up ---------------------------------------------------------------------------------------------------

    def add_image(self, data_hash: str, title: str = "a.jpg", width: int = 1920, height: int = 1080) -> None:
        unit = _unit(data_hash, title, "image/jpeg", 0, width, height)
        self.data[data_hash] = DataRecord(data_hash, "image", title, {data_hash: unit})

    def add_video(
        self, data_hash: str, title: str = "v.mp4", width: int = 1280, height: int = 720, fps: float = 25.0
    ) -> None:
        unit = _unit(data_hash, title, "video/mp4", 0, width, height) | {"data_duration": 4.0, "data_fps": fps}
        self.data[data_hash] = DataRecord(data_hash, "video", title, {data_hash: unit})

    def add_object_by_hand(self, data_hash: str, entry: dict[str, Any], frame: str | None = None) -> None:
        """What an annotator's edit in the Label Editor leaves in the row (no contract checks: it is Encord's)."""
        record = self.data[data_hash]
        assert record.row is not None, "open the row first (the fake creates it on the first push)"
        unit = next(iter(record.row["data_units"].values()))
        labels = (
            unit["labels"]
            if frame is None
            else unit["labels"].setdefault(frame, {"objects": [], "classifications": []})
        )
        labels["objects"].append(entry)
        record.row["object_answers"][entry["objectHash"]] = {"classifications": [], "objectHash": entry["objectHash"]}

    def objects(self, data_hash: str) -> list[tuple[str | None, dict[str, Any]]]:
        row = self.data[data_hash].row or {}
        out: list[tuple[str | None, dict[str, Any]]] = []
        for unit in (row.get("data_units") or {}).values():
            if row["data_type"] in FRAME_KEYED:
                out += [(f, e) for f, labels in unit["labels"].items() for e in labels["objects"]]
            else:
                out += [(None, e) for e in unit["labels"]["objects"]]
        return out

    # -- the endpoint ---------------------------------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        expect((request.method, request.path) == ("POST", "/public"), f"only POST /public exists, not {request.method}")
        headers = request.headers
        expect(headers.get("content-type") == "application/json", "Content-Type must be application/json")
        expect(headers.get("resourcetype") == "project", "ResourceType must be 'project'")
        expect(headers.get("resourceid") == self.project_hash, "ResourceID must be the project hash")
        if not self._authorised(headers.get("authorization", ""), request.body):
            return Response(200, {"status": 401, "response": ["AUTHENTICATION_ERROR"], "payload": None})
        body = request.json()
        expect_keys(body, {"query_type", "query_method", "values"}, where="envelope")
        expect_keys(body["values"], {"uid", "payload"}, where="values")
        query = (body["query_type"], body["query_method"])
        uid, payload = body["values"]["uid"], body["values"]["payload"]
        self.calls.append((*query, len(uid) if isinstance(uid, list) else 0))
        handler = {
            ("labelrowmetadata", "GET"): self._list,
            ("labelrow", "PUT"): self._create,
            ("labelrow", "GET"): self._get,
            ("labelrow", "POST"): self._save,
        }.get(query)
        expect(handler is not None, f"unknown query {query}")
        assert handler is not None
        return Response(200, {"status": 200, "response": handler(uid, payload)})

    def _authorised(self, value: str, body: bytes) -> bool:
        if self.token is not None and value == f"Bearer {self.token}":
            return True
        if self.public_key_hex is not None and value.startswith(self.public_key_hex + ":"):
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key_hex))
            try:
                key.verify(bytes.fromhex(value.split(":", 1)[1]), hashlib.sha256(body).digest())
            except (InvalidSignature, ValueError):
                return False
            return True
        return False

    def _list(self, uid: Any, payload: Any) -> list[dict[str, Any]]:
        expect(uid is None, "labelrowmetadata takes uid null")
        expect_keys(payload, LIST_KEYS, where="list payload")
        expect(payload["include_uninitialised_labels"] is True, "include_uninitialised_labels must be true")
        hashes = payload["data_hashes"]
        expect(isinstance(hashes, list) and all(isinstance(h, str) for h in hashes), "data_hashes: a list of strings")
        return [self._metadata(self.data[h]) for h in hashes if h in self.data]

    def _create(self, uid: Any, payload: Any) -> list[dict[str, Any]]:
        expect_keys(payload, {"multi_request", "get_signed_url", "branch_name"}, where="create payload")
        expect(payload["multi_request"] is True, "multi_request must be true")
        self._check_uids(uid)
        rows = []
        for data_hash in uid:
            record = self.data.get(data_hash)
            expect(record is not None, f"unknown data hash {data_hash}")
            assert record is not None
            expect(record.label_hash is None, f"{data_hash} already has a label row")
            record.label_hash = str(uuid.uuid4())
            record.row = self._empty_row(record)
            rows.append(copy.deepcopy(record.row))
        return rows

    def _get(self, uid: Any, payload: Any) -> list[dict[str, Any]]:
        expect_keys(payload, GET_KEYS, where="get payload")
        expect(payload["include_object_feature_hashes"] is None, "a filtered row must not be fetched for writing")
        self._check_uids(uid)
        by_label = {r.label_hash: r for r in self.data.values() if r.label_hash}
        expect(all(h in by_label for h in uid), "unknown label hash")
        return [copy.deepcopy(by_label[h].row) for h in uid]  # type: ignore[misc]

    def _save(self, uid: Any, payload: Any) -> bool:
        expect_keys(payload, {"multi_request", "labels", "validate_before_saving"}, where="save payload")
        self._check_uids(uid)
        labels = payload["labels"]
        expect(isinstance(labels, list) and len(labels) == len(uid), "one label row per uid")
        by_label = {r.label_hash: r for r in self.data.values() if r.label_hash}
        for label_hash, row in zip(uid, labels, strict=True):
            record = by_label.get(label_hash)
            expect(record is not None, f"unknown label hash {label_hash}")
            assert record is not None
            self._check_row(row, record)
        for label_hash, row in zip(uid, labels, strict=True):
            record = by_label[label_hash]
            record.row = copy.deepcopy(row)
            record.saves += 1
        return True

    # -- checks ----------------------------------------------------------------------------------------------------

    def _check_uids(self, uid: Any) -> None:
        expect(isinstance(uid, list) and uid and all(isinstance(u, str) for u in uid), "uid: a non-empty list")
        expect(len(uid) <= MAX_BUNDLE, f"{len(uid)} rows in one call, over the bundle limit {MAX_BUNDLE}")
        expect(len(set(uid)) == len(uid), "duplicate uids")

    def _check_row(self, row: Any, record: DataRecord) -> None:
        expect_keys(row, ROW_KEYS, where="row")
        expect(row["label_hash"] == record.label_hash and row["data_hash"] == record.data_hash, "row identity changed")
        expect(row["data_type"] == record.data_type, "data_type changed")
        for key in ("created_at", "last_edited_at"):
            _check_time(row[key], f"row.{key}")
        expect(row["data_units"].keys() == record.units.keys(), "data_units must be the data's units")
        seen: dict[str, str] = {}
        for unit_hash, unit in row["data_units"].items():
            where = f"data_units[{unit_hash}]"
            expect_keys(unit, UNIT_KEYS, UNIT_OPTIONAL, where=where)
            stored = record.units[unit_hash]
            expect(unit["data_sequence"] == stored["data_sequence"], f"{where}: data_sequence changed")
            if record.data_type in FRAME_KEYED:
                for frame, labels in unit["labels"].items():
                    expect(
                        frame.isdigit() and str(int(frame)) == frame, f"{where}: frame key {frame!r} is not a number"
                    )
                    expect_keys(labels, {"objects", "classifications"}, where=f"{where}.labels[{frame}]")
                    expect(bool(labels["objects"] or labels["classifications"]), f"{where}: empty frame {frame}")
                    self._check_objects(labels["objects"], seen, f"{where}.labels[{frame}]")
            else:
                expect_keys(unit["labels"], {"objects", "classifications"}, where=f"{where}.labels")
                self._check_objects(unit["labels"]["objects"], seen, f"{where}.labels")
        expect(row["object_answers"].keys() == seen.keys(), "object_answers must have one entry per object")
        for obj_hash, answer in row["object_answers"].items():
            expect_keys(answer, {"objectHash", "classifications"}, where=f"object_answers[{obj_hash}]")
            expect(answer["objectHash"] == obj_hash, "object_answers key and objectHash differ")
        expect(row["object_actions"].keys() <= seen.keys(), "object_actions for an object that does not exist")

    def _check_objects(self, entries: Any, seen: dict[str, str], where: str) -> None:
        expect(isinstance(entries, list), f"{where}.objects must be a list")
        features = {o["featureNodeHash"]: o for o in self.ontology.get("objects", [])}
        in_frame: set[str] = set()
        for i, entry in enumerate(entries):
            at = f"{where}.objects[{i}]"
            expect_keys(entry, OBJECT_KEYS | {"boundingBox"}, OBJECT_OPTIONAL, where=at)
            h = entry["objectHash"]
            expect(isinstance(h, str) and bool(_OBJECT_HASH.match(h)), f"{at}: objectHash {h!r} is not 8 base64 chars")
            expect(h not in in_frame, f"{at}: objectHash {h} twice on one frame")
            in_frame.add(h)
            feature = features.get(entry["featureHash"])
            expect(feature is not None, f"{at}: featureHash {entry['featureHash']!r} is not in the ontology")
            assert feature is not None
            expect(seen.setdefault(h, entry["featureHash"]) == entry["featureHash"], f"{at}: object changes class")
            expect(entry["shape"] == feature["shape"] == "bounding_box", f"{at}: shape must be the ontology's")
            expect(entry["name"] == feature["name"], f"{at}: name must be the ontology's")
            expect(entry["value"] == feature["name"].lower().replace(" ", "_"), f"{at}: value must be snake case")
            expect(isinstance(entry["manualAnnotation"], bool), f"{at}: manualAnnotation must be a bool")
            confidence = entry["confidence"]
            expect(isinstance(confidence, float | int) and 0 <= confidence <= 1, f"{at}: confidence outside 0..1")
            for key in ("createdAt", "lastEditedAt"):
                if entry.get(key) is not None:  # the SDK writes null for an unknown creation time
                    _check_time(entry[key], f"{at}.{key}")
            box = entry["boundingBox"]
            expect_keys(box, {"h", "w", "x", "y"}, where=f"{at}.boundingBox")
            expect(all(isinstance(v, float | int) and 0 <= v <= 1 for v in box.values()), f"{at}: box outside 0..1")
            expect(box["w"] > 0 and box["h"] > 0, f"{at}: empty box")
            expect(box["x"] + box["w"] <= 1 + 1e-6 and box["y"] + box["h"] <= 1 + 1e-6, f"{at}: box leaves the frame")

    # -- rows ------------------------------------------------------------------------------------------------------

    def _metadata(self, record: DataRecord) -> dict[str, Any]:
        unit = next(iter(record.units.values()))
        return {
            "label_hash": record.label_hash,
            "branch_name": "main",
            "created_at": STAMP if record.label_hash else None,
            "last_edited_at": STAMP if record.label_hash else None,
            "data_hash": record.data_hash,
            "dataset_hash": ZERO,
            "dataset_title": "dataset",
            "data_title": record.title,
            "data_type": record.data_type.upper(),
            "data_link": None,
            "label_status": "LABEL_IN_PROGRESS" if record.label_hash else "NOT_LABELLED",
            "annotation_task_status": "QUEUED",
            "workflow_graph_node": None,
            "is_shadow_data": False,
            "number_of_frames": 100 if record.data_type in FRAME_KEYED else 1,
            "duration": unit.get("data_duration"),
            "frames_per_second": unit.get("data_fps"),
            "height": unit["height"],
            "width": unit["width"],
            "spaces": {},
        }

    def _empty_row(self, record: DataRecord) -> dict[str, Any]:
        units = {}
        for unit_hash, unit in record.units.items():
            labels: dict[str, Any] = {} if record.data_type in FRAME_KEYED else {"objects": [], "classifications": []}
            units[unit_hash] = copy.deepcopy(unit) | {"labels": labels}
        return {
            "label_hash": record.label_hash,
            "branch_name": "main",
            "created_at": STAMP,
            "last_edited_at": STAMP,
            "data_hash": record.data_hash,
            "dataset_hash": ZERO,
            "dataset_title": "dataset",
            "data_title": record.title,
            "data_type": record.data_type,
            "annotation_task_status": "QUEUED",
            "is_shadow_data": False,
            "object_answers": {},
            "classification_answers": {},
            "object_actions": {},
            "label_status": "LABEL_IN_PROGRESS",
            "data_units": units,
            "spaces": {},
        }


ZERO = str(uuid.UUID(int=0))


def _unit(data_hash: str, title: str, mime: str, sequence: int | str, width: int, height: int) -> dict[str, Any]:
    return {
        "data_hash": data_hash,
        "data_title": title,
        "data_link": "",
        "data_type": mime,
        "data_sequence": sequence,
        "width": width,
        "height": height,
    }


def _check_time(value: Any, where: str) -> None:
    try:
        datetime.strptime(value, _TIME)
    except (TypeError, ValueError):
        expect(False, f"{where}: {value!r} is not like {STAMP!r}")
