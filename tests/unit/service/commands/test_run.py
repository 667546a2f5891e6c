"""Item names from command-line inputs: two files of one name get the shortest path endings that differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.commands.run import items_from_args, unique_path_suffixes
from service.errors import ErrorCode, PreannotateError


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["/a/x1/face.png", "/a/x2/face.png"], ["x1/face.png", "x2/face.png"]),
        (["/a/x1/face.png", "/b/x1/face.png"], ["a/x1/face.png", "b/x1/face.png"]),
        (["/a/x/face.png", "/a/x/y/face.png"], ["x/face.png", "y/face.png"]),
        (["/face.png", "/a/face.png"], ["face.png", "a/face.png"]),  # nothing shorter than the whole path
        (["/a/p/../x1/face.png", "/a/x2/./face.png"], ["x1/face.png", "x2/face.png"]),  # normalised: no ..
        (["/a/b/c.png", "/a/d/c.png", "/e/d/c.png"], ["b/c.png", "a/d/c.png", "e/d/c.png"]),
        (["/only.png"], ["only.png"]),
        ([], []),
    ],
)
def test_shortest_unique_suffix(paths: list[str], expected: list[str]) -> None:
    assert unique_path_suffixes(paths) == expected


def test_relative_paths_are_read_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "w").mkdir()
    monkeypatch.chdir(tmp_path / "w")
    names = unique_path_suffixes(["face.png", "../face.png", "x/face.png"])
    assert names == ["w/face.png", f"{tmp_path.name}/face.png", "x/face.png"]


def test_a_path_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"/a/face\.png: given twice"):
        unique_path_suffixes(["/a/face.png", "/a/../a/face.png"])


def test_inputs_of_one_name_are_named_by_their_folders_never_absolute() -> None:
    items = items_from_args([Path("/a/x1/face.png"), Path("/a/x2/face.png"), Path("/a/cat.png")], None, []).items
    assert [i.name for i in items] == ["x1/face.png", "x2/face.png", "cat.png"]
    with pytest.raises(PreannotateError) as exc:
        items_from_args([Path("/a/face.png"), Path("/a/face.png")], None, [])
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
