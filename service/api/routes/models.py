"""The loaded models."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from models.base import SegmenterInfo
from service.api.deps import ModelsDep, StateDep, TenantDep
from service.api.schemas import ModelPublic, error_responses
from service.loaded_models import ModelRegistry
from service.remote_models import ModelCatalog

router = APIRouter(prefix="/v1", tags=["models"], responses=error_responses(401, 503))


@router.get("/models")
def list_models(models: ModelsDep, tenant: TenantDep, state: StateDep) -> list[ModelPublic]:
    """Models this server has loaded (distributed: the workers published), the default first, with their
    classes and the thresholds saved for their versions (``calibrate --save``); then configured models no worker
    has published yet (``known: false``); then the segmenter, if one is set (``kind: segmenter``)."""
    default = state.settings.model
    saved = state.saved_thresholds()
    known = [
        ModelPublic(
            spec=m.spec,
            name=m.info.name,
            version=m.info.version,
            classes=list(m.info.class_names),
            runtime=m.info.runtime,
            device=m.info.device,
            max_batch_size=m.max_batch_size,
            default=m.spec == default,
            open_vocabulary=m.info.open_vocabulary,
            thresholds=saved.class_thresholds(m.info.version, tuple(m.info.class_names)),
        )
        for m in models.all()
    ]
    pending = [_unknown(spec, "detector", default=spec == default) for spec in models.pending()]
    segmenter = _segmenter(models, state.settings.segmenter)
    return sorted(known + pending, key=lambda m: not m.default) + ([] if segmenter is None else [segmenter])


def _segmenter(models: ModelCatalog, spec: str | None) -> ModelPublic | None:
    """The segmenter (``PREANNOTATE_SEGMENTER``) as loaded here; in distributed mode the API loads none, so only
    its spec is known (``known: false``): the workers load it."""
    if isinstance(models, ModelRegistry):
        return None if models.segmenter is None else _loaded_segmenter(models.segmenter.info)
    return None if spec is None else _unknown(spec, "segmenter", default=False)


def _unknown(spec: str, kind: Literal["detector", "segmenter"], *, default: bool) -> ModelPublic:
    """A configured model this process has not loaded and no worker has published: its spec only."""
    return ModelPublic(
        spec=spec,
        kind=kind,
        known=False,
        name=None,
        version=None,
        classes=None,
        runtime=None,
        device=None,
        max_batch_size=None,
        default=default,
    )


def _loaded_segmenter(info: SegmenterInfo) -> ModelPublic:
    return ModelPublic(
        spec=info.spec,
        kind="segmenter",
        name=info.name,
        version=info.version,
        classes=None,
        runtime=info.runtime,
        device=info.device,
        max_batch_size=info.batch_size,
        default=False,
    )
