"""Tracks at 1 fps, end to end: four real faces crossing at 0.6 box widths per second (the tracks benchmark's
``medium`` clip), the real default model, the flow's track stage, and the tools' own formats.

One face, one track, in every format: the Darwin document a ``preannotate run`` writes (judged by Darwin's schema),
the Label Studio regions and the Encord label row (read back by the Encord SDK) of the same tracked item.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.bench_tracks import detect
from benchmarks.track_clips import GroundTruth, clip_spec, write_clip
from models.ops.boxes import box_iou_matrix
from models.registry import FACE_MODEL_SPEC, load_detector
from service.convert.encord import EncordOntology, item_to_encord_label_row
from service.convert.label_studio import item_to_ls_result, parse_label_config
from service.convert.types import ModelRef
from service.pipeline.flow import ItemOutput, track_stage
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import TrackerOptions, tracks_of
from service.pipeline.video import VideoReader
from tests.integration.test_cli import preannotate
from tests.unit.service.convert.test_darwin import schema_errors
from tests.unit.service.convert.test_encord import sdk_label_row

FACES = 4
DURATION_S = 12.0
MODEL = ModelRef(spec=FACE_MODEL_SPEC, version="centerface-test", class_names=("face",))
LS_CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="face"/></Labels>
  <Video name="video" value="$video" framerate="25"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""
ONTOLOGY = EncordOntology.from_json(
    {
        "objects": [
            {"id": "1", "name": "Face", "color": "#D33115", "shape": "bounding_box", "featureNodeHash": "faceBBx1"}
        ],
        "classifications": [],
    }
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GroundTruth]:
    path = tmp_path_factory.mktemp("tracks") / "medium.mp4"
    return path, write_clip(clip_spec("medium", duration_s=DURATION_S), path)


@pytest.fixture(scope="module")
def item(clip: tuple[Path, GroundTruth]) -> ItemPredictions:
    """The clip sampled at 1 fps, detected and tracked as a job does it (default tracker)."""
    path, _ = clip
    frames = detect(path, 1.0, load_detector(FACE_MODEL_SPEC))
    reader = VideoReader("medium", "0", path, SamplingOptions(fps=1), MediaLimits())
    meta = reader.meta
    reader.close()
    output = track_stage(TrackerOptions())(ItemOutput("medium", (meta,), tuple(frames)))
    return ItemPredictions(name="medium", slots=output.slots, frames=output.frames)


def face_of_each_box(boxes: list[tuple[int, tuple[float, float, float, float]]], truth: GroundTruth) -> list[int]:
    """The ground-truth face each (source frame, box) is on (IoU >= 0.5), -1 for none."""
    faces = []
    for frame_index, xyxy in boxes:
        rows = truth.frames[frame_index]
        iou = box_iou_matrix(np.array([xyxy], np.float32), np.array([r[1:] for r in rows], np.float32).reshape(-1, 4))
        faces.append(int(rows[int(iou.argmax())][0]) if iou.size and iou.max() >= 0.5 else -1)
    return faces


def assert_one_track_per_face(
    tracks: list[list[tuple[int, tuple[float, float, float, float]]]], truth: GroundTruth
) -> None:
    """Each face is followed by one track that is (almost) only that face, over most of the frames it shows."""
    owners = [Counter(face_of_each_box(boxes, truth)).most_common(1)[0] for boxes in tracks]
    assert sorted(face for face, _ in owners) == list(range(FACES))
    for (face, count), boxes in zip(owners, tracks, strict=True):
        assert count >= 0.9 * len(boxes), f"track of face {face} is {count}/{len(boxes)} that face"
        shown = sum(1 for t in range(0, len(truth.frames), 25) if any(r[0] == face for r in truth.frames[t]))
        assert count >= 0.8 * shown, f"face {face}: tracked on {count} of the {shown} sampled frames it shows on"


def test_the_flow_links_each_face_into_one_track(item: ItemPredictions, clip: tuple[Path, GroundTruth]) -> None:
    tracks = tracks_of(item.frames)
    assert_one_track_per_face([[(b.frame_index, b.xyxy) for b in t.boxes] for t in tracks], clip[1])


def test_darwin_from_preannotate_run_has_one_video_annotation_per_face(
    clip: tuple[Path, GroundTruth], tmp_path: Path
) -> None:
    path, truth = clip
    out = tmp_path / "darwin"
    result = preannotate("run", path, "--fps", "1", "--format", "darwin", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    (document_path,) = out.glob("*.json")
    document: dict[str, Any] = json.loads(document_path.read_text())
    assert schema_errors(document) == []
    tracks = []
    for annotation in document["annotations"]:
        frames = annotation["frames"]
        tracks.append(
            [
                (int(i), _corners(f["bounding_box"]))
                for i, f in sorted(frames.items(), key=lambda kv: int(kv[0]))
                if "bounding_box" in f
            ]
        )
    assert_one_track_per_face(tracks, truth)


def _corners(box: dict[str, float]) -> tuple[float, float, float, float]:
    return box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"]


def test_label_studio_gets_one_video_region_per_face(item: ItemPredictions) -> None:
    prediction = item_to_ls_result(item, MODEL, parse_label_config(LS_CONFIG)).to_json()
    regions = [r for r in prediction["result"] if r["type"] == "videorectangle"]
    assert len(regions) == FACES
    assert all(len(r["value"]["sequence"]) >= 5 for r in regions)


def test_encord_gets_one_object_per_face_that_its_sdk_reads(item: ItemPredictions) -> None:
    row = item_to_encord_label_row(item, MODEL, ONTOLOGY)
    label_row: Any = sdk_label_row(json.loads(json.dumps(row)), ONTOLOGY)
    objects = label_row.get_object_instances()
    assert len(objects) == FACES
    assert all(len(o.get_annotations()) >= 5 for o in objects)
