"""Sampling options and media limits, as plain values the decoders take."""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from service.errors import ErrorCode, PreannotateError

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup (v2) CPU quota, so a pod limited
    to 2 CPUs on a 64-core node sizes its decode threads for 2 (``os.cpu_count`` sees the node)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit readable: the affinity stands
    return max(1, cpus)


class SamplingMode(enum.StrEnum):
    EXACT = "exact"  # the frame displayed at each target time
    KEYFRAMES = "keyframes"  # the key frame at or before each target; fast, approximate


class DecoderChoice(enum.StrEnum):
    """Which decoder exact video sampling uses (key-frame sampling always uses PyAV)."""

    PYAV = "pyav"  # FFmpeg on the CPU
    NVDEC = "nvdec"  # torchcodec on CUDA; fails (missing_dependency, device_unavailable) where it cannot
    AUTO = "auto"  # nvdec where torchcodec and a CUDA device are present, else PyAV


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """Which frames of a video (or timed multi-frame DICOM) to take.

    Attributes:
        fps: frames per second wanted; 0 = every frame (every key frame in key-frame mode).
        mode: exact or key-frame sampling.
        start_s: first target time, seconds from the first frame.
        end_s: last allowed target time (inclusive), or None for the end of the source.
        max_frames: stop after this many sampled frames (None = no cap).
        decoder: the video decoder for exact sampling: pyav, nvdec or auto.
        detector_size_px: the decoder may deliver frames scaled down to fit this square (aspect kept),
            when only a detector that scales them anyway sees them; ``Frame.image`` is then smaller than
            ``Frame.info``'s size, and ``frames.boxes_to_source`` maps boxes back. None: full-size frames.
        frame_indices: exactly these frames (display-order indices, as ``FrameInfo.frame_index``), in place of
            ``fps``/``start_s``/``end_s``: the frames a run sampled, decoded again to draw its predictions on them.
            Indices past the source's last frame are left out.
    """

    fps: float = 1.0
    mode: SamplingMode = SamplingMode.EXACT
    start_s: float = 0.0
    end_s: float | None = None
    max_frames: int | None = None
    decoder: DecoderChoice = DecoderChoice.PYAV
    detector_size_px: int | None = None
    frame_indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.fps <= 1000:
            raise ValueError(f"fps must be in [0, 1000] (0 = every frame), got {self.fps}")
        if self.start_s < 0:
            raise ValueError(f"start must be >= 0 seconds, got {self.start_s}")
        if self.end_s is not None and self.end_s < self.start_s:
            raise ValueError(f"end ({self.end_s}) must not be before start ({self.start_s})")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.detector_size_px is not None and self.detector_size_px < 1:
            raise ValueError(f"detector_size_px must be >= 1, got {self.detector_size_px}")
        if self.frame_indices is not None and any(i < 0 for i in self.frame_indices):
            raise ValueError("frame indices must be >= 0")
        if self.decoder not in set(DecoderChoice):  # a plain string from a caller is fine if it names one
            raise ValueError(f"decoder must be one of {', '.join(DecoderChoice)}, got {self.decoder!r}")


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Refuse inputs past these bounds before decoding them (each is a setting).

    Attributes:
        max_file_bytes: largest input file.
        max_pixels: largest frame (width * height), images and video alike.
        max_frames: most frames sampled from one slot.
        max_duration_s: longest video.
    """

    max_file_bytes: int = 20 * 1024**3
    max_pixels: int = 100_000_000
    max_frames: int = 100_000
    max_duration_s: float = 6 * 3600.0

    def check_frames(self, planned: int, source: str) -> None:
        """Refuse a slot that would yield more than ``max_frames`` frames (TOO_MANY_FRAMES)."""
        if planned > self.max_frames:
            raise PreannotateError(
                ErrorCode.TOO_MANY_FRAMES,
                f"{source}: {planned} frames planned, more than the limit of {self.max_frames}; "
                "lower --fps or set --max-frames",
            )


# Tracker option bounds, shared by the settings, `run`'s flags and a job's "tracks" (``TrackerOptions`` checks
# only the signs): a gap past 10 minutes is no gap (and longer ones would make every frame weigh every piece
# alive), and an object farther than 100 box sizes is another object.
TRACK_MAX_GAP_S = 600.0
TRACK_MAX_BOX_SIZES = 100.0
TrackGapS = Annotated[float, Field(ge=0.0, le=TRACK_MAX_GAP_S)]
"""A tracker option in seconds, as the settings and a job's "tracks" bound it."""
TrackBoxSizes = Annotated[float, Field(gt=0.0, le=TRACK_MAX_BOX_SIZES)]
"""A tracker option in box sizes (per second, for a speed), as the settings and a job's "tracks" bound it."""

REMOVED_TRACK_OPTIONS: dict[str, tuple[str, str]] = {
    "iou": ("distance_gate", "tracks match on centre distance in box sizes, not IoU"),
    "max_gap": ("max_gap_s", "gaps are seconds, not sampled frames: N missed at F fps is N / F s"),
}
"""Tracker options older releases took -> (what replaced each, why); named the same in every entry point
(``PREANNOTATE_TRACK_<NAME>``, ``--track-<name>``, a job's ``tracks.<name>``)."""


def removed_track_option(old: str, spell: Callable[[str], str]) -> str:
    """One line saying the tracker option ``old`` is gone and what replaced it, each option's name written by
    ``spell`` (``"max_gap"`` -> ``"--track-max-gap"``, ``"PREANNOTATE_TRACK_MAX_GAP"``, ``"tracks.max_gap"``)."""
    new, why = REMOVED_TRACK_OPTIONS[old]
    return f"{spell(old)} was removed ({why}): use {spell(new)}"
