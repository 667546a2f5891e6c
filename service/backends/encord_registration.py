"""Encord's cloud-registration JSON (``images``, ``videos``, ``image_groups``, ``dicom_series``) -> job items.

Teams already write this file to register bucket data with Encord; posting the same file to
``/v1/jobs`` preannotates it. Encord's documented limits are enforced with clear errors
(``../shared/reference/encord.md`` sections 3.2 and 3.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from service.errors import ErrorCode, PreannotateError
from service.spec.requests import MAX_URL_LENGTH, ItemIn, SlotIn

MAX_ITEMS = 500_000  # per registration JSON
MAX_URLS = 1_000_000
MAX_TITLE_CHARS = 300
MAX_SEQUENCE_ENTRIES = 32_767  # image-sequence entries (documented as unverified)

SUPPORTED_KEYS = frozenset({"images", "videos", "image_groups", "dicom_series", "pdf", "pdfs", "skip_duplicate_urls"})
UNSUPPORTED_KEYS = frozenset({"nifti", "audio", "text", "time_series", "scenes"})
_OBJECT_URL_N = re.compile(r"^objectUrl_(\d+)$")


def is_encord_registration(body: Mapping[str, object]) -> bool:
    """A registration file has none of our own keys and at least one of Encord's."""
    return "items" not in body and bool(body.keys() & (SUPPORTED_KEYS | UNSUPPORTED_KEYS))


def _invalid(message: str, code: ErrorCode = ErrorCode.INVALID_ARGUMENT) -> PreannotateError:
    return PreannotateError(code, f"Encord registration JSON: {message}")


def _entries(body: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    value = body.get(key, [])
    entries: list[Mapping[str, object]] = [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []
    if not isinstance(value, list) or len(entries) != len(value):
        raise _invalid(f"'{key}' must be a list of objects")
    return entries


def _url(entry: Mapping[str, object], key: str, where: str) -> str:
    url = entry.get(key)
    if not isinstance(url, str) or not url:
        raise _invalid(f"{where}: '{key}' must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"{where}: URL is {len(url)} characters, over Encord's limit of {MAX_URL_LENGTH}")
    return url


def _title(entry: Mapping[str, object], fallback_url: str, where: str) -> str:
    title = entry.get("title")
    if title is None:
        return urlsplit(fallback_url).path.rsplit("/", 1)[-1] or fallback_url[:MAX_TITLE_CHARS]
    if not isinstance(title, str) or not title:
        raise _invalid(f"{where}: 'title' must be a non-empty string")
    if len(title) > MAX_TITLE_CHARS:
        raise _invalid(f"{where}: title is {len(title)} characters, over Encord's limit of {MAX_TITLE_CHARS}")
    return title


def _numbered_urls(entry: Mapping[str, object], where: str) -> list[str]:
    """``objectUrl_0``, ``objectUrl_1``, ... in position order."""
    numbered = sorted((int(m.group(1)), key) for key in entry if (m := _OBJECT_URL_N.match(key)))
    if not numbered:
        raise _invalid(f"{where}: needs objectUrl_0, objectUrl_1, ...")
    if len(numbered) > MAX_SEQUENCE_ENTRIES:
        raise _invalid(f"{where}: {len(numbered)} files, over the limit of {MAX_SEQUENCE_ENTRIES}")
    return [_url(entry, key, where) for _, key in numbered]


def _items(body: Mapping[str, object]) -> Iterator[ItemIn]:
    for i, entry in enumerate(_entries(body, "images")):
        url = _url(entry, "objectUrl", f"images[{i}]")
        yield ItemIn(name=_title(entry, url, f"images[{i}]"), slots=[SlotIn(url=url, type="image")])
    for i, entry in enumerate(_entries(body, "videos")):
        url = _url(entry, "objectUrl", f"videos[{i}]")
        yield ItemIn(name=_title(entry, url, f"videos[{i}]"), slots=[SlotIn(url=url, type="video")])
    for i, entry in enumerate(_entries(body, "image_groups")):
        where = f"image_groups[{i}]"
        urls = _numbered_urls(entry, where)
        name = _title(entry, urls[0], where)
        if entry.get("createVideo", False) is True:
            # An image sequence: one slot, frames in objectUrl order.
            yield ItemIn(name=name, slots=[SlotIn(urls=urls, type="image")])
        else:
            # An image group: images shown side by side, one slot each.
            yield ItemIn(name=name, slots=[SlotIn(name=str(n), url=u, type="image") for n, u in enumerate(urls)])
    for i, entry in enumerate(_entries(body, "dicom_series")):
        where = f"dicom_series[{i}]"
        urls = _numbered_urls(entry, where)
        yield ItemIn(name=_title(entry, urls[0], where), slots=[SlotIn(urls=urls, type="dicom")])
    for key in ("pdf", "pdfs"):  # the typed SDK says pdf, the docs' JSON example pdfs
        for i, entry in enumerate(_entries(body, key)):
            url = _url(entry, "objectUrl", f"{key}[{i}]")
            yield ItemIn(name=_title(entry, url, f"{key}[{i}]"), slots=[SlotIn(url=url, type="pdf")])


def encord_registration_to_items(body: Mapping[str, object], *, max_items: int) -> list[ItemIn]:
    """Items for a registration JSON, in file order (images, videos, groups, series, PDFs).

    ``skip_duplicate_urls: true`` drops items whose URLs all appeared earlier in the same file
    (Encord compares with its dataset, which this service cannot see).

    Raises:
        PreannotateError: INVALID_ARGUMENT for malformed entries, unsupported data types and Encord's
            limits (URL length, title length, URL and item counts); TOO_MANY_ITEMS past ``max_items``.
    """
    unknown = sorted(body.keys() - SUPPORTED_KEYS - UNSUPPORTED_KEYS)
    if unknown:
        raise _invalid(f"unknown keys {', '.join(unknown)}")
    unsupported = sorted(key for key in body.keys() & UNSUPPORTED_KEYS if body[key])
    if unsupported:
        raise _invalid(f"{', '.join(unsupported)} cannot be preannotated (images, videos, image groups, DICOM)")
    skip_duplicates = body.get("skip_duplicate_urls", False)
    if not isinstance(skip_duplicates, bool):
        raise _invalid("'skip_duplicate_urls' must be true or false")

    items: list[ItemIn] = []
    seen: set[str] = set()
    url_count = 0
    for item in _items(body):
        urls = [url for slot in item.slots for url in slot.all_urls()]
        url_count += len(urls)
        if url_count > MAX_URLS:
            raise _invalid(f"more than {MAX_URLS} URLs, Encord's limit per registration")
        if skip_duplicates and all(url in seen for url in urls):
            continue
        seen.update(urls)
        items.append(item)
        if len(items) > min(max_items, MAX_ITEMS):
            raise PreannotateError(
                ErrorCode.TOO_MANY_ITEMS,
                f"more than {min(max_items, MAX_ITEMS)} items in one job; split the registration file",
            )
    if not items:
        raise _invalid("no images, videos, image groups or DICOM series to preannotate")
    return items
