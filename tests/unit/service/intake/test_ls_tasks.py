"""One Label Studio task to its prediction: video regions are the tracks the flow's per-item step links."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from service.config import Settings
from service.convert.label_studio import parse_label_config
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.intake.ls_tasks import TaskFile, TaskPrediction, task_prediction
from service.pipeline.options import SamplingOptions
from service.samples import write_video
from tests.fakes.segmenter import EllipseSegmenter
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


MIXED_CONFIG = """<View>
  <Image name="photo" value="$photo"/>
  <BrushLabels name="mask" toName="photo"><Label value="face"/></BrushLabels>
  <RectangleLabels name="photoBox" toName="photo"><Label value="face"/></RectangleLabels>
  <Image name="still" value="$still"/>
  <RectangleLabels name="stillBox" toName="still"><Label value="face"/></RectangleLabels>
  <Labels name="videoLabels" toName="video"><Label value="face"/></Labels>
  <Video name="video" value="$video"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""


def _mixed_task(
    tmp_path: Path, config: str, segmenter: EllipseSegmenter | None, data: dict[str, str] | None = None
) -> TaskPrediction:
    media = {"photo": tmp_path / "photo.png", "still": tmp_path / "still.png", "video": tmp_path / "clip.mp4"}
    Image.new("RGB", (320, 240), (90, 120, 150)).save(media["photo"])
    Image.new("RGB", (320, 240), (150, 120, 90)).save(media["still"])
    write_video(media["video"], duration_s=1.0, fps=10, gop=10, threads=1)
    settings = Settings(work_dir=tmp_path, tracks=True)
    detector = CentreBox()
    info = detector.info
    by_url = {f"https://media.example/{key}": path for key, path in media.items()}
    return task_prediction(
        {"id": 5, "data": data if data is not None else {key: f"https://media.example/{key}" for key in media}},
        parse_label_config(config),
        model=ModelRef(spec=info.spec, version=info.version, class_names=info.class_names),
        download=lambda value, scratch: TaskFile(by_url[value], value),
        detector=detector,
        sampling=SamplingOptions(fps=2.0),
        limits=settings.media_limits(),
        options=settings.flow_options(threshold=0.5),
        tracker=settings.tracker_options(),
        work_dir=tmp_path,
        segmenter=segmenter,
    )


def test_only_image_objects_with_a_brush_or_polygon_control_are_segmented(tmp_path: Path) -> None:
    """Video regions and rectangles are boxes in LS: their frames must never reach the segmenter."""
    segmenter = EllipseSegmenter()
    found = _mixed_task(tmp_path, MIXED_CONFIG, segmenter)

    assert found.warnings == ()
    assert [(r["type"], r["to_name"]) for r in found.prediction.result] == [
        ("brushlabels", "photo"),
        ("rectanglelabels", "still"),
        ("videorectangle", "video"),
    ]
    assert segmenter.seen == [(240, 320, 1)]  # the photo alone, one box
    assert segmenter.calls == [1]


def test_a_task_without_shaped_objects_never_calls_the_segmenter(tmp_path: Path) -> None:
    rectangles_only = MIXED_CONFIG.replace(
        '<BrushLabels name="mask" toName="photo"><Label value="face"/></BrushLabels>', ""
    )
    segmenter = EllipseSegmenter()
    found = _mixed_task(tmp_path, rectangles_only, segmenter)
    assert [r["type"] for r in found.prediction.result] == ["rectanglelabels", "rectanglelabels", "videorectangle"]
    assert segmenter.calls == []


BRUSH_ONLY_CONFIG = """<View>
  <Image name="photo" value="$photo"/>
  <BrushLabels name="mask" toName="photo"><Label value="face"/></BrushLabels>
</View>"""


def test_a_boxes_only_run_does_not_fetch_an_object_only_a_brush_points_at(tmp_path: Path) -> None:
    """As before masks: without a segmenter a brush-only image is no target, so the task has no media to fetch."""
    with pytest.raises(PreannotateError) as error:
        _mixed_task(tmp_path, BRUSH_ONLY_CONFIG, None, {"photo": "https://media.example/photo"})
    assert error.value.code is ErrorCode.INVALID_ARGUMENT
    assert "no media" in error.value.message

    found = _mixed_task(tmp_path, BRUSH_ONLY_CONFIG, EllipseSegmenter(), {"photo": "https://media.example/photo"})
    assert [r["type"] for r in found.prediction.result] == ["brushlabels"]
