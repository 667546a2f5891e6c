"""Fixtures for the integration tests that need a real server of another tool."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cvat_server import CvatServer, running_cvat


@pytest.fixture(scope="session")
def cvat() -> Iterator[CvatServer]:
    """A real CVAT 2.23.1 (tests/cvat_server.py): the running one, else started for the session and stopped after."""
    with running_cvat() as server:
        yield server
