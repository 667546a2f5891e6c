"""darwin-py 3.6.3's parser (``parse_path``, ``parse_darwin_json``) reads our Darwin JSON 2.0 masks: polygons and
raster layers, on images and videos. It runs in its own venv (tests/integration/darwin_py.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from service.convert.darwin import item_to_darwin
from service.convert.darwin_types import DarwinMaskStyle
from tests.builders import masked_item
from tests.integration.darwin_py import darwin_py_parse
from tests.unit.service.convert.test_darwin import MODEL


def _write(
    tmp_path: Path, style: DarwinMaskStyle, *, track: bool, video_first: bool = False
) -> tuple[Path, dict[str, Any]]:
    """The masked item's file; ``video_first`` lists the clip slot first."""
    item = masked_item(track=track)
    if video_first:
        item = replace(item, slots=item.slots[::-1])
    doc = json.loads(json.dumps(item_to_darwin(item, MODEL, masks=style)))
    path = tmp_path / f"{style}-{track}-{video_first}.json"
    path.write_text(json.dumps(doc))
    return path, doc


@pytest.mark.parametrize("track", [True, False])
def test_darwin_py_reads_our_polygons(tmp_path: Path, track: bool) -> None:
    path, doc = _write(tmp_path, "polygon", track=track)
    (parsed,) = darwin_py_parse([path])
    assert parsed["same"]
    assert parsed["is_video"] is False  # the first slot is the photo: darwin-py keys video on the first slot
    got = {a["id"]: a for a in parsed["annotations"]}
    assert len(got) == len(doc["annotations"])
    for ours in doc["annotations"]:
        theirs = got[ours["id"]]
        assert (theirs["name"], theirs["slot_names"]) == (ours["name"], ours["slot_names"])
        if "frames" in ours:
            assert theirs["type"] == "polygon"
            assert set(theirs["frames"]) == set(ours["frames"])
            for index, frame in ours["frames"].items():
                assert theirs["frames"][index]["type"] == "polygon"
                assert theirs["frames"][index]["data"]["paths"] == frame["polygon"]["paths"]
                assert theirs["keyframes"][index] is True
        elif "polygon" in ours:
            assert theirs["type"] == "polygon"
            assert theirs["data"]["paths"] == ours["polygon"]["paths"]
        else:
            assert theirs["type"] == "bounding_box"


@pytest.mark.parametrize("track", [True, False])
def test_darwin_py_reads_our_masks_and_raster_layers(tmp_path: Path, track: bool) -> None:
    path, doc = _write(tmp_path, "raster", track=track)
    (parsed,) = darwin_py_parse([path])
    got = {a["id"]: a for a in parsed["annotations"]}
    assert len(got) == len(doc["annotations"])
    layers = [a for a in doc["annotations"] if a["name"] == "__raster_layer__"]
    assert len(layers) == 2  # one per slot
    for ours in layers:
        theirs = got[ours["id"]]
        assert theirs["type"] == "raster_layer"
        if "frames" in ours:
            for index, frame in ours["frames"].items():
                data = theirs["frames"][index]["data"]
                assert data["dense_rle"] == frame["raster_layer"]["dense_rle"]
                assert data["mask_annotation_ids_mapping"] == frame["raster_layer"]["mask_annotation_ids_mapping"]
                assert data["total_pixels"] == frame["raster_layer"]["total_pixels"]
        else:
            assert theirs["data"]["dense_rle"] == ours["raster_layer"]["dense_rle"]
    masks = [a for a in doc["annotations"] if "mask" in a or any("mask" in f for f in a.get("frames", {}).values())]
    assert masks
    assert all(got[a["id"]]["type"] == "mask" for a in masks)


@pytest.mark.parametrize("style", ["polygon", "raster"])
def test_darwin_py_reads_a_video_item(tmp_path: Path, style: DarwinMaskStyle) -> None:
    path, doc = _write(tmp_path, style, track=True, video_first=True)
    (parsed,) = darwin_py_parse([path])
    assert parsed["slots"][0] == "clip"  # is_video needs frame_urls, which only V7's exports carry
    assert None not in parsed["annotations"]
    assert sorted(a["id"] for a in parsed["annotations"]) == sorted(a["id"] for a in doc["annotations"])
