"""Label Studio conversion: config parsing, percent boxes, label mapping, videorectangle tracks (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from service.convert.label_studio import (
    LabelConfig,
    LsObject,
    default_label_config_xml,
    item_to_ls_result,
    ls_frame_rate,
    parse_label_config,
    track_box_to_ls_frame,
    xyxy_to_xywh_pct,
)
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox
from tests.builders import make_detections, make_result, tracked, with_tracks

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


def track(
    frames: Sequence[int],
    class_id: int = 0,
    track_id: int = 1,
    slot: str = "video",
    times: Sequence[float | None] | None = None,
) -> Track:
    stamps = times if times is not None else [None] * len(frames)
    boxes = tuple(TrackBox(i, t, (32.0, 24.0, 96.0, 72.0), 0.8) for i, t in zip(frames, stamps, strict=True))
    return Track(track_id=track_id, slot=slot, class_id=class_id, boxes=boxes)


def video_config(framerate: str | None) -> str:
    attr = "" if framerate is None else f' framerate="{framerate}"'
    return VIDEO_CONFIG.replace(' framerate="$fps"', attr)


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
    prediction = item_to_ls_result(item, MODEL, parse_label_config(IMAGE_CONFIG))

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
    ids = [r["id"] for r in item_to_ls_result(item, MODEL, config).result]
    assert ids == [r["id"] for r in item_to_ls_result(item, MODEL, config).result]
    assert len(set(ids)) == 2
    assert all(len(i) == 10 for i in ids)


def test_no_detections_is_an_empty_prediction() -> None:
    prediction = item_to_ls_result(image_item([], [], []), MODEL, parse_label_config(IMAGE_CONFIG))
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
    prediction = item_to_ls_result(item, MODEL, parse_label_config(IMAGE_CONFIG), aliases=aliases)
    assert [r["value"]["rectanglelabels"][0] for r in prediction.result] == labels
    assert dict(prediction.dropped) == dropped


def test_unmapped_boxes_are_counted_per_box() -> None:
    item = image_item([[0, 0, 10, 10]] * 3, [0.9] * 3, [2, 2, 2])
    prediction = item_to_ls_result(item, MODEL, parse_label_config(IMAGE_CONFIG))
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
    prediction = item_to_ls_result(item, MODEL, config)
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
    assert [r["to_name"] for r in item_to_ls_result(item, MODEL, config).result] == ["back"]
    # Slot "0" with two image objects: no way to tell which one, so nothing.
    unnamed = image_item([[0, 0, 10, 10]], [0.9], [1])
    assert item_to_ls_result(unnamed, MODEL, config).result == []


def test_media_without_an_ls_object_is_skipped() -> None:
    meta = SlotMeta("scan", "0", MediaKind.DICOM, ("s.dcm",), 64, 64, None, 1, 1)
    frame = make_result(make_detections([[0, 0, 9, 9]], [0.9], [0]), media=MediaKind.DICOM)
    item = ItemPredictions(name="scan", slots=(meta,), frames=(frame,))
    assert item_to_ls_result(item, MODEL, parse_label_config(IMAGE_CONFIG)).result == []


# -- video ------------------------------------------------------------------------------------------------------


def video_regions(item: ItemPredictions, tracks: Sequence[Track] | None, config: str = VIDEO_CONFIG) -> list[Any]:
    """The regions of ``item`` with these tracks; None: tracked here with the default options."""
    linked = tracked(item) if tracks is None else with_tracks(item, tracks)
    return item_to_ls_result(linked, MODEL, parse_label_config(config)).result


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
    prediction = item_to_ls_result(with_tracks(item, tracks), MODEL, parse_label_config(VIDEO_CONFIG))
    assert [r["value"]["labels"] for r in prediction.result] == [["Car"]]
    assert prediction.dropped == {"dog": 1}  # one per track
    aliased = item_to_ls_result(
        with_tracks(item, tracks), MODEL, parse_label_config(VIDEO_CONFIG), aliases={"dog": "car"}
    )
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


# -- Label Studio's frame rate, not the file's ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("framerate", "data", "expected"),
    [
        ("30", None, 30.0),
        (" 29.97 ", None, 29.97),
        ("0.04", None, 25.0),  # below 1: a frame duration, inverted as LS does
        (None, None, 24.0),  # no attribute: LS's default
        ("fast", None, 24.0),
        ("0", None, 24.0),
        ("-5", None, 24.0),
        ("inf", None, 24.0),
        ("$fps", {"fps": 25}, 25.0),
        ("$fps", {"fps": "12.5"}, 12.5),
        ("$fps", {}, 24.0),  # the key missing from the task: LS falls back to 24
        ("$fps", {"fps": "n/a"}, 24.0),
        ("$fps", {"fps": True}, 24.0),
        ("$fps", None, 30.0),  # no task at hand: assume the variable holds the source's rate
    ],
)
def test_ls_frame_rate(framerate: str | None, data: dict[str, Any] | None, expected: float) -> None:
    video = LsObject("video", "video", "video", framerate)
    assert ls_frame_rate(video, data, source_fps=30.0) == pytest.approx(expected)


def test_framerate_attribute_name_is_case_insensitive() -> None:
    config = parse_label_config('<View><Video name="v" value="$v" frameRate="25"/></View>')
    assert config.objects[0].frame_rate == "25"


# A 30 fps, 30 s clip; the track is seen on source frames 0 and 300 (10 s).
@pytest.mark.parametrize(
    ("framerate", "data", "frames", "times", "frames_count", "duration"),
    [
        ("30", None, [1, 301], [0.033333, 10.033333], 900, 30.0),
        ("$fps", {"fps": 25}, [1, 251], [0.04, 10.04], 750, 30.0),
        (None, None, [1, 241], [0.041667, 10.041667], 720, 30.0),  # LS's default 24: 10 s is its frame 241
        ("$fps", {"fps": 30}, [1, 301], [0.033333, 10.033333], 900, 30.0),
    ],
)
def test_keyframes_follow_the_label_studio_frame_rate(
    framerate: str | None,
    data: dict[str, Any] | None,
    frames: list[int],
    times: list[float],
    frames_count: int,
    duration: float,
) -> None:
    item = video_item([0, 300], fps=30.0, frame_count=900)
    config = parse_label_config(video_config(framerate))
    (region,) = item_to_ls_result(with_tracks(item, [track([0, 300])]), MODEL, config, task_data=data).result
    value = region["value"]
    assert [k["frame"] for k in value["sequence"]] == frames
    # time = frame / fps, as LS writes it: LS frame N is shown from (N-1)/fps, so 10 s lands on N-1 = 10 * fps.
    assert [k["time"] for k in value["sequence"]] == times
    assert (value["framesCount"], value["duration"]) == (frames_count, duration)


@pytest.mark.parametrize(
    ("seconds", "fps_src", "fps_ls", "expected"),
    [
        (10.0, 30.0, 30.0, 301),
        (10.000000000000002, 30.0, 30.0, 301),  # float error does not push it a frame on
        (0.04, 25.0, 30.0, 3),  # LS frame 2 starts at 1/30 s < 0.04 s and still shows source frame 0
        (0.1, 30.0, 24.0, 4),  # source frame 3: LS frame 4 (from 0.125 s) is the first at or after it
        (None, 30.0, 24.0, 241),  # no timestamp: frame_index / source fps
    ],
)
def test_track_box_to_ls_frame(seconds: float | None, fps_src: float, fps_ls: float, expected: int) -> None:
    index = 300 if seconds is None else 0
    assert track_box_to_ls_frame(TrackBox(index, seconds, (0, 0, 1, 1), 0.9), fps_src, fps_ls) == expected


def test_timestamps_win_over_frame_indices() -> None:
    # A variable-rate clip: decoded frame 10 is at 2.0 s, not 10 / 25 s.
    item = video_item([0, 10], fps=25.0)
    (region,) = video_regions(item, [track([0, 10], times=[0.0, 2.0])], config=video_config("25"))
    assert [k["frame"] for k in region["value"]["sequence"]] == [1, 51]


def test_source_frames_sharing_an_ls_frame_keep_the_last() -> None:
    # 30 fps sampled every frame under LS's 24 fps: source frames 4 and 5 both land on LS frame 5.
    item = video_item([3, 4, 5, 6], fps=30.0, frame_count=30)
    boxes = [(float(i), 0.0, float(i) + 10, 10.0) for i in (3, 4, 5, 6)]
    tracked = Track(1, "video", 0, tuple(TrackBox(i, None, b, 0.8) for i, b in zip((3, 4, 5, 6), boxes, strict=True)))
    (region,) = video_regions(item, [tracked], config=video_config(None))
    sequence = region["value"]["sequence"]
    assert [k["frame"] for k in sequence] == [4, 5, 6]
    assert sequence[1]["x"] == round(100 * 5 / 320, 4)  # source frame 5's box: what LS shows on frame 5
    assert [k["enabled"] for k in sequence] == [True, True, False]
    assert region["value"]["framesCount"] == 24


def test_default_video_config_reads_the_task_fps() -> None:
    config = parse_label_config(default_label_config_xml(["car"], "video"))
    (video,) = config.targets()
    assert (video.value_key, video.frame_rate) == ("video", "$fps")
    assert ls_frame_rate(video, {"video": "https://h/c.mp4"}) == 24.0  # no fps in the task: LS's 24


def test_untracked_video_gives_every_detection_a_region() -> None:
    item = video_item([0, 1])
    boxes = [[32, 24, 96, 72]]
    frames = tuple(FrameResult(f.info, make_detections(boxes, [0.9], [0])) for f in item.frames)
    untracked = ItemPredictions(name=item.name, slots=item.slots, frames=frames)  # tracking off: no tracker ids
    regions = item_to_ls_result(untracked, MODEL, parse_label_config(VIDEO_CONFIG)).result
    assert [[k["frame"] for k in r["value"]["sequence"]] for r in regions] == [[1], [2]]
    assert len({r["id"] for r in regions}) == 2
