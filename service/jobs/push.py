"""Pushing a finished item's preannotations to the labeling tools a job names as destinations.

Every push is idempotent (re-running an item creates no duplicate): Label Studio keeps one prediction
per model version per task, V7 imports with overwrite, Encord replaces only this model's objects.
Backends are built from settings once per process and reused; credentials never leave them.

Encord writes are bundled across items: worker threads whose items finish at about the same time share one
read-merge-save of their label rows (``EncordBundler``). V7 items not in the dataset yet are registered: from
the team's external storage (``s3://`` slots and ``v7_storage_slug``), else uploaded from the slots' URLs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from service.backends.retry import BackendError, backend_error_to_preannotate
from service.config import Settings
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import Fetcher
from service.pipeline.predictions import ItemPredictions
from service.spec.requests import Destination, ItemIn

if TYPE_CHECKING:
    from service.backends.encord import EncordItemError, EncordPush, EncordPushResult
    from service.backends.v7 import V7Backend
    from service.convert.encord import EncordOntology

log = logging.getLogger(__name__)

DESTINATIONS = ("label_studio", "v7", "encord")


def check_destination(settings: Settings, destination: Destination, items: Sequence[ItemIn]) -> None:
    """Refuse, before anything runs (422), a job naming a tool this server has no credentials for, or
    items the tool could not place."""
    configured = {
        "label_studio": bool(settings.label_studio_url and settings.label_studio_api_key),
        "v7": bool(settings.v7_api_key.get_secret_value() and settings.v7_team_slug and settings.v7_dataset_id),
        # featureHashes must be the project's own: pushing needs its ontology (export it from Encord)
        "encord": bool(settings.encord_project_hash and settings.encord_ontology_file),
    }
    if not configured[destination.backend]:
        raise PreannotateError(
            ErrorCode.BACKEND_NOT_CONFIGURED,
            f"destination {destination.backend!r} is not configured on this server (see the README's settings)",
        )
    if destination.backend == "label_studio" and destination.project is None:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a label_studio destination needs its project id")
    if destination.backend in ("label_studio", "encord"):  # V7 can find an item by name
        missing = [item.name for item in items if not (item.external_ids or {}).get(destination.backend)]
        if missing:
            what = "task id" if destination.backend == "label_studio" else "data hash"
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT,
                f"items {missing[:5]} need their {destination.backend} {what} in external_ids.{destination.backend}",
            )


@dataclass(slots=True)
class Pushers:
    """Lazily built backend clients, shared by the worker threads of one process.

    Attributes:
        settings: Credentials, Encord bundling.
        concurrency: Worker threads that may push at once (default ``settings.workers``). When all of them wait
            in one Encord bundle, nobody else can join it, so it is written at once. A wrong value only changes
            bundle sizes, never outcomes.
        fetcher: Re-fetches slot files a V7 upload needs (the worker's copies are gone by push time);
            default: a :class:`~service.jobs.backend_media.BackendMediaFetcher` built on first use.
    """

    settings: Settings
    concurrency: int | None = None
    fetcher: Fetcher | None = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _bundler: EncordBundler | None = None
    _own_fetcher: Fetcher | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def push(
        self,
        destination: dict[str, Any],
        item: dict[str, Any],
        predictions: ItemPredictions,
        model: ModelRef,
    ) -> dict[str, Any]:
        """Push one item; returns a JSON record of what happened. Raises PreannotateError on failure.

        Video detections go as the tracks their tracker ids name (linked once, where the predictions were made).
        An Encord push may wait up to ``encord_bundle_wait_ms`` for other items to share its bundle.
        """
        target = Destination.model_validate(destination)
        try:
            if target.backend == "label_studio":
                return self._push_label_studio(target, item, predictions, model)
            if target.backend == "v7":
                return self._push_v7(item, predictions, model)
            return self._push_encord(item, predictions, model)
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None

    def push_many(
        self,
        destination: dict[str, Any],
        entries: Sequence[tuple[dict[str, Any], ItemPredictions]],
        model: ModelRef,
    ) -> list[dict[str, Any] | PreannotateError]:
        """Push several items at once (a CLI or sync run that has them all): one record or error per entry.

        Encord items go in bundles of ``encord_bundle_size`` rows with no waiting; a failed bundle fails its
        items only. Other tools take the items one by one.
        """
        target = Destination.model_validate(destination)
        if target.backend != "encord":
            one_by_one: list[dict[str, Any] | PreannotateError] = []
            for item, predictions in entries:
                try:
                    one_by_one.append(self.push(destination, item, predictions, model))
                except PreannotateError as exc:
                    one_by_one.append(exc)
            return one_by_one
        failed: list[PreannotateError | None] = []
        pushes: list[EncordPush] = []
        for item, predictions in entries:
            try:
                pushes.append(self._encord_push(item, predictions))
                failed.append(None)
            except PreannotateError as exc:  # no data hash: this item alone fails
                failed.append(exc)
        ontology = self.settings.encord_ontology(model.class_names)
        backend = self._client("encord")
        try:
            results = backend.push_each(pushes, model, ontology) if pushes else []
        except ValueError as exc:  # a data hash given twice
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"encord: {exc}") from None
        size = self.settings.encord_bundle_size
        written: list[dict[str, Any] | PreannotateError] = []
        for n, result in enumerate(results):
            rows = min(size, len(pushes) - n // size * size)
            written.append(_push_error(result) if isinstance(result, Exception) else _encord_record(result, rows))
        answers = iter(written)
        return [error if error is not None else next(answers) for error in failed]

    def _client(self, name: str) -> Any:
        with self._lock:
            if name not in self._clients:
                self._clients[name] = self._build(name)
            return self._clients[name]

    def _build(self, name: str) -> Any:
        settings = self.settings
        if name == "label_studio":
            from service.backends.label_studio import LabelStudioClient, config_from_settings

            config = config_from_settings(settings)
            if config is None:
                raise PreannotateError(ErrorCode.BACKEND_NOT_CONFIGURED, "Label Studio is not configured")
            return LabelStudioClient(config, fetch_policy=settings.fetch_policy())
        if name == "v7":
            from service.backends.v7 import V7Backend

            return V7Backend(settings.v7_config(), settings.v7_api_key.get_secret_value())
        from service.backends.encord import EncordBackend

        return EncordBackend(settings.encord_config(), settings.encord_auth())

    def _push_label_studio(
        self,
        target: Destination,
        item: dict[str, Any],
        predictions: ItemPredictions,
        model: ModelRef,
    ) -> dict[str, Any]:
        from service.convert.label_studio import item_to_ls_result, parse_label_config

        task_id = _external_id(item, "label_studio", "task id", int)
        client = self._client("label_studio")
        assert target.project is not None  # checked at submit
        config = parse_label_config(client.get_label_config(target.project))
        # LS counts video frames at the task's own rate when the config says framerate="$key"
        task_data = client.get_task(task_id).get("data") if config.needs_task_data() else None
        prediction = item_to_ls_result(predictions, model, config, task_data=task_data)
        result = client.upsert_prediction(task_id, prediction)
        client.set_project_model_version(target.project, model.version)
        return {
            "backend": "label_studio",
            "task": task_id,
            "outcome": str(result.outcome),
            "id": result.prediction_id,
            "dropped": dict(prediction.dropped),
        }

    def _push_v7(self, item: dict[str, Any], predictions: ItemPredictions, model: ModelRef) -> dict[str, Any]:
        backend = self._client("v7")
        item_id = (item.get("external_ids") or {}).get("v7")
        registered: str | None = None
        if not item_id:
            found = backend.find_items(item_names=[item["name"]])
            if found:
                item_id = str(found[0]["id"])
            else:
                item_id, registered = self._register_on_v7(backend, item)
        result = backend.push_item(str(item_id), predictions, model)
        record = {
            "backend": "v7",
            "item": str(item_id),
            "imported": result.imported,
            "skipped_reason": result.skipped_reason,
        }
        return record | ({"registered": registered} if registered else {})

    def _register_on_v7(self, backend: V7Backend, item: dict[str, Any]) -> tuple[str, str]:
        """Register an item V7 does not have; returns its id and how (``existing`` or ``upload``).

        Slots all in the team's external storage (``s3://bucket/key``, with ``v7_storage_slug``) are registered
        where they are; any other item is uploaded (register -> sign -> PUT -> confirm) from files fetched again
        here: the worker's scratch copies are deleted once its item is detected.
        """
        from service.backends.v7 import V7Item, V7Slot

        slots = item["slots"]
        urls = [_single_url(item, slot) for slot in slots]
        if self.settings.v7_storage_slug and all(urlsplit(url).scheme == "s3" for url in urls):
            existing = tuple(
                V7Slot(
                    slot_name=slot["name"],
                    file_name=urlsplit(url).path.rsplit("/", 1)[-1],
                    storage_key=urlsplit(url).path.lstrip("/"),
                    type=slot.get("type"),
                )
                for slot, url in zip(slots, urls, strict=True)
            )
            v7_item = V7Item(name=item["name"], slots=existing)
            return str(backend.register_existing([v7_item])[v7_item.key]), "existing"
        fetcher = self._fetcher()
        with TemporaryDirectory(dir=self.settings.work_dir, prefix="preannotate-v7-") as tmp:
            uploads = []
            for n, (slot, url) in enumerate(zip(slots, urls, strict=True)):
                slot_dir = Path(tmp) / str(n)  # one folder per slot: two slots may share a file name
                slot_dir.mkdir()
                fetched = fetcher.fetch(url, slot_dir)
                name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or fetched.path.name
                uploads.append(
                    V7Slot(slot_name=slot["name"], file_name=name, local_path=fetched.path, type=slot.get("type"))
                )
            v7_item = V7Item(name=item["name"], slots=tuple(uploads))
            return str(backend.register_upload([v7_item])[v7_item.key]), "upload"

    def _fetcher(self) -> Fetcher:
        if self.fetcher is not None:
            return self.fetcher
        with self._lock:
            if self._own_fetcher is None:
                # The workers' fetcher: plain URLs and the label-studio+/v7+ ones webhook jobs carry.
                from service.jobs.backend_media import BackendMediaFetcher

                self._own_fetcher = BackendMediaFetcher(self.settings)
            return self._own_fetcher

    def _push_encord(self, item: dict[str, Any], predictions: ItemPredictions, model: ModelRef) -> dict[str, Any]:
        push = self._encord_push(item, predictions)
        ontology = self.settings.encord_ontology(model.class_names)
        return self._encord_bundler().push(push, model, ontology)

    def _encord_push(self, item: dict[str, Any], predictions: ItemPredictions) -> EncordPush:
        from service.backends.encord import EncordPush

        data_hash = _external_id(item, "encord", "data hash", str)
        return EncordPush(data_hash, predictions)

    def _encord_bundler(self) -> EncordBundler:
        backend = self._client("encord")
        with self._lock:
            if self._bundler is None:
                self._bundler = EncordBundler(
                    backend.push_each,
                    bundle_size=self.settings.encord_bundle_size,
                    wait_s=self.settings.encord_bundle_wait_ms / 1000,
                    concurrency=max(1, self.concurrency or self.settings.workers),
                )
            return self._bundler

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            self._bundler = None
            close = getattr(self._own_fetcher, "close", None)
            if close is not None:
                close()
            self._own_fetcher = None


PushEach = Callable[[Sequence["EncordPush"], ModelRef, "EncordOntology"], "list[EncordPushResult | EncordItemError]"]


@dataclass(slots=True)
class _Waiter:
    push: EncordPush
    done: threading.Event = field(default_factory=threading.Event)
    outcome: EncordPushResult | Exception | None = None
    rows: int = 0  # items in the bundle it was written with


@dataclass(slots=True)
class _Bundle:
    model: ModelRef
    ontology: EncordOntology
    deadline: float
    waiters: list[_Waiter] = field(default_factory=list)
    sealed: bool = False  # no one joins any more: full, or its writer took it

    def has(self, data_hash: str) -> bool:
        return any(w.push.data_hash == data_hash for w in self.waiters)


class EncordBundler:
    """Gathers the Encord pushes of items that finish at about the same time into one bundle: 3 or 4 requests
    (list, create and/or get, save) for up to ``bundle_size`` rows instead of 3 per item.

    The first push of a bundle writes it: it waits up to ``wait_s`` for others to join, less once the bundle is
    full or every worker thread is in here (no one else can come), then writes it on its own thread and hands
    every push of the bundle its own outcome. A failed request fails exactly the items of its bundle; an item
    the project lacks or whose row it does not fit fails alone. Pushes of one model share bundles; one row is
    never in two bundles being written at once (saves replace whole rows: the second waits for the first).
    """

    def __init__(
        self,
        push_each: PushEach,
        *,
        bundle_size: int,
        wait_s: float,
        concurrency: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._push_each = push_each
        self._size, self._wait_s, self._concurrency, self._clock = bundle_size, wait_s, concurrency, clock
        self._cond = threading.Condition()
        self._open: dict[ModelRef, _Bundle] = {}
        self._inside = 0  # threads in push(): waiting to join, writing, or waiting for their bundle's writer
        self._writing: set[str] = set()  # data hashes of the bundles being written

    def push(self, push: EncordPush, model: ModelRef, ontology: EncordOntology) -> dict[str, Any]:
        """Write one item's row with whatever bundle it joins; returns its record, raises PreannotateError."""
        waiter = _Waiter(push)
        with self._cond:
            self._inside += 1
            bundle = self._open.get(model)
            writes = bundle is None or bundle.has(push.data_hash)
            if writes:
                if bundle is not None:  # the same row twice in one save would lose one: it goes in the next
                    self._seal(bundle)
                bundle = _Bundle(model, ontology, deadline=self._clock() + self._wait_s)
                self._open[model] = bundle
            assert bundle is not None
            bundle.waiters.append(waiter)
            if len(bundle.waiters) >= self._size:
                self._seal(bundle)
            if self._inside >= self._concurrency:
                for other in list(self._open.values()):
                    self._seal(other)
            self._cond.notify_all()
            rows: set[str] = set()
            if writes:
                while not bundle.sealed and (left := bundle.deadline - self._clock()) > 0:
                    self._cond.wait(left)
                self._seal(bundle)
                # A save replaces the whole row: a row another bundle is saving now is read after that save.
                rows = {w.push.data_hash for w in bundle.waiters}
                while rows & self._writing:
                    self._cond.wait()
                self._writing |= rows
        try:
            if writes:
                self._write(bundle)
            else:
                waiter.done.wait()
        finally:
            with self._cond:
                self._inside -= 1
                self._writing -= rows
                self._cond.notify_all()
        return _outcome(waiter)

    def _seal(self, bundle: _Bundle) -> None:
        bundle.sealed = True
        if self._open.get(bundle.model) is bundle:
            del self._open[bundle.model]

    def _write(self, bundle: _Bundle) -> None:
        waiters = bundle.waiters  # sealed: no one appends any more
        outcomes: Sequence[EncordPushResult | Exception] = ()
        try:
            try:
                outcomes = self._push_each([w.push for w in waiters], bundle.model, bundle.ontology)
            except Exception as exc:  # whatever it is, every item of the bundle gets it as its answer
                log.exception("encord: writing a bundle of %d rows failed", len(waiters))
                outcomes = [exc] * len(waiters)
        finally:  # even on an interrupt: the waiting threads must never hang
            for waiter, outcome in zip(waiters, outcomes, strict=False):
                waiter.outcome, waiter.rows = outcome, len(waiters)
            for waiter in waiters:
                waiter.done.set()


def _outcome(waiter: _Waiter) -> dict[str, Any]:
    outcome = waiter.outcome
    if outcome is None:  # the writer died before answering (an interrupt)
        raise PreannotateError(ErrorCode.BACKEND_UNAVAILABLE, "encord: the bundle write was interrupted")
    if isinstance(outcome, Exception):
        raise _push_error(outcome)
    return _encord_record(outcome, waiter.rows)


def _encord_record(result: EncordPushResult, rows: int) -> dict[str, Any]:
    return {
        "backend": "encord",
        "data_hash": result.data_hash,
        "label_hash": result.label_hash,
        "objects": result.stats.objects,
        "bundle_items": rows,  # items written in one bundle with this one, itself included
    }


def _push_error(exc: Exception) -> PreannotateError:
    """A new error per item (one exception object must not be raised in several threads)."""
    if isinstance(exc, BackendError):
        return backend_error_to_preannotate(exc)
    if isinstance(exc, PreannotateError):
        return PreannotateError(exc.code, exc.message, retry_after_s=exc.retry_after_s)
    if isinstance(exc, ValueError):  # the item does not fit its label row (build_encord_label_row)
        return PreannotateError(ErrorCode.BACKEND_REJECTED, f"encord: {exc}")
    return PreannotateError(ErrorCode.INTERNAL, f"{type(exc).__name__} while pushing to Encord")


def _external_id(item: dict[str, Any], backend: str, what: str, kind: type[Any]) -> Any:
    value = (item.get("external_ids") or {}).get(backend)
    if value in (None, ""):
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"item {item['name']!r}: {backend} needs its {what} in external_ids.{backend}"
        )
    try:
        return kind(value)
    except ValueError:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"item {item['name']!r}: bad {what} {value!r}") from None


def _single_url(item: dict[str, Any], slot: dict[str, Any]) -> str:
    if slot.get("url"):
        return str(slot["url"])
    # A V7 slot holds one file; a series spread over several slots would no longer match our slot names.
    raise PreannotateError(
        ErrorCode.BACKEND_REJECTED,
        f"item {item['name']!r} slot {slot['name']!r}: V7 registration takes one file per slot; register image "
        "and DICOM series in V7 first and give external_ids.v7",
    )
