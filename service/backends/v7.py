"""V7 Darwin API v2 client: register items with slots, map classes, import annotations (darwin_v2.md §7, §9).

Endpoints, all under ``{base_url}`` (``https://darwin.v7labs.com/api``) with ``Authorization: ApiKey <key>``:

- ``POST v2/teams/{team}/items/register_existing``: external storage, one item per ``path/name`` with slots.
- ``POST v2/teams/{team}/items/register_upload`` -> ``GET .../uploads/{id}/sign`` -> ``PUT <upload_url>`` (no V7
  auth) -> ``POST .../uploads/{id}/confirm``: local files.
- ``GET v2/teams/{team}/items?...``: find items (``item_names[]``/``item_ids[]`` and ``dataset_ids[]``).
- ``GET teams/{team}/annotation_classes?include_tags=true``, ``GET annotation_types``,
  ``POST annotation_classes``, ``PUT annotation_classes/{id}``: classes by (main type, name).
- ``POST v2/teams/{team}/items/{id}/import``: ``{"annotations": [...], "overwrite": "true"}``.

Re-runs are idempotent: a registration blocked with ``ALREADY_EXISTS`` adopts the existing item, and an import
with ``overwrite: "true"`` replaces the item's annotations instead of adding to them (reliability.md §3.6).
That overwrite also removes what people drew, so items in ``protected_statuses`` (review, complete) are skipped.
The API key is only ever in the ``Authorization`` header, which nothing logs.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from service.backends.http import VendorHttp
from service.backends.retry import BackendError, RetryPolicy
from service.config import Settings
from service.convert.darwin import item_to_darwin
from service.convert.types import ModelRef
from service.pipeline.predictions import ItemPredictions

logger = logging.getLogger(__name__)

BACKEND = "v7"
DEFAULT_BASE_URL = "https://darwin.v7labs.com/api"
READY_STATUSES = frozenset({"new", "annotate", "review", "complete", "archived"})  # importer.py: import allowed
MAIN_TYPES = ("bounding_box", "polygon", "tag")  # what we write; darwin-py knows more
SlotType = Literal["image", "video", "pdf", "dicom"]


@dataclass(frozen=True, slots=True)
class V7Config:
    """One V7 team and dataset.

    Attributes:
        team_slug: The team's slug (URL name).
        dataset_slug: The dataset's slug (registration).
        dataset_id: The dataset's number (class membership and item lookups): ``/datasets/<id>/`` in its URL.
        base_url: API root; ``DARWIN_BASE_URL`` in darwin-py.
        storage_slug: The external storage's name, for ``register_existing``.
        register_chunk: Items per registration request (darwin-py: 10; the docs allow 100).
        import_max_bytes: Chunk size once an import gets 413 (darwin-py: 32,000,000).
        protected_statuses: Item statuses whose annotations are never overwritten.
        timeout_s: Per request.
    """

    team_slug: str
    dataset_slug: str
    dataset_id: int
    base_url: str = DEFAULT_BASE_URL
    storage_slug: str | None = None
    register_chunk: int = 10
    import_max_bytes: int = 32_000_000
    protected_statuses: frozenset[str] = frozenset({"review", "complete", "archived"})
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.register_chunk <= 100:
            raise ValueError(f"register_chunk must be in [1, 100], got {self.register_chunk}")


@dataclass(frozen=True, slots=True)
class V7Slot:
    """One file of an item. ``storage_key`` for ``register_existing``, ``local_path`` for ``register_upload``."""

    slot_name: str
    file_name: str
    storage_key: str | None = None
    local_path: Path | None = None
    type: SlotType | None = None  # inferred by V7 from the extension when None
    fps: float | Literal["native"] | None = None
    as_frames: bool | None = None
    extract_views: bool | None = None


@dataclass(frozen=True, slots=True)
class V7Item:
    """An item to register: ``path/name`` is its identity in the dataset."""

    name: str
    slots: tuple[V7Slot, ...]
    path: str = "/"
    tags: tuple[str, ...] = ()
    layout: Mapping[str, Any] | None = None  # None: v1, horizontal for 2 slots, grid beyond; none for 1

    def __post_init__(self) -> None:
        names = [s.slot_name for s in self.slots]
        if not names or any(not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"item {self.name!r}: slot names must be non-empty and unique, got {names}")

    @property
    def key(self) -> str:
        return f"{self.path.rstrip('/')}/{self.name}"

    def layout_json(self) -> dict[str, Any] | None:
        if self.layout is not None:
            return dict(self.layout)
        if len(self.slots) == 1:
            return None
        kind = "horizontal" if len(self.slots) == 2 else "grid"
        return {"version": 1, "type": kind, "slots": [s.slot_name for s in self.slots]}


@dataclass(frozen=True, slots=True)
class V7PushResult:
    """What one import did.

    Attributes:
        item_id: The V7 item.
        imported: Annotations sent.
        skipped_classes: ``type:name`` -> annotations left out because no class could be made for them.
        requests: Import calls (more than 1 after a 413 split).
        skipped_reason: Why nothing was imported (a protected status), or None.
    """

    item_id: str
    imported: int
    skipped_classes: Mapping[str, int] = field(default_factory=dict)
    requests: int = 1
    skipped_reason: str | None = None


class V7Backend:
    """Synchronous client for one team and dataset."""

    def __init__(
        self,
        config: V7Config,
        api_key: str,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        base = config.base_url.rstrip("/") + "/"
        retry = retry or RetryPolicy()
        api = httpx.Client(
            base_url=base,
            headers={"Authorization": f"ApiKey {api_key}", "Accept": "application/json"},
            timeout=config.timeout_s,
            transport=transport,
            follow_redirects=False,
        )
        self._api = VendorHttp(BACKEND, api, retry)
        # Uploads go to the storage's presigned URL: a separate client, so the API key never leaves for it.
        storage = httpx.Client(timeout=max(config.timeout_s, 300.0), transport=transport, follow_redirects=False)
        self._storage = VendorHttp(BACKEND, storage, retry)
        # (main type, name) -> class id, once known to be in the dataset: one class listing per backend, not per item.
        self._class_ids: dict[tuple[str, str], int] = {}

    def close(self) -> None:
        self._api.close()
        self._storage.close()

    def __enter__(self) -> V7Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registration ----------------------------------------------------------------------------------------------

    def register_existing(self, items: Sequence[V7Item]) -> dict[str, str]:
        """Register files already in the team's external storage; returns ``path/name`` -> item id.

        Raises:
            BackendError: A slot without ``storage_key``, no ``storage_slug`` configured, an item blocked for
                another reason than ``ALREADY_EXISTS``, or an API failure.
        """
        if not self.config.storage_slug:
            raise BackendError(BACKEND, "register_existing needs storage_slug", status=None, retryable=False)
        ids: dict[str, str] = {}
        for chunk in _chunks(items, self.config.register_chunk):
            body = {
                "dataset_slug": self.config.dataset_slug,
                "storage_slug": self.config.storage_slug,
                "items": [_existing_item_json(item) for item in chunk],
            }
            answer = self._json("POST", self._team("items/register_existing"), "registering items", body=body)
            ids |= self._registered(chunk, answer)
        return ids

    def register_upload(self, items: Sequence[V7Item]) -> dict[str, str]:
        """Upload local files (register -> sign -> PUT -> confirm per slot); returns ``path/name`` -> item id."""
        ids: dict[str, str] = {}
        for chunk in _chunks(items, self.config.register_chunk):
            body = {
                "dataset_slug": self.config.dataset_slug,
                "items": [_upload_item_json(item) for item in chunk],
                "options": {"force_tiling": False, "handle_as_slices": False, "ignore_dicom_layout": False},
            }
            answer = self._json("POST", self._team("items/register_upload"), "registering uploads", body=body)
            by_key = {item.key: item for item in chunk}
            for entry in answer.get("items", []):
                item = by_key[_key(entry)]
                files = {s.slot_name: s for s in item.slots}
                for slot in entry.get("slots", []):
                    self._upload(files[slot["slot_name"]], str(slot["upload_id"]))
            ids |= self._registered(chunk, answer)
        return ids

    def _upload(self, slot: V7Slot, upload_id: str) -> None:
        assert slot.local_path is not None  # checked when the payload was built
        signed = self._json("GET", self._team(f"items/uploads/{upload_id}/sign"), "signing an upload")
        # Streamed from disk (videos can be gigabytes), with its length: presigned PUTs take no chunked bodies.
        size = slot.local_path.stat().st_size
        request = self._storage.client.build_request(
            "PUT", str(signed["upload_url"]), content=_FileBody(slot.local_path), headers={"Content-Length": str(size)}
        )
        self._storage.send(request, "uploading a file")
        self._json("POST", self._team(f"items/uploads/{upload_id}/confirm"), "confirming an upload", body={})

    def _registered(self, chunk: Sequence[V7Item], answer: Mapping[str, Any]) -> dict[str, str]:
        ids = {_key(entry): str(entry["id"]) for entry in answer.get("items", [])}
        existing: list[tuple[str, set[Any]]] = []
        refused: list[tuple[str, set[Any]]] = []
        for entry in answer.get("blocked_items", []):
            reasons = {slot.get("reason") for slot in entry.get("slots", [])} or {None}
            (existing if reasons == {"ALREADY_EXISTS"} else refused).append((_key(entry), reasons))
        if refused:
            key, reasons = refused[0]
            raise BackendError(
                BACKEND,
                f"{len(refused)} items blocked, e.g. {key}: {sorted(map(str, reasons))}",
                status=None,
                retryable=False,
            )
        if existing:
            # Registered by an earlier run: adopt it (reconcile before create).
            names = [k.rsplit("/", 1)[1] for k, _ in existing]
            found = {_key(entry): str(entry["id"]) for entry in self.find_items(item_names=names)}
            for key, _ in existing:
                if key not in found:
                    raise BackendError(BACKEND, f"{key} exists but cannot be found", status=None, retryable=True)
                ids[key] = found[key]
        return ids

    # -- items -----------------------------------------------------------------------------------------------------

    def find_items(self, *, item_names: Sequence[str] = (), item_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Items of the dataset by name or id (100 per request, every page)."""
        found: list[dict[str, Any]] = []
        for key, values in (("item_names[]", item_names), ("item_ids[]", item_ids)):
            for chunk in _chunks(list(values), 100):
                params: list[tuple[str, str | int]] = [(key, v) for v in chunk]
                params += [("dataset_ids[]", self.config.dataset_id), ("page[size]", 500)]
                while True:
                    answer = self._json("GET", self._team("items"), "listing items", params=params)
                    found += answer.get("items", [])
                    following = (answer.get("page") or {}).get("next")
                    if not following:
                        break
                    params = [p for p in params if p[0] != "page[from]"] + [("page[from]", str(following))]
        return found

    def item_status(self, item_id: str) -> str:
        """The item's status (``processing``, ``new``, ``annotate``, ``review``...)."""
        found = self.find_items(item_ids=[item_id])
        if not found:
            raise BackendError(
                BACKEND, f"item {item_id} is not in dataset {self.config.dataset_id}", status=404, retryable=False
            )
        return str(found[0].get("status"))

    # -- classes ---------------------------------------------------------------------------------------------------

    def ensure_classes(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Class ids for (main type, name) pairs, adding team classes to the dataset and creating missing ones.

        A class is its (main type, name): a ``bounding_box`` "mass" does not serve ``polygon`` "mass".
        """
        wanted = sorted(set(wanted))
        if all(pair in self._class_ids for pair in wanted):
            return {pair: self._class_ids[pair] for pair in wanted}
        classes = self._team_classes()
        ids: dict[tuple[str, str], int] = {}
        for main_type, name in wanted:
            match = next((c for c in classes if c["name"] == name and main_type in c.get("annotation_types", [])), None)
            if match is None:
                match = self._create_class(main_type, name)
                classes.append(match)
            elif all(d.get("id") != self.config.dataset_id for d in match.get("datasets", [])):
                datasets = [*match.get("datasets", []), {"id": self.config.dataset_id}]
                body = {"datasets": datasets, "id": match["id"]}
                self._json("PUT", f"annotation_classes/{match['id']}", "adding a class to the dataset", body=body)
                match["datasets"] = datasets
            ids[(main_type, name)] = int(match["id"])
        self._class_ids |= ids
        return ids

    def _team_classes(self) -> list[dict[str, Any]]:
        answer = self._json(
            "GET",
            f"teams/{self.config.team_slug}/annotation_classes",
            "listing classes",
            params=[("include_tags", "true")],
        )
        return list(answer.get("annotation_classes", []))

    def _create_class(self, main_type: str, name: str) -> dict[str, Any]:
        types = self._json("GET", "annotation_types", "listing annotation types")
        type_ids = {str(t["name"]): int(t["id"]) for t in types}
        if main_type not in type_ids:
            raise BackendError(BACKEND, f"V7 has no annotation type {main_type!r}", status=None, retryable=False)
        # The inference sub-type too: we send data.inference, and V7's own bbox classes list it (§3.3).
        wanted = [type_ids[main_type]] + ([type_ids["inference"]] if "inference" in type_ids else [])
        body = {
            "dataset_id": self.config.dataset_id,
            "name": name,
            "metadata": {"_color": "auto"},
            "annotation_type_ids": wanted,
            "datasets": [{"id": self.config.dataset_id}],
        }
        created = self._json("POST", "annotation_classes", "creating a class", body=body)
        logger.info("v7: created class %s (%s)", name, main_type)
        return {"annotation_types": [main_type], "datasets": [{"id": self.config.dataset_id}], **created}

    # -- annotations -------------------------------------------------------------------------------------------------

    def push_item(self, item_id: str, item: ItemPredictions, model: ModelRef, *, path: str = "/") -> V7PushResult:
        """Convert with ``item_to_darwin`` (video detections as the tracks their tracker ids name) and
        :meth:`push` it."""
        return self.push(item_id, item_to_darwin(item, model, path=path))

    def push(self, item_id: str, darwin: Mapping[str, Any]) -> V7PushResult:
        """Replace the item's annotations with those of a Darwin JSON 2.0 document.

        Raises:
            BackendError: The item is still processing (retryable), or the API failed.
        """
        status = self.item_status(item_id)
        if status not in READY_STATUSES:
            raise BackendError(
                BACKEND, f"item {item_id} is {status}, not ready for import", status=None, retryable=True
            )
        if status in self.config.protected_statuses:
            logger.warning("v7: item %s is in %s; not overwriting its annotations", item_id, status)
            return V7PushResult(item_id, 0, requests=0, skipped_reason=f"item status {status}")
        annotations = list(darwin.get("annotations", []))
        class_ids = self.ensure_classes(
            (t, str(a["name"]).strip()) for a in annotations if (t := main_type(a)) is not None
        )
        payload, skipped = darwin_to_import(annotations, class_ids)
        requests = self._import(item_id, payload)
        if skipped:
            logger.warning("v7: item %s: %d annotations without a class left out", item_id, sum(skipped.values()))
        return V7PushResult(item_id, len(payload), dict(skipped), requests)

    def _import(self, item_id: str, annotations: list[dict[str, Any]]) -> int:
        path = self._team(f"items/{item_id}/import")
        response = self._api.send(
            self._import_request(path, annotations, overwrite=True), "importing", ok_statuses=frozenset({413})
        )
        if response.status_code != 413:
            return 1
        # Too large: as darwin-py does, split; the first chunk replaces, the others append.
        chunks = list(_size_chunks(annotations, self.config.import_max_bytes))
        for n, chunk in enumerate(chunks):
            self._api.send(self._import_request(path, chunk, overwrite=n == 0), "importing a chunk")
        return 1 + len(chunks)

    def _import_request(self, path: str, annotations: list[dict[str, Any]], *, overwrite: bool) -> httpx.Request:
        body = {"annotations": annotations, "overwrite": "true" if overwrite else "false"}  # strings, not booleans
        return self._api.client.build_request("POST", path, content=json.dumps(body).encode(), headers=_JSON)

    # -- transport -------------------------------------------------------------------------------------------------

    def _team(self, path: str) -> str:
        return f"v2/teams/{self.config.team_slug}/{path}"

    def _json(
        self, method: str, path: str, what: str, *, body: Any = None, params: Sequence[tuple[str, str | int]] = ()
    ) -> Any:
        content = None if body is None else json.dumps(body).encode()
        headers = _JSON if content is not None else None
        return self._api.call_json(method, path, what, content=content, params=list(params), headers=headers)


_JSON = {"Content-Type": "application/json"}


class _FileBody:
    """A file's bytes, read again on every iteration: a retried upload re-sends without a copy in memory."""

    def __init__(self, path: Path, chunk_bytes: int = 1 << 20) -> None:
        self._path, self._chunk = path, chunk_bytes

    def __iter__(self) -> Iterator[bytes]:
        with self._path.open("rb") as fh:
            while chunk := fh.read(self._chunk):
                yield chunk


def main_type(annotation: Mapping[str, Any]) -> str | None:
    """The main shape of a Darwin annotation (image-style, or the first frame's for video-style)."""
    source = annotation
    frames = annotation.get("frames")
    if isinstance(frames, Mapping) and frames:
        source = next(iter(frames.values()))
    return next((t for t in MAIN_TYPES if t in source), None)


def darwin_to_import(
    annotations: Sequence[Mapping[str, Any]], class_ids: Mapping[tuple[str, str], int]
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Darwin JSON 2.0 annotations -> the import endpoint's (darwin-py ``_import_annotations``).

    Image-style: ``data`` holds the shape and ``inference``. Video-style: ``data.frames`` holds only keyframes
    (each with ``attributes: {"attributes": []}``), plus ``segments`` (the ``ranges``), ``interpolated`` and
    ``hidden_areas``. Polygons become ``{"path", "additional_paths"}``.

    Returns:
        The serialised annotations, and ``type:name`` -> count of those left out for want of a class.
    """
    out: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for annotation in annotations:
        kind, name = main_type(annotation), str(annotation.get("name", "")).strip()
        class_id = class_ids.get((kind, name)) if kind else None
        if class_id is None:
            skipped[f"{kind}:{name}"] += 1
            continue
        frames = annotation.get("frames")
        if isinstance(frames, Mapping):
            data: dict[str, Any] = {
                "frames": {
                    str(index): _shape_data(frame, kind) | {"attributes": {"attributes": []}, "keyframe": True}
                    for index, frame in sorted(frames.items(), key=lambda kv: int(kv[0]))
                    if frame.get("keyframe", False)  # darwin-py imports keyframes only
                },
                "segments": annotation.get("ranges") or annotation.get("segments") or [],
                "interpolated": bool(annotation.get("interpolated", False)),
                "hidden_areas": annotation.get("hidden_areas", []),
            }
        else:
            data = _shape_data(annotation, kind)
        out.append(
            {
                "id": annotation["id"],
                "annotation_class_id": class_id,
                "context_keys": {"slot_names": list(annotation.get("slot_names") or ["0"])},
                "data": data,
            }
        )
    return out, skipped


def _shape_data(source: Mapping[str, Any], kind: str | None) -> dict[str, Any]:
    assert kind is not None
    shape = source[kind]
    if kind == "polygon":
        paths = shape.get("paths") or [shape.get("path", [])]
        shape = {"path": paths[0]} | ({"additional_paths": paths[1:]} if len(paths) > 1 else {})
    data: dict[str, Any] = {kind: shape}
    for sub in ("inference", "text", "instance_id"):
        if sub in source:
            data[sub] = source[sub]
    return data


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _size_chunks(annotations: list[dict[str, Any]], max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for annotation in annotations:
        n = len(json.dumps(annotation)) + 2
        if n > max_bytes:
            raise BackendError(BACKEND, f"one annotation is {n} bytes, over {max_bytes}", status=413, retryable=False)
        if chunk and size + n > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(annotation)
        size += n
    if chunk:
        yield chunk


def _key(entry: Mapping[str, Any]) -> str:
    return f"{str(entry.get('path', '/')).rstrip('/')}/{entry['name']}"


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _item_json(item: V7Item, slots: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"name": item.name, "path": item.path}
    if (layout := item.layout_json()) is not None:
        body["layout"] = layout
    body["slots"] = slots
    if item.tags:
        body["tags"] = list(item.tags)  # at the item root (§9.1)
    return body


def _existing_item_json(item: V7Item) -> dict[str, Any]:
    slots = []
    for s in item.slots:
        if not s.storage_key:
            raise BackendError(BACKEND, f"{item.key} slot {s.slot_name}: no storage_key", status=None, retryable=False)
        slots.append(
            _drop_none(
                {
                    "slot_name": s.slot_name,
                    "type": s.type,
                    "storage_key": s.storage_key,
                    "file_name": s.file_name,
                    "fps": s.fps,
                    "as_frames": s.as_frames,
                    "extract_views": s.extract_views,
                }
            )
        )
    return _item_json(item, slots)


def _upload_item_json(item: V7Item) -> dict[str, Any]:
    slots = []
    for s in item.slots:
        if s.local_path is None:
            raise BackendError(BACKEND, f"{item.key} slot {s.slot_name}: no local_path", status=None, retryable=False)
        slots.append(
            _drop_none(
                {
                    "slot_name": s.slot_name,
                    "file_name": s.file_name,
                    "type": s.type,
                    "fps": s.fps,
                    "as_frames": bool(s.as_frames),
                    "extract_views": s.extract_views,
                }
            )
        )
    return _item_json(item, slots)


def v7_config_from(settings: Settings) -> V7Config:
    """The V7 dataset the settings name; ValueError when they name none."""
    if not (settings.v7_team_slug and settings.v7_dataset_slug and settings.v7_dataset_id):
        raise ValueError("V7 needs v7_team_slug, v7_dataset_slug and v7_dataset_id")
    return V7Config(
        team_slug=settings.v7_team_slug,
        dataset_slug=settings.v7_dataset_slug,
        dataset_id=settings.v7_dataset_id,
        base_url=settings.v7_base_url,
        storage_slug=settings.v7_storage_slug,
    )
