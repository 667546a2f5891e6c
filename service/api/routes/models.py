"""The loaded models."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ModelsDep, StateDep, TenantDep
from service.api.schemas import ModelPublic, error_responses

router = APIRouter(prefix="/v1", tags=["models"], responses=error_responses(401, 503))


@router.get("/models")
def list_models(models: ModelsDep, tenant: TenantDep, state: StateDep) -> list[ModelPublic]:
    """Models this server has loaded (distributed: the workers published), the default first, with their
    classes; then configured models no worker has published yet (``known: false``)."""
    default = state.settings.model
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
        )
        for m in models.all()
    ]
    pending = [
        ModelPublic(
            spec=spec,
            known=False,
            name=None,
            version=None,
            classes=None,
            runtime=None,
            device=None,
            max_batch_size=None,
            default=spec == default,
        )
        for spec in models.pending()
    ]
    return sorted(known + pending, key=lambda m: not m.default)
