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
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from service.backends.label_studio import LabelStudioClient, config_from_settings
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import FetchedFile, Fetcher, redact_url

LABEL_STUDIO = "label-studio"
V7 = "v7"
VIA_SCHEMES = frozenset(f"{backend}+{scheme}" for backend in (LABEL_STUDIO, V7) for scheme in ("http", "https"))
"""URL schemes only internal sources may put in a job (``submit.check_urls(extra_schemes=...)``)."""
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def via(backend: str, url: str) -> str:
    """``url`` marked to be fetched through ``backend`` (``label-studio`` or ``v7``)."""
    return f"{backend}+{url}"


def split_via(url: str) -> tuple[str | None, str]:
    """``(backend, plain URL)`` of a marked URL; ``(None, url)`` for any other."""
    head, sep, rest = url.partition("+")
    if sep and head in (LABEL_STUDIO, V7) and rest.split(":", 1)[0].lower() in _DEFAULT_PORTS:
        return head, rest
    return None, url


def origin_of(url: str) -> Origin | None:
    """``(scheme, host, port)`` of an http(s) URL; None for anything else or a malformed URL."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        return None
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[parsed.scheme]
    return parsed.scheme, parsed.host.lower().rstrip("."), port


def host_entry(origin: Origin) -> str:
    """The ``FetchPolicy.allowed_hosts`` entry (``host:port``) for an origin."""
    _, host, port = origin
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ClosingStream(httpx.SyncByteStream):
    """A body that closes its one-request transport when the fetcher is done reading."""

    def __init__(self, stream: httpx.SyncByteStream, transport: httpx.BaseTransport) -> None:
        self._stream = stream
        self._transport = transport

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._transport.close()


class OriginAuthTransport(httpx.BaseTransport):
    """Adds ``Authorization: <header()>`` to requests for one origin only, and strips it from all others.

    The fetcher connects to the resolved IP with ``Host`` set to the original name, so the origin is read
    from the scheme, the ``Host`` header and the port. A fresh connection per request, as the fetcher wants.
    """

    def __init__(
        self,
        origin: Origin,
        header: Callable[[], str],
        *,
        inner: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self._origin = origin
        self._header = header
        self._inner = inner  # tests only: replaces the network
        self._verify = verify if verify is not None else httpx.create_ssl_context()  # built once: it is slow

    def targets_origin(self, request: httpx.Request) -> bool:
        scheme = request.url.scheme
        named = origin_of(f"{scheme}://{request.headers.get('host', '')}/")
        port = request.url.port if request.url.port is not None else _DEFAULT_PORTS.get(scheme, 0)
        return named is not None and named[:2] == self._origin[:2] and port == self._origin[2]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers.pop("Authorization", None)
        if self.targets_origin(request):
            request.headers["Authorization"] = self._header()
        if self._inner is not None:
            return self._inner.handle_request(request)
        transport = httpx.HTTPTransport(verify=self._verify)
        try:
            response = transport.handle_request(request)
        except BaseException:
            transport.close()
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ClosingStream(response.stream, transport),
            extensions=response.extensions,
        )


class BackendMediaFetcher(Fetcher):
    """The workers' fetcher: plain URLs as :class:`Fetcher` does, marked ones through their tool.

    Tool clients are built on first use from the settings and shared by the worker threads.
    """

    def __init__(self, settings: Settings, *, media_transport: httpx.BaseTransport | None = None, **kwargs: Any):
        """Build the fetcher.

        Args:
            settings: Fetch policy and the tools' URLs and keys.
            media_transport: Replaces the network for marked URLs (tests only).
            **kwargs: Passed to :class:`Fetcher` (resolver, verify, transport).
        """
        super().__init__(settings.fetch_policy(), **kwargs)
        self._settings = settings
        self._media_transport = media_transport
        self._lock = threading.Lock()
        self._label_studio: LabelStudioClient | None = None
        self._v7: Fetcher | None = None
        self._v7_origin: Origin | None = None

    def fetch(self, url: str, dest_dir: Path) -> FetchedFile:
        backend, plain = split_via(url)
        if backend == LABEL_STUDIO:
            client = self._label_studio_client()
            if not client.is_label_studio_url(plain):
                raise _refuse(plain, "not on the configured Label Studio")
            return client.download(plain, dest_dir)
        if backend == V7:
            fetcher, origin = self._v7_fetcher()
            if origin_of(plain) != origin:
                raise _refuse(plain, "not on the configured V7 API host")
            return fetcher.fetch(plain, dest_dir)
        return super().fetch(url, dest_dir)

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

    def close(self) -> None:
        with self._lock:
            if self._label_studio is not None:
                self._label_studio.close()
                self._label_studio = None


def _refuse(url: str, why: str) -> PreannotateError:
    return PreannotateError(ErrorCode.URL_NOT_ALLOWED, f"{redact_url(url)}: {why}")
