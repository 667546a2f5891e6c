"""Label Studio as a job destination: one prediction per task and model version, converted here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from service.backends.base import (
    Backend,
    LabelStudioPushRecord,
    Lazy,
    PushRecord,
    push_one_by_one,
    require_configured,
    require_external_ids,
    required_external_id,
)
from service.backends.label_studio import LabelStudioClient, config_from_settings
from service.backends.retry import BackendError, backend_error_to_preannotate
from service.config import Settings
from service.convert.label_studio import LabelConfig, LsPrediction, item_to_ls_result, parse_label_config
from service.convert.ls_prompts import labels_only
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.pipeline.predictions import ItemPredictions
from service.spec.job import JobSpec
from service.spec.requests import Destination, ItemIn


def predictions_to_ls(
    predictions: ItemPredictions,
    model: ModelRef,
    config: LabelConfig,
    *,
    task_data: Mapping[str, object] | None,
    masks: bool | None = None,
) -> LsPrediction:
    """The one converter call of a Label Studio push: video regions are the tracks the predictions' tracker ids
    name (untracked, every detection its own region); ``masks``: the job makes masks (``item_to_ls_result``)."""
    return item_to_ls_result(predictions, model, config, task_data=task_data, masks=masks)


class LabelStudioPusher(Backend):
    """Pushes to the configured Label Studio server; the client is built on the first push."""

    name: Literal["label_studio"] = "label_studio"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = Lazy(self._build)

    def _build(self) -> LabelStudioClient:
        config = config_from_settings(self._settings)
        if config is None:
            raise PreannotateError(ErrorCode.BACKEND_NOT_CONFIGURED, "Label Studio is not configured")
        return LabelStudioClient(config, fetch_policy=self._settings.fetch_policy())

    def check(self, destination: Destination, items: Sequence[ItemIn]) -> None:
        settings = self._settings
        require_configured(bool(settings.label_studio_url and settings.label_studio_api_key), self.name)
        if destination.project is None:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a label_studio destination needs its project id")
        require_external_ids(items, self.name, "task id")

    def push(self, destination: Destination, item: ItemIn, predictions: ItemPredictions, spec: JobSpec) -> PushRecord:
        try:
            return self._push(destination, item, predictions, spec)
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None

    def _push(
        self, destination: Destination, item: ItemIn, predictions: ItemPredictions, spec: JobSpec
    ) -> LabelStudioPushRecord:
        task_id = _task_id(item)
        client = self._client.get()
        assert destination.project is not None  # checked at submit
        config = parse_label_config(client.get_label_config(destination.project))
        if spec.prompts is not None:  # a prompted run's class names are labels already (``labels_only``)
            config = labels_only(config)
        model = spec.model_ref
        # LS counts video frames at the task's own rate when the config says framerate="$key"
        task_data = client.get_task(task_id).get("data") if config.needs_task_data() else None
        prediction = predictions_to_ls(predictions, model, config, task_data=task_data, masks=spec.makes_masks)
        result = client.upsert_prediction(task_id, prediction)
        client.set_project_model_version(destination.project, model.version)
        return LabelStudioPushRecord(
            task=task_id, outcome=str(result.outcome), id=result.prediction_id, dropped=dict(prediction.dropped)
        )

    def push_many(
        self, destination: Destination, entries: Sequence[tuple[ItemIn, ItemPredictions]], spec: JobSpec
    ) -> list[PushRecord | PreannotateError]:
        return push_one_by_one(self, destination, entries, spec)

    def close(self) -> None:
        client = self._client.take()
        if client is not None:
            client.close()


def _task_id(item: ItemIn) -> int:
    value = required_external_id(item, "label_studio", "task id")
    try:
        return int(value)
    except ValueError:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"item {item.name!r}: bad task id {value!r}") from None
