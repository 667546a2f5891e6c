"""Slot URLs a worker fetches *through a labeling tool*, with that tool's credentials.

Label Studio task media (``/data/upload/...``, ``/data/local-files/?d=...``) and V7 file URLs
(``https://darwin.v7labs.com/api/v2/teams/<team>/uploads/<id>``) need the tool's key. A job says so by
prefixing the absolute URL: ``label-studio+https://ls.example.com/data/upload/1/a.jpg`` or
``v7+https://darwin.v7labs.com/api/...``. Only internal sources (the webhooks and the sweep) write these
prefixes: ``POST /v1/jobs`` refuses any scheme but https/http/s3/file, so a client cannot make the service
spend its keys on a URL of the client's choosing. The key is attached only to requests for the tool's own
origin (scheme, host, port), so a redirect to cloud storage carries none, and the URL must be on that
origin to begin with.

The worker pool gets a :class:`BackendMediaFetcher`; client-facing routes (``/v1/predict``) keep the plain
:class:`~service.pipeline.fetch.Fetcher`, which refuses these schemes.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import replace
from pathlib import Path

import httpx

from service.backends.cvat import CvatClient
from service.backends.cvat import config_from_settings as cvat_config_from_settings
from service.backends.label_studio import LabelStudioClient, config_from_settings
from service.backends.origin_auth import DEFAULT_PORTS, Origin, OriginAuthTransport, host_entry, origin_of
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import FetchedFile, Fetcher, Resolver, redact_url, system_resolver

LABEL_STUDIO = "label-studio"
V7 = "v7"
CVAT = "cvat"
_VIA = (LABEL_STUDIO, V7, CVAT)
VIA_SCHEMES = frozenset(f"{backend}+{scheme}" for backend in _VIA for scheme in ("http", "https"))
"""URL schemes only internal sources may put in a job (``submit.check_urls(extra_schemes=...)``)."""


def via(backend: str, url: str) -> str:
    """``url`` marked to be fetched through ``backend`` (``label-studio``, ``v7`` or ``cvat``)."""
    return f"{backend}+{url}"


def split_via(url: str) -> tuple[str | None, str]:
    """``(backend, plain URL)`` of a marked URL; ``(None, url)`` for any other."""
    head, sep, rest = url.partition("+")
    if sep and head in _VIA and rest.split(":", 1)[0].lower() in DEFAULT_PORTS:
        return head, rest
    return None, url


class BackendMediaFetcher(Fetcher):
    """The workers' fetcher: plain URLs as :class:`Fetcher` does, marked ones through their tool.

    Tool clients are built on first use from the settings and shared by the worker threads.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        media_transport: httpx.BaseTransport | None = None,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Build the fetcher.

        Args:
            settings: Fetch policy and the tools' URLs and keys.
            media_transport: Replaces the network for marked URLs (tests only).
            resolver, verify, transport: As :class:`Fetcher` takes them.
        """
        super().__init__(settings.fetch_policy(), resolver=resolver, verify=verify, transport=transport)
        self._settings = settings
        self._media_transport = media_transport
        self._lock = threading.Lock()
        self._label_studio: LabelStudioClient | None = None
        self._v7: Fetcher | None = None
        self._v7_origin: Origin | None = None
        self._cvat: CvatClient | None = None

    def fetch(self, url: str, dest_dir: Path, *, deadline_s: float | None = None) -> FetchedFile:
        backend, plain = split_via(url)
        if backend == LABEL_STUDIO:
            client = self._label_studio_client()
            if not client.is_label_studio_url(plain):
                raise _refuse(plain, "not on the configured Label Studio")
            return client.download(plain, dest_dir, deadline_s=deadline_s)
        if backend == V7:
            fetcher, origin = self._v7_fetcher()
            if origin_of(plain) != origin:
                raise _refuse(plain, "not on the configured V7 API host")
            return fetcher.fetch(plain, dest_dir, deadline_s=deadline_s)
        if backend == CVAT:
            cvat = self._cvat_client()
            if not cvat.is_cvat_url(plain):
                raise _refuse(plain, "not on the configured CVAT")
            return cvat.download(plain, dest_dir, deadline_s=deadline_s)
        return super().fetch(url, dest_dir, deadline_s=deadline_s)

    def _label_studio_client(self) -> LabelStudioClient:
        with self._lock:
            if self._label_studio is None:
                config = config_from_settings(self._settings)
                if config is None:
                    raise PreannotateError(
                        ErrorCode.BACKEND_NOT_CONFIGURED, "Label Studio media needs label_studio_url and _api_key"
                    )
                self._label_studio = LabelStudioClient(
                    config, fetch_policy=self._settings.fetch_policy(), media_transport=self._media_transport
                )
            return self._label_studio

    def _v7_fetcher(self) -> tuple[Fetcher, Origin]:
        with self._lock:
            if self._v7 is None or self._v7_origin is None:
                settings = self._settings
                key = settings.v7_api_key.get_secret_value()
                origin = origin_of(settings.v7_base_url)
                if not key or origin is None:
                    raise PreannotateError(
                        ErrorCode.BACKEND_NOT_CONFIGURED, "V7 media needs v7_api_key and v7_base_url"
                    )
                policy = settings.fetch_policy()
                # The operator named this host as the V7 API: trusted like an allow-listed store.
                policy = replace(policy, allowed_hosts=policy.allowed_hosts | {host_entry(origin)})
                transport = OriginAuthTransport(origin, lambda: f"ApiKey {key}", inner=self._media_transport)
                self._v7, self._v7_origin = Fetcher(policy, transport=transport), origin
            return self._v7, self._v7_origin

    def _cvat_client(self) -> CvatClient:
        with self._lock:
            if self._cvat is None:
                config = cvat_config_from_settings(self._settings)
                if config is None:
                    raise PreannotateError(
                        ErrorCode.BACKEND_NOT_CONFIGURED, "CVAT media needs cvat_url and a token or username/password"
                    )
                self._cvat = CvatClient(config, fetch_policy=self._settings.fetch_policy())
            return self._cvat

    def close(self) -> None:
        with self._lock:
            if self._label_studio is not None:
                self._label_studio.close()
                self._label_studio = None
            if self._cvat is not None:
                self._cvat.close()
                self._cvat = None


def _refuse(url: str, why: str) -> PreannotateError:
    return PreannotateError(ErrorCode.URL_NOT_ALLOWED, f"{redact_url(url)}: {why}")
