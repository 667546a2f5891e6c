"""``write_atomic``: the one way the CLI and the evaluation write files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.files import write_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_mode_is_0666_less_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "a" / "b.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "b.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    write_atomic(target, b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "out.json").mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "out.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
