"""The webhooks' view of the settings: secrets as tuples (several = rotation), rules, the sweep's knobs.

A webhook whose secret is unset is off (404).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

from service.config import Settings
from service.s3_routing import S3Rule

DEFAULT_TOLERANCE_S = 300.0
DEFAULT_MAX_BODY_BYTES = 1024**2


def split_secrets(value: object) -> tuple[str, ...]:
    """Comma-separated secrets (a ``SecretStr`` or a string) as a tuple, blanks dropped."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Everything the webhook routes and the Label Studio sweep need from the settings.

    Attributes:
        label_studio_secrets: Values accepted in ``X-Preannotate-Secret`` from Label Studio.
        s3_secrets: MinIO ``auth_token`` values accepted in ``Authorization`` (as is, or after ``Bearer``).
        v7_secrets: ``Authorization`` values accepted from a V7 webhook stage.
        generic_secrets: HMAC keys for ``/v1/webhooks/generic``; any one verifies (rotation).
        cvat_secrets: CVAT webhook secrets (``X-Signature-256`` HMAC keys); any one verifies (rotation).
        tolerance_s: Largest clock difference accepted in a signed timestamp.
        max_body_bytes: Largest webhook body; larger is 413 before any secret is looked at.
        s3_rules: Bucket/prefix routing of S3 objects.
        s3_endpoint: Path-style HTTP endpoint for objects (MinIO) instead of ``s3://`` URLs.
        label_studio_model: Model for Label Studio webhooks and the sweep (None = default).
        v7_model: Model for V7 deliveries (None = default).
        cvat_model: Model for CVAT deliveries (None = default).
        label_studio_projects: Projects the Label Studio webhook accepts and the sweep reconciles; empty =
            the webhook accepts any project and the sweep has nothing to do.
        sweep_interval_s: Seconds between sweeps; 0 = no sweep.
        sweep_min_age_s: Tasks younger than this are left to their webhook delivery.
    """

    label_studio_secrets: tuple[str, ...] = field(default=(), repr=False)
    s3_secrets: tuple[str, ...] = field(default=(), repr=False)
    v7_secrets: tuple[str, ...] = field(default=(), repr=False)
    generic_secrets: tuple[str, ...] = field(default=(), repr=False)
    cvat_secrets: tuple[str, ...] = field(default=(), repr=False)
    tolerance_s: float = DEFAULT_TOLERANCE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    s3_rules: tuple[S3Rule, ...] = ()
    s3_endpoint: str | None = None
    label_studio_model: str | None = None
    v7_model: str | None = None
    cvat_model: str | None = None
    label_studio_projects: tuple[int, ...] = ()
    sweep_interval_s: float = 0.0
    sweep_min_age_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        return cls(
            label_studio_secrets=split_secrets(settings.webhook_label_studio_secrets),
            s3_secrets=split_secrets(settings.webhook_s3_secrets),
            v7_secrets=split_secrets(settings.webhook_v7_secrets),
            generic_secrets=split_secrets(settings.webhook_generic_secrets),
            cvat_secrets=split_secrets(settings.webhook_cvat_secrets),
            tolerance_s=settings.webhook_tolerance_s,
            max_body_bytes=settings.webhook_max_body_bytes,
            s3_rules=tuple(settings.webhook_s3_rules),
            s3_endpoint=settings.webhook_s3_endpoint or None,
            label_studio_model=settings.webhook_label_studio_model or None,
            v7_model=settings.webhook_v7_model or None,
            cvat_model=settings.webhook_cvat_model or None,
            label_studio_projects=tuple(settings.label_studio_projects),
            sweep_interval_s=settings.label_studio_sweep_interval_s,
            sweep_min_age_s=settings.label_studio_sweep_min_age_s,
        )
