"""Label Studio conversion: config parsing, percent boxes, label mapping, videorectangle tracks (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from service.convert.label_studio import (
    LabelConfig,
    item_to_ls_result,
    parse_label_config,
    xyxy_to_xywh_pct,
)
from service.convert.types import ItemPredictions, ModelRef, Track, TrackBox
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from tests.builders import make_detections, make_result

MODEL = ModelRef(spec="onnx:/m/yolo.onnx", version="yolo-0123abcd", class_names=("person", "car", "dog"))

IMAGE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="Person"/><Label value="car"/></RectangleLabels>
</View>"""
VIDEO_CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="person"/><Label value="Car"/></Labels>
  <Video name="video" value="$video" framerate="$fps"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""


def image_item(
    xyxy: Sequence[Sequence[float]], scores: Sequence[float], classes: Sequence[int], *, slot: str = "0"
) -> ItemPredictions:
    meta = SlotMeta("a.jpg", slot, MediaKind.IMAGE, ("a.jpg",), 640, 480, None, 1, 1)
    frame = make_result(make_detections(xyxy, scores, classes), slot=slot, width=640, height=480)
    return ItemPredictions(name="a.jpg", slots=(meta,), frames=(frame,))


def video_item(sampled: Sequence[int], *, fps: float = 25.0, frame_count: int = 250) -> ItemPredictions:
    meta = SlotMeta("clip", "video", MediaKind.VIDEO, ("clip.mp4",), 320, 240, fps, frame_count, len(sampled))
    frames = tuple(
        make_result(
            make_detections(), item="clip", slot="video", media=MediaKind.VIDEO, frame_index=i, width=320, height=240
        )
        for i in sampled
    )
    return ItemPredictions(name="clip", slots=(meta,), frames=frames)


def track(frames: Sequence[int], class_id: int = 0, track_id: int = 1, slot: str = "video") -> Track:
    boxes = tuple(TrackBox(i, None, (32.0, 24.0, 96.0, 72.0), 0.8) for i in frames)
    return Track(track_id=track_id, slot=slot, class_id=class_id, boxes=boxes)


# -- the labeling config ----------------------------------------------------------------------------------------


def test_parse_image_and_video_controls() -> None:
    config = parse_label_config(IMAGE_CONFIG)
    (control,) = config.controls
    assert (control.result_type, control.from_name, control.to_name) == ("rectanglelabels", "label", "image")
    assert control.labels == ("Person", "car")
    assert [(o.name, o.kind, o.value_key) for o in config.objects] == [("image", "image", "image")]

    video = parse_label_config(VIDEO_CONFIG)
    (box,) = video.controls
    # The VideoRectangle's name is from_name; its labels come from the <Labels> on the same video.
    assert (box.result_type, box.from_name, box.to_name, box.labels) == (
        "videorectangle",
        "box",
        "video",
        ("person", "Car"),
    )
    assert video.objects[0].frame_rate == "$fps"


def test_parse_several_controls_and_lenient_tags() -> None:
    config = parse_label_config(
        """<View>
          <image name="left" value="$a"/><Image name="right" value="$b"/>
          <rectanglelabels name="people" toName="left,right">
            <Label value="person" predicted_values="man, woman"/>
          </rectanglelabels>
          <RectangleLabels name="things" toName="left"><Label value="car"/></RectangleLabels>
          <RectangleLabels name="wrong" toName="vid"><Label value="car"/></RectangleLabels>
          <Video name="vid" value="$v"/>
          <Choices name="c" toName="left"><Choice value="x"/></Choices>
        </View>"""
    )
    assert [(c.from_name, c.to_name) for c in config.controls] == [
        ("people", "left"),
        ("people", "right"),
        ("things", "left"),
    ]  # RectangleLabels on a Video, and Choices, are not box controls
    assert config.controls[0].predicted_values == {"man": "person", "woman": "person"}
    assert [o.name for o in config.targets()] == ["left", "right"]


@pytest.mark.parametrize("xml", ["", "<View>", "not xml", "<View>" + "x" * 1_000_001 + "</View>"])
def test_bad_configs_are_invalid_argument(xml: str) -> None:
    with pytest.raises(PreannotateError) as caught:
        parse_label_config(xml)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_entity_expansion_is_refused() -> None:
    levels = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 9))
    bomb = f'<?xml version="1.0"?><!DOCTYPE v [<!ENTITY e0 "xxxxxxxxxx">{levels}]><View a="&e8;"/>'
    with pytest.raises(PreannotateError):
        parse_label_config(bomb)


# -- images -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xyxy", "width", "height", "expected"),
    [
        ((64, 48, 320, 240), 640, 480, {"x": 10.0, "y": 10.0, "width": 40.0, "height": 40.0}),
        ((0, 0, 640, 480), 640, 480, {"x": 0.0, "y": 0.0, "width": 100.0, "height": 100.0}),
        ((300, 100, 350, 400), 640, 480, {"x": 46.875, "y": 20.8333, "width": 7.8125, "height": 62.5}),
        ((-20, -10, 64, 48), 640, 480, {"x": 0.0, "y": 0.0, "width": 10.0, "height": 10.0}),  # clipped
        ((600, 400, 700, 500), 640, 480, {"x": 93.75, "y": 83.3333, "width": 6.25, "height": 16.6667}),
        ((700, 10, 800, 20), 640, 480, None),  # entirely outside
        ((10, 10, 10, 20), 640, 480, None),  # no width
        ((10, 10, 20, 20), 0, 480, None),  # unknown size
        ((float("nan"), 0, 1, 1), 640, 480, None),
    ],
)
def test_percent_boxes(xyxy: tuple[float, ...], width: int, height: int, expected: dict[str, float] | None) -> None:
    assert xyxy_to_xywh_pct(xyxy, width, height) == expected


def test_image_regions() -> None:
    item = image_item([[64, 48, 320, 240], [0, 0, 64, 48]], [0.9, 0.6], [0, 1])
    prediction = item_to_ls_result(item, MODEL, parse_label_config(IMAGE_CONFIG), tracks=None)

    assert prediction.model_version == "yolo-0123abcd"
    assert prediction.score == 0.75
    first, second = prediction.result
    assert {k: v for k, v in first.items() if k != "id"} == {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 640,
        "original_height": 480,
        "image_rotation": 0,
        "value": {"x": 10.0, "y": 10.0, "width": 40.0, "height": 40.0, "rotation": 0, "rectanglelabels": ["Person"]},
        "score": 0.9,
    }
    assert second["value"]["rectanglelabels"] == ["car"]
    assert not prediction.dropped
    assert prediction.to_json() == {"result": prediction.result, "score": 0.75, "model_version": "yolo-0123abcd"}


def test_region_ids_are_stable_and_unique() -> None:
    item = image_item([[1, 1, 9, 9], [1, 1, 9, 9]], [0.9, 0.9], [0, 0])
    config = parse_label_config(IMAGE_CONFIG)
    ids = [r["id"] for r in item_to_ls_result(item, MODEL, config, tracks=None).result]
    assert ids == [r["id"] for r in item_to_ls_result(item, MODEL, config, tracks=None).result]
    assert len(set(ids)) == 2
    assert all(len(i) == 10 for i in ids)


def test_no_detections_is_an_empty_prediction() -> None:
    prediction = item_to_ls_result(image_item([], [], []), MODEL, parse_label_config(IMAGE_CONFIG), tracks=None)
    assert (prediction.result, prediction.score) == ([], 0.0)


@pytest.mark.parametrize(
    ("aliases", "labels", "dropped"),
    [
        (None, ["Person", "car"], {"dog": 1}),  # by name, case-insensitive; dog has no label
        ({"dog": "car"}, ["Person", "car", "car"], {}),
        ({"DOG": "CAR"}, ["Person", "car", "car"], {}),  # both sides case-insensitive
        ({"person": "car"}, ["car", "car"], {"dog": 1}),  # an alias wins over the name
        ({"dog": "horse"}, ["Person", "car"], {"dog": 1}),  # an alias to no label drops
    ],
)
def test_class_to_label_mapping(aliases: dict[str, str] | None, labels: list[str], dropped: dict[str, int]) -> None:
    item = image_item([[0, 0, 10, 10]] * 3, [0.9, 0.8, 0.7], [0, 1, 2])
    prediction = item_to_ls_result(item, MODEL, parse_label_config(IMAGE_CONFIG), tracks=None, aliases=aliases)
    assert [r["value"]["rectanglelabels"][0] for r in prediction.result] == labels
    assert dict(prediction.dropped) == dropped


def test_unmapped_boxes_are_counted_per_box() -> None:
    item = image_item([[0, 0, 10, 10]] * 3, [0.9] * 3, [2, 2, 2])
    prediction = item_to_ls_result(item, MODEL, parse_label_config(IMAGE_CONFIG), tracks=None)
    assert prediction.result == []
    assert prediction.dropped == {"dog": 3}


def test_predicted_values_and_first_control_wins() -> None:
    config = parse_label_config(
        """<View><Image name="image" value="$image"/>
          <RectangleLabels name="animals" toName="image">
            <Label value="Pet" predicted_values="dog,cat"/>
          </RectangleLabels>
          <RectangleLabels name="vehicles" toName="image"><Label value="car"/><Label value="Pet"/></RectangleLabels>
        </View>"""
    )
    item = image_item([[0, 0, 10, 10]] * 3, [0.9] * 3, [0, 1, 2])
    prediction = item_to_ls_result(item, MODEL, config, tracks=None)
    assert [(r["from_name"], r["value"]["rectanglelabels"]) for r in prediction.result] == [
        ("vehicles", ["car"]),
        ("animals", ["Pet"]),  # dog -> Pet via predicted_values, in the first control that has it
    ]
    assert prediction.dropped == {"person": 1}


def test_slots_go_to_the_object_of_their_name() -> None:
    config = parse_label_config(
        """<View><Image name="front" value="$a"/><Image name="back" value="$b"/>
          <RectangleLabels name="f" toName="front"><Label value="car"/></RectangleLabels>
          <RectangleLabels name="b" toName="back"><Label value="car"/></RectangleLabels></View>"""
    )
    item = image_item([[0, 0, 10, 10]], [0.9], [1], slot="back")
    assert [r["to_name"] for r in item_to_ls_result(item, MODEL, config, tracks=None).result] == ["back"]
    # Slot "0" with two image objects: no way to tell which one, so nothing.
    unnamed = image_item([[0, 0, 10, 10]], [0.9], [1])
    assert item_to_ls_result(unnamed, MODEL, config, tracks=None).result == []


def test_media_without_an_ls_object_is_skipped() -> None:
    meta = SlotMeta("scan", "0", MediaKind.DICOM, ("s.dcm",), 64, 64, None, 1, 1)
    frame = make_result(make_detections([[0, 0, 9, 9]], [0.9], [0]), media=MediaKind.DICOM)
    item = ItemPredictions(name="scan", slots=(meta,), frames=(frame,))
    assert item_to_ls_result(item, MODEL, parse_label_config(IMAGE_CONFIG), tracks=None).result == []


# -- video ------------------------------------------------------------------------------------------------------


def video_regions(item: ItemPredictions, tracks: Sequence[Track] | None, config: str = VIDEO_CONFIG) -> list[Any]:
    return item_to_ls_result(item, MODEL, parse_label_config(config), tracks=tracks).result


def test_videorectangle_keyframes() -> None:
    # Sampled every 10th frame; the track is seen on 0, 10, 20, missed on 30, seen again on 40.
    item = video_item([0, 10, 20, 30, 40])
    (region,) = video_regions(item, [track([0, 10, 20, 40])])

    assert (region["from_name"], region["to_name"], region["type"]) == ("box", "video", "videorectangle")
    assert region["score"] == 0.8
    value = region["value"]
    assert (value["labels"], value["framesCount"], value["duration"]) == (["person"], 250, 10.0)
    assert [(k["frame"], k["time"], k["enabled"]) for k in value["sequence"]] == [
        (1, 0.04, True),  # 1-based: decoded frame 0 is LS frame 1; time = frame / fps
        (11, 0.44, True),
        (21, 0.84, False),  # the last box before the gap ends the span
        (41, 1.64, False),  # and so does the last one
    ]
    assert value["sequence"][0] | {"time": 0} == {
        "frame": 1,
        "enabled": True,
        "rotation": 0,
        "x": 10.0,
        "y": 10.0,
        "width": 20.0,
        "height": 20.0,
        "time": 0,
    }


def test_every_frame_sampling_has_no_false_gaps() -> None:
    item = video_item([5, 6, 7])
    (region,) = video_regions(item, [track([5, 6, 7])])
    assert [k["enabled"] for k in region["value"]["sequence"]] == [True, True, False]


def test_video_labels_aliases_and_drops() -> None:
    item = video_item([0, 1])
    tracks = [track([0, 1], class_id=1, track_id=1), track([0], class_id=2, track_id=2)]
    prediction = item_to_ls_result(item, MODEL, parse_label_config(VIDEO_CONFIG), tracks=tracks)
    assert [r["value"]["labels"] for r in prediction.result] == [["Car"]]
    assert prediction.dropped == {"dog": 1}  # one per track
    aliased = item_to_ls_result(item, MODEL, parse_label_config(VIDEO_CONFIG), tracks=tracks, aliases={"dog": "car"})
    assert [r["value"]["labels"] for r in aliased.result] == [["Car"], ["Car"]]


def test_tracks_of_other_slots_are_ignored_and_none_links_them_here() -> None:
    item = video_item([0, 1, 2])
    assert video_regions(item, [track([0, 1], slot="other")]) == []
    boxes = [[32, 24, 96, 72]]
    frames = tuple(
        FrameResult(f.info, make_detections(boxes, [0.9], [0])) for f in item.frames
    )  # the same box on three frames: one track
    linked = ItemPredictions(name=item.name, slots=item.slots, frames=frames)
    (region,) = video_regions(linked, None)
    assert [k["frame"] for k in region["value"]["sequence"]] == [1, 2, 3]


def test_unknown_frame_rate_falls_back_to_labels_studio_default() -> None:
    meta = SlotMeta("clip", "video", MediaKind.VIDEO, ("c.mp4",), 320, 240, None, 48, 2)
    base = video_item([0, 24])
    item = ItemPredictions(name="clip", slots=(meta,), frames=base.frames)
    (region,) = video_regions(item, [track([0, 24])])
    assert [k["time"] for k in region["value"]["sequence"]] == [round(1 / 24, 6), round(25 / 24, 6)]
    assert region["value"]["duration"] == 2.0


def test_config_without_matching_object_gives_nothing() -> None:
    assert video_regions(video_item([0]), [track([0])], config=IMAGE_CONFIG) == []
    assert isinstance(parse_label_config(IMAGE_CONFIG), LabelConfig)
