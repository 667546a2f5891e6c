"""A V7 workflow webhook-stage delivery (the item's Darwin JSON 2.0, darwin_v2.md §10) as a job item.

The item keeps its slot names, so the import lands on the slots the annotations name; ``external_ids.v7``
is ``item.source_info.item_id``, so the push needs no lookup by name. Files on the V7 API host are marked
``v7+`` (fetched with the API key); other URLs (external storage, presigned) are fetched as they are.

V7 retries a delivery 5 times, and the same item can pass the stage again. The dedupe key is (item id,
a hash of the item's media, job parameters): the media hash covers slot names, types, file names and URLs
without their query strings (a presigned URL changes on every delivery; the object does not), and leaves
out ``annotations``, which our own import changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from service.backends.media import V7, via
from service.backends.origin_auth import Origin, origin_of
from service.errors import ErrorCode, PreannotateError
from service.jobs.submit import key_params
from service.spec.job import JobSpec
from service.spec.requests import ItemIn, SlotIn

_SLOT_TYPES = frozenset({"image", "video", "dicom", "pdf"})
_PLAIN_SCHEMES = frozenset({"http", "https", "s3"})


@dataclass(frozen=True, slots=True)
class V7Delivery:
    """What a delivery asks for.

    Attributes:
        item_id: The V7 item (``item.source_info.item_id``).
        item: The job item (slots with fetchable URLs).
        media_hash: Hex digest identifying the item's media.
        skipped_slots: ``slot name: why`` for slots without a usable file.
    """

    item_id: str
    item: ItemIn
    media_hash: str
    skipped_slots: tuple[str, ...]


def parse_delivery(body: object, *, v7_origin: Origin | None) -> V7Delivery | None:
    """Read a webhook-stage body; None for a body that is not an item (a legacy ``workflow_complete``
    dataset webhook, or "metadata only" without slots).

    Args:
        body: The parsed JSON.
        v7_origin: The configured V7 API origin; URLs there are fetched with the API key.

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` for an item without id or name, or with no fetchable slot.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("item"), Mapping):
        return None
    item = body["item"]
    source = item.get("source_info")
    item_id = source.get("item_id") if isinstance(source, Mapping) else None
    name = item.get("name")
    if not isinstance(item_id, str) or not item_id.strip() or len(item_id) > 300:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "item.source_info.item_id is missing")
    if not isinstance(name, str) or not name.strip():
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "item.name is missing")
    raw_slots = item.get("slots")
    if not isinstance(raw_slots, list) or not raw_slots:
        return None
    slots: list[SlotIn] = []
    identity: list[object] = []
    skipped: list[str] = []
    for raw in raw_slots:
        slot, why = _slot(raw, v7_origin)
        if slot is None:
            skipped.append(why)
            continue
        slots.append(slot)
        identity.append([slot.name, slot.type, [_without_query(u) for u in slot.all_urls()]])
    if not slots:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"no slot has a file URL ({'; '.join(skipped[:5])})")
    try:
        job_item = ItemIn(name=name.strip()[:300], slots=slots, external_ids={"v7": item_id.strip()})
    except ValidationError:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "slot names must be unique within the item") from None
    digest = hashlib.sha256(json.dumps(identity, separators=(",", ":")).encode()).hexdigest()
    return V7Delivery(item_id.strip(), job_item, digest, tuple(skipped))


def _slot(raw: object, v7_origin: Origin | None) -> tuple[SlotIn | None, str]:
    if not isinstance(raw, Mapping):
        return None, "a slot that is not an object"
    name = raw.get("slot_name")
    kind = raw.get("type")
    files = raw.get("source_files")
    label = f"slot {name!r}"
    urls = (
        [f["url"] for f in files if isinstance(f, Mapping) and isinstance(f.get("url"), str) and f["url"].strip()]
        if isinstance(files, list)
        else []
    )
    if not urls:
        return None, f"{label}: no source_files[].url (external storage without URLs is not supported)"
    try:
        marked = [_mark(url.strip(), v7_origin) for url in urls]
    except PreannotateError as exc:
        return None, f"{label}: {exc.message}"
    try:
        slot = SlotIn.model_validate(
            {
                "name": name if isinstance(name, str) else "",
                "type": kind if kind in _SLOT_TYPES else None,
                **({"url": marked[0]} if len(marked) == 1 else {"urls": marked}),
            }
        )
    except ValidationError:
        return None, f"{label}: not a usable slot name"
    return slot, ""


def _mark(url: str, v7_origin: Origin | None) -> str:
    if v7_origin is not None and origin_of(url) == v7_origin:
        return via(V7, url)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _PLAIN_SCHEMES:
        raise PreannotateError(ErrorCode.URL_NOT_ALLOWED, f"scheme {scheme or '(none)'!r} cannot be fetched")
    return url


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def delivery_idem(item_id: str, media_hash: str, spec: JobSpec) -> str:
    """The store key for "this item's media, these job parameters" (the model's version left out:
    ``SERVER_PINNED``)."""
    canonical = json.dumps(
        {"item": item_id, "media": media_hash, "params": key_params(spec)}, sort_keys=True, separators=(",", ":")
    )
    return "v7:" + hashlib.sha256(canonical.encode()).hexdigest()
