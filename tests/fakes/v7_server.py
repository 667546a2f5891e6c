"""A fake V7 Darwin API (v2 items, classes, annotation import) that checks every request against darwin_v2.md
(§7 import, §7.3 classes, §9 registration) and keeps state: items with slots, uploads, classes, annotations.

Presigned upload URLs point back at this server (``/upload-bucket/...``); a PUT there must carry no V7 key.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http import FakeApp, Request, Response, expect, expect_keys

SLOT_TYPES = {"image", "video", "pdf", "dicom"}
LAYOUT_TYPES = {"grid", "horizontal", "vertical", "simple"}
READY = {"new", "annotate", "review", "complete", "archived"}
ANNOTATION_TYPES = [
    {"id": 1, "name": "bounding_box"},
    {"id": 2, "name": "polygon"},
    {"id": 3, "name": "tag"},
    {"id": 4, "name": "keypoint"},
    {"id": 10, "name": "inference"},
    {"id": 11, "name": "text"},
    {"id": 12, "name": "attributes"},
]
SUB_DATA = {"inference", "text", "instance_id", "attributes"}
_EXT_TYPE = {".mp4": "video", ".mov": "video", ".pdf": "pdf", ".dcm": "dicom"}


@dataclass
class Item:
    id: str
    name: str
    path: str
    slots: list[dict[str, Any]]  # slot_name, file_name, type, upload_id?, uploaded?
    layout: dict[str, Any] | None
    status: str
    tags: list[str] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)  # overwrite values received, in order


@dataclass
class FakeV7(FakeApp):
    """One team, one dataset (slug and id), one external storage."""

    api_key: str = "fake-key"
    team: str = "acme"
    dataset_slug: str = "mammo"
    dataset_id: int = 7
    storage_slug: str = "my-s3-storage"
    processing_polls: int = 0  # status reads an item stays "processing" after registration
    max_import_bytes: int | None = None  # answer 413 above this (the real limit is ~32 MB)
    page_size_cap: int = 500
    block: dict[str, str] = field(default_factory=dict)  # item name -> blocked_items reason to answer
    items: dict[str, Item] = field(default_factory=dict)
    classes: list[dict[str, Any]] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    bodies: list[tuple[str, Any]] = field(default_factory=list)  # (path, JSON body) of every JSON request

    def __post_init__(self) -> None:
        FakeApp.__init__(self)
        self._reads: dict[str, int] = {}

    def add_class(self, name: str, types: list[str], datasets: list[int]) -> int:
        class_id = 100 + len(self.classes)
        self.classes.append(
            {"id": class_id, "name": name, "annotation_types": types, "datasets": [{"id": d} for d in datasets]}
        )
        return class_id

    def item(self, name: str) -> Item:
        return next(i for i in self.items.values() if i.name == name)

    # -- routing ---------------------------------------------------------------------------------------------------

    def route(self, request: Request) -> Response:
        if request.path.startswith("/upload-bucket/"):
            return self._put_upload(request)
        expect(request.headers.get("authorization") == f"ApiKey {self.api_key}", "Authorization must be 'ApiKey <key>'")
        body: Any = None
        if request.method in ("POST", "PUT"):
            expect(request.headers.get("content-type") == "application/json", "Content-Type must be application/json")
            body = request.json()
            self.bodies.append((request.path, body))
        team = f"/api/v2/teams/{self.team}/items"
        routes = [
            ("POST", rf"{team}/register_existing", self._register_existing),
            ("POST", rf"{team}/register_upload", self._register_upload),
            ("GET", rf"{team}/uploads/(?P<upload>[^/]+)/sign", self._sign),
            ("POST", rf"{team}/uploads/(?P<upload>[^/]+)/confirm", self._confirm),
            ("GET", rf"{team}", self._list_items),
            ("POST", rf"{team}/(?P<item>[^/]+)/import", self._import),
            ("GET", rf"/api/teams/{self.team}/annotation_classes", self._list_classes),
            ("GET", r"/api/annotation_types", lambda r, b: Response(200, ANNOTATION_TYPES)),
            ("POST", r"/api/annotation_classes", self._create_class),
            ("PUT", r"/api/annotation_classes/(?P<cls>\d+)", self._update_class),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                return handler(request, body)  # type: ignore[operator, no-any-return]
        expect(False, "no such endpoint")
        raise AssertionError  # unreachable

    # -- registration ----------------------------------------------------------------------------------------------

    def _register_existing(self, request: Request, body: Any) -> Response:
        expect_keys(body, {"dataset_slug", "storage_slug", "items"})
        expect(body["dataset_slug"] == self.dataset_slug, "unknown dataset_slug")
        expect(body["storage_slug"] == self.storage_slug, "unknown storage_slug")
        slot_keys = {"slot_name", "file_name", "storage_key"}
        slot_optional = {"type", "fps", "as_frames", "extract_views", "metadata", "tags"}
        return self._register(body["items"], slot_keys, slot_optional, upload=False)

    def _register_upload(self, request: Request, body: Any) -> Response:
        expect_keys(body, {"dataset_slug", "items"}, {"options"})
        expect(body["dataset_slug"] == self.dataset_slug, "unknown dataset_slug")
        if "options" in body:
            expect_keys(body["options"], set(), {"force_tiling", "handle_as_slices", "ignore_dicom_layout"}, "options")
        slot_optional = {"type", "fps", "as_frames", "extract_views", "metadata", "tags"}
        return self._register(body["items"], {"slot_name", "file_name"}, slot_optional, upload=True)

    def _register(self, items: Any, slot_keys: set[str], slot_optional: set[str], *, upload: bool) -> Response:
        expect(isinstance(items, list) and 0 < len(items) <= 100, "items: 1 to 100 per request")
        registered, blocked = [], []
        for n, entry in enumerate(items):
            where = f"items[{n}]"
            expect_keys(entry, {"name", "path", "slots"}, {"layout", "tags"}, where)
            expect(isinstance(entry["name"], str) and entry["name"] != "", f"{where}: name")
            expect(str(entry["path"]).startswith("/"), f"{where}: path must start with /")
            slots = entry["slots"]
            expect(isinstance(slots, list) and slots, f"{where}: slots")
            names = []
            for m, slot in enumerate(slots):
                at = f"{where}.slots[{m}]"
                expect_keys(slot, slot_keys, slot_optional, at)
                expect(bool(slot["slot_name"]) and bool(slot["file_name"]), f"{at}: slot_name and file_name required")
                if "type" in slot:
                    expect(slot["type"] in SLOT_TYPES, f"{at}: type {slot['type']!r}")
                if "fps" in slot:
                    fps, kind = slot["fps"], slot.get("type") or _type_of(slot["file_name"])
                    expect(fps == "native" or (isinstance(fps, int | float) and fps >= 0), f"{at}: fps")
                    expect(kind != "image" or fps in (0, 1.0), f"{at}: an image's fps is 0 or 1")
                if "storage_key" in slot:
                    expect(not str(slot["storage_key"]).startswith("s3://"), f"{at}: storage_key is a key, no bucket")
                names.append(slot["slot_name"])
            expect(len(set(names)) == len(names), f"{where}: slot names must be unique")
            if len(slots) > 1 or "layout" in entry:
                expect("layout" in entry, f"{where}: several slots need a layout")
                _check_layout(entry["layout"], names, where)
            if "tags" in entry:
                expect(all(isinstance(t, str) for t in entry["tags"]), f"{where}: tags are strings")
            exists = any(i.name == entry["name"] and i.path == entry["path"] for i in self.items.values())
            reason = self.block.get(entry["name"]) or ("ALREADY_EXISTS" if exists else None)
            if reason:
                slots_blocked = [{"slot_name": s, "reason": reason} for s in names]
                blocked.append({"name": entry["name"], "path": entry["path"], "slots": slots_blocked})
                continue
            item = Item(
                id=str(uuid.uuid4()),
                name=entry["name"],
                path=entry["path"],
                slots=[
                    {
                        "slot_name": s["slot_name"],
                        "file_name": s["file_name"],
                        "type": s.get("type") or _type_of(s["file_name"]),
                        "as_frames": bool(s.get("as_frames", False)),
                        "extract_views": bool(s.get("extract_views", False)),
                    }
                    | ({"upload_id": str(uuid.uuid4()), "uploaded": False, "confirmed": False} if upload else {})
                    for s in slots
                ],
                layout=entry.get("layout"),
                status="uploading" if upload else "processing",
                tags=list(entry.get("tags", [])),
            )
            self.items[item.id] = item
            self._reads[item.id] = 0
            registered.append({"id": item.id, "name": item.name, "path": item.path, "slots": _public_slots(item)})
        return Response(200, {"blocked_items": blocked, "items": registered})

    def _upload(self, upload_id: str) -> tuple[Item, dict[str, Any]]:
        for item in self.items.values():
            for slot in item.slots:
                if slot.get("upload_id") == upload_id:
                    return item, slot
        expect(False, f"unknown upload {upload_id}")
        raise AssertionError

    def _sign(self, request: Request, body: Any) -> Response:
        expect(not request.query, "sign takes no query")
        self._upload(request.params["upload"])
        url = f"{self.base_url}/upload-bucket/{request.params['upload']}?X-Amz-Signature=SIGNED-SECRET"
        return Response(200, {"upload_url": url})

    def _put_upload(self, request: Request) -> Response:
        expect(request.method == "PUT", "uploads are PUT")
        expect("authorization" not in request.headers, "the V7 API key must not go to the storage URL")
        expect(("X-Amz-Signature", "SIGNED-SECRET") in request.query, "unsigned upload")
        upload_id = request.path.rsplit("/", 1)[1]
        _, slot = self._upload(upload_id)
        expect(len(request.body) > 0, "empty upload")
        self.uploads[upload_id] = request.body
        slot["uploaded"] = True
        return Response(200, b"")

    def _confirm(self, request: Request, body: Any) -> Response:
        expect(body == {}, "confirm takes {}")
        item, slot = self._upload(request.params["upload"])
        expect(slot["uploaded"], "confirmed before the PUT")
        slot["confirmed"] = True
        if all(s.get("confirmed") for s in item.slots):
            item.status = "processing"
        return Response(200, {})

    # -- items -----------------------------------------------------------------------------------------------------

    def _list_items(self, request: Request, body: Any) -> Response:
        allowed = {"item_names[]", "item_ids[]", "dataset_ids[]", "page[size]", "page[from]", "include_workflow_data"}
        keys = {k for k, _ in request.query}
        expect(keys <= allowed, f"unknown query parameters {sorted(keys - allowed)}")
        expect([v for k, v in request.query if k == "dataset_ids[]"] == [str(self.dataset_id)], "dataset_ids[] needed")
        names = {v for k, v in request.query if k == "item_names[]"}
        ids = {v for k, v in request.query if k == "item_ids[]"}
        expect(len(names) + len(ids) <= 100, "at most 100 names or ids per request")
        found = [i for i in self.items.values() if (not names or i.name in names) and (not ids or i.id in ids)]
        size = min(int(dict(request.query).get("page[size]", 500)), self.page_size_cap)
        start = int(dict(request.query).get("page[from]", 0))
        page = found[start : start + size]
        for item in page:
            self._reads[item.id] = self._reads.get(item.id, 0) + 1
            if item.status == "processing" and self._reads[item.id] > self.processing_polls:
                item.status = "new"
        following = str(start + size) if start + size < len(found) else None
        return Response(
            200,
            {
                "items": [_public_item(i, self.dataset_id) for i in page],
                "page": {"count": len(found), "next": following},
            },
        )

    # -- classes ---------------------------------------------------------------------------------------------------

    def _list_classes(self, request: Request, body: Any) -> Response:
        expect(request.query == [("include_tags", "true")], "include_tags=true expected")
        return Response(200, {"annotation_classes": self.classes})

    def _create_class(self, request: Request, body: Any) -> Response:
        expect_keys(body, {"dataset_id", "name", "metadata", "annotation_type_ids", "datasets"})
        expect(body["dataset_id"] == self.dataset_id and body["datasets"] == [{"id": self.dataset_id}], "dataset")
        expect(body["metadata"] == {"_color": "auto"}, "metadata")
        types = {t["id"]: t["name"] for t in ANNOTATION_TYPES}
        expect(all(t in types for t in body["annotation_type_ids"]), "unknown annotation_type_ids")
        names = [types[t] for t in body["annotation_type_ids"]]
        main = [n for n in names if n in ("bounding_box", "polygon", "tag", "keypoint")]
        expect(len(main) == 1, "exactly one main type")
        duplicate = any(c["name"] == body["name"] and main[0] in c["annotation_types"] for c in self.classes)
        if duplicate:
            return Response(422, {"errors": {"name": ["has already been taken"]}})
        class_id = self.add_class(body["name"], names, [self.dataset_id])
        return Response(200, next(c for c in self.classes if c["id"] == class_id))

    def _update_class(self, request: Request, body: Any) -> Response:
        expect_keys(body, {"datasets", "id"})
        cls = next((c for c in self.classes if c["id"] == int(request.params["cls"])), None)
        expect(cls is not None and body["id"] == cls["id"], "class id")
        assert cls is not None
        expect(all(d in body["datasets"] for d in cls["datasets"]), "PUT must keep the class's other datasets")
        cls["datasets"] = body["datasets"]
        return Response(200, cls)

    # -- import ----------------------------------------------------------------------------------------------------

    def _import(self, request: Request, body: Any) -> Response:
        if self.max_import_bytes is not None and len(request.body) > self.max_import_bytes:
            self.bodies.pop()
            return Response(413, {"errors": "payload too large"})
        item = self.items.get(request.params["item"])
        expect(item is not None, "unknown item")
        assert item is not None
        expect(item.status in READY, f"item is {item.status}: import needs a processed item")
        expect_keys(body, {"annotations", "overwrite"}, {"properties", "actors"})
        expect(body["overwrite"] in ("true", "false"), "overwrite is the string 'true' or 'false'")
        slots = {s["slot_name"]: s for s in item.slots}
        for n, annotation in enumerate(body["annotations"]):
            self._check_annotation(annotation, slots, f"annotations[{n}]")
        kept = [] if body["overwrite"] == "true" else item.annotations
        ids = [a["id"] for a in kept + body["annotations"]]
        expect(len(set(ids)) == len(ids), "duplicate annotation ids on the item")
        item.annotations = kept + body["annotations"]
        item.imports.append(body["overwrite"])
        return Response(200, {})

    def _check_annotation(self, annotation: Any, slots: dict[str, dict[str, Any]], where: str) -> None:
        expect_keys(annotation, {"id", "annotation_class_id", "context_keys", "data"}, {"actors"}, where)
        expect(re.fullmatch(r"[0-9a-f-]{36}", str(annotation["id"])) is not None, f"{where}: id must be a UUID")
        cls = next((c for c in self.classes if c["id"] == annotation["annotation_class_id"]), None)
        expect(cls is not None, f"{where}: unknown annotation_class_id")
        assert cls is not None
        expect({"id": self.dataset_id} in cls["datasets"], f"{where}: class not in the dataset")
        expect_keys(annotation["context_keys"], {"slot_names"}, where=f"{where}.context_keys")
        slot_names = annotation["context_keys"]["slot_names"]
        expect(len(slot_names) == 1 and slot_names[0] in slots, f"{where}: slot_names must name one slot of the item")
        slot = slots[slot_names[0]]
        main = next(t for t in cls["annotation_types"] if t in ("bounding_box", "polygon", "tag", "keypoint"))
        data = annotation["data"]
        if "frames" in data:
            expect(slot["type"] in ("video", "dicom"), f"{where}: frames on a {slot['type']} slot")
            expect_keys(data, {"frames", "segments", "interpolated", "hidden_areas"}, where=f"{where}.data")
            expect(isinstance(data["interpolated"], bool), f"{where}: interpolated is a bool")
            indices = []
            for key, frame in data["frames"].items():
                expect(key.isdigit(), f"{where}: frame key {key!r}")
                expect(frame.get("keyframe") is True, f"{where}: only keyframes are imported")
                expect(frame.get("attributes") == {"attributes": []}, f"{where}: frame attributes")
                rest = {k: v for k, v in frame.items() if k not in ("keyframe", "attributes")}
                self._check_shape(rest, main, f"{where}.frames[{key}]")
                indices.append(int(key))
            segments = data["segments"]
            expect(all(len(s) == 2 and s[0] < s[1] for s in segments), f"{where}: segments are [start, end)")
            expect(
                all(any(s[0] <= i < s[1] for s in segments) for i in indices), f"{where}: a keyframe outside segments"
            )
        else:
            expect(
                slot["type"] in ("image", "pdf") or main == "tag",
                f"{where}: a still annotation on a {slot['type']} slot",
            )
            self._check_shape(data, main, f"{where}.data")

    def _check_shape(self, data: dict[str, Any], main: str, where: str) -> None:
        expect(main in data, f"{where}: the class is {main}, the data has {sorted(data)}")
        expect_keys(data, {main}, SUB_DATA, where)
        shape = data[main]
        if main == "bounding_box":
            expect_keys(shape, {"x", "y", "w", "h"}, where=f"{where}.bounding_box")
            expect(all(isinstance(v, int | float) for v in shape.values()), f"{where}: numbers")
            expect(shape["w"] >= 0 and shape["h"] >= 0, f"{where}: negative size")
        elif main == "polygon":
            expect_keys(shape, {"path"}, {"additional_paths"}, f"{where}.polygon")
        elif main == "tag":
            expect(shape == {}, f"{where}: tag is {{}}")
        if "inference" in data:
            inference = data["inference"]
            expect_keys(inference, {"confidence", "model"}, where=f"{where}.inference")
            expect(0 <= inference["confidence"] <= 1, f"{where}: confidence outside 0..1")
            expect_keys(inference["model"], {"id", "name", "type"}, where=f"{where}.inference.model")
            expect(inference["model"]["type"] == "external", f"{where}: model type")


def _type_of(file_name: str) -> str:
    suffix = "." + file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    return _EXT_TYPE.get(suffix, "image")


def _check_layout(layout: Any, names: list[str], where: str) -> None:
    expect(isinstance(layout, dict), f"{where}: layout")
    if layout.get("version") == 3:
        expect_keys(layout, {"version", "slots_grid"}, where=f"{where}.layout")
        listed = [s for column in layout["slots_grid"] for row in column for s in row]
    else:
        expect(layout.get("version") in (1, 2), f"{where}: layout version 1, 2 or 3")
        expect_keys(layout, {"version", "type", "slots"}, {"layout_shape"}, f"{where}.layout")
        expect(layout["type"] in LAYOUT_TYPES, f"{where}: layout type {layout['type']!r}")
        listed = layout["slots"]
    expect(sorted(listed) == sorted(names), f"{where}: layout must list every slot once")


def _public_slots(item: Item) -> list[dict[str, Any]]:
    keys = ("slot_name", "file_name", "type", "upload_id", "as_frames", "extract_views")
    return [{k: s[k] for k in keys if k in s} for s in item.slots]


def _public_item(item: Item, dataset_id: int) -> dict[str, Any]:
    return {
        "id": item.id,
        "name": item.name,
        "path": item.path,
        "status": item.status,
        "archived": False,
        "dataset_id": dataset_id,
        "layout": item.layout,
        "slots": [{k: s[k] for k in ("slot_name", "file_name", "type")} for s in item.slots],
    }
