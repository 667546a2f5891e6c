"""Items pair by id only when the id names one item on each side; otherwise by name, as if it had none."""

from __future__ import annotations

from typing import Any

import pytest

from service.evaluate.evaluation import evaluate, evaluation_to_summary
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.pairing import pair_items
from service.evaluate.types import Dataset, Unit
from tests.unit.service.evaluate.fixtures import CAR, encord_box, encord_row

NIL = "00000000-0000-0000-0000-000000000000"


def dataset(fmt: str, *units: tuple[str, str | None] | tuple[str, str | None, str]) -> Dataset:
    """Units as (item, id) or (item, id, slot)."""
    return Dataset(
        "d", "s", fmt, units=[Unit(item=u[0], item_id=u[1], slot=u[2] if len(u) > 2 else "0") for u in units]
    )


@pytest.mark.parametrize(
    ("bench", "cand", "expected"),
    [
        # A unique id pairs across a rename (the seed's data_hash pairing).
        ([("a.jpg", "h1")], [("renamed.jpg", "h1")], [("a.jpg", "renamed.jpg")]),
        # The nil UUID is a placeholder: rows carrying it pair by name, whatever their order.
        ([("a.jpg", NIL), ("b.jpg", NIL)], [("b.jpg", NIL), ("a.jpg", NIL)], [("a.jpg", "a.jpg"), ("b.jpg", "b.jpg")]),
        ([("a.jpg", NIL)], [("z.jpg", NIL)], []),
        # An id shared by two candidate items names neither (the last one used to win): a pairs with a.
        ([("a.jpg", "h1")], [("a.jpg", "h1"), ("z.jpg", "h1")], [("a.jpg", "a.jpg")]),
        # Shared on the benchmark side: each falls back to its own name.
        ([("a.jpg", "h1"), ("b.jpg", "h1")], [("b.jpg", "h1")], [("b.jpg", "b.jpg")]),
        # Two slots of one item share its id: still one item, still unique.
        (
            [("case", "i1", "0"), ("case", "i1", "1")],
            [("case-2", "i1", "0"), ("case-2", "i1", "1")],
            [("case", "case-2")],
        ),
    ],
)
def test_pair_items_by_unique_id_then_name(
    bench: list[tuple[Any, ...]], cand: list[tuple[Any, ...]], expected: list[tuple[str, str]]
) -> None:
    assert sorted(pair_items(dataset("encord", *bench), dataset("encord", *cand))) == expected


def test_ids_of_different_tools_are_never_compared() -> None:
    assert pair_items(dataset("darwin", ("a.jpg", "7")), dataset("label_studio", ("b.jpg", "7"))) == []


def test_encord_rows_with_the_nil_data_hash_do_not_collapse() -> None:
    def rows() -> list[dict[str, Any]]:
        return [
            encord_row(
                data_hash=NIL, title="a.jpg", label_hash="la", objects=[encord_box("A", CAR, (0.1, 0.1, 0.2, 0.2))]
            ),
            encord_row(
                data_hash=NIL, title="b.jpg", label_hash="lb", objects=[encord_box("B", CAR, (0.5, 0.5, 0.2, 0.2))]
            ),
        ]

    b = documents_to_datasets([("b.json", rows())], name="benchmark", role=BENCHMARK)[0]
    c = documents_to_datasets([("c.json", rows())], name="c", role=CANDIDATE, benchmark=b)[0]
    s = evaluation_to_summary(evaluate(b, [c], iou_threshold=0.5))
    # Before: both candidate rows had id NIL, the last (b.jpg) took a.jpg's place: TP 0, FP 1, FN 2.
    assert (s["tp"], s["fp"], s["fn"]) == (2, 0, 0)
    assert s["items"]["missing_in_candidate"] == []
