"""One Label Studio task to its prediction: video regions are the tracks the flow's per-item step links."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Settings
from service.convert.label_studio import parse_label_config
from service.convert.types import ModelRef
from service.intake.ls_tasks import TaskFile, task_prediction
from service.pipeline.options import SamplingOptions
from service.samples import write_video
from tests.unit.service.backends.test_ls_ml_backend import CentreBox

VIDEO_CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="face"/></Labels>
  <Video name="video" value="$video"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""


@pytest.mark.parametrize(("tracks", "regions"), [(True, 1), (False, 4)])
def test_video_regions_are_tracks_when_tracking_is_on(tmp_path: Path, tracks: bool, regions: int) -> None:
    clip = tmp_path / "clip.mp4"
    write_video(clip, duration_s=2.0, fps=10, gop=10, threads=1)
    settings = Settings(work_dir=tmp_path, tracks=tracks)
    detector = CentreBox()
    info = detector.info

    found = task_prediction(
        {"id": 3, "data": {"video": "https://media.example/clip.mp4?sig=x"}},
        parse_label_config(VIDEO_CONFIG),
        model=ModelRef(spec=info.spec, version=info.version, class_names=info.class_names),
        download=lambda value, scratch: TaskFile(clip, value),
        detector=detector,
        sampling=SamplingOptions(fps=2.0),
        limits=settings.media_limits(),
        options=settings.flow_options(threshold=0.5),
        tracker=settings.tracker_options(),
        work_dir=tmp_path,
    )

    assert found.warnings == ()
    assert [r["type"] for r in found.prediction.result] == ["videorectangle"] * regions
    assert found.prediction.model_version == info.version
