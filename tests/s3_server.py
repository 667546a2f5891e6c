"""A real S3-compatible server for tests: moto's server mode as a subprocess on loopback (issue 13).

Clients reach it as users reach MinIO, through ``AWS_ENDPOINT_URL_S3`` (path-style) with any keys, so the code
under test runs its real boto3 client over HTTP: nothing in the test process is patched. The server keeps its
buckets in memory; ``kill()`` loses them, which is what an unreachable store looks like to a client.

Without moto's server extra the tests that need it skip, unless ``PREANNOTATE_REQUIRE_S3=1`` (CI), which turns the
skip into a failure so a missing package cannot pass silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.servers import free_port

# Any keys do for moto; distinctive ones let tests assert that no message ever carries them.
ACCESS_KEY_ID = "AKIATESTKEYNEVERSHOWN"
SECRET_ACCESS_KEY = "test-secret-never-shown-" + "s" * 16
REGION = "us-east-1"
# Whatever the developer's shell holds must not steer a test's client elsewhere (a profile, a session token).
UNSET_ENV = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN")


def require_moto_server() -> None:
    """Skip the test (or fail it when required) unless ``moto[server]`` and boto3 are installed."""
    missing = [m for m in ("moto", "flask", "flask_cors", "boto3") if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (pip install 'moto[server]==5.2.6' boto3)"
        if os.environ.get("PREANNOTATE_REQUIRE_S3") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def client_env(endpoint: str) -> dict[str, str]:
    """The environment a boto3 client needs to reach ``endpoint`` as a MinIO-style store."""
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,  # not ~/.aws: no profile's endpoint, retries or credentials
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def boto3_client(endpoint: str) -> Any:
    """A plain boto3 S3 client for ``endpoint`` with the test keys, whatever the environment holds (to arrange
    buckets and check objects from the test's side)."""
    import boto3  # lazily: require_moto_server() skipped the test where it is missing

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )


@dataclass(frozen=True)
class S3Bucket:
    """A fresh, empty bucket (the ``s3_bucket`` fixture); ``client`` is a plain boto3 client to arrange and check."""

    name: str
    endpoint: str
    client: Any


class MotoServer:
    """One ``python -m moto.server`` process on a free 127.0.0.1 port; tests may stop or kill it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pa-moto-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start_s: float | None = None  # how long the last start() took (the report quotes it)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        require_moto_server()
        started = time.monotonic()
        with (self.root / "moto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto.server exited with {self.process.returncode}:\n{self.log()}")
            try:
                # moto's own API answers once the app (and every service backend) is loaded.
                if httpx.get(f"{self.endpoint}/moto-api/data.json", timeout=1.0).status_code == 200:
                    self.start_s = time.monotonic() - started
                    return
            except httpx.TransportError:  # not listening yet
                time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"moto.server not ready after {timeout_s} s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the buckets are gone with it."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        path = self.root / "moto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running_moto() -> Iterator[MotoServer]:
    """A started server, killed and deleted afterwards."""
    server = MotoServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@contextmanager
def denying(bucket: S3Bucket, action: str) -> Iterator[None]:
    """The bucket refuses ``action`` (``s3:PutObject``, ``s3:*``) on its objects to everyone, until the block ends:
    moto checks keys only with its IAM emulation on, so a bucket policy is the portable refusal."""
    statement = {"Effect": "Deny", "Principal": "*", "Action": action, "Resource": f"arn:aws:s3:::{bucket.name}/*"}
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    bucket.client.put_bucket_policy(Bucket=bucket.name, Policy=json.dumps(policy))
    try:
        yield
    finally:
        bucket.client.delete_bucket_policy(Bucket=bucket.name)
