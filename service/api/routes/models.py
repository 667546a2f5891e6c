"""The loaded models."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ModelsDep, TenantDep
from service.api.schemas import ModelPublic, error_responses

router = APIRouter(prefix="/v1", tags=["models"], responses=error_responses(401, 503))


@router.get("/models")
def list_models(models: ModelsDep, tenant: TenantDep) -> list[ModelPublic]:
    """Models this server has loaded, the default first, with their classes."""
    return [
        ModelPublic(
            spec=m.spec,
            name=m.info.name,
            version=m.info.version,
            classes=list(m.info.class_names),
            runtime=m.info.runtime,
            device=m.info.device,
            max_batch_size=m.max_batch_size,
            default=i == 0,
        )
        for i, m in enumerate(models.all())
    ]
