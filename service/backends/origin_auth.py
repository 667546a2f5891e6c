"""HTTP transport that sends a labeling tool's credentials to that tool's own origin, and nowhere else.

Used for media a tool serves behind its key (Label Studio task files, V7 uploads). The service's
``Fetcher`` connects to the resolved, checked IP with ``Host`` set to the original name, so the origin is
read from the scheme, the ``Host`` header and the port; a redirect to cloud storage therefore carries no
key. Each request gets a fresh connection, as the fetcher wants (no connection verified for one TLS name
serves another).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin | None:
    """``(scheme, host, port)`` of an http(s) URL; None for anything else or a malformed URL."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
        return None
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme]
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
        port = request.url.port if request.url.port is not None else DEFAULT_PORTS.get(scheme, 0)
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
