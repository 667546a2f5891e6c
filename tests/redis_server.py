"""A real ``redis-server`` for tests (reliability.md §2): a unix socket in a short temp dir, or loopback TCP.

Nothing listens beyond this machine: the default is a unix socket (``--port 0`` means no TCP listener),
so there are no port races and a restart comes back at the same address. With ``appendonly`` the data
survives ``kill()`` + ``start()`` (``appendfsync always``: not even the last second is lost).

Without the binary the tests that need it skip, unless ``PREANNOTATE_REQUIRE_REDIS=1`` (CI), which turns
the skip into a failure so a missing package cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.integration.servers import free_port


def redis_server_binary() -> str:
    """The ``redis-server`` path; skips the test (or fails it when required) if it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server is not installed (apt-get install -y --no-install-recommends redis-server)"
        if os.environ.get("PREANNOTATE_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class RedisServer:
    """One ``redis-server`` process that tests can stop, kill and start again on the same address.

    Args:
        tcp: Listen on a free 127.0.0.1 port instead of a unix socket.
        appendonly: AOF with fsync on every write, for crash and restart tests; off = in memory only.
    """

    def __init__(self, *, tcp: bool = False, appendonly: bool = False) -> None:
        # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
        self.root = Path(tempfile.mkdtemp(prefix="pa-redis-"))
        self.socket = self.root / "redis.sock"
        self.port = free_port() if tcp else 0
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket}?db=0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def start(self, timeout_s: float = 10.0) -> None:
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--dir", str(self.root),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "yes",
        ]  # fmt: skip
        args += ["--bind", "127.0.0.1"] if self.port else ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        with (self.root / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with self.client() as c:
                    if c.ping():
                        return
            except redis.RedisError:  # not listening yet, or still loading the AOF
                time.sleep(0.02)
        raise TimeoutError(f"redis-server not ready after {timeout_s} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL, as in a crash (the AOF keeps every acknowledged write)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: redis-server flushes and exits."""
        self._signal(signal.SIGTERM)

    def restart(self) -> None:
        self.kill()
        self.start()

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        if self.socket.exists():
            self.socket.unlink()  # a killed server leaves it behind

    def log(self) -> str:
        path = self.root / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running_redis(*, tcp: bool = False, appendonly: bool = False) -> Iterator[RedisServer]:
    """A started server, killed and deleted afterwards."""
    server = RedisServer(tcp=tcp, appendonly=appendonly)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
