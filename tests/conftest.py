"""Shared fixtures: media generated at test time (nothing downloaded), markers by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import CLIPS, ClipSpec, make_clip


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
