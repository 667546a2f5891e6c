"""A DICOM series: one slot made of many files (one slice each, usually), read in the given order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from service.errors import ErrorCode, PreannotateError
from service.pipeline.dicom import DicomReader
from service.pipeline.frames import Frame, MediaKind, SlotMeta
from service.pipeline.options import MediaLimits, SamplingOptions

_ALL_FRAMES = SamplingOptions(fps=0)


class DicomSeriesReader:
    """Frames of every file in order; ``frame_index`` counts across the series, no clock.

    Only the first file is opened up front (for the size); each later file is checked when its turn
    comes, and a bad one fails the slot naming that file.
    """

    def __init__(
        self, item: str, slot: str, paths: Sequence[Path], sampling: SamplingOptions, limits: MediaLimits
    ) -> None:
        if not paths:
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{item}/{slot}: the DICOM series is empty")
        planned = len(paths) if sampling.max_frames is None else min(len(paths), sampling.max_frames)
        limits.check_frames(planned, f"DICOM series {item}/{slot}")
        first = DicomReader(item, slot, paths[0], _ALL_FRAMES, limits)
        first.close()
        self._paths, self._limits, self._max_frames = list(paths), limits, sampling.max_frames
        self.meta = SlotMeta(
            item=item,
            slot=slot,
            media=MediaKind.DICOM,
            source_files=tuple(str(p) for p in paths),
            width=first.meta.width,
            height=first.meta.height,
            fps=None,
            frame_count=len(paths),
            planned_frames=planned,
        )

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self._paths:
            reader = DicomReader(self.meta.item, self.meta.slot, path, _ALL_FRAMES, self._limits)
            try:
                for frame in reader:
                    if self._max_frames is not None and index >= self._max_frames:
                        return
                    yield Frame(info=replace(frame.info, frame_index=index, timestamp_s=None), image=frame.image)
                    index += 1
            finally:
                reader.close()

    def close(self) -> None:
        """Nothing held between files."""
