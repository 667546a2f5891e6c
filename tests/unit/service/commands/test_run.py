"""Item names from command-line inputs: two files of one name get the shortest path endings that differ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.commands.run import items_from_args, unique_path_suffixes
from service.errors import ErrorCode, PreannotateError


def write_png(path: Path) -> None:
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(path)


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


def test_many_paths_are_named_like_the_pairwise_definition() -> None:
    """Folders x files, some one level deeper: every name is the shortest ending no other path has (checked
    pairwise on a sample), and 30k paths take one pass per level rather than a comparison per pair."""
    paths = [f"/data/{d}/f{i}.png" for d in ("a", "b", "c") for i in range(10_000)]
    paths += [f"/data/a/x/f{i}.png" for i in range(0, 10_000, 7)] + ["/f1.png", "/other/zz.png"]
    names = unique_path_suffixes(paths)
    assert len(set(names)) == len(paths)
    for n in [*range(0, len(paths), 997), len(paths) - 2, len(paths) - 1]:
        mine = paths[n].split("/")[1:]
        others = [p.split("/")[1:] for p in paths if p != paths[n]]
        length = next((k for k in range(1, len(mine)) if all(o[-k:] != mine[-k:] for o in others)), len(mine))
        assert names[n] == "/".join(mine[-length:])


def test_a_new_name_that_clashes_with_an_unchanged_one_is_renamed_too(tmp_path: Path) -> None:
    for folder in ("a/x1", "b", "c/x1"):
        (tmp_path / folder).mkdir(parents=True)
        write_png(tmp_path / folder / "face.png")
    listing = tmp_path / "c" / "list.txt"
    listing.write_text("x1/face.png\n")
    inputs = [tmp_path / "a/x1/face.png", tmp_path / "b/face.png", Path(f"@{listing}")]
    names = [i.name for i in items_from_args(inputs, None, []).items]
    assert names == ["a/x1/face.png", "b/face.png", "c/x1/face.png"]
