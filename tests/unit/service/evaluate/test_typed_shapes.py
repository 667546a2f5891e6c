"""The TypedDicts are checked by mypy only: these tests keep them true to the exports and the summary.

Each fixture export fits its type (extra keys allowed: the types list only what the loaders read), and
``summary.json`` holds exactly the keys its type names, with values of the named types.
"""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import numpy as np
import pytest
from pydantic import JsonValue

from service.evaluate.evaluation import CandidateJson, Summary, Thresholds, evaluate, evaluation_to_summary
from service.evaluate.exports import CocoAnnotation, CocoDocument, DarwinDocument, EncordLabelRow, LsTask
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from tests.unit.service.evaluate.fixtures import (
    coco,
    coco_results,
    darwin_box,
    darwin_item,
    darwin_masks,
    darwin_video,
    encord_box,
    encord_group,
    encord_row,
    ls_brush_task,
    ls_rect,
    ls_task,
    ls_video_task,
)

_GT = coco({"a.jpg": [("car", (0, 0, 100, 100)), ("person", (200, 0, 300, 100))], "b.jpg": [("car", (0, 0, 50, 50))]})
_MASK = np.zeros((4, 6), bool)
_MASK[1:3, 2:5] = True
_BOX = encord_box("o", ("f", "car"), (0.1, 0.1, 0.2, 0.2))


def misfits(value: Any, type_: Any, where: str = "$") -> list[str]:
    """Where ``value`` does not fit ``type_`` (a TypedDict and what it is built of); [] when it fits."""
    origin, args = get_origin(type_), get_args(type_)
    if type_ is Any or type_ is JsonValue:
        return []
    if is_typeddict(type_):
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        hints = get_type_hints(type_)
        missing = [f"{where}.{k}: missing" for k in sorted(type_.__required_keys__ - set(value))]
        return missing + [p for k, v in value.items() if k in hints for p in misfits(v, hints[k], f"{where}.{k}")]
    if origin in (Union, types.UnionType):
        return [] if any(not misfits(value, a, where) for a in args) else [f"{where}: {value!r} is not {type_}"]
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return [f"{where}: not a list"]
        return [p for i, v in enumerate(value) for p in misfits(v, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        return [p for k, v in value.items() for p in misfits(v, args[1], f"{where}.{k}")]
    if type_ is float:
        return [] if isinstance(value, int | float) and not isinstance(value, bool) else [f"{where}: not a number"]
    if type_ is type(None):
        return [] if value is None else [f"{where}: not null"]
    if type_ is int and isinstance(value, bool):
        return [f"{where}: a boolean, not an integer"]
    return [] if isinstance(value, type_) else [f"{where}: {value!r} is not {type_.__name__}"]


@pytest.mark.parametrize(
    ("type_", "doc"),
    [
        (CocoDocument, _GT),
        (list[CocoAnnotation], coco_results(_GT, {"a.jpg": [("car", (0, 0, 100, 100), 0.9)]})),
        (DarwinDocument, darwin_item("a.jpg", [darwin_box("car", (0, 0, 10, 10), confidence=0.5)], slots=("0", "1"))),
        (DarwinDocument, darwin_video("v.mp4", {0: [("t", "car", (0, 0, 9, 9))], 9: [("t", "car", (5, 5, 15, 15))]})),
        (DarwinDocument, darwin_masks("m.png", {"m1": ("car", _MASK)})),
        (EncordLabelRow, encord_row(data_hash="h", title="a", label_hash="l", objects=[_BOX])),
        (EncordLabelRow, encord_group(data_hash="g", title="g", label_hash="l", images=[[], []])),
        (LsTask, ls_task(1, "/data/local-files/?d=a.jpg", annotations=[[ls_rect("car", (0, 0, 10, 10))]])),
        (LsTask, ls_video_task(2, "v.mp4", [{"frame": 1, "enabled": True, "x": 1, "y": 1, "width": 5, "height": 5}])),
        (LsTask, ls_brush_task(3, "b.png", [("car", _MASK)])),
    ],
)  # fmt: skip
def test_fixture_exports_fit_their_types(type_: Any, doc: Any) -> None:
    assert misfits(json.loads(json.dumps(doc)), type_) == []


def test_summary_has_exactly_its_typed_keys() -> None:
    scored = coco_results(_GT, {"a.jpg": [("car", (0, 0, 100, 100), 0.9)]})
    bench = documents_to_datasets([("gt.json", _GT)], name="benchmark", role=BENCHMARK)[0]
    cands = [
        d
        for name, doc in (("scored", scored), ("human", _GT))
        for d in documents_to_datasets([(name, doc)], name=name, role=CANDIDATE, benchmark=bench)
    ]
    summary = evaluation_to_summary(evaluate(bench, cands, thresholds=Thresholds(min_f1=0.5)))

    assert misfits(summary, Summary) == []
    assert set(summary) == Summary.__required_keys__
    for candidate in summary["candidates"]:
        assert set(candidate) == CandidateJson.__required_keys__
    assert {"ap", "ap50"} <= set(summary["candidates"][0]["per_class"]["car"])  # scored: mAP per class
