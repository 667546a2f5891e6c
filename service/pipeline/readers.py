"""The interface every media reader implements, and the type the pipeline consumes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from service.pipeline.frames import Frame, SlotMeta


class SlotReader(Protocol):
    """An opened slot.

    Constructing a reader opens and validates the source (limits, format) and plans the frames,
    raising ``PreannotateError`` for bad input; iterating decodes the planned frames lazily, in
    time order, holding at most a few frames in memory. ``close`` releases file handles.
    """

    meta: SlotMeta

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...
