"""JobSpec: the stored request, typed; its stored form is what older releases stored and hashed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.config import Settings
from service.jobs.submit import content_fingerprint, content_idem, job_params
from service.pipeline.tracks import TrackerOptions
from service.remote_models import JobModel, JobSegmenter
from service.spec.job import JobSpec, ModelPin, PinnedTracks, tracker_options
from service.spec.requests import JobCreate, TracksIn

BODIES = [
    {"items": [{"name": "a", "slots": [{"url": "https://x/a.jpg"}]}]},
    {
        "items": [{"name": "a", "slots": [{"url": "https://x/a.mp4"}]}],
        "fps": 1,
        "threshold": 0.25,
        "classes": ["face"],
        "outputs": ["coco", "darwin"],
        "destinations": [{"backend": "label_studio", "project": 3}, {"backend": "v7"}],
        "tracks": {"enabled": True, "distance_gate": 0.4, "max_gap_s": 3.0, "min_length": 2},
    },
    {"items": [{"name": "a", "slots": [{"url": "https://x/a.mp4"}]}], "tracks": {"enabled": False}},
]


def stored_before_jobspec(job: JobCreate, model: JobModel, settings: Settings) -> dict[str, Any]:
    """The request older releases stored (and hashed into dedupe keys), built as they built it; its "tracks"
    with the fields of the tracker that counts in seconds (older releases pinned ``iou`` and ``max_gap``)."""
    tracks = job.tracks or TracksIn()
    return {
        "model": model.spec,
        "model_version": model.version,
        "class_names": None if model.class_names is None else list(model.class_names),
        "fps": settings.fps if job.fps is None else job.fps,
        "sampling": (job.sampling or settings.sampling).value,
        "threshold": settings.threshold if job.threshold is None else job.threshold,
        "classes": job.classes,
        "outputs": list(job.outputs),
        "destinations": [d.model_dump(exclude_none=True) for d in job.destinations],
        "tracks": {
            "enabled": settings.tracks if tracks.enabled is None else tracks.enabled,
            "max_gap_s": settings.track_max_gap_s if tracks.max_gap_s is None else tracks.max_gap_s,
            "distance_gate": settings.track_distance_gate if tracks.distance_gate is None else tracks.distance_gate,
            "max_speed": settings.track_max_speed if tracks.max_speed is None else tracks.max_speed,
            "offline": settings.track_offline if tracks.offline is None else tracks.offline,
            "join_gap_s": settings.track_join_gap_s if tracks.join_gap_s is None else tracks.join_gap_s,
            "appearance": settings.track_appearance if tracks.appearance is None else tracks.appearance,
            "min_length": settings.track_min_length if tracks.min_length is None else tracks.min_length,
        },
    }


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("model", [JobModel("builtin:centerface", "abc", ("face",)), JobModel("onnx:m", None, None)])
def test_stored_form_round_trips_byte_for_byte(body: dict[str, object], model: JobModel) -> None:
    job = JobCreate.model_validate(body)
    params = stored_before_jobspec(job, model, Settings())
    spec = JobSpec.from_stored(json.loads(json.dumps(params)))
    assert json.dumps(spec.to_stored(), sort_keys=True) == json.dumps(params, sort_keys=True)
    assert json.dumps(job_params(job, model, Settings()).to_stored()) == json.dumps(params)  # key order too


def test_a_job_stored_before_trackers_were_pinned_takes_the_settings_tracker() -> None:
    params = job_params(JobCreate.model_validate(BODIES[0]), JobModel("m", "v", ("face",)), Settings()).to_stored()
    del params["tracks"]
    spec = JobSpec.from_stored(params)
    assert spec.tracks is None
    assert spec.tracker(Settings(track_distance_gate=0.55)) == Settings(track_distance_gate=0.55).tracker_options()
    assert "tracks" not in spec.to_stored()


def test_tracking_off_and_pinning() -> None:
    spec = job_params(JobCreate.model_validate(BODIES[2]), JobModel("m", None, None), Settings())
    assert spec.tracker(Settings()) is None
    pinned = spec.pinned("v2", ("face", "plate"))
    assert pinned.model_ref.version == "v2"
    assert pinned.model_ref.class_names == ("face", "plate")
    assert spec.model_ref.version == ""  # unpinned
    assert spec.pin is None
    assert pinned.pin == ModelPin("v2", ("face", "plate"))


def test_the_job_body_tracks_are_pinned_over_the_settings() -> None:
    settings = Settings(track_distance_gate=0.4, track_max_gap_s=5.0, track_appearance=False)
    job = JobCreate.model_validate(
        {"items": [{"name": "a", "slots": [{"url": "file:///a.mp4"}]}], "tracks": {"distance_gate": 0.6}}
    )
    pinned = PinnedTracks.from_request(job.tracks, settings)
    defaults = TrackerOptions()
    assert pinned.model_dump() == {
        "enabled": True,
        "max_gap_s": 5.0,
        "distance_gate": 0.6,
        "max_speed": defaults.max_speed,
        "offline": defaults.offline,
        "join_gap_s": defaults.join_gap_s,
        "appearance": False,
        "min_length": 1,
    }
    assert tracker_options(pinned, default=None) == TrackerOptions(max_gap_s=5.0, distance_gate=0.6, appearance=False)
    assert PinnedTracks.from_request(None, Settings(tracks=False)).enabled is False
    assert (
        tracker_options(
            PinnedTracks.from_request(TracksIn(enabled=False), settings), default=settings.tracker_options()
        )
        is None
    )
    # A job stored before trackers were pinned takes this process's settings.
    assert tracker_options(None, default=settings.tracker_options()) == TrackerOptions(
        max_gap_s=5.0, distance_gate=0.4, appearance=False
    )
    assert tracker_options(None, default=Settings(tracks=False).tracker_options()) is None


def test_dedupe_keys_are_the_ones_older_releases_made() -> None:
    """Golden key: the same job makes the same key in every release that links tracks the same way.

    The key hashes the pinned tracker, part of what a job computes. It changed when the tracker's options went
    from an IoU gate and gaps in sampled frames (``iou``, ``max_gap``) to centre distances and seconds: the
    same body now makes other tracks, so a resubmission after that upgrade is a new job, not the old one found
    again (key before: 4f5aab4423c3d2a118c864e895f945836836822aeb79dabdf7b4a6071b9e4b75).
    """
    job = JobCreate.model_validate(BODIES[1] | {"destinations": [{"backend": "label_studio", "project": 3}]})
    job = job.model_copy(update={"outputs": ["coco"], "tracks": TracksIn(distance_gate=0.4)})
    spec = job_params(job, JobModel("builtin:centerface", "abc", ("face",)), Settings())
    golden = "3c6c9fb35a8f922653c3ba87593a5659dc88f54b3b1c81438178f4a04c9711a2"
    assert content_idem(spec, job.items) == f"body:{golden}"
    assert content_fingerprint(spec, job.items) == golden


def test_two_stage_tracking_is_pinned_and_stored_only_when_set() -> None:
    # Given the setting, a job body overrides it and the tracker takes it
    settings = Settings(track_high_score=0.5)
    body = {"items": [{"name": "a", "slots": [{"url": "file:///a.mp4"}]}], "tracks": {"high_score": 0.7}}
    pinned = PinnedTracks.from_request(JobCreate.model_validate(body).tracks, settings)
    assert pinned.high_score == 0.7
    assert tracker_options(pinned, default=None) == TrackerOptions(high_score=0.7)
    assert PinnedTracks.from_request(None, settings).high_score == 0.5
    # Then it is stored with the job, and read back
    spec = job_params(JobCreate.model_validate(body), JobModel("m", "v", ("face",)), Settings())
    stored = json.loads(json.dumps(spec.to_stored()))
    assert stored["tracks"]["high_score"] == 0.7
    assert JobSpec.from_stored(stored).tracker(Settings()) == TrackerOptions(high_score=0.7)
    # while a job without it keeps the stored form jobs always had (no key), so its dedupe key is unchanged
    plain = job_params(JobCreate.model_validate(BODIES[1]), JobModel("m", "v", ("face",)), Settings())
    assert "high_score" not in plain.to_stored()["tracks"]
    assert JobSpec.from_stored(plain.to_stored()).tracker(Settings()) == TrackerOptions(
        distance_gate=0.4, max_gap_s=3.0, min_length=2
    )


@pytest.mark.parametrize("high_score", [0, 0.0, 1.5, "0.5", True])
def test_bad_tracks_high_score_is_refused(high_score: object) -> None:
    body = {"items": [{"name": "a", "slots": [{"url": "file:///a.mp4"}]}], "tracks": {"high_score": high_score}}
    with pytest.raises(ValueError, match="high_score"):
        JobCreate.model_validate(body)


def test_a_job_pinned_before_trackers_took_seconds_loads_with_the_tracker_defaults() -> None:
    """A stored job of an older release: its IoU gate and frame-counted gap mean nothing to this tracker."""
    stored = {
        "model": "m",
        "model_version": "v",
        "class_names": ["face"],
        "fps": 1.0,
        "sampling": "exact",
        "threshold": 0.5,
        "classes": None,
        "outputs": ["coco"],
        "destinations": [],
        "tracks": {"enabled": True, "iou": 0.4, "max_gap": 3, "min_length": 2, "high_score": 0.7},
    }
    spec = JobSpec.from_stored(stored)
    assert spec.tracker(Settings(track_max_gap_s=9.0)) == TrackerOptions(min_length=2, high_score=0.7)
    assert spec.tracks == PinnedTracks.from_request(TracksIn(min_length=2, high_score=0.7), Settings())
    assert "iou" not in spec.to_stored()["tracks"]
    off = JobSpec.from_stored(stored | {"tracks": {"enabled": False, "iou": 0.3, "max_gap": 2, "min_length": 1}})
    assert off.tracker(Settings()) is None


@pytest.mark.parametrize(
    ("tracks", "replacement"),
    [({"iou": 0.4}, "tracks.distance_gate"), ({"enabled": True, "max_gap": 3}, "tracks.max_gap_s")],
)
def test_a_body_with_an_older_tracker_option_is_told_what_replaced_it(
    tracks: dict[str, object], replacement: str
) -> None:
    body = {"items": [{"name": "a", "slots": [{"url": "file:///a.mp4"}]}], "tracks": tracks}
    with pytest.raises(ValueError, match=f"was removed .*: use {replacement}"):
        JobCreate.model_validate(body)


@pytest.mark.parametrize(
    "tracks",
    [
        {"max_gap_s": -1.0},
        {"max_gap_s": 3601},
        {"max_gap_s": "2"},
        {"join_gap_s": 1e9},
        {"distance_gate": 0},
        {"distance_gate": 101.0},
        {"max_speed": 0.0},
        {"max_speed": True},
        {"offline": "no"},
        {"appearance": 1},
        {"min_length": 0},
        {"distance": 0.5},
    ],
)
def test_bad_job_tracker_fields_are_refused(tracks: dict[str, object]) -> None:
    body = {"items": [{"name": "a", "slots": [{"url": "file:///a.mp4"}]}], "tracks": tracks}
    with pytest.raises(ValueError, match=next(iter(tracks))):
        JobCreate.model_validate(body)


def test_a_segmenter_is_pinned_stored_only_when_set_and_its_version_is_no_part_of_the_dedupe_key() -> None:
    job = JobCreate.model_validate(BODIES[0] | {"segmenter": "hf:/models/sam"})
    model = JobModel("builtin:centerface", "abc", ("face",))
    spec = job_params(job, model, Settings(), JobSegmenter("hf:/models/sam", "s1"))

    stored = spec.to_stored()
    assert (stored["segmenter"], stored["segmenter_version"]) == ("hf:/models/sam", "s1")
    assert JobSpec.from_stored(json.loads(json.dumps(stored))) == spec
    # unpinned (a distributed API pod) and pinned make one key; with and without a segmenter, two
    unpinned = spec.model_copy(update={"segmenter_version": None})
    assert content_idem(unpinned, job.items) == content_idem(spec, job.items)
    without = job_params(job, model, Settings())
    assert "segmenter" not in without.to_stored()
    assert content_idem(without, job.items) != content_idem(spec, job.items)


def test_a_job_body_segmenter_must_be_a_spec() -> None:
    with pytest.raises(ValueError, match="segmenter"):
        JobCreate.model_validate(BODIES[0] | {"segmenter": ""})
