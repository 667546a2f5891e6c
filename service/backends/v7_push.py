"""V7 as a job destination: find the item (its id, else by name), register it when V7 lacks it, import.

Items not in the dataset yet are registered: from the team's external storage (``s3://`` slots and
``v7_storage_slug``) where they are, else uploaded from the slots' URLs, fetched again here (the worker's scratch
copies are deleted once its item is detected).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Literal
from urllib.parse import unquote, urlsplit

from service.backends.base import (
    Backend,
    Lazy,
    PushRecord,
    V7PushRecord,
    external_id,
    push_one_by_one,
    require_configured,
)
from service.backends.retry import BackendError, backend_error_to_preannotate
from service.backends.v7 import V7Backend, V7Item, V7Slot, v7_config_from
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import Fetcher
from service.pipeline.predictions import ItemPredictions
from service.spec.job import JobSpec
from service.spec.requests import Destination, ItemIn, SlotIn


class V7Pusher(Backend):
    """Pushes to the configured V7 team and dataset; the client is built on the first push.

    Attributes:
        fetcher: Re-fetches slot files an upload needs; default: a
            :class:`~service.backends.media.BackendMediaFetcher` (plain URLs and the ``label-studio+``/``v7+``
            ones webhook jobs carry), built on first use.
    """

    name: Literal["v7"] = "v7"

    def __init__(self, settings: Settings, *, fetcher: Fetcher | None = None) -> None:
        self._settings = settings
        self._client = Lazy(lambda: V7Backend(v7_config_from(settings), settings.v7_api_key.get_secret_value()))
        self._given_fetcher = fetcher
        self._own_fetcher = Lazy(self._build_fetcher)

    def _build_fetcher(self) -> Fetcher:
        from service.backends.media import BackendMediaFetcher

        return BackendMediaFetcher(self._settings)

    def check(self, destination: Destination, items: Sequence[ItemIn]) -> None:
        settings = self._settings
        # V7 can find an item by name: no external id needed
        require_configured(
            bool(settings.v7_api_key.get_secret_value() and settings.v7_team_slug and settings.v7_dataset_id),
            self.name,
        )

    def push(self, destination: Destination, item: ItemIn, predictions: ItemPredictions, spec: JobSpec) -> PushRecord:
        try:
            return self._push(item, predictions, spec)
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None

    def _push(self, item: ItemIn, predictions: ItemPredictions, spec: JobSpec) -> V7PushRecord:
        backend = self._client.get()
        item_id = external_id(item, self.name)
        registered: str | None = None
        if item_id is None:
            found = backend.find_items(item_names=[item.name])
            if found:
                item_id = found[0].id
            else:
                item_id, registered = self._register(backend, item)
        result = backend.push_item(item_id, predictions, spec.model_ref)
        return V7PushRecord(
            item=item_id, imported=result.imported, skipped_reason=result.skipped_reason, registered=registered
        )

    def _register(self, backend: V7Backend, item: ItemIn) -> tuple[str, str]:
        """Register an item V7 does not have; returns its id and how (``existing`` or ``upload``)."""
        urls = [_single_url(item, slot) for slot in item.slots]
        if self._settings.v7_storage_slug and all(urlsplit(url).scheme == "s3" for url in urls):
            existing = tuple(
                V7Slot(
                    slot_name=slot.name,
                    file_name=urlsplit(url).path.rsplit("/", 1)[-1],
                    storage_key=urlsplit(url).path.lstrip("/"),
                    type=slot.type,
                )
                for slot, url in zip(item.slots, urls, strict=True)
            )
            v7_item = V7Item(name=item.name, slots=existing)
            return str(backend.register_existing([v7_item])[v7_item.key]), "existing"
        fetcher = self._given_fetcher or self._own_fetcher.get()
        with TemporaryDirectory(dir=self._settings.work_dir, prefix="preannotate-v7-") as tmp:
            uploads = []
            for n, (slot, url) in enumerate(zip(item.slots, urls, strict=True)):
                slot_dir = Path(tmp) / str(n)  # one folder per slot: two slots may share a file name
                slot_dir.mkdir()
                fetched = fetcher.fetch(url, slot_dir)
                name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or fetched.path.name
                uploads.append(V7Slot(slot_name=slot.name, file_name=name, local_path=fetched.path, type=slot.type))
            v7_item = V7Item(name=item.name, slots=tuple(uploads))
            return str(backend.register_upload([v7_item])[v7_item.key]), "upload"

    def push_many(
        self, destination: Destination, entries: Sequence[tuple[ItemIn, ItemPredictions]], spec: JobSpec
    ) -> list[PushRecord | PreannotateError]:
        return push_one_by_one(self, destination, entries, spec)

    def close(self) -> None:
        client = self._client.take()
        if client is not None:
            client.close()
        fetcher = self._own_fetcher.take()
        close = getattr(fetcher, "close", None)
        if close is not None:
            close()


def _single_url(item: ItemIn, slot: SlotIn) -> str:
    if slot.url:
        return slot.url
    # A V7 slot holds one file; a series spread over several slots would no longer match our slot names.
    raise PreannotateError(
        ErrorCode.BACKEND_REJECTED,
        f"item {item.name!r} slot {slot.name!r}: V7 registration takes one file per slot; register image "
        "and DICOM series in V7 first and give external_ids.v7",
    )
