"""``iou_results.csv`` exactly as Encord's annotator-training script computes it, for teams that consume it.

The script's semantics, kept on purpose (``summary.json`` has the correct figures):
- per paired label row, each candidate bounding box **on frame 0** takes the benchmark box with the highest IoU,
  class-agnostically; a benchmark box can be "best" for any number of candidate boxes (duplicates score twice);
- benchmark boxes no candidate box picked (misses) produce no row; only bounding boxes (not rotatable boxes,
  polygons or masks) and only frame 0 are read;
- IoU uses the boxes' own top-left x, y, w, h units (Encord's 0..1), ``>`` so the first best wins, and no
  match at all (IoU 0) gives class_score 0;
- class_score is 1.0 when the best match has the candidate's featureHash (the class name outside Encord);
- rows follow the candidate's rows, and within one the SDK's ``get_object_instances()`` order;
- an image group is read on its image 0 only (frame 0 of the row), under its plain ``data_title``.
Differences: objects absent from frame 0 are skipped (the script crashes on them, ``get_annotation(0)``
raises), and ``training_email`` falls back to the candidate's name when an object has no creator.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from service.evaluate.pairing import Pairing
from service.evaluate.types import BoxXYWH, Shape, ShapeKind, Unit

SEED_COLUMNS = ("training_email", "data_unit_name", "label_id", "iou_score", "class_score")


@dataclass(frozen=True, slots=True)
class SeedRow:
    training_email: str
    data_unit_name: str
    label_id: str
    iou_score: float
    class_score: float


def seed_iou(a: BoxXYWH, b: BoxXYWH) -> float:
    """The script's ``calculate_iou`` on top-left x, y, w, h, operation for operation (same float result)."""
    x_left = max(a[0], b[0])
    y_top = max(a[1], b[1])
    x_right = min(a[0] + a[2], b[0] + b[2])
    y_bottom = min(a[1] + a[3], b[1] + b[3])
    intersection = max(0, x_right - x_left) * max(0, y_bottom - y_top)
    union = a[2] * a[3] + b[2] * b[3] - intersection
    return intersection / union if union > 0 else 0.0


def _frame0_boxes(unit: Unit) -> list[Shape]:
    """Bounding boxes on frame 0, in the order objects first appear in the row (the SDK's instance order)."""
    on_frame0 = {s.object_id: s for s in unit.frames.get(0, []) if s.kind is ShapeKind.BOX and s.box_src is not None}
    return [on_frame0[oid] for oid in unit.object_order if oid in on_frame0]


def _box(shape: Shape, unit: Unit, other: Unit) -> BoxXYWH:
    """The source units when both sides share them (bit-exact with the script); pixels otherwise."""
    if unit.src_units == other.src_units and shape.box_src is not None:
        return shape.box_src
    x1, y1, x2, y2 = shape.xyxy
    return (x1, y1, x2 - x1, y2 - y1)


def unit_pairs_to_seed_rows(
    pairs: Iterable[tuple[Unit, Unit]], *, candidate_name: str, multi_slot_items: frozenset[str] = frozenset()
) -> list[SeedRow]:
    """The script's rows for (benchmark unit, candidate unit) pairs given in the candidate's order."""
    rows: list[SeedRow] = []
    for bench, cand in pairs:
        bench_boxes = _frame0_boxes(bench)
        name = cand.title  # Encord's data_title, even when empty, as the script writes it
        if cand.item in multi_slot_items:
            name = f"{name}/{cand.slot}"
        for prod in _frame0_boxes(cand):
            best_iou, best_key = 0.0, None
            prod_box = _box(prod, cand, bench)
            for bm in bench_boxes:
                iou = seed_iou(prod_box, _box(bm, bench, cand))
                if iou > best_iou:
                    best_iou, best_key = iou, bm.class_key
            class_score = 1.0 if best_key == prod.class_key and best_key is not None else 0.0
            email = prod.created_by if prod.created_by is not None else candidate_name
            rows.append(SeedRow(email, name, cand.label_id or "", best_iou, class_score))
    return rows


def pairing_to_seed_rows(pairing: Pairing, *, candidate_name: str) -> list[SeedRow]:
    # An Encord image group is one row to the script, which reads its image 0 only (frame 0 of the row):
    # the other images' units are left out, and the row keeps its plain data_title.
    pairs = [(b, c) for b, c in pairing.candidate_order if b.in_seed and c.in_seed]
    items: dict[str, int] = {}
    for _, cand in pairs:
        items[cand.item] = items.get(cand.item, 0) + 1
    multi = frozenset(item for item, n in items.items() if n > 1)
    return unit_pairs_to_seed_rows(pairs, candidate_name=candidate_name, multi_slot_items=multi)


def seed_rows_to_csv(rows: Sequence[SeedRow]) -> str:
    """CSV text as ``pandas.DataFrame.to_csv(index=False)`` writes it: header, ``\\n`` line ends, minimal quoting,
    floats as ``repr`` (``0.30000000000000004``, ``1.0``), and empty cells for missing text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SEED_COLUMNS)
    for r in rows:
        writer.writerow([r.training_email, r.data_unit_name, r.label_id, repr(float(r.iou_score)), repr(r.class_score)])
    return out.getvalue()
