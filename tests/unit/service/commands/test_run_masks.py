"""``preannotate run --coco-masks / --darwin-masks``: parsed, threaded to the writers, bad values exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import build_parser
from service.commands.run import write_darwin_files
from tests.builders import masked_item
from tests.unit.service.convert.test_darwin import MODEL


def test_mask_flags_default_to_rle_and_polygon() -> None:
    args = build_parser().parse_args(["run", "a.jpg", "--out", "o.json"])
    assert (args.coco_masks, args.darwin_masks) == ("rle", "polygon")
    args = build_parser().parse_args(
        ["run", "a.jpg", "--out", "o", "--coco-masks", "polygon", "--darwin-masks", "raster"]
    )
    assert (args.coco_masks, args.darwin_masks) == ("polygon", "raster")


def test_an_unknown_mask_style_exits_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "a.jpg", "--out", "o.json", "--coco-masks", "brush"])
    assert exited.value.code == 2
    assert "--coco-masks" in capsys.readouterr().err


def test_darwin_files_are_written_with_the_chosen_mask_style(tmp_path: Path) -> None:
    write_darwin_files(tmp_path, [masked_item("case")], MODEL, masks="raster")
    (doc,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert any(a["name"] == "__raster_layer__" for a in doc["annotations"])
