"""Shared fixtures: media generated at test time (nothing downloaded), markers by path."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.media import CLIPS, ClipSpec, make_clip
from tests.s3_server import UNSET_ENV, MotoServer, S3Bucket, boto3_client, client_env, running_moto

# The default model is builtin:nanodet once fetched into the model directory: tests (and the servers and CLIs they
# start, which inherit this) get an empty one, so a fetch on this machine changes no test's default.
# The NanoDet tests name their fetched directory themselves (tests/nanodet_model.py).
os.environ["PREANNOTATE_MODEL_DIR"] = _EMPTY_MODEL_DIR = tempfile.mkdtemp(prefix="preannotate-test-models-")
atexit.register(shutil.rmtree, _EMPTY_MODEL_DIR, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/gpu/" in str(item.path):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def clips(clip_dir: Path) -> dict[str, Path]:
    """Every named test clip, encoded once per session."""
    return {name: make_clip(clip_dir, spec) for name, spec in CLIPS.items()}


@pytest.fixture(scope="session")
def clip_specs() -> dict[str, ClipSpec]:
    return CLIPS


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """A real S3-compatible server (moto's server mode, a subprocess), started once per session."""
    with running_moto() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A new bucket per test, with the AWS_* environment set so any boto3 client in the process reaches it."""
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in client_env(s3_server.endpoint).items():
        monkeypatch.setenv(name, value)
    client = boto3_client(s3_server.endpoint)
    bucket = f"pa-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3Bucket(bucket, s3_server.endpoint, client)
