"""Which :class:`~service.backends.base.Backend` serves a destination: a name -> factory table, no name switches.

A process builds its backends once (:class:`Backends`) and shares them between worker threads; building one
makes no request, and credentials never leave it. Vendor modules are imported when their backend is first built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.backends.base import Backend, BackendName
from service.config import Settings
from service.pipeline.fetch import Fetcher
from service.spec.requests import Destination, ItemIn


@dataclass(frozen=True, slots=True)
class BackendContext:
    """What a process gives its backends besides the settings.

    Attributes:
        concurrency: Worker threads that may push at once (Encord bundles close when all are waiting).
        fetcher: Re-fetches slot files a V7 upload needs; None: one built from the settings on first use.
    """

    concurrency: int | None = None
    fetcher: Fetcher | None = None


BackendFactory = Callable[[Settings, BackendContext], Backend]


def _label_studio(settings: Settings, context: BackendContext) -> Backend:
    from service.backends.label_studio_push import LabelStudioPusher

    return LabelStudioPusher(settings)


def _v7(settings: Settings, context: BackendContext) -> Backend:
    from service.backends.v7_push import V7Pusher

    return V7Pusher(settings, fetcher=context.fetcher)


def _encord(settings: Settings, context: BackendContext) -> Backend:
    from service.backends.encord_push import EncordPusher

    return EncordPusher(settings, concurrency=context.concurrency)


def _cvat(settings: Settings, context: BackendContext) -> Backend:
    from service.backends.cvat_push import CvatPusher

    return CvatPusher(settings)


BACKENDS: dict[BackendName, BackendFactory] = {
    "label_studio": _label_studio,
    "v7": _v7,
    "encord": _encord,
    "cvat": _cvat,
}
"""Every destination a job may name (``Destination.backend``)."""


def check_destination(settings: Settings, destination: Destination, items: Sequence[ItemIn]) -> None:
    """Refuse, before anything runs (422), a job naming a tool this server has no credentials for, or items the
    tool could not place.

    Raises:
        PreannotateError: ``BACKEND_NOT_CONFIGURED`` or ``INVALID_ARGUMENT``.
    """
    BACKENDS[destination.backend](settings, BackendContext()).check(destination, items)


class Backends:
    """The backends of one process, each built on first use and shared by its threads.

    Args:
        settings: Credentials and each tool's options.
        concurrency: Worker threads that may push at once (default ``settings.workers``); see
            :class:`BackendContext`.
        fetcher: See :class:`BackendContext`.
    """

    def __init__(self, settings: Settings, *, concurrency: int | None = None, fetcher: Fetcher | None = None) -> None:
        self.settings = settings
        self._context = BackendContext(concurrency=concurrency, fetcher=fetcher)
        self._built: dict[BackendName, Backend] = {}
        self._lock = threading.Lock()

    def get(self, name: BackendName) -> Backend:
        with self._lock:
            if name not in self._built:
                self._built[name] = BACKENDS[name](self.settings, self._context)
            return self._built[name]

    def for_destination(self, destination: Destination) -> Backend:
        return self.get(destination.backend)

    def close(self) -> None:
        with self._lock:
            built = list(self._built.values())
            self._built.clear()
        for backend in built:
            backend.close()
