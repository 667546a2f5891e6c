"""Previews drawn in a run's own pass (``run --preview``, ``demo``): no frame is decoded twice.

``PreviewTap.opener`` wraps the flow's slot opener: every frame a reader delivers is kept, scaled down to the preview
size, as a JPEG in a per-run scratch folder on disk (a long video must not grow memory), then passed on to the model
unchanged. When the flow yields an item (after its track stage, so track ids are drawn), ``render`` draws those
frames with the item's final detections (``ItemPreviewWriter``) and deletes the item's scratch files.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from models.types import RGBImage
from service.pipeline.flow import ItemOutput, SlotOpener
from service.pipeline.frames import Frame
from service.pipeline.media import SlotSpec
from service.pipeline.readers import SlotReader
from service.render.encode import fit_within, rgb_to_jpeg
from service.render.previews import ItemPreviewWriter, PreviewOptions

log = logging.getLogger(__name__)

SCRATCH_JPEG_QUALITY = 95
"""The kept frames are encoded once more after drawing: keep the first generation close to the decoded pixels."""
SCRATCH_PREFIX = "preannotate-preview-"


@dataclass(slots=True)
class _KeptItem:
    """One item's kept frames: its scratch folder, and each frame's file by (slot, frame index)."""

    folder: Path
    frames: dict[tuple[str, int], Path] = field(default_factory=dict)


class PreviewTap:
    """Keeps a run's decoded frames (scaled, on disk) until their item's detections are final, then draws them.

    Use as a context manager: leaving it removes the scratch folder, whatever was left in it (a stopped run).

    Args:
        out_dir: where the previews go (``ItemPreviewWriter``'s layout).
        class_names: the model's classes, indexed by class id.
        scratch_parent: where the per-run scratch folder is made (None: the system temp dir, ``TMPDIR``).
    """

    def __init__(
        self,
        out_dir: Path,
        class_names: Sequence[str],
        options: PreviewOptions | None = None,
        *,
        scratch_parent: Path | None = None,
    ) -> None:
        self._out = out_dir
        self._names = list(class_names)
        self._options = options or PreviewOptions()
        self.scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_parent))
        self._lock = threading.Lock()  # decode workers keep frames while the caller's thread renders
        self._items: dict[str, _KeptItem] = {}
        self._files = 0
        self._folders = 0
        self._taken: set[str] = set()  # the run's preview files: no item overwrites another's
        self.error: OSError | None = None
        """The first failure to keep a frame (a full disk): previews stop, the run goes on."""

    def opener(self, open_slot: SlotOpener) -> SlotOpener:
        """``open_slot`` whose readers keep a copy of every frame they deliver."""

        def open_tapped(item: str, slot: SlotSpec) -> SlotReader:
            return _TappedReader(open_slot(item, slot), self)

        return open_tapped

    def keep(self, frame: Frame) -> None:
        """Store ``frame`` scaled to the preview size (called on a decode worker, before the frame moves on).

        A frame that cannot be stored is left out of the previews, never out of the run's predictions."""
        if self.error is not None:
            return
        jpeg = rgb_to_jpeg(fit_within(frame.image, self._options.longest_px), quality=SCRATCH_JPEG_QUALITY)
        info = frame.info
        try:
            with self._lock:
                kept = self._items.get(info.item)
                if kept is None:
                    self._folders += 1  # never reused: rendered items leave the dict
                    kept = self._items[info.item] = _KeptItem(self.scratch / str(self._folders))
                    kept.folder.mkdir()
                self._files += 1
                path = kept.folder / f"{self._files}.jpg"
            path.write_bytes(jpeg)
        except OSError as exc:
            self.error = self.error or exc
            log.warning("previews stopped: %s", exc)
            return
        with self._lock:
            kept.frames[(info.slot, info.frame_index)] = path

    def render(self, output: ItemOutput) -> list[Path]:
        """Draw an item's kept frames with its final detections; its scratch files go either way.

        Slots that failed are not drawn (their frames, if any decoded, are dropped). Returns the files written.
        An item that cannot be drawn raises, having deleted whatever it had written (``ItemPreviewWriter.abort``).
        """
        with self._lock:
            kept = self._items.pop(output.name, None)
        if kept is None:  # no frame decoded: PDFs, failed slots
            return []
        failed = {failure.slot for failure in output.failures}
        writer = ItemPreviewWriter(self._out, self._names, self._options, taken=self._taken)
        try:
            for result in output.frames:  # each slot's frames in time order, as the writer wants them
                path = kept.frames.get((result.info.slot, result.info.frame_index))
                if path is None or result.info.slot in failed:
                    continue
                writer.add(result.info, _read_rgb(path), result.detections)
        except BaseException:
            writer.abort()  # no open MP4, no half-written file left behind
            raise
        finally:
            shutil.rmtree(kept.folder, ignore_errors=True)
        return writer.close()

    def close(self) -> None:
        with self._lock:
            self._items.clear()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> PreviewTap:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_rgb(path: Path) -> RGBImage:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: a kept preview frame could not be read back")
    return np.ascontiguousarray(image[:, :, ::-1])


class _TappedReader:
    """A reader whose frames are kept by the tap as they pass."""

    def __init__(self, reader: SlotReader, tap: PreviewTap) -> None:
        self._reader = reader
        self._tap = tap
        self.meta = reader.meta

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._reader:
            self._tap.keep(frame)
            yield frame

    def close(self) -> None:
        self._reader.close()
