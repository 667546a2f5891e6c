"""Settings: environment, TOML file, comma-separated lists, validation."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import build_parser
from service.commands.run import tracker_from_args
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.pipeline.tracks import TrackerOptions


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PREANNOTATE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(Path(__file__).parent)  # no stray .env
    # An empty model directory: the default model depends on what was fetched (a NanoDet in ~/.cache must not count).
    monkeypatch.setenv("PREANNOTATE_MODEL_DIR", str(tmp_path / "models"))


def test_defaults() -> None:
    settings = Settings()
    assert settings.model == "builtin:centerface"
    assert settings.token_list() == []
    assert settings.batching_for("cpu") == (1, 0.0)
    assert settings.batching_for("cuda") == (16, 5.0)


def test_max_prompt_map_bytes_default() -> None:
    assert Settings().max_prompt_map_bytes == 1_000_000


def test_max_prompt_sets_reaches_the_detectors_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().detector_options().max_prompt_sets == 16
    monkeypatch.setenv("PREANNOTATE_MAX_PROMPT_SETS", "3")
    assert Settings().detector_options().max_prompt_sets == 3


def test_segmenter_max_boxes_reaches_the_segmenters_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().detector_options().segmenter_max_boxes == 32
    monkeypatch.setenv("PREANNOTATE_SEGMENTER_MAX_BOXES", "8")
    assert Settings().detector_options().segmenter_max_boxes == 8
    for bad in ("0", "1025"):
        monkeypatch.setenv("PREANNOTATE_SEGMENTER_MAX_BOXES", bad)
        with pytest.raises(ValidationError, match="segmenter_max_boxes"):
            Settings()


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
        ({"PREANNOTATE_TRACK_MAX_GAP_S": "-1"}, "track_max_gap_s"),
        ({"PREANNOTATE_TRACK_MAX_GAP_S": "601"}, "track_max_gap_s"),
        ({"PREANNOTATE_TRACK_JOIN_GAP_S": "nan"}, "track_join_gap_s"),
        ({"PREANNOTATE_TRACK_JOIN_GAP_S": "3601"}, "track_join_gap_s"),
        ({"PREANNOTATE_TRACK_DISTANCE_GATE": "0"}, "track_distance_gate"),
        ({"PREANNOTATE_TRACK_DISTANCE_GATE": "101"}, "track_distance_gate"),
        ({"PREANNOTATE_TRACK_MAX_SPEED": "0"}, "track_max_speed"),
        ({"PREANNOTATE_TRACK_MAX_SPEED": "inf"}, "track_max_speed"),
        ({"PREANNOTATE_TRACK_OFFLINE": "sometimes"}, "track_offline"),
        ({"PREANNOTATE_TRACK_APPEARANCE": "maybe"}, "track_appearance"),
        ({"PREANNOTATE_TRACK_MIN_LENGTH": "0"}, "track_min_length"),
        ({"PREANNOTATE_TRACK_HIGH_SCORE": "0"}, "track_high_score"),
        ({"PREANNOTATE_TRACK_HIGH_SCORE": "1.1"}, "track_high_score"),
        ({"PREANNOTATE_TRACKS": "maybe"}, "tracks"),
        ({"PREANNOTATE_ENCORD_BUNDLE_WAIT_MS": "-5"}, "encord_bundle_wait_ms"),
        ({"PREANNOTATE_RETENTION_S": "59"}, "retention_s"),
        ({"PREANNOTATE_RETENTION_S": "inf"}, "retention_s"),
        ({"PREANNOTATE_EXPIRY_SWEEP_S": "0.5"}, "expiry_sweep_s"),
        ({"PREANNOTATE_RESULT_PAGE_ITEMS": "0"}, "result_page_items"),
        ({"PREANNOTATE_RESULT_PAGE_ITEMS": "1001"}, "result_page_items"),
        ({"PREANNOTATE_RESULT_PAGE_FRAMES": "0"}, "result_page_frames"),
        ({"PREANNOTATE_RESULT_FETCH_CONCURRENCY": "0"}, "result_fetch_concurrency"),
        ({"PREANNOTATE_RESULT_FETCH_CONCURRENCY": "257"}, "result_fetch_concurrency"),
        ({"PREANNOTATE_QUEUE_URL": "redis://r:6379/0", "PREANNOTATE_RESULTS_URL": "https://b/p"}, "results_url"),
        ({"PREANNOTATE_QUEUE_URL": "redis://r:6379/0", "PREANNOTATE_RESULTS_URL": "s3://k:s@b-1/p"}, "results_url"),
        ({"PREANNOTATE_QUEUE_URL": "redis://r:6379/0", "PREANNOTATE_RESULTS_URL": "s3://B_1/p"}, "results_url"),
        ({"PREANNOTATE_QUEUE_URL": "redis://r:6379/0", "PREANNOTATE_RESULTS_URL": "s3://b-1/a/../p"}, "results_url"),
        ({"PREANNOTATE_RESULTS_URL": "s3://b-1/p"}, "results_url is for distributed mode"),
        ({"PREANNOTATE_MAX_PROMPT_MAP_BYTES": "0"}, "max_prompt_map_bytes"),
        ({"PREANNOTATE_EVALUATE_THUMBNAILS_PER_CLASS": "0"}, "evaluate_thumbnails_per_class"),
        ({"PREANNOTATE_EVALUATE_THUMBNAILS_PER_CLASS": "101"}, "evaluate_thumbnails_per_class"),
        ({"PREANNOTATE_EVALUATE_THUMBNAIL_PX": "31"}, "evaluate_thumbnail_px"),
        ({"PREANNOTATE_EVALUATE_THUMBNAIL_PX": "2049"}, "evaluate_thumbnail_px"),
    ],
)
def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_evaluate_thumbnail_defaults() -> None:
    settings = Settings()
    assert (settings.evaluate_thumbnails_per_class, settings.evaluate_thumbnail_px) == (4, 256)


def test_results_and_retention_defaults() -> None:
    settings = Settings()
    assert (settings.results_url, settings.retention_s, settings.expiry_sweep_s) == (None, 7 * 86400.0, 60.0)
    assert (settings.result_page_items, settings.result_page_frames, settings.result_fetch_concurrency) == (
        256,
        20_000,
        16,
    )
    distributed = Settings(queue_url="redis://r:6379/0", results_url="s3://my-results/a/b")
    assert distributed.results_url == "s3://my-results/a/b"
    assert Settings(results_url="").results_url is None  # an empty variable is unset, as for the queue


def test_tracker_defaults_are_the_trackers() -> None:
    """The settings repeat ``TrackerOptions``' defaults (the settings module does not import the tracker)."""
    assert Settings().tracker_options() == TrackerOptions()
    settings = Settings.model_fields
    for option in fields(TrackerOptions):
        assert settings[f"track_{option.name}"].default == option.default, option.name


def test_tracker_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PREANNOTATE_TRACK_MAX_GAP_S": "4.5",
        "PREANNOTATE_TRACK_DISTANCE_GATE": "0.8",
        "PREANNOTATE_TRACK_MAX_SPEED": "3",
        "PREANNOTATE_TRACK_OFFLINE": "false",
        "PREANNOTATE_TRACK_JOIN_GAP_S": "0",
        "PREANNOTATE_TRACK_APPEARANCE": "false",
        "PREANNOTATE_TRACK_MIN_LENGTH": "3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expected = TrackerOptions(
        max_gap_s=4.5, distance_gate=0.8, max_speed=3.0, offline=False, join_gap_s=0.0, appearance=False, min_length=3
    )
    assert Settings().tracker_options() == expected
    monkeypatch.setenv("PREANNOTATE_TRACK_HIGH_SCORE", "0.6")
    assert Settings().tracker_options() == replace(expected, high_score=0.6)
    monkeypatch.setenv("PREANNOTATE_TRACKS", "false")
    assert Settings().tracker_options() is None


@pytest.mark.parametrize(
    ("name", "replacement"),
    [
        ("PREANNOTATE_TRACK_IOU", "PREANNOTATE_TRACK_DISTANCE_GATE"),
        ("PREANNOTATE_TRACK_MAX_GAP", "PREANNOTATE_TRACK_MAX_GAP_S"),
    ],
)
def test_a_removed_tracker_setting_stops_startup_naming_its_replacement(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, replacement: str
) -> None:
    # Given an older release's setting in the environment, it is refused, never ignored
    monkeypatch.setenv(name, "0.3")
    with pytest.raises(ValidationError, match=f"{name} was removed .*: use {replacement}"):
        Settings()
    # and so it is in a .env file or the TOML file
    monkeypatch.delenv(name)
    (tmp_path / ".env").write_text(f"{name}=2\n")
    with pytest.raises(ValidationError, match=f"use {replacement}"):
        Settings(_env_file=tmp_path / ".env")  # type: ignore[call-arg]
    config = tmp_path / "preannotate.toml"
    config.write_text(f"{name.removeprefix('PREANNOTATE_').lower()} = 2\n")
    monkeypatch.setenv("PREANNOTATE_CONFIG", str(config))
    with pytest.raises(ValidationError, match=f"use {replacement}"):
        Settings()
    # while the replacement alone is fine
    monkeypatch.delenv("PREANNOTATE_CONFIG")
    monkeypatch.setenv(replacement, "1.5")
    tracker = Settings().tracker_options()
    assert tracker is not None
    assert getattr(tracker, replacement.removeprefix("PREANNOTATE_TRACK_").lower()) == 1.5


def run_args(**flags: object) -> argparse.Namespace:
    return argparse.Namespace(**flags)


def test_run_flags_override_the_tracker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREANNOTATE_TRACK_MAX_GAP_S", "4")
    monkeypatch.setenv("PREANNOTATE_TRACK_DISTANCE_GATE", "0.7")
    settings = Settings()
    from_settings = TrackerOptions(max_gap_s=4.0, distance_gate=0.7)
    assert tracker_from_args(run_args(), settings) == from_settings  # an older parser
    flags = run_args(tracks=True, track_max_gap_s=1.0, track_distance_gate=None, track_min_length=2)
    assert tracker_from_args(flags, settings) == replace(from_settings, max_gap_s=1.0, min_length=2)
    assert tracker_from_args(run_args(tracks=False, track_max_speed=9.0), settings) is None
    assert tracker_from_args(run_args(tracks=True), Settings(tracks=False)) is None
    with pytest.raises(PreannotateError, match="distance_gate") as info:
        tracker_from_args(run_args(track_distance_gate=0.0), settings)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_every_tracker_flag_reaches_the_tracker() -> None:
    argv = [
        "run", "in.mp4", "--out", "o.json",
        "--track-max-gap-s", "3.5", "--track-distance-gate", "0.9", "--track-max-speed", "4",
        "--track-online", "--track-join-gap-s", "20", "--no-track-appearance",
        "--track-min-length", "2", "--track-high-score", "0.6",
    ]  # fmt: skip
    parsed = build_parser().parse_args(argv)
    assert tracker_from_args(parsed, Settings()) == TrackerOptions(
        max_gap_s=3.5,
        distance_gate=0.9,
        max_speed=4.0,
        offline=False,
        join_gap_s=20.0,
        appearance=False,
        min_length=2,
        high_score=0.6,
    )
    # and none given: the settings' (the tracker's defaults)
    assert tracker_from_args(build_parser().parse_args(["run", "in.mp4", "--out", "o.json"]), Settings()) == (
        TrackerOptions()
    )


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


def test_preview_defaults_are_the_preview_writers() -> None:
    from service.commands.run import preview_options
    from service.render.previews import PreviewOptions

    settings = Settings()
    assert (settings.preview_px, settings.preview_sheet_tiles) == (1280, 16)
    assert preview_options(settings) == PreviewOptions()


def test_preview_settings_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.commands.run import preview_options
    from service.render.previews import PreviewOptions

    monkeypatch.setenv("PREANNOTATE_PREVIEW_PX", "640")
    monkeypatch.setenv("PREANNOTATE_PREVIEW_SHEET_TILES", "4")
    settings = Settings()
    assert preview_options(settings) == PreviewOptions(longest_px=640, sheet_tiles=4)
    parsed = build_parser().parse_args(["run", "in.mp4", "--out", "o.json", "--preview", "p", "--preview-px", "320"])
    assert (parsed.preview, parsed.preview_px) == (Path("p"), 320)
    assert preview_options(settings, longest_px=parsed.preview_px) == PreviewOptions(longest_px=320, sheet_tiles=4)
    # render's flags over the same settings
    assert PreviewOptions.from_settings(settings, sheet_tiles=9) == PreviewOptions(longest_px=640, sheet_tiles=9)
    with pytest.raises(PreannotateError, match="--preview-px") as caught:
        preview_options(settings, longest_px=8)  # too small to draw a label on
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    for name, bad in (("PREVIEW_PX", "15"), ("PREVIEW_PX", "9000"), ("PREVIEW_SHEET_TILES", "0")):
        monkeypatch.setenv(f"PREANNOTATE_{name}", bad)
        with pytest.raises(ValidationError, match=name.lower()):
            Settings()
        monkeypatch.delenv(f"PREANNOTATE_{name}")


def test_preview_settings_have_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.preview_px, defaults.preview_sheet_tiles, defaults.preview_cache_mb) == (1280, 16, 512)
    assert (defaults.preview_concurrency, defaults.preview_timeout_s) == (2, 60.0)
    monkeypatch.setenv("PREANNOTATE_PREVIEW_PX", "640")
    monkeypatch.setenv("PREANNOTATE_PREVIEW_CACHE_MB", "0")
    assert (Settings().preview_px, Settings().preview_cache_mb) == (640, 0)
    for name, bad in (("PREVIEW_PX", "8"), ("PREVIEW_CONCURRENCY", "0"), ("PREVIEW_TIMEOUT_S", "0")):
        monkeypatch.setenv(f"PREANNOTATE_{name}", bad)
        with pytest.raises(ValidationError, match=name.lower()):
            Settings()
        monkeypatch.delenv(f"PREANNOTATE_{name}")


def _install_dummy_nanodet(model_dir: Path) -> None:
    """What makes builtin:nanodet installed, as far as the default is concerned: the served model's file."""
    (model_dir / "nanodet").mkdir(parents=True)
    (model_dir / "nanodet" / "nanodet.onnx").write_bytes(b"not read to pick the default")


def test_default_model_is_centerface_until_nanodet_is_fetched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model_dir = tmp_path / "fetched"
    monkeypatch.setenv("PREANNOTATE_MODEL_DIR", str(model_dir))
    assert Settings().model_dir == model_dir
    assert Settings().model == "builtin:centerface"

    _install_dummy_nanodet(model_dir)

    assert Settings().model == "builtin:nanodet"


def test_preannotate_model_wins_over_the_fetched_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PREANNOTATE_MODEL_DIR", str(tmp_path))
    _install_dummy_nanodet(tmp_path)
    monkeypatch.setenv("PREANNOTATE_MODEL", "builtin:centerface")

    assert Settings().model == "builtin:centerface"


def test_model_fetch_timeout_default_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().model_fetch_timeout_s == 900.0
    monkeypatch.setenv("PREANNOTATE_MODEL_FETCH_TIMEOUT_S", "60")
    assert Settings().model_fetch_timeout_s == 60.0
    for bad in ("0", "-1", "86401"):
        monkeypatch.setenv("PREANNOTATE_MODEL_FETCH_TIMEOUT_S", bad)
        with pytest.raises(ValidationError, match="model_fetch_timeout_s"):
            Settings()
