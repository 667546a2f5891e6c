"""S3 routing rules, object URLs, the settings check, and the webhooks' settings view."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from service.config import Settings
from service.intake.config import WebhookConfig, split_secrets
from service.s3_routing import S3Rule, check_rules, match_rule, object_url

RULES = [
    S3Rule(bucket="uploads"),
    S3Rule(bucket="uploads", prefix="video/", fps=2.0),
    S3Rule(bucket="uploads", prefix="video/hd/", model="builtin:big", destination="v7"),
    S3Rule(bucket="other-bucket", prefix="x/"),
]


@pytest.mark.parametrize(
    ("bucket", "key", "expected"),
    [
        ("uploads", "a.jpg", 0),
        ("uploads", "video/a.mp4", 1),
        ("uploads", "video/hd/a.mp4", 2),  # the longest prefix wins, whatever the order
        ("other-bucket", "x/a.jpg", 3),
        ("other-bucket", "y/a.jpg", None),
        ("unknown", "a.jpg", None),
    ],
)
def test_the_longest_matching_prefix_wins(bucket: str, key: str, expected: int | None) -> None:
    rule = match_rule(reversed(RULES), bucket, key)
    assert rule == (None if expected is None else RULES[expected])


def test_object_urls() -> None:
    assert object_url("uploads", "cams/front door/1+1.jpg", None) == "s3://uploads/cams/front door/1+1.jpg"
    assert object_url("uploads", "a?b.jpg", None) is None  # the fetcher would read "?b.jpg" as a query
    assert (
        object_url("uploads", "cams/front door/1+1?.jpg", "http://minio:9000/")
        == "http://minio:9000/uploads/cams/front%20door/1%2B1%3F.jpg"
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"bucket": "Bad_Bucket"}, {"bucket": "uploads", "prefix": "/abs"}, {"bucket": "uploads", "destination": "encord"}],
)
def test_bad_rules(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        S3Rule.model_validate(kwargs)


def test_rules_must_name_fetchable_objects() -> None:
    check_rules(RULES[:1], endpoint=None, allowed_buckets=["uploads"], allowed_hosts=[])
    with pytest.raises(ValueError, match="fetch_allowed_buckets"):
        check_rules(RULES, endpoint=None, allowed_buckets=["uploads"], allowed_hosts=[])
    check_rules(RULES, endpoint="http://minio:9000", allowed_buckets=[], allowed_hosts=["minio:9000"])
    check_rules(RULES, endpoint="http://minio:9000", allowed_buckets=[], allowed_hosts=["MINIO"])
    for endpoint, hosts in [
        ("http://minio:9000", ["other"]),
        ("ftp://minio", ["minio"]),
        ("http://minio:9000/base", ["minio"]),
        ("http://user:pw@minio", ["minio"]),
    ]:
        with pytest.raises(ValueError, match=r"webhook_s3_endpoint|fetch_allowed_hosts"):
            check_rules(RULES, endpoint=endpoint, allowed_buckets=[], allowed_hosts=hosts)


def test_split_secrets() -> None:
    assert split_secrets(SecretStr(" a, b ,,c ")) == ("a", "b", "c")
    assert split_secrets("") == ()
    assert split_secrets(None) == ()


def test_the_config_view_reads_the_settings_fields() -> None:
    settings = Settings(
        webhook_label_studio_secrets=SecretStr("ls1,ls2"),
        webhook_generic_secrets=SecretStr("g"),
        webhook_tolerance_s=120.0,
        webhook_s3_rules=[S3Rule(bucket="uploads", prefix="p/")],
        webhook_s3_endpoint="",
        fetch_allowed_buckets=["uploads"],
        label_studio_projects=[3, 4],
        label_studio_sweep_interval_s=60.0,
    )
    config = WebhookConfig.from_settings(settings)
    assert config.label_studio_secrets == ("ls1", "ls2")
    assert config.generic_secrets == ("g",)
    assert config.s3_secrets == ()
    assert config.tolerance_s == 120.0
    assert config.s3_rules == (S3Rule(bucket="uploads", prefix="p/"),)
    assert config.s3_endpoint is None
    assert config.label_studio_projects == (3, 4)
    assert config.sweep_interval_s == 60.0
    assert "ls1" not in repr(config)  # secrets stay out of reprs (and so out of tracebacks and logs)


def test_with_no_secrets_set_every_webhook_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABEL_STUDIO", "S3", "V7", "GENERIC"):
        monkeypatch.delenv(f"PREANNOTATE_WEBHOOK_{name}_SECRETS", raising=False)
    config = WebhookConfig.from_settings(Settings())
    assert (config.label_studio_secrets, config.s3_secrets, config.v7_secrets, config.generic_secrets) == ((),) * 4


def test_the_settings_fields_once_wired(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREANNOTATE_WEBHOOK_S3_RULES", '[{"bucket": "uploads", "prefix": "cams/", "fps": 2}]')
    monkeypatch.setenv("PREANNOTATE_FETCH_ALLOWED_BUCKETS", "uploads")
    monkeypatch.setenv("PREANNOTATE_LABEL_STUDIO_PROJECTS", "3, 4")
    monkeypatch.setenv("PREANNOTATE_WEBHOOK_GENERIC_SECRETS", "new,old")
    config = WebhookConfig.from_settings(Settings())
    assert config.s3_rules == (S3Rule(bucket="uploads", prefix="cams/", fps=2.0),)
    assert config.label_studio_projects == (3, 4)
    assert config.generic_secrets == ("new", "old")
    monkeypatch.setenv("PREANNOTATE_FETCH_ALLOWED_BUCKETS", "elsewhere")
    with pytest.raises(ValidationError, match="fetch_allowed_buckets"):
        Settings()
