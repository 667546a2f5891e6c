"""Video sampling: exact frames identical to decoding everything, less work, bad input refused."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.baselines import decode_all_sampler
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import Frame, SlotMeta
from service.pipeline.media import ItemSpec, SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingMode, SamplingOptions
from service.pipeline.run import SlotFailure, iter_frames
from service.pipeline.video import VideoReader
from service.samples import DEFAULT_BOXES, write_video
from tests.media import corrupt_payloads, cut_copy, decodable_frames, faststart_copy, read_video

EXACT_CASES = [
    SamplingOptions(fps=1),
    SamplingOptions(fps=0.25),
    SamplingOptions(fps=2.5),
    SamplingOptions(fps=7),
    SamplingOptions(fps=0),
    SamplingOptions(fps=100),  # above the frame rate: every frame once, none twice
    SamplingOptions(fps=3, start_s=1.23, end_s=2.5),
    SamplingOptions(fps=0, start_s=0.5, end_s=1.0),
    SamplingOptions(fps=2, max_frames=3),
]


@pytest.mark.parametrize(
    "clip", ["bframes", "long_gop", "vfr", "vfr_mp4", "rotated", "rotated_270", "vp9", "hevc", "ts_bframes", "mpeg2"]
)
@pytest.mark.parametrize("options", EXACT_CASES, ids=repr)
def test_exact_sampling_matches_decoding_every_frame(
    clips: dict[str, Path], clip: str, options: SamplingOptions
) -> None:
    reader, ours = read_video(clips[clip], options)
    reference = list(decode_all_sampler(clips[clip], options))

    assert [(i, round(t, 6)) for i, t, _ in ours] == [(i, round(t, 6)) for i, t, _ in reference]
    for (_, _, a), (_, _, b) in zip(ours, reference, strict=True):
        assert np.array_equal(a, b)
    assert reader.meta.planned_frames == len(ours)


@pytest.mark.parametrize("options", [*EXACT_CASES, SamplingOptions(fps=0.7, mode=SamplingMode.KEYFRAMES)], ids=repr)
def test_avi_with_b_frames_matches_the_same_encode_in_mp4(clips: dict[str, Path], options: SamplingOptions) -> None:
    """AVI has no pts: frames come out in display order carrying decode-order numbers.

    The reference trusts those numbers (and keeps frames for targets twice over), so the truth is
    the reference on the twin clip: the same x264 bitstream, muxed into MP4.
    """
    reader, ours = read_video(clips["avi_bframes"], options)
    reference = list(decode_all_sampler(clips["avi_bframes_twin"], options))

    # The reference counts only key frames in key-frame mode: compare indices in exact mode only.
    exact = options.mode is SamplingMode.EXACT
    assert [(i if exact else 0, round(t, 6)) for i, t, _ in ours] == [
        (i if exact else 0, round(t, 6)) for i, t, _ in reference
    ]
    for (_, _, a), (_, _, b) in zip(ours, reference, strict=True):
        assert np.array_equal(a, b)
    assert reader.meta.planned_frames == len(ours)


@pytest.mark.parametrize("clip", ["bframes", "long_gop", "vfr_mp4", "hevc", "ts_bframes", "mpeg2"])
@pytest.mark.parametrize("fps", [0.25, 1.0, 2.5])
def test_exact_sampling_decodes_only_from_the_key_frame_before_each_target(
    clips: dict[str, Path], clip: str, fps: float
) -> None:
    """Every decoded frame lies in [key frame before a wanted frame, that frame]."""
    import av

    with av.open(str(clips[clip])) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None]
    pts = np.array(sorted(p for p, _ in packets))
    keyframes = np.array(sorted(p for p, k in packets if k))
    reader, frames = read_video(clips[clip], SamplingOptions(fps=fps))

    allowed: set[int] = set()
    for index, _, _ in frames:
        wanted = pts[index]
        keyframe = keyframes[np.searchsorted(keyframes, wanted, "right") - 1]
        allowed |= set(range(int(np.searchsorted(pts, keyframe)), index + 1))
    assert reader.stats.decoded_frames <= len(allowed)
    assert reader.stats.decoded_frames < len(pts) or fps >= 2.5


@pytest.mark.parametrize("clip", ["bframes", "long_gop", "vfr_mp4", "vp9", "ts_bframes", "mpeg2"])
@pytest.mark.parametrize("fps", [0, 0.3, 1.0])
def test_keyframe_sampling_decodes_only_the_key_frames_it_returns(
    clips: dict[str, Path], clip: str, fps: float
) -> None:
    options = SamplingOptions(fps=fps, mode=SamplingMode.KEYFRAMES)
    reader, ours = read_video(clips[clip], options)
    reference = list(decode_all_sampler(clips[clip], options))

    assert [round(t, 6) for _, t, _ in ours] == [round(t, 6) for _, t, _ in reference]
    assert all(np.array_equal(a, b) for (_, _, a), (_, _, b) in zip(ours, reference, strict=True))
    assert reader.stats.decoded_frames == len(ours) > 0


def test_sampled_frames_show_the_content_at_their_timestamp(clips: dict[str, Path]) -> None:
    """The moving box is where the generator drew it at each frame's reported time."""
    _, frames = read_video(clips["long_gop"], SamplingOptions(fps=1.7))
    box = DEFAULT_BOXES[0]
    for _, t, image in frames:
        x1, y1, x2, y2 = box.xyxy_at(t)
        centre = image[(y1 + y2) // 2, (x1 + x2) // 2].astype(int)
        assert np.abs(centre - np.array(box.color_rgb)).max() < 40, t


def test_timestamps_follow_a_variable_frame_rate(clips: dict[str, Path], clip_specs: dict) -> None:
    _, frames = read_video(clips["vfr"], SamplingOptions(fps=0))
    expected = clip_specs["vfr"].kwargs["frame_times_s"]
    assert [round(t, 3) for _, t, _ in frames] == expected
    assert [i for i, _, _ in frames] == list(range(len(expected)))


@pytest.mark.parametrize(("clip", "turns"), [("rotated", 1), ("rotated_270", 3)])
def test_rotated_video_is_returned_upright(clips: dict[str, Path], clip: str, turns: int) -> None:
    reader, rotated = read_video(clips[clip], SamplingOptions(fps=1))
    _, upright = read_video(clips["unrotated"], SamplingOptions(fps=1))
    assert (reader.meta.width, reader.meta.height) == (240, 320)
    for (_, _, a), (_, _, b) in zip(rotated, upright, strict=True):
        assert a.shape == (320, 240, 3)
        assert np.array_equal(a, np.rot90(b, turns))


def test_meta_describes_the_source(clips: dict[str, Path]) -> None:
    reader, _ = read_video(clips["bframes"], SamplingOptions(fps=2))
    meta = reader.meta
    assert (meta.width, meta.height, meta.fps, meta.frame_count) == (320, 240, 30.0, 180)
    assert meta.duration_s == pytest.approx(179 / 30)
    assert meta.planned_frames == 12


def test_memory_stays_flat_while_streaming_every_frame(clips: dict[str, Path]) -> None:
    frame_bytes = 320 * 240 * 3
    reader = VideoReader("item", "0", clips["long_gop"], SamplingOptions(fps=0), MediaLimits())
    tracemalloc.start()
    try:
        count = sum(1 for _ in reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        reader.close()
    assert count == 270
    assert peak < 6 * frame_bytes  # a few frames in flight, not 270


@pytest.mark.parametrize(
    ("limits", "options", "code"),
    [
        (MediaLimits(max_file_bytes=1000), SamplingOptions(), ErrorCode.FILE_TOO_LARGE),
        (MediaLimits(max_pixels=320 * 240 - 1), SamplingOptions(), ErrorCode.DIMENSIONS_TOO_LARGE),
        (MediaLimits(max_duration_s=5.0), SamplingOptions(), ErrorCode.VIDEO_TOO_LONG),
        (MediaLimits(max_frames=10), SamplingOptions(fps=2), ErrorCode.TOO_MANY_FRAMES),
    ],
    ids=["file-size", "pixels", "duration", "frames"],
)
def test_limits_refuse_before_decoding(
    clips: dict[str, Path], limits: MediaLimits, options: SamplingOptions, code: ErrorCode
) -> None:
    with pytest.raises(PreannotateError) as exc:
        VideoReader("item", "0", clips["bframes"], options, limits)
    assert exc.value.code is code
    assert str(clips["bframes"]) in exc.value.message


def test_frame_limit_is_met_by_max_frames(clips: dict[str, Path]) -> None:
    reader = VideoReader(
        "item", "0", clips["bframes"], SamplingOptions(fps=2, max_frames=10), MediaLimits(max_frames=10)
    )
    assert reader.meta.planned_frames == 10
    reader.close()


def test_truncated_video_is_corrupt(clips: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clips["bframes"].read_bytes()[:2000])
    with pytest.raises(PreannotateError) as exc:
        VideoReader("item", "0", broken, SamplingOptions(), MediaLimits())
    assert exc.value.code is ErrorCode.CORRUPT_MEDIA
    assert "broken.mp4" in exc.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PreannotateError) as exc:
        VideoReader("item", "0", tmp_path / "nope.mp4", SamplingOptions(), MediaLimits())
    assert exc.value.code is ErrorCode.INPUT_NOT_FOUND


def _not_video(directory: Path, clip: Path) -> dict[str, Path]:
    files = {
        "notes.txt": "Meeting notes\n" * 100,  # long enough for FFmpeg's tty demuxer to take it
        "drawing.svg": '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8"/></svg>',
        # An HLS playlist makes FFmpeg read the files it lists: a local-file read for a job URL.
        "playlist.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{clip}\n#EXT-X-ENDLIST\n",
        "playlist.mp4": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{clip}\n#EXT-X-ENDLIST\n",
    }
    for name, text in files.items():
        (directory / name).write_text(text)
    return {name: directory / name for name in files}


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("notes.txt", ErrorCode.UNSUPPORTED_MEDIA),  # FFmpeg's tty demuxer would "play" it
        ("drawing.svg", ErrorCode.UNSUPPORTED_MEDIA),  # svg_pipe: a stream without a decoder
        ("playlist.m3u8", ErrorCode.UNSUPPORTED_MEDIA),
        ("playlist.mp4", ErrorCode.CORRUPT_MEDIA),  # named as a video, so a broken one
    ],
)
def test_what_ffmpeg_can_probe_but_is_not_a_video_container_is_refused(
    clips: dict[str, Path], tmp_path: Path, name: str, code: ErrorCode
) -> None:
    path = _not_video(tmp_path, clips["ts_bframes"])[name]
    with pytest.raises(PreannotateError) as direct:
        VideoReader("item", "0", path, SamplingOptions(), MediaLimits())
    assert direct.value.code in (ErrorCode.UNSUPPORTED_MEDIA, ErrorCode.CORRUPT_MEDIA)
    with pytest.raises(PreannotateError) as exc:
        open_slot("item", SlotSpec("0", (path,)), SamplingOptions(), MediaLimits())
    assert exc.value.code is code
    assert name in exc.value.message


def test_a_video_stream_without_a_decoder_is_unsupported(clips: dict[str, Path], tmp_path: Path) -> None:
    unknown = tmp_path / "unknown_codec.mkv"
    data = clips["vfr"].read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    unknown.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC"))  # a codec id FFmpeg does not know
    with pytest.raises(PreannotateError) as exc:
        VideoReader("item", "0", unknown, SamplingOptions(), MediaLimits())
    assert exc.value.code is ErrorCode.UNSUPPORTED_MEDIA
    assert "unknown_codec.mkv: no decoder" in exc.value.message


def _read_until_failure(reader: VideoReader) -> tuple[list[Frame], PreannotateError | None]:
    frames: list[Frame] = []
    try:
        for frame in reader:
            frames.append(frame)
    except PreannotateError as exc:
        return frames, exc
    finally:
        reader.close()
    return frames, None


@pytest.mark.parametrize(
    "options", [SamplingOptions(fps=0), SamplingOptions(fps=2), SamplingOptions(mode=SamplingMode.KEYFRAMES)], ids=repr
)
def test_corruption_mid_stream_fails_the_slot_after_the_frames_that_decode(
    clips: dict[str, Path], tmp_path: Path, options: SamplingOptions
) -> None:
    broken = tmp_path / "broken.mkv"
    corrupt_payloads(clips["bframes"], broken, range(60, 100))  # the third and fourth GOP (of six)
    reader = VideoReader("item", "0", broken, options, MediaLimits())
    frames, error = _read_until_failure(reader)

    assert error is not None
    assert error.code is ErrorCode.CORRUPT_MEDIA
    planned = reader.meta.planned_frames
    assert f"broken.mkv: {planned - len(frames)} of {planned} sampled frames could not be decoded" in error.message
    assert 0 < len(frames) < planned
    # The GOPs before the damage are untouched.
    _, clean = read_video(clips["bframes"], options)
    intact = [f for f in frames if f.info.timestamp_s is not None and f.info.timestamp_s < 2.0]
    assert intact
    for frame, (index, _, image) in zip(intact, clean, strict=False):
        assert frame.info.frame_index == index
        assert np.array_equal(frame.image, image)


def test_one_bad_slot_never_stops_the_others(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _not_video(tmp_path, clips["ts_bframes"])
    broken = tmp_path / "broken.mkv"
    corrupt_payloads(clips["bframes"], broken, range(60, 100))
    haunted = tmp_path / "haunted.mp4"
    haunted.write_bytes(clips["unrotated"].read_bytes())

    real_open_slot = open_slot

    class Haunted:
        """A reader that fails in a way no check foresaw, after one frame."""

        def __init__(self, reader: VideoReader) -> None:
            self.meta: SlotMeta = reader.meta
            self._reader = reader

        def __iter__(self) -> Iterator[Frame]:
            yield next(iter(self._reader))
            raise KeyError("surprise")

        def close(self) -> None:
            self._reader.close()

    def open_slot_with_a_ghost(item: str, slot: SlotSpec, sampling: SamplingOptions, limits: MediaLimits) -> object:
        reader = real_open_slot(item, slot, sampling, limits)
        return Haunted(reader) if slot.paths[0] == haunted else reader  # type: ignore[arg-type]

    monkeypatch.setattr("service.pipeline.run.open_slot", open_slot_with_a_ghost)
    order = [clips["bframes"], bad["drawing.svg"], broken, bad["playlist.m3u8"], haunted, clips["unrotated"]]
    items = [ItemSpec(path.name, (SlotSpec("0", (path,)),)) for path in order]
    failures: list[SlotFailure] = []
    frames = list(iter_frames(items, SamplingOptions(fps=1), MediaLimits(), on_error=failures.append))

    per_item = {path.name: sum(f.info.item == path.name for f in frames) for path in order}
    assert per_item == {
        "bframes.mp4": 6,
        "drawing.svg": 0,
        "broken.mkv": per_item["broken.mkv"],
        "playlist.m3u8": 0,
        "haunted.mp4": 1,
        "unrotated.mp4": 2,
    }
    assert 0 < per_item["broken.mkv"] < 6
    assert [(f.item, f.error.code) for f in failures] == [
        ("drawing.svg", ErrorCode.UNSUPPORTED_MEDIA),
        ("broken.mkv", ErrorCode.CORRUPT_MEDIA),
        ("playlist.m3u8", ErrorCode.UNSUPPORTED_MEDIA),
        ("haunted.mp4", ErrorCode.INTERNAL),
    ]
    assert str(haunted) in failures[-1].error.message
    assert "KeyError" in failures[-1].error.message


def test_counts_of_a_damaged_stream_add_up(clips: dict[str, Path], tmp_path: Path) -> None:
    """Where a frame that did not decode is stood in for by the one before it, that one is counted as written."""
    broken = tmp_path / "broken.mkv"
    corrupt_payloads(clips["bframes"], broken, range(40, 70))
    reader = VideoReader("item", "0", broken, SamplingOptions(fps=2), MediaLimits())
    frames, error = _read_until_failure(reader)

    assert error is not None
    planned = reader.meta.planned_frames
    lost = planned - len(frames)
    assert f"broken.mkv: {lost} of {planned} sampled frames could not be decoded ({len(frames)} decoded, 1 of them" in (
        error.message
    )


@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 10 s clip (30 fps, a key frame a second) as Matroska and as a faststart MP4, each cut to its first 40 %."""
    root = tmp_path_factory.mktemp("ten_seconds")
    whole = {"mkv": root / "whole.mkv", "mp4": root / "whole.mp4"}
    write_video(whole["mkv"], duration_s=10.0, gop=30, bframes=2)
    write_video(root / "plain.mp4", duration_s=10.0, gop=30, bframes=2)
    faststart_copy(root / "plain.mp4", whole["mp4"])
    paths = {f"whole_{kind}": path for kind, path in whole.items()}
    for kind, path in whole.items():
        paths[f"cut_{kind}"] = root / f"cut.{kind}"
        cut_copy(path, paths[f"cut_{kind}"], 0.4)
    return paths


@pytest.mark.parametrize("kind", ["mkv", "mp4"])
@pytest.mark.parametrize("mode", [SamplingMode.EXACT, SamplingMode.KEYFRAMES])
def test_a_truncated_video_keeps_its_frames_and_says_how_many_of_the_declared_length_are_missing(
    ten_seconds: dict[str, Path], kind: str, mode: SamplingMode
) -> None:
    cut = ten_seconds[f"cut_{kind}"]
    reader = VideoReader("item", "0", cut, SamplingOptions(fps=1, mode=mode), MediaLimits())
    frames, error = _read_until_failure(reader)

    assert 2 <= len(frames) < 10
    assert error is not None
    assert error.code is ErrorCode.CORRUPT_MEDIA
    assert f"cut.{kind}: truncated" in error.message
    assert f"; {10 - len(frames)} of 10 sampled frames could not be decoded ({len(frames)} decoded)" in error.message
    assert "declares 10.00 s" in error.message
    # The frames it has are the uncut clip's.
    _, whole = read_video(ten_seconds[f"whole_{kind}"], SamplingOptions(fps=1, mode=mode))
    for frame, (index, _, image) in zip(frames, whole, strict=False):
        assert frame.info.frame_index == index
        assert np.array_equal(frame.image, image)
    # Its length is what is there, not what the header promised.
    assert reader.meta.frame_count == decodable_frames(cut) < 300
    assert reader.meta.duration_s is not None
    assert reader.meta.duration_s < 5


@pytest.mark.parametrize("options", [SamplingOptions(fps=0), SamplingOptions(fps=2, max_frames=15)], ids=repr)
def test_the_frames_expected_of_a_truncated_video_follow_the_sampling_request(
    ten_seconds: dict[str, Path], options: SamplingOptions
) -> None:
    _, whole = read_video(ten_seconds["whole_mkv"], options)
    frames, error = _read_until_failure(VideoReader("item", "0", ten_seconds["cut_mkv"], options, MediaLimits()))
    assert error is not None
    assert f"of {len(whole)} sampled frames could not be decoded ({len(frames)} decoded)" in error.message


def test_an_intact_video_reports_nothing(ten_seconds: dict[str, Path]) -> None:
    for kind in ("mkv", "mp4"):
        frames, error = _read_until_failure(
            VideoReader("item", "0", ten_seconds[f"whole_{kind}"], SamplingOptions(fps=1), MediaLimits())
        )
        assert error is None
        assert len(frames) == 10


def test_a_video_shorter_than_its_audio_is_not_truncated(tmp_path: Path) -> None:
    """Matroska declares one length for all streams: 4 s of audio under 2 s of video is a whole file."""
    path = tmp_path / "short_video.mkv"
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        for i in range(50):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for i in range(40):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
            samples.sample_rate, samples.pts = 8000, i * 800
            container.mux(audio.encode(samples))
        container.mux(audio.encode(None))
    with av.open(str(path)) as probe:
        assert probe.duration is not None
        assert probe.duration > 3.5 * av.time_base  # the audio's length
    frames, error = _read_until_failure(VideoReader("item", "0", path, SamplingOptions(fps=1), MediaLimits()))
    assert error is None
    assert len(frames) == 2


def test_a_cut_file_that_declares_no_length_is_read_as_it_is(tmp_path: Path) -> None:
    """A live-recorded Matroska file has no duration in its header: nothing to measure the cut against."""
    live = tmp_path / "live.mkv"
    with av.open(str(live), mode="w", options={"live": "1"}) as container:
        video = container.add_stream("libx264", rate=25, options={"g": "25"})
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(250):
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24")))
        container.mux(video.encode(None))
    cut = tmp_path / "live_cut.mkv"
    cut_copy(live, cut, 0.4)
    with av.open(str(cut)) as probe:
        assert probe.duration is None
    frames, error = _read_until_failure(VideoReader("item", "0", cut, SamplingOptions(fps=1), MediaLimits()))
    assert error is None
    assert 2 <= len(frames) < 10
