"""Encord as a job destination: each item's label row, written in bundles of rows.

Worker threads whose items finish at about the same time share one read-merge-save of their rows
(:class:`~service.backends.encord_bundler.EncordBundler`); a caller holding many items at once (CLI, sync) bundles
them without waiting (``push_many``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from service.backends.base import (
    Backend,
    EncordPushRecord,
    Lazy,
    PushRecord,
    require_configured,
    require_external_ids,
    required_external_id,
)
from service.backends.encord import (
    EncordBackend,
    EncordPush,
    encord_auth_from,
    encord_config_from,
    encord_ontology_from,
)
from service.backends.encord_bundler import EncordBundler, encord_record, push_error
from service.backends.retry import BackendError, backend_error_to_preannotate
from service.config import Settings
from service.convert.encord import EncordOntology
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.pipeline.predictions import ItemPredictions
from service.spec.job import JobSpec
from service.spec.requests import Destination, ItemIn


def encord_push_of(item: ItemIn, predictions: ItemPredictions) -> EncordPush:
    """What the row converter (``build_encord_label_row``, run per bundle against the row read) needs of one item."""
    data_hash = required_external_id(item, "encord", "data hash")
    return EncordPush(data_hash, predictions)


class EncordPusher(Backend):
    """Pushes to the configured Encord project; client and bundler are built on the first push.

    Args:
        settings: Credentials, ontology, ``encord_bundle_size`` and ``encord_bundle_wait_ms``.
        concurrency: Worker threads that may push at once (default ``settings.workers``). When all of them wait
            in one bundle, nobody else can join it, so it is written at once. A wrong value only changes bundle
            sizes, never outcomes.
    """

    name: Literal["encord"] = "encord"

    def __init__(self, settings: Settings, *, concurrency: int | None = None) -> None:
        self._settings = settings
        self._client = Lazy(lambda: EncordBackend(encord_config_from(settings), encord_auth_from(settings)))
        self._bundler = Lazy(
            lambda: EncordBundler(
                self._client.get().push_each,
                bundle_size=settings.encord_bundle_size,
                wait_s=settings.encord_bundle_wait_ms / 1000,
                concurrency=max(1, concurrency or settings.workers),
            )
        )

    def check(self, destination: Destination, items: Sequence[ItemIn]) -> None:
        # featureHashes must be the project's own: pushing needs its ontology (export it from Encord)
        settings = self._settings
        require_configured(bool(settings.encord_project_hash and settings.encord_ontology_file), self.name)
        require_external_ids(items, self.name, "data hash")

    def push(self, destination: Destination, item: ItemIn, predictions: ItemPredictions, spec: JobSpec) -> PushRecord:
        """Write one item's row with whatever bundle it joins (it may wait up to ``encord_bundle_wait_ms``)."""
        try:
            push = encord_push_of(item, predictions)
            model = spec.model_ref
            return self._bundler.get().push(push, model, self._project_ontology(model))
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None

    def push_many(
        self, destination: Destination, entries: Sequence[tuple[ItemIn, ItemPredictions]], spec: JobSpec
    ) -> list[PushRecord | PreannotateError]:
        """Bundles of ``encord_bundle_size`` rows with no waiting; a failed bundle fails its items only."""
        failed: list[PreannotateError | None] = []
        pushes: list[EncordPush] = []
        for item, predictions in entries:
            try:
                pushes.append(encord_push_of(item, predictions))
                failed.append(None)
            except PreannotateError as exc:  # no data hash: this item alone fails
                failed.append(exc)
        model = spec.model_ref
        ontology = self._project_ontology(model)
        try:
            results = self._client.get().push_each(pushes, model, ontology) if pushes else []
        except ValueError as exc:  # a data hash given twice
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"encord: {exc}") from None
        size = self._settings.encord_bundle_size
        written: list[EncordPushRecord | PreannotateError] = []
        for n, result in enumerate(results):
            rows = min(size, len(pushes) - n // size * size)
            written.append(push_error(result) if isinstance(result, Exception) else encord_record(result, rows))
        answers = iter(written)
        return [error if error is not None else next(answers) for error in failed]

    def _project_ontology(self, model: ModelRef) -> EncordOntology:
        """The project's exported ontology: a push never makes one up (``check`` ran on the API pod, whose settings
        may not be this worker's), since invented feature hashes (a polygon per class for a masked job) are not the
        project's.

        Raises:
            PreannotateError: BACKEND_NOT_CONFIGURED without ``encord_ontology_file``.
        """
        require_configured(self._settings.encord_ontology_file is not None, self.name)
        return encord_ontology_from(self._settings, model.class_names)

    def close(self) -> None:
        self._bundler.take()
        client = self._client.take()
        if client is not None:
            client.close()
