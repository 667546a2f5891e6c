"""The only way the service reads client-supplied URLs: SSRF-guarded, IP-pinned, size- and time-limited.

Every hop is checked (scheme, userinfo, port), resolved once, and refused if any address is not public, then
the request goes to that exact address with Host and TLS SNI set to the original name, so a DNS answer that
changes between check and connect (rebinding) cannot steer it. Redirects are followed by hand. Log lines and
error messages carry only ``redact_url(url)``: presigned URLs hold their credentials in the query string.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import httpx

from service.errors import ErrorCode, PreannotateError
from service.pipeline.s3_client import make_s3_client, s3_error_code

logger = logging.getLogger(__name__)
# httpx logs every request URL at INFO and httpcore response headers (Location) at DEBUG: query strings included.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

Resolver = Callable[[str, int], list[str]]
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 16
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
# Refused even for allow-listed hosts: no object store lives there.
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: the embedding varies, refuse it whole
_DENIED_NAMES = frozenset({"localhost", "metadata", "metadata.google.internal", "instance-data"})


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """What a client-supplied URL may reach.

    Attributes:
        local_roots: ``file://`` URLs may read only under these (resolved, symlinks followed).
        allowed_hosts: Exact host names (case-insensitive, IDNA ``xn--`` form), or ``host:port`` (IPv6 as
            ``[::1]:8080``), exempt from the private-address block, the default-port rule and the https-to-http
            downgrade rule: on-prem object stores. Metadata and unspecified addresses stay refused.
        allowed_buckets: ``s3://`` buckets we read with our own credentials; none by default (confused deputy).
        extra_ports: Ports accepted for any host besides the scheme's default.
        max_bytes: Largest body accepted.
        connect_timeout_s: Per connection attempt.
        read_timeout_s: Longest wait for any read.
        total_timeout_s: Deadline for the whole fetch; checked between reads, so it may overrun by one read timeout.
        max_redirects: Redirects followed by hand; one more is refused with ``URL_NOT_ALLOWED``.
    """

    local_roots: tuple[Path, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    allowed_buckets: frozenset[str] = frozenset()
    extra_ports: frozenset[int] = frozenset()
    max_bytes: int = 2 * 1024**3
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 600.0
    max_redirects: int = 3


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A fetched body on local disk; ``temporary`` is False for ``file://`` (never delete the user's file)."""

    path: Path
    size_bytes: int
    content_type: str | None
    temporary: bool


def system_resolver(host: str, port: int) -> list[str]:
    """A and AAAA records of ``host`` via ``getaddrinfo``, deduplicated, in the system's preference order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path#<sha256 prefix of the full URL>``: no userinfo, query or fragment.

    Safe for logs and error messages; the hash still tells two URLs apart. Never raises.
    """
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"<malformed url>#{digest}"
    if parts.scheme not in ("http", "https", "s3", "file"):
        # data:, javascript: ... carry their payload in the "path".
        return f"{parts.scheme or '<no scheme>'}:...#{digest}"
    host = parts.netloc.rpartition("@")[2].lower()
    path = parts.path if len(parts.path) <= 200 else parts.path[:200] + "..."
    text = _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", f"{parts.scheme}://{host}{path}")
    return f"{text}#{digest}"


def _refuse(red: str, why: str) -> PreannotateError:
    return PreannotateError(ErrorCode.URL_NOT_ALLOWED, f"{red}: {why}")


def _embedded_v4(ip: _IP) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address tunnels to: mapped, 6to4, Teredo (server and client), NAT64."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def _is_public(ip: _IP) -> bool:
    if ip in _METADATA or ip in _NAT64_LOCAL or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED):
        return False
    special = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
    return ip.is_global and not special and not ip.is_unspecified and all(map(_is_public, _embedded_v4(ip)))


def _never_allowed(ip: _IP) -> bool:
    return ip.is_unspecified or any(a in _METADATA for a in (ip, *_embedded_v4(ip)))


@dataclass(frozen=True, slots=True)
class _Hop:
    url: httpx.URL
    host: str  # ASCII (IDNA) form, no brackets: what we resolve and send as SNI
    port: int
    allowed: bool
    where: str  # "the URL" or "the redirect to <redacted>", for messages


def local_path(url: str, roots: Sequence[Path]) -> Path:
    """The file a ``file://`` URL names, symlinks and ``..`` resolved, if it lies under one of ``roots``
    (already resolved); it may not exist.

    Raises:
        PreannotateError: ``URL_NOT_ALLOWED`` for a host, a relative or malformed path, or one outside ``roots``.
    """
    red = redact_url(url)
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _refuse(red, "file URLs must not name a host")
    raw = unquote(parts.path)
    if not raw.startswith("/"):
        raise _refuse(red, "file URLs need an absolute path")
    try:
        path = Path(raw).resolve()  # follows symlinks and "..": the check below sees the real target
    except (OSError, ValueError, RuntimeError):
        raise _refuse(red, "malformed path") from None
    if not any(path.is_relative_to(root) for root in roots):
        raise _refuse(red, "the path is outside the allowed local roots")
    return path


class Fetcher:
    """Fetch ``https``, ``http``, ``s3`` and ``file`` URLs under a :class:`FetchPolicy`; thread-safe."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Build a fetcher.

        Args:
            policy: What may be reached.
            resolver: ``(host, port) -> IP strings``; called exactly once per hop.
            verify: TLS context trusting a private CA; default: certifi's bundle, hostname checks on.
            transport: Replaces the network (tests only).
        """
        self._policy = policy
        self._resolver = resolver
        self._ssl = verify if verify is not None else httpx.create_ssl_context()
        self._transport = transport
        self._allowed = frozenset(h.lower().rstrip(".") for h in policy.allowed_hosts)
        self._roots = tuple(root.resolve() for root in policy.local_roots)
        self._s3: Any = None
        self._s3_lock = threading.Lock()

    def fetch(self, url: str, dest_dir: Path, *, deadline_s: float | None = None) -> FetchedFile:
        """Fetch ``url`` into a new file in ``dest_dir`` (or return the local path of a ``file://`` URL).

        ``deadline_s`` (``time.monotonic()``) ends the fetch earlier than the policy's ``total_timeout_s`` would:
        a caller's own deadline (a preview's), so no download outlives the request that wanted it.

        Raises:
            PreannotateError: ``URL_NOT_ALLOWED``, ``INPUT_NOT_FOUND``, ``FILE_TOO_LARGE``, ``FETCH_TIMEOUT``,
                ``FETCH_FAILED`` or ``MISSING_DEPENDENCY``; the message names the URL redacted.
        """
        red = redact_url(url)
        started = time.monotonic()
        deadline = started + self._policy.total_timeout_s
        if deadline_s is not None:
            deadline = min(deadline, deadline_s)
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        try:
            if scheme == "file":
                got = self._fetch_file(url, red)
            elif scheme == "s3":
                got = self._fetch_s3(url, red, dest_dir, deadline)
            elif scheme in _DEFAULT_PORTS:
                got = self._fetch_http(url, red, dest_dir, deadline)
            else:
                raise _refuse(red, "only https, http, s3 and file URLs are accepted")
        except PreannotateError as exc:
            level = logging.WARNING if exc.code is ErrorCode.URL_NOT_ALLOWED else logging.INFO
            logger.log(level, "fetch failed: %s", exc)
            raise
        logger.info("fetched %s: %d bytes in %.2f s", red, got.size_bytes, time.monotonic() - started)
        return got

    # -- http(s) ---------------------------------------------------------------------------------------------------

    def _fetch_http(self, url: str, red: str, dest_dir: Path, deadline: float) -> FetchedFile:
        hop = self._check(url, red, from_https=False)
        suffix = _suffix(hop.url.path)
        for count in range(self._policy.max_redirects + 1):
            ip = self._resolve(hop, red)
            logger.debug("fetch %s: hop %d %s via %s", red, count, redact_url(str(hop.url)), ip)
            try:
                with (
                    self._client(deadline, red) as client,
                    client.stream(
                        "GET",
                        hop.url.copy_with(host=ip, fragment=None),  # pinned: no second lookup
                        headers={"Host": hop.url.netloc.decode("ascii"), "Accept-Encoding": "identity"},
                        extensions={"sni_hostname": hop.host},
                    ) as resp,
                ):
                    if resp.status_code not in _REDIRECTS:
                        _raise_for_status(resp.status_code, red)
                        return self._save(resp, red, dest_dir, suffix or _suffix(hop.url.path), deadline)
                    location = resp.headers.get("location")
            except httpx.InvalidURL:  # httpx parses a Location for its own (unused) next_request
                raise _refuse(red, "malformed redirect") from None
            except httpx.TimeoutException:
                raise PreannotateError(ErrorCode.FETCH_TIMEOUT, f"{red}: the server did not answer in time") from None
            except httpx.HTTPError as exc:
                detail = _scrub(f"{type(exc).__name__}: {exc}", url, str(hop.url))
                raise PreannotateError(ErrorCode.FETCH_FAILED, f"{red}: connection failed ({detail})") from None
            if not location:
                raise PreannotateError(ErrorCode.FETCH_FAILED, f"{red}: redirect without a Location")
            if count == self._policy.max_redirects:
                raise _refuse(red, f"more than {self._policy.max_redirects} redirects")
            hop = self._check(location, red, from_https=hop.url.scheme == "https", base=hop.url)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, raw: str, red: str, *, from_https: bool, base: httpx.URL | None = None) -> _Hop:
        """Scheme, userinfo, host and port rules for one hop (``raw`` relative to ``base``); no network."""
        where = "the URL" if base is None else f"the redirect to {redact_url(raw)}"
        try:
            url = httpx.URL(raw) if base is None else base.join(raw)
            host = url.raw_host.decode("ascii").lower()
        except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
            raise _refuse(red, f"{where}: malformed URL") from None
        if url.scheme not in _DEFAULT_PORTS:
            raise _refuse(red, f"{where}: only https and http may follow a redirect")
        if url.userinfo:
            raise _refuse(red, f"{where}: credentials in URLs are not accepted")
        if not host or "%" in host:
            raise _refuse(red, f"{where}: malformed host")
        default = _DEFAULT_PORTS[url.scheme]
        port = default if url.port is None else url.port
        name = host.rstrip(".")
        bracketed = f"[{name}]" if ":" in name else name
        allowed = name in self._allowed or f"{bracketed}:{port}" in self._allowed
        if port != default and not allowed and port not in self._policy.extra_ports:
            raise _refuse(red, f"{where}: port {port} is not allowed")
        if from_https and url.scheme == "http" and not allowed:
            raise _refuse(red, f"{where}: https to http downgrade")
        if not allowed and (name in _DENIED_NAMES or name.endswith(".localhost")):
            raise _refuse(red, f"{where}: host name not allowed")
        return _Hop(url=url, host=host, port=port, allowed=allowed, where=where)

    def _resolve(self, hop: _Hop, red: str) -> str:
        """Resolve once and validate every record; the first one is where we connect."""
        try:
            records = self._resolver(hop.host, hop.port)
            ips = [ipaddress.ip_address(r) for r in records]
        except (OSError, UnicodeError):
            raise PreannotateError(ErrorCode.FETCH_FAILED, f"{red}: cannot resolve the host") from None
        except ValueError:
            raise _refuse(red, f"{hop.where}: the resolver returned something that is not an address") from None
        if not ips:
            raise PreannotateError(ErrorCode.FETCH_FAILED, f"{red}: the host has no address")
        bad = [ip for ip in ips if _never_allowed(ip) or not (hop.allowed or _is_public(ip))]
        if bad:
            # The addresses go to our log only: in the client's message they would map the internal network.
            logger.warning("fetch %s: %s resolves to refused %s", red, hop.host, ", ".join(map(str, bad)))
            raise _refuse(red, f"{hop.where}: the host resolves to a non-public address")
        return str(ips[0])

    def _client(self, deadline: float, red: str) -> httpx.Client:
        # A fresh client per hop: no connection (verified for another SNI name) or cookie crosses hops.
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PreannotateError(ErrorCode.FETCH_TIMEOUT, f"{red}: total deadline exceeded")
        p = self._policy
        connect, read = min(p.connect_timeout_s, remaining), min(p.read_timeout_s, remaining)
        return httpx.Client(
            verify=self._ssl,
            timeout=httpx.Timeout(connect=connect, read=read, write=read, pool=connect),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would resolve the name itself: no pinning
            transport=self._transport,
        )

    def _save(self, resp: httpx.Response, red: str, dest_dir: Path, suffix: str, deadline: float) -> FetchedFile:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._policy.max_bytes:
            raise _too_large(red, self._policy.max_bytes)
        # Decoded (a gzip bomb counts inflated); no chunk_size: httpx would buffer and delay the deadline check.
        chunks = resp.iter_bytes()
        path, size = self._write(chunks, red, dest_dir, suffix, deadline)
        return FetchedFile(path, size, resp.headers.get("content-type"), temporary=True)

    def _write(
        self, chunks: Iterable[bytes], red: str, dest_dir: Path, suffix: str, deadline: float
    ) -> tuple[Path, int]:
        """Stream into a temp file named from a hash (never the URL path), deleted on any failure."""
        digest = red.rpartition("#")[2]
        fd, name = tempfile.mkstemp(prefix=f"fetch-{digest}-", suffix=suffix, dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                return Path(name), _copy(chunks, fh, red, self._policy.max_bytes, deadline)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    # -- file and s3 -----------------------------------------------------------------------------------------------

    def _fetch_file(self, url: str, red: str) -> FetchedFile:
        path = local_path(url, self._roots)
        try:
            info = path.stat()
        except OSError:
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{red}: no such file") from None
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would hang the reader
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{red}: not a regular file")
        if info.st_size > self._policy.max_bytes:
            raise _too_large(red, self._policy.max_bytes)
        return FetchedFile(path, info.st_size, None, temporary=False)

    def _fetch_s3(self, url: str, red: str, dest_dir: Path, deadline: float) -> FetchedFile:
        parts = urlsplit(url)
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if "@" in bucket or bucket not in self._policy.allowed_buckets:
            raise _refuse(red, "bucket not allowed")
        if not key:
            raise _refuse(red, "no object key")
        try:
            obj = self._s3_client().get_object(Bucket=bucket, Key=key)
        except PreannotateError:
            raise
        except Exception as exc:  # botocore's ClientError and transport errors, without importing botocore here
            code = s3_error_code(exc)
            err = ErrorCode.INPUT_NOT_FOUND if code in ("NoSuchKey", "NoSuchBucket", "404") else ErrorCode.FETCH_FAILED
            raise PreannotateError(err, f"{red}: S3 error {code}") from None
        body = obj["Body"]
        try:
            if int(obj.get("ContentLength", 0)) > self._policy.max_bytes:
                raise _too_large(red, self._policy.max_bytes)
            path, size = self._write(body.iter_chunks(_CHUNK), red, dest_dir, _suffix(parts.path), deadline)
        finally:
            body.close()
        return FetchedFile(path, size, obj.get("ContentType"), temporary=True)

    def _s3_client(self) -> Any:
        with self._s3_lock:  # one client, made once, shared by every thread
            if self._s3 is None:
                p = self._policy
                self._s3 = make_s3_client(
                    needed_for="s3:// URLs", connect_timeout_s=p.connect_timeout_s, read_timeout_s=p.read_timeout_s
                )
            return self._s3


def _copy(chunks: Iterable[bytes], fh: BinaryIO, red: str, max_bytes: int, deadline: float) -> int:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(red, max_bytes)
        if time.monotonic() > deadline:
            raise PreannotateError(ErrorCode.FETCH_TIMEOUT, f"{red}: total deadline exceeded")
        fh.write(chunk)
    return size


def _raise_for_status(status: int, red: str) -> None:
    if 200 <= status < 300:
        return
    if status in (404, 410):
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{red}: not found upstream (HTTP {status})")
    if status in (401, 403):
        raise PreannotateError(ErrorCode.FETCH_DENIED, f"{red}: access denied upstream (HTTP {status})")
    raise PreannotateError(ErrorCode.FETCH_FAILED, f"{red}: upstream answered HTTP {status}")


def _too_large(red: str, max_bytes: int) -> PreannotateError:
    return PreannotateError(ErrorCode.FILE_TOO_LARGE, f"{red}: larger than {max_bytes} bytes")


def _suffix(url_path: str) -> str:
    suffix = PurePosixPath(unquote(url_path)).suffix
    return suffix.lower() if _SUFFIX.match(suffix) else ""


def _scrub(text: str, *urls: str) -> str:
    """Drop query strings from a library's error text, should one ever echo the URL."""
    for url in urls:
        query = urlsplit(url).query
        if query:
            text = text.replace(query, "<redacted>")
    return text
