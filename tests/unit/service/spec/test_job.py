"""JobSpec: the stored request, typed; its stored form is what older releases stored and hashed."""

from __future__ import annotations

import json

import pytest

from service.config import Settings
from service.jobs.submit import job_params
from service.remote_models import JobModel
from service.spec.job import JobSpec
from service.spec.requests import JobCreate

BODIES = [
    {"items": [{"name": "a", "slots": [{"url": "https://x/a.jpg"}]}]},
    {
        "items": [{"name": "a", "slots": [{"url": "https://x/a.mp4"}]}],
        "fps": 1,
        "threshold": 0.25,
        "classes": ["face"],
        "outputs": ["coco", "darwin"],
        "destinations": [{"backend": "label_studio", "project": 3}, {"backend": "v7"}],
        "tracks": {"enabled": True, "iou": 0.4, "max_gap": 3, "min_length": 2},
    },
    {"items": [{"name": "a", "slots": [{"url": "https://x/a.mp4"}]}], "tracks": {"enabled": False}},
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("model", [JobModel("builtin:centerface", "abc", ("face",)), JobModel("onnx:m", None, None)])
def test_stored_form_round_trips_byte_for_byte(body: dict[str, object], model: JobModel) -> None:
    params = job_params(JobCreate.model_validate(body), model, Settings())
    spec = JobSpec.from_stored(json.loads(json.dumps(params)))
    assert json.dumps(spec.to_stored(), sort_keys=True) == json.dumps(params, sort_keys=True)


def test_a_job_stored_before_trackers_were_pinned_takes_the_settings_tracker() -> None:
    params = job_params(JobCreate.model_validate(BODIES[0]), JobModel("m", "v", ("face",)), Settings())
    del params["tracks"]
    spec = JobSpec.from_stored(params)
    assert spec.tracks is None
    assert spec.tracker(Settings(track_iou=0.55)) == Settings(track_iou=0.55).tracker_options()
    assert "tracks" not in spec.to_stored()


def test_tracking_off_and_pinning() -> None:
    params = job_params(JobCreate.model_validate(BODIES[2]), JobModel("m", None, None), Settings())
    spec = JobSpec.from_stored(params)
    assert spec.tracker(Settings()) is None
    pinned = spec.pinned("v2", ("face", "plate"))
    assert pinned.model_ref.version == "v2"
    assert pinned.model_ref.class_names == ("face", "plate")
    assert spec.model_ref.version == ""  # unpinned
