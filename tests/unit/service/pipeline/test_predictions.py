"""Item results survive the JSON round trip the job store puts them through."""

from __future__ import annotations

import json

import numpy as np
from service.jobs.results import frames_of, item_result_to_json

from service.pipeline.frames import MediaKind, SlotMeta
from tests.builders import make_detections, make_result


def test_round_trip() -> None:
    frames = [
        make_result(
            make_detections([[1.234, 2, 30, 40.567]], [0.912345678], [3]),
            item="clip",
            slot="s",
            source="https://h/clip.mp4",
            media=MediaKind.VIDEO,
            frame_index=30,
            timestamp_s=1.0,
        ),
        make_result(
            item="clip", slot="s", source="https://h/clip.mp4", media=MediaKind.VIDEO, frame_index=60, timestamp_s=2.0
        ),
    ]
    meta = SlotMeta("clip", "s", MediaKind.VIDEO, ("https://h/clip.mp4",), 640, 480, 30.0, 900, 2, 30.0)
    stored = json.loads(json.dumps(item_result_to_json([meta], frames)))

    assert stored["slots"][0]["media"] == "video"
    back = list(frames_of("clip", stored))
    assert [f.info for f in back] == [f.info for f in frames]
    np.testing.assert_allclose(back[0].detections.xyxy, [[1.23, 2, 30, 40.57]])
    assert back[0].detections.confidence.tolist() == [np.float32(0.91235)]
    assert back[0].detections.class_id.tolist() == [3]
    assert len(back[1].detections) == 0
