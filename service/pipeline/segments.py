"""Decoding one long video on several threads at once, one key-frame segment each, delivered in order.

FFmpeg's frame threads keep about 1.4 of 2 cores busy on H.264; two decoders on alternate segments
(slice threads each) keep both, and convert their frames on their own thread too (OpenCV releases
the GIL). Each worker opens the file itself and takes segments ``w, w + W, w + 2W, ...``; the reader
takes segment 0 from worker 0, 1 from worker 1, and so on. A worker runs at most ``queue_frames``
frames ahead, so memory is bounded by workers x ``queue_frames`` frames, whatever the video's length.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

T = TypeVar("T")
S = TypeVar("S")
T_co = TypeVar("T_co", covariant=True)
S_contra = TypeVar("S_contra", contravariant=True)

_POLL_S = 0.1


class SegmentWorker(Protocol[S_contra, T_co]):
    """One decoder of its own: decodes a segment at a time, in the order given."""

    def decode(self, segment: S_contra) -> Iterator[T_co]: ...

    def close(self) -> None: ...


def split_at_keyframes(
    wanted_pts: NDArray[np.int64], keyframe_pts: NDArray[np.int64], min_frames: int
) -> list[NDArray[np.int64]]:
    """``wanted_pts`` (sorted) cut where the key frame before a frame changes, each piece at least
    ``min_frames`` long (the last may be shorter): pieces a decoder can start at their first key frame."""
    if len(wanted_pts) == 0:
        return []
    gop = np.searchsorted(keyframe_pts, wanted_pts, "right") - 1
    starts = np.flatnonzero(np.diff(gop)) + 1  # first wanted frame of each new GOP
    cuts: list[int] = [0]
    for start in starts.tolist():
        if start - cuts[-1] >= min_frames:
            cuts.append(start)
    cuts.append(len(wanted_pts))
    return [wanted_pts[a:b] for a, b in itertools.pairwise(cuts)]


class _Done:
    """End of one segment on a worker's queue."""


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _StoppedError(Exception):
    """The reader went away: the worker stops."""


class _Lane(Generic[T]):
    """One worker thread and its bounded queue."""

    def __init__(self, queue_frames: int) -> None:
        self.queue: queue.Queue[T | _Done | _Failed] = queue.Queue(maxsize=max(1, queue_frames))
        self.thread: threading.Thread | None = None

    def put(self, item: T | _Done | _Failed, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        raise _StoppedError


def decode_in_parallel(
    segments: Sequence[S],
    workers: int,
    open_worker: Callable[[], SegmentWorker[S, T]],
    *,
    queue_frames: int,
) -> Iterator[T]:
    """Every segment's items, in segment order, decoded by ``workers`` threads (round robin).

    A worker's exception is raised here, after the items that came before it; closing this generator
    stops and joins the workers (each closes its own decoder).
    """
    count = max(1, min(workers, len(segments)))
    lanes: list[_Lane[T]] = [_Lane(queue_frames) for _ in range(count)]
    stop = threading.Event()

    def work(lane: _Lane[T], assigned: Sequence[S]) -> None:
        try:
            worker = open_worker()
        except BaseException as exc:
            _put_quietly(lane, _Failed(exc), stop)
            return
        try:
            for segment in assigned:
                for item in worker.decode(segment):
                    lane.put(item, stop)
                lane.put(_Done(), stop)
        except _StoppedError:
            return
        except BaseException as exc:  # handed to the reader, which raises it in order
            _put_quietly(lane, _Failed(exc), stop)
        finally:
            worker.close()

    for w, lane in enumerate(lanes):
        lane.thread = threading.Thread(target=work, args=(lane, segments[w::count]), name=f"decode-{w}", daemon=True)
        lane.thread.start()
    try:
        for index in range(len(segments)):
            lane = lanes[index % count]
            while not isinstance(item := lane.queue.get(), _Done):
                if isinstance(item, _Failed):
                    raise item.error
                yield item
    finally:
        stop.set()
        for lane in lanes:
            if lane.thread is not None:
                lane.thread.join()


def _put_quietly(lane: _Lane[T], item: _Failed, stop: threading.Event) -> None:
    with contextlib.suppress(_StoppedError):
        lane.put(item, stop)
