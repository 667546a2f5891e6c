"""Settings: environment, TOML file, comma-separated lists, validation."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import build_parser
from service.commands.run import tracker_from_args
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.pipeline.tracks import TrackerOptions


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
        ({"PREANNOTATE_TRACK_IOU": "0"}, "track_iou"),
        ({"PREANNOTATE_TRACK_IOU": "1.2"}, "track_iou"),
        ({"PREANNOTATE_TRACK_MAX_GAP": "-1"}, "track_max_gap"),
        ({"PREANNOTATE_TRACK_MIN_LENGTH": "0"}, "track_min_length"),
        ({"PREANNOTATE_TRACK_HIGH_SCORE": "0"}, "track_high_score"),
        ({"PREANNOTATE_TRACK_HIGH_SCORE": "1.1"}, "track_high_score"),
        ({"PREANNOTATE_TRACKS": "maybe"}, "tracks"),
        ({"PREANNOTATE_ENCORD_BUNDLE_WAIT_MS": "-5"}, "encord_bundle_wait_ms"),
    ],
)
def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_tracker_defaults_are_the_trackers() -> None:
    assert Settings().tracker_options() == TrackerOptions()


def test_tracker_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREANNOTATE_TRACK_IOU", "0.5")
    monkeypatch.setenv("PREANNOTATE_TRACK_MAX_GAP", "0")
    monkeypatch.setenv("PREANNOTATE_TRACK_MIN_LENGTH", "3")
    assert Settings().tracker_options() == TrackerOptions(iou_gate=0.5, max_gap=0, min_length=3)
    monkeypatch.setenv("PREANNOTATE_TRACK_HIGH_SCORE", "0.6")
    assert Settings().tracker_options() == TrackerOptions(iou_gate=0.5, max_gap=0, min_length=3, high_score=0.6)
    monkeypatch.setenv("PREANNOTATE_TRACKS", "false")
    assert Settings().tracker_options() is None


def run_args(**flags: object) -> argparse.Namespace:
    return argparse.Namespace(**flags)


def test_run_flags_override_the_tracker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREANNOTATE_TRACK_IOU", "0.5")
    monkeypatch.setenv("PREANNOTATE_TRACK_MAX_GAP", "4")
    settings = Settings()
    assert tracker_from_args(run_args(), settings) == TrackerOptions(iou_gate=0.5, max_gap=4)  # an older parser
    flags = run_args(tracks=True, track_iou=None, track_max_gap=1, track_min_length=2)
    assert tracker_from_args(flags, settings) == TrackerOptions(iou_gate=0.5, max_gap=1, min_length=2)
    assert tracker_from_args(run_args(tracks=False, track_iou=0.9), settings) is None
    assert tracker_from_args(run_args(tracks=True), Settings(tracks=False)) is None
    with pytest.raises(PreannotateError, match="iou_gate") as info:
        tracker_from_args(run_args(track_iou=0.0), settings)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_track_high_score_flag_overrides_the_setting() -> None:
    settings = Settings(track_high_score=0.5)
    assert tracker_from_args(run_args(), settings) == TrackerOptions(high_score=0.5)
    assert tracker_from_args(run_args(track_high_score=0.8), settings) == TrackerOptions(high_score=0.8)
    assert tracker_from_args(run_args(track_high_score=None), Settings()) == TrackerOptions()
    with pytest.raises(PreannotateError, match="high_score"):
        tracker_from_args(run_args(track_high_score=0.0), settings)
    parsed = build_parser().parse_args(["run", "in.mp4", "--out", "o.json", "--track-high-score", "0.6"])
    assert tracker_from_args(parsed, Settings()) == TrackerOptions(high_score=0.6)


def test_usable_cpus_honour_a_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.pipeline import options

    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(options, "_CGROUP_CPU_MAX", cpu_max)
    monkeypatch.setattr(options.os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert options.usable_cpus() == 16  # no cgroup file: the affinity
    cpu_max.write_text("max 100000\n")
    assert options.usable_cpus() == 16
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: two threads may run
    assert options.usable_cpus() == 2
    assert Settings().decode_workers == 2
