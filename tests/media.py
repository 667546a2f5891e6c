"""Test clips: synthetic videos with known content, one per property the sampler must handle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.bitstream
import numpy as np
from numpy.typing import NDArray

from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.video import VideoReader
from service.samples import write_video


def _vfr_times() -> list[float]:
    # Intervals from 10 ms to 100 ms: no constant rate explains these timestamps.
    rng = np.random.default_rng(7)
    times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.1, 119))])
    return [round(float(t), 3) for t in times]


@dataclass(frozen=True)
class ClipSpec:
    """A clip to encode (``kwargs`` for ``write_video``), or, with ``remux_of``, that clip's very packets
    remuxed (with a display rotation of ``rotation_deg`` if set): a twin that is the same bitstream by construction."""

    file_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    remux_of: str | None = None
    rotation_deg: int = 0


CLIPS: dict[str, ClipSpec] = {
    # 30 fps, key frame every second, 2 B-frames: decode order != display order
    "bframes": ClipSpec("bframes.mp4", {"duration_s": 6.0, "gop": 30, "bframes": 2}),
    # 3 s key-frame interval: exact sampling must seek into GOPs
    "long_gop": ClipSpec("long_gop.mp4", {"duration_s": 9.0, "gop": 90, "bframes": 3}),
    "vfr": ClipSpec("vfr.mkv", {"frame_times_s": _vfr_times(), "gop": 25, "bframes": 0}),
    "vfr_mp4": ClipSpec("vfr.mp4", {"frame_times_s": _vfr_times(), "gop": 25, "bframes": 2}),
    # The unrotated clip's packets with a display rotation: even one-thread x264 encodes differed now and then.
    "rotated": ClipSpec("rotated.mp4", remux_of="unrotated", rotation_deg=90),
    "rotated_270": ClipSpec("rotated_270.mov", remux_of="unrotated", rotation_deg=-90),
    "unrotated": ClipSpec("unrotated.mp4", {"duration_s": 2.0, "gop": 15}),
    "vp9": ClipSpec("vp9.webm", {"duration_s": 3.0, "gop": 20, "codec": "libvpx-vp9", "fps": 25}),
    "hevc": ClipSpec("hevc.mkv", {"duration_s": 3.0, "gop": 24, "codec": "libx265", "fps": 24}),
    # MPEG-TS and MPEG-PS seek by decode time: a seek to a key frame's pts lands past it
    "ts_bframes": ClipSpec("bframes.ts", {"duration_s": 3.0, "gop": 30, "bframes": 3}),
    "mpeg2": ClipSpec("mpeg2.mpg", {"duration_s": 3.0, "gop": 30, "codec": "mpeg2video"}),
    # AVI stores no pts: with B-frames the decoded frames carry decode-order numbers. Its twin is the
    # MP4 it was remuxed from (same bitstream), which the decode-everything reference can be trusted on.
    # Two one-thread encodes of the same frames into AVI and MP4 differed on CI's machine.
    "avi_bframes": ClipSpec("bframes.avi", remux_of="avi_bframes_twin"),
    "avi_bframes_twin": ClipSpec("bframes_twin.mp4", {"duration_s": 3.0, "gop": 30, "bframes": 3}),
}


def make_clip(directory: Path, spec: ClipSpec) -> Path:
    """The clip, encoded on one thread: twins (AVI/MP4) must be the same bitstream."""
    path = directory / spec.file_name
    if path.exists():
        return path
    if spec.remux_of is None:
        write_video(path, threads=1, **spec.kwargs)
    elif path.suffix == ".avi":
        _remux_h264_to_avi(make_clip(directory, CLIPS[spec.remux_of]), path)
    else:
        with av.open(str(make_clip(directory, CLIPS[spec.remux_of]))) as src, av.open(str(path), mode="w") as dst:
            stream = src.streams.video[0]
            out = dst.add_stream_from_template(stream)
            if spec.rotation_deg:
                out.set_display_rotation(spec.rotation_deg)
            for packet in src.demux(stream):
                if packet.dts is not None:
                    packet.stream = out
                    dst.mux(packet)
    return path


def _remux_h264_to_avi(source: Path, target: Path) -> None:
    """MP4's H.264 packets into AVI: start codes instead of length prefixes (AVI's muxer wants them), and
    decode-order frame numbers as the only timestamps (AVI has nothing else to store)."""
    with av.open(str(source)) as src, av.open(str(target), mode="w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        fps = stream.average_rate or stream.guessed_rate
        assert fps is not None, f"{source} has no frame rate"
        out.time_base = 1 / fps
        out.codec_context.extradata = None  # the avcC record: decoders would read start codes as lengths
        annexb = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
        packets = [p for packet in src.demux(stream) if packet.dts is not None for p in annexb.filter(packet)]
        for number, packet in enumerate([*packets, *annexb.filter(None)]):
            packet.stream = out
            packet.time_base = out.time_base
            packet.pts = packet.dts = number
            packet.duration = 1
            dst.mux(packet)


def corrupt_payloads(source: Path, target: Path, packets: range) -> None:
    """Remux ``source`` with the payload of the video packets numbered ``packets`` replaced by noise.

    The container stays intact (every packet is indexed), so the damage shows only when decoding:
    corruption mid-stream, as a flaky upload or disk leaves it.
    """
    rng = np.random.default_rng(3)
    with av.open(str(source)) as src, av.open(str(target), mode="w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for number, packet in enumerate(p for p in src.demux(stream) if p.dts is not None):
            if number in packets and packet.size > 16:
                data = bytes(packet)[:8] + rng.integers(0, 256, packet.size - 8, dtype=np.uint8).tobytes()
                noisy = av.Packet(data)
                noisy.pts, noisy.dts, noisy.time_base = packet.pts, packet.dts, packet.time_base
                noisy.is_keyframe = packet.is_keyframe
                packet = noisy
            packet.stream = out
            dst.mux(packet)


def faststart_copy(source: Path, target: Path) -> None:
    """Remux an MP4 with its index (moov) before the media data, as files made for streaming have it."""
    with av.open(str(source)) as src, av.open(str(target), mode="w", options={"movflags": "faststart"}) as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)


def cut_copy(source: Path, target: Path, fraction: float) -> None:
    """The first ``fraction`` of ``source``'s bytes: a partial upload, its header still declaring the full length."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])


def decodable_frames(path: Path) -> int:
    """How many frames FFmpeg decodes from the file's first video stream, skipping packets that fail."""
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                count += len(packet.decode())
            except av.error.InvalidDataError:
                continue
    return count


def read_video(
    path: Path, options: SamplingOptions
) -> tuple[VideoReader, list[tuple[int, float | None, NDArray[np.uint8]]]]:
    """Every frame ``VideoReader`` samples, as ``(frame_index, timestamp_s, image)``, and the closed reader."""
    reader = VideoReader("item", "0", path, options, MediaLimits())
    try:
        frames = [(f.info.frame_index, f.info.timestamp_s, f.image) for f in reader]
    finally:
        reader.close()
    return reader, frames


def write_astronaut_media(root: Path) -> Path:
    """``astronaut.png`` (scikit-image's photo, one face) and ``pan.mp4`` (2 s at 25 fps panning across it): media
    with real faces for the default model, served to a real server by the preview and job-page tests."""
    import cv2
    import skimage.data

    from service.samples import write_pan_video

    astronaut = skimage.data.astronaut()
    cv2.imwrite(str(root / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    write_pan_video(astronaut, root / "pan.mp4", duration_s=2.0, fps=25)
    return root
