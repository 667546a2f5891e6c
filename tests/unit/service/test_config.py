"""Settings: environment, TOML file, comma-separated lists, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PREANNOTATE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(Path(__file__).parent)  # no stray .env


def test_defaults() -> None:
    settings = Settings()
    assert settings.model == "builtin:centerface"
    assert settings.token_list() == []
    assert settings.batching_for("cpu") == (1, 0.0)
    assert settings.batching_for("cuda") == (16, 5.0)


def test_comma_separated_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREANNOTATE_API_TOKENS", "a, b ,,c")
    monkeypatch.setenv("PREANNOTATE_LOCAL_ROOTS", "/data/one,/data/two")
    monkeypatch.setenv("PREANNOTATE_FETCH_ALLOWED_HOSTS", "minio.internal:9000, S3.Local")
    monkeypatch.setenv("PREANNOTATE_EXTRA_MODELS", "onnx:/m/a.onnx")
    settings = Settings()
    assert settings.token_list() == ["a", "b", "c"]
    assert settings.local_roots == [Path("/data/one"), Path("/data/two")]
    assert settings.fetch_policy().allowed_hosts == frozenset({"minio.internal:9000", "s3.local"})
    assert settings.extra_models == ["onnx:/m/a.onnx"]
    assert "a, b" not in repr(settings)  # tokens are a SecretStr


def test_toml_file_with_env_on_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "preannotate.toml"
    config.write_text('threshold = 0.3\nfps = 2.5\nmax_batch_size = 8\nlocal_roots = ["/srv/media"]\n')
    monkeypatch.setenv("PREANNOTATE_CONFIG", str(config))
    monkeypatch.setenv("PREANNOTATE_FPS", "4")
    settings = Settings()
    assert (settings.threshold, settings.fps, settings.max_batch_size) == (0.3, 4.0, 8)
    assert settings.local_roots == [Path("/srv/media")]


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"PREANNOTATE_THRESHOLD": "1.5"}, "threshold"),
        ({"PREANNOTATE_FPS": "-1"}, "fps"),
        ({"PREANNOTATE_DEVICE": "tpu"}, "device"),
        ({"PREANNOTATE_LEASE_S": "5", "PREANNOTATE_HEARTBEAT_S": "10"}, "heartbeat_s"),
        ({"PREANNOTATE_MAX_ITEMS_PER_JOB": "0"}, "max_items_per_job"),
    ],
)
def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=field):
        Settings()
