"""Pushing a finished item's preannotations to the labeling tools a job names as destinations.

Every push is idempotent (re-running an item creates no duplicate): Label Studio keeps one prediction
per model version per task, V7 imports with overwrite, Encord replaces only this model's objects.
Backends are built from settings once per process and reused; credentials never leave them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from service.backends.retry import BackendError, backend_error_to_preannotate
from service.config import Settings
from service.convert.tracks import frames_to_tracks
from service.convert.types import ItemPredictions, ModelRef
from service.errors import ErrorCode, PreannotateError
from service.jobs.models import Destination, ItemIn

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
    """Lazily built backend clients, shared by the worker threads of one process."""

    settings: Settings
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def push(
        self, destination: dict[str, Any], item: dict[str, Any], predictions: ItemPredictions, model: ModelRef
    ) -> dict[str, Any]:
        """Push one item; returns a JSON record of what happened. Raises PreannotateError on failure."""
        target = Destination.model_validate(destination)
        try:
            if target.backend == "label_studio":
                return self._push_label_studio(target, item, predictions, model)
            if target.backend == "v7":
                return self._push_v7(item, predictions, model)
            return self._push_encord(item, predictions, model)
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None

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
        self, target: Destination, item: dict[str, Any], predictions: ItemPredictions, model: ModelRef
    ) -> dict[str, Any]:
        from service.convert.label_studio import item_to_ls_result, parse_label_config

        task_id = _external_id(item, "label_studio", "task id", int)
        client = self._client("label_studio")
        assert target.project is not None  # checked at submit
        config = parse_label_config(client.get_label_config(target.project))
        # LS counts video frames at the task's own rate when the config says framerate="$key"
        task_data = client.get_task(task_id).get("data") if config.needs_task_data() else None
        prediction = item_to_ls_result(predictions, model, config, tracks=None, task_data=task_data)
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
        if not item_id:
            found = backend.find_items(item_names=[item["name"]])
            if found:
                item_id = str(found[0]["id"])
            elif self.settings.v7_storage_slug:
                item_id = _register_on_v7(backend, item)
            else:
                raise PreannotateError(
                    ErrorCode.BACKEND_REJECTED,
                    f"item {item['name']!r} is not in the V7 dataset; give external_ids.v7 or set v7_storage_slug",
                )
        tracks = frames_to_tracks(predictions.frames)
        result = backend.push_item(str(item_id), predictions, model, tracks=tracks)
        return {
            "backend": "v7",
            "item": str(item_id),
            "imported": result.imported,
            "skipped_reason": result.skipped_reason,
        }

    def _push_encord(self, item: dict[str, Any], predictions: ItemPredictions, model: ModelRef) -> dict[str, Any]:
        from service.backends.encord import EncordPush

        data_hash = _external_id(item, "encord", "data hash", str)
        backend = self._client("encord")
        ontology = self.settings.encord_ontology(model.class_names)
        [result] = backend.push(
            [EncordPush(data_hash, predictions, frames_to_tracks(predictions.frames))], model, ontology
        )
        return {
            "backend": "encord",
            "data_hash": data_hash,
            "label_hash": result.label_hash,
            "objects": result.stats.objects,
        }

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


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


def _register_on_v7(backend: Any, item: dict[str, Any]) -> str:
    """Register an item whose slots live in the team's external storage (``s3://bucket/key``)."""
    from service.backends.v7 import V7Item, V7Slot

    slots = []
    for slot in item["slots"]:
        url = slot.get("url") or ""
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise PreannotateError(
                ErrorCode.BACKEND_REJECTED, f"item {item['name']!r}: V7 registration needs s3:// slots, got {url!r}"
            )
        slots.append(
            V7Slot(
                slot_name=slot["name"],
                file_name=parts.path.rsplit("/", 1)[-1],
                storage_key=parts.path.lstrip("/"),
                type=slot.get("type"),
            )
        )
    v7_item = V7Item(name=item["name"], slots=tuple(slots))
    return str(backend.register_existing([v7_item])[v7_item.key])
