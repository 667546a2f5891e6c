"""Loopback HTTP(S) servers for the fetch tests: every hit is recorded, behaviour is chosen per path."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass(frozen=True)
class Hit:
    path: str  # with the query string
    host: str | None  # the Host header


def body(data: bytes, *, status: int = 200, content_type: str = "application/octet-stream") -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def chunked(chunk: bytes, count: int, *, delay_s: float = 0.0) -> Route:
    """A body with no Content-Length, sent in ``count`` chunks."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        with contextlib.suppress(OSError):  # the client hangs up once it has had enough
            for _ in range(count):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                h.wfile.flush()
                time.sleep(delay_s)
            h.wfile.write(b"0\r\n\r\n")

    return route


def declares(length: int, *, stall_s: float = 5.0) -> Route:
    """Announce ``length`` bytes, then send nothing: a client that waits for the body times out."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        h.wfile.flush()
        time.sleep(stall_s)

    return route


def stall(seconds: float) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)

    return route


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        srv = self.server
        srv.owner.hits.append(Hit(self.path, self.headers.get("Host")))
        srv.owner.routes.get(self.path.split("?")[0], body(b"canary"))(self)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default 5 drops connections in the concurrency test
    owner: LoopServer

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if self.owner.tls is not None:  # handshake in the request thread, not the accept loop
            request = self.owner.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failed handshakes are expected in the TLS tests


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


@dataclass
class LoopServer:
    """An HTTP server on one loopback address; unknown paths answer ``canary``."""

    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        cls = _HTTPServer6 if ":" in self.host else _HTTPServer
        self._server = cls((self.host, self.port), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def try_server(host: str, port: int = 0) -> LoopServer | None:
    """A server on ``host``, or None where that address cannot be bound (no IPv6, no 127.0.0.2)."""
    try:
        return LoopServer(host, port)
    except OSError:
        return None


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path, hostname: str) -> Certs | None:
    """A throwaway CA and a leaf for ``hostname`` (DNS name only, no IP), or None without the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ca, ca_key, cert, key, csr = (directory / n for n in ("ca.pem", "ca.key", "leaf.pem", "leaf.key", "leaf.csr"))
    ext = directory / "leaf.ext"
    ext.write_text(
        f"subjectAltName=DNS:{hostname}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=test-ca", *ca_ext],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={hostname}"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", "2", "-days", "2"],
    ]
    steps[-1] += ["-out", cert, "-extfile", ext]
    for step in steps:
        subprocess.run([str(a) for a in step], check=True, capture_output=True)
    return Certs(ca=ca, cert=cert, key=key)


@contextlib.contextmanager
def tls_server(certs: Certs, sni_seen: list[str | None]) -> Iterator[LoopServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.cert, certs.key)
    ctx.sni_callback = lambda _sock, name, _ctx: sni_seen.append(name)
    server = LoopServer("127.0.0.1", tls=ctx)
    try:
        yield server
    finally:
        server.close()
