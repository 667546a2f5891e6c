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
from typing import Literal, NotRequired, TypedDict, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

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
# What we write; darwin-py knows more. A polygon comes first: it carries a derived bounding_box beside it.
MAIN_TYPES = ("polygon", "bounding_box", "tag")
PROMPTED_MAIN_TYPES = ("bounding_box", "polygon")
"""Class types a detector's predictions are written as (boxes, and masks as polygons): what prompts come from."""
SlotType = Literal["image", "video", "pdf", "dicom"]
T = TypeVar("T")


# -- what V7 answers (read once here; fields we do not use are ignored) ---------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class V7SlotEntry(_Answer):
    """A slot of a registered or blocked item: its upload (``register_upload``) or why it was blocked."""

    slot_name: str | None = None
    upload_id: str | None = None
    reason: str | None = None


class V7ItemEntry(_Answer):
    """An item as V7 lists or registers it."""

    id: str
    name: str
    path: str = "/"
    status: str | None = None
    slots: tuple[V7SlotEntry, ...] = ()

    @property
    def key(self) -> str:
        return _key(self.path, self.name)


class V7BlockedEntry(_Answer):
    name: str
    path: str = "/"
    slots: tuple[V7SlotEntry, ...] = ()

    @property
    def key(self) -> str:
        return _key(self.path, self.name)


class V7Registered(_Answer):
    """``register_existing`` / ``register_upload``'s answer."""

    items: tuple[V7ItemEntry, ...] = ()
    blocked_items: tuple[V7BlockedEntry, ...] = ()


class V7Page(_Answer):
    next: str | None = None


class V7ItemPage(_Answer):
    """One page of ``GET items``."""

    items: tuple[V7ItemEntry, ...] = ()
    page: V7Page | None = None


class V7SignedUpload(_Answer):
    upload_url: str


class V7DatasetRef(BaseModel):
    """A dataset a class belongs to; sent back as V7 gave it (other keys kept) when the class gains a dataset."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: int


class V7Class(_Answer):
    """An annotation class of the team."""

    id: int
    name: str
    annotation_types: tuple[str, ...] = ()
    datasets: tuple[V7DatasetRef, ...] = ()


class V7ClassList(_Answer):
    annotation_classes: list[V7Class] = Field(default_factory=list)


class V7CreatedClass(_Answer):
    id: int


class V7AnnotationType(_Answer):
    id: int
    name: str


# -- what we send ---------------------------------------------------------------------------------------------------


class V7SlotBody(TypedDict, total=False):
    """A slot of a registration request (``register_existing`` gives ``storage_key``)."""

    slot_name: str
    type: SlotType
    storage_key: str
    file_name: str
    fps: float | Literal["native"]
    as_frames: bool
    extract_views: bool


class V7Layout(TypedDict):
    version: int
    type: str
    slots: list[str]


class V7ItemBody(TypedDict):
    name: str
    path: str
    layout: NotRequired[Mapping[str, object]]
    slots: list[V7SlotBody]
    tags: NotRequired[list[str]]


class V7ContextKeys(TypedDict):
    slot_names: list[str]


class V7ImportAnnotation(TypedDict):
    """One annotation of ``POST items/{id}/import``; ``data`` holds the shape under its main type's key, so its
    keys depend on the shape (``bounding_box``, ``polygon``, ``tag``, or ``frames``/``segments`` for video)."""

    id: object
    annotation_class_id: int
    context_keys: V7ContextKeys
    data: dict[str, object]


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
    layout: Mapping[str, object] | None = None  # None: v1, horizontal for 2 slots, grid beyond; none for 1

    def __post_init__(self) -> None:
        names = [s.slot_name for s in self.slots]
        if not names or any(not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"item {self.name!r}: slot names must be non-empty and unique, got {names}")

    @property
    def key(self) -> str:
        return f"{self.path.rstrip('/')}/{self.name}"

    def layout_json(self) -> Mapping[str, object] | None:
        if self.layout is not None:
            return dict(self.layout)
        if len(self.slots) == 1:
            return None
        kind = "horizontal" if len(self.slots) == 2 else "grid"
        return V7Layout(version=1, type=kind, slots=[s.slot_name for s in self.slots])


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
            answer = self._json(
                V7Registered, "POST", self._team("items/register_existing"), "registering items", body=body
            )
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
            answer = self._json(
                V7Registered, "POST", self._team("items/register_upload"), "registering uploads", body=body
            )
            by_key = {item.key: item for item in chunk}
            for entry in answer.items:
                item = by_key[entry.key]
                files = {s.slot_name: s for s in item.slots}
                for slot in entry.slots:
                    if slot.slot_name not in files or slot.upload_id is None:
                        raise BackendError(
                            BACKEND, f"registering uploads: no upload for {entry.key}", status=None, retryable=False
                        )
                    self._upload(files[slot.slot_name], slot.upload_id)
            ids |= self._registered(chunk, answer)
        return ids

    def _upload(self, slot: V7Slot, upload_id: str) -> None:
        assert slot.local_path is not None  # checked when the payload was built
        signed = self._json(V7SignedUpload, "GET", self._team(f"items/uploads/{upload_id}/sign"), "signing an upload")
        # Streamed from disk (videos can be gigabytes), with its length: presigned PUTs take no chunked bodies.
        size = slot.local_path.stat().st_size
        request = self._storage.client.build_request(
            "PUT", signed.upload_url, content=_FileBody(slot.local_path), headers={"Content-Length": str(size)}
        )
        self._storage.send(request, "uploading a file")
        confirm = self._team(f"items/uploads/{upload_id}/confirm")
        self._api.call_json("POST", confirm, "confirming an upload", **_body({}))

    def _registered(self, chunk: Sequence[V7Item], answer: V7Registered) -> dict[str, str]:
        ids = {entry.key: entry.id for entry in answer.items}
        existing: list[tuple[str, set[str | None]]] = []
        refused: list[tuple[str, set[str | None]]] = []
        for entry in answer.blocked_items:
            reasons = {slot.reason for slot in entry.slots} or {None}
            (existing if reasons == {"ALREADY_EXISTS"} else refused).append((entry.key, reasons))
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
            found = {entry.key: entry.id for entry in self.find_items(item_names=names)}
            for key, _ in existing:
                if key not in found:
                    raise BackendError(BACKEND, f"{key} exists but cannot be found", status=None, retryable=True)
                ids[key] = found[key]
        return ids

    # -- items -----------------------------------------------------------------------------------------------------

    def find_items(self, *, item_names: Sequence[str] = (), item_ids: Sequence[str] = ()) -> list[V7ItemEntry]:
        """Items of the dataset by name or id (100 per request, every page)."""
        found: list[V7ItemEntry] = []
        for key, values in (("item_names[]", item_names), ("item_ids[]", item_ids)):
            for chunk in _chunks(list(values), 100):
                params: list[tuple[str, str | int]] = [(key, v) for v in chunk]
                params += [("dataset_ids[]", self.config.dataset_id), ("page[size]", 500)]
                while True:
                    answer = self._json(V7ItemPage, "GET", self._team("items"), "listing items", params=params)
                    found += answer.items
                    following = answer.page.next if answer.page else None
                    if not following:
                        break
                    params = [p for p in params if p[0] != "page[from]"] + [("page[from]", following)]
        return found

    def item_status(self, item_id: str) -> str:
        """The item's status (``processing``, ``new``, ``annotate``, ``review``...)."""
        found = self.find_items(item_ids=[item_id])
        if not found:
            raise BackendError(
                BACKEND, f"item {item_id} is not in dataset {self.config.dataset_id}", status=404, retryable=False
            )
        return str(found[0].status)

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
            found = next((c for c in classes if c.name == name and main_type in c.annotation_types), None)
            if found is None:
                match = self._create_class(main_type, name)
                classes.append(match)
            elif all(d.id != self.config.dataset_id for d in found.datasets):
                datasets = (*found.datasets, V7DatasetRef(id=self.config.dataset_id))
                body = {"datasets": [d.model_dump() for d in datasets], "id": found.id}
                self._api.call_json(
                    "PUT", f"annotation_classes/{found.id}", "adding a class to the dataset", **_body(body)
                )
                match = found.model_copy(update={"datasets": datasets})
                classes[classes.index(found)] = match
            else:
                match = found
            ids[(main_type, name)] = match.id
        self._class_ids |= ids
        return ids

    def dataset_class_names(self, main_types: Sequence[str] = PROMPTED_MAIN_TYPES) -> list[str]:
        """The names of the dataset's classes of one of ``main_types``, in the team's listing order, once each
        ignoring case (one name with two types is one class to prompt for): an open-vocabulary model's prompts.

        Raises:
            BackendError: listing the team's classes failed (after the retry policy).
        """
        names: dict[str, str] = {}
        for cls in self._team_classes():
            in_dataset = any(d.id == self.config.dataset_id for d in cls.datasets)
            if in_dataset and any(t in main_types for t in cls.annotation_types):
                names.setdefault(cls.name.strip().lower(), cls.name)
        return list(names.values())

    def _team_classes(self) -> list[V7Class]:
        answer = self._json(
            V7ClassList,
            "GET",
            f"teams/{self.config.team_slug}/annotation_classes",
            "listing classes",
            params=[("include_tags", "true")],
        )
        return list(answer.annotation_classes)

    def _create_class(self, main_type: str, name: str) -> V7Class:
        types = self._json(list[V7AnnotationType], "GET", "annotation_types", "listing annotation types")
        type_ids = {t.name: t.id for t in types}
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
        created = self._json(V7CreatedClass, "POST", "annotation_classes", "creating a class", body=body)
        logger.info("v7: created class %s (%s)", name, main_type)
        return V7Class(
            id=created.id, name=name, annotation_types=(main_type,), datasets=(V7DatasetRef(id=self.config.dataset_id),)
        )

    # -- annotations -------------------------------------------------------------------------------------------------

    def push_item(self, item_id: str, item: ItemPredictions, model: ModelRef, *, path: str = "/") -> V7PushResult:
        """Convert with ``item_to_darwin`` (video detections as the tracks their tracker ids name) and
        :meth:`push` it."""
        return self.push(item_id, item_to_darwin(item, model, path=path))

    def push(self, item_id: str, darwin: Mapping[str, object]) -> V7PushResult:
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
        annotations = _mappings(darwin.get("annotations"))
        class_ids = self.ensure_classes(
            (t, str(a["name"]).strip()) for a in annotations if (t := main_type(a)) is not None
        )
        payload, skipped = darwin_to_import(annotations, class_ids)
        requests = self._import(item_id, payload)
        if skipped:
            logger.warning("v7: item %s: %d annotations without a class left out", item_id, sum(skipped.values()))
        return V7PushResult(item_id, len(payload), dict(skipped), requests)

    def _import(self, item_id: str, annotations: list[V7ImportAnnotation]) -> int:
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

    def _import_request(self, path: str, annotations: list[V7ImportAnnotation], *, overwrite: bool) -> httpx.Request:
        body = {"annotations": annotations, "overwrite": "true" if overwrite else "false"}  # strings, not booleans
        return self._api.client.build_request("POST", path, content=json.dumps(body).encode(), headers=_JSON)

    # -- transport -------------------------------------------------------------------------------------------------

    def _team(self, path: str) -> str:
        return f"v2/teams/{self.config.team_slug}/{path}"

    def _json(
        self,
        kind: type[T],
        method: str,
        path: str,
        what: str,
        *,
        body: object = None,
        params: Sequence[tuple[str, str | int]] = (),
    ) -> T:
        return self._api.call_as(kind, method, path, what, params=list(params), **_body(body))


_JSON = {"Content-Type": "application/json"}


class _JsonBody(TypedDict):
    content: bytes | None
    headers: Mapping[str, str] | None


def _body(body: object) -> _JsonBody:
    """A request body as V7 takes it: JSON bytes (a retry can replay them); None sends none."""
    if body is None:
        return {"content": None, "headers": None}
    return {"content": json.dumps(body).encode(), "headers": _JSON}


def _mappings(value: object) -> list[Mapping[str, object]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list | tuple) else []


class _FileBody:
    """A file's bytes, read again on every iteration: a retried upload re-sends without a copy in memory."""

    def __init__(self, path: Path, chunk_bytes: int = 1 << 20) -> None:
        self._path, self._chunk = path, chunk_bytes

    def __iter__(self) -> Iterator[bytes]:
        with self._path.open("rb") as fh:
            while chunk := fh.read(self._chunk):
                yield chunk


def main_type(annotation: Mapping[str, object]) -> str | None:
    """The main shape of a Darwin annotation (image-style, or the first frame's for video-style)."""
    source = annotation
    frames = annotation.get("frames")
    if isinstance(frames, Mapping) and frames:
        first = next(iter(frames.values()))
        source = first if isinstance(first, Mapping) else {}
    return next((t for t in MAIN_TYPES if t in source), None)


def darwin_to_import(
    annotations: Sequence[Mapping[str, object]], class_ids: Mapping[tuple[str, str], int]
) -> tuple[list[V7ImportAnnotation], Counter[str]]:
    """Darwin JSON 2.0 annotations -> the import endpoint's (darwin-py ``_import_annotations``).

    Image-style: ``data`` holds the shape and ``inference``. Video-style: ``data.frames`` holds only keyframes
    (each with ``attributes: {"attributes": []}``), plus ``segments`` (the ``ranges``), ``interpolated`` and
    ``hidden_areas``. Polygons become ``{"path", "additional_paths"}``.

    Returns:
        The serialised annotations, and ``type:name`` -> count of those left out for want of a class.
    """
    out: list[V7ImportAnnotation] = []
    skipped: Counter[str] = Counter()
    for annotation in annotations:
        kind, name = main_type(annotation), str(annotation.get("name", "")).strip()
        class_id = class_ids.get((kind, name)) if kind else None
        if class_id is None:
            skipped[f"{kind}:{name}"] += 1
            continue
        frames = annotation.get("frames")
        if isinstance(frames, Mapping):
            data: dict[str, object] = {
                "frames": {
                    str(index): _shape_data(frame, kind) | {"attributes": {"attributes": []}, "keyframe": True}
                    for index, frame in sorted(frames.items(), key=lambda kv: int(kv[0]))
                    if isinstance(frame, Mapping) and frame.get("keyframe", False)  # darwin-py: keyframes only
                },
                "segments": annotation.get("ranges") or annotation.get("segments") or [],
                "interpolated": bool(annotation.get("interpolated", False)),
                "hidden_areas": annotation.get("hidden_areas", []),
            }
        else:
            data = _shape_data(annotation, kind)
        slot_names = annotation.get("slot_names")
        out.append(
            {
                "id": annotation["id"],
                "annotation_class_id": class_id,
                "context_keys": {"slot_names": list(map(str, slot_names)) if isinstance(slot_names, list) else ["0"]},
                "data": data,
            }
        )
    return out, skipped


def _shape_data(source: Mapping[str, object], kind: str | None) -> dict[str, object]:
    assert kind is not None
    shape = source[kind]
    if kind == "polygon" and isinstance(shape, Mapping):
        paths = shape.get("paths") or [shape.get("path", [])]
        assert isinstance(paths, list)  # Darwin JSON 2.0: a polygon's paths are a list of point lists
        shape = {"path": paths[0]} | ({"additional_paths": paths[1:]} if len(paths) > 1 else {})
    data: dict[str, object] = {kind: shape}
    for sub in ("inference", "text", "instance_id"):
        if sub in source:
            data[sub] = source[sub]
    return data


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _size_chunks(annotations: list[V7ImportAnnotation], max_bytes: int) -> Iterator[list[V7ImportAnnotation]]:
    chunk: list[V7ImportAnnotation] = []
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


def _key(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def _slot_body(slot: V7Slot, *, storage_key: str | None = None, as_frames: bool | None) -> V7SlotBody:
    """A slot's registration entry, its unset fields left out."""
    body = V7SlotBody(slot_name=slot.slot_name, file_name=slot.file_name)
    if slot.type is not None:
        body["type"] = slot.type
    if storage_key is not None:
        body["storage_key"] = storage_key
    if slot.fps is not None:
        body["fps"] = slot.fps
    if as_frames is not None:
        body["as_frames"] = as_frames
    if slot.extract_views is not None:
        body["extract_views"] = slot.extract_views
    return body


def _item_json(item: V7Item, slots: list[V7SlotBody]) -> V7ItemBody:
    body = V7ItemBody(name=item.name, path=item.path, slots=slots)
    if (layout := item.layout_json()) is not None:
        body["layout"] = layout
    if item.tags:
        body["tags"] = list(item.tags)  # at the item root (§9.1)
    return body


def _existing_item_json(item: V7Item) -> V7ItemBody:
    slots = []
    for s in item.slots:
        if not s.storage_key:
            raise BackendError(BACKEND, f"{item.key} slot {s.slot_name}: no storage_key", status=None, retryable=False)
        slots.append(_slot_body(s, storage_key=s.storage_key, as_frames=s.as_frames))
    return _item_json(item, slots)


def _upload_item_json(item: V7Item) -> V7ItemBody:
    slots = []
    for s in item.slots:
        if s.local_path is None:
            raise BackendError(BACKEND, f"{item.key} slot {s.slot_name}: no local_path", status=None, retryable=False)
        slots.append(_slot_body(s, as_frames=bool(s.as_frames)))
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
