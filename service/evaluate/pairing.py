"""Line the two sides up: items by id, name/path or file name; slots by name; then frames by index."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from service.evaluate.types import Dataset, Shape, Unit

_SAME_FAMILY = {"coco_results": "coco"}
_NIL_UUID = "00000000-0000-0000-0000-000000000000"  # a placeholder id (Encord rows not yet created), not an id


@dataclass(slots=True)
class Pairing:
    """Which benchmark unit goes with which candidate unit.

    Attributes:
        pairs: every benchmark unit with its candidate unit (None when the candidate lacks it: all misses),
            in benchmark order.
        candidate_order: the paired units in candidate order (the seed CSV's row order).
        candidate_only: candidate units with no benchmark unit (not scored: they are outside the benchmark).
    """

    pairs: list[tuple[Unit, Unit | None]] = field(default_factory=list)
    candidate_order: list[tuple[Unit, Unit]] = field(default_factory=list)
    candidate_only: list[Unit] = field(default_factory=list)


def _by_item(units: list[Unit]) -> dict[str, list[Unit]]:
    items: dict[str, list[Unit]] = defaultdict(list)
    for unit in units:
        items[unit.item].append(unit)
    return items


def _basename(item: str) -> str:
    return PurePosixPath(item).name


def _unique_ids(items: dict[str, list[Unit]]) -> dict[str, str]:
    """Item id -> item, for ids that name exactly one item: a shared or placeholder id names none of them."""
    owners: dict[str, set[str]] = defaultdict(set)
    for item, units in items.items():
        for unit in units:
            if unit.item_id and unit.item_id != _NIL_UUID:
                owners[unit.item_id].add(item)
    return {item_id: next(iter(named)) for item_id, named in owners.items() if len(named) == 1}


def pair_items(benchmark: Dataset, candidate: Dataset) -> list[tuple[str, str]]:
    """(benchmark item, candidate item) pairs, found in three passes over what is still unpaired:

    1. the source's item id (Encord data_hash, Darwin item_id, LS task id), only between the same format,
       since ids of different tools never mean the same item (this is how the seed pairs Encord rows), and
       only an id unique on both sides and not the nil UUID: rows sharing one fall back to their names;
    2. the item's name/path key;
    3. the file name alone, when it is unique on both sides (``images/a.jpg`` vs ``/data/a.jpg``).
    """
    b_items, c_items = _by_item(benchmark.units), _by_item(candidate.units)
    pairs: list[tuple[str, str]] = []
    b_free, c_free = dict.fromkeys(b_items), dict.fromkeys(c_items)

    def take(b: str, c: str) -> None:
        pairs.append((b, c))
        del b_free[b], c_free[c]

    same_format = _SAME_FAMILY.get(benchmark.format, benchmark.format) == _SAME_FAMILY.get(
        candidate.format, candidate.format
    )
    if same_format:
        c_ids = _unique_ids(c_items)
        for item_id, b in _unique_ids(b_items).items():
            c = c_ids.get(item_id)
            if c is not None and b in b_free and c in c_free:
                take(b, c)
    for b in list(b_free):
        if b in c_free:
            take(b, b)
    b_names = Counter(_basename(b) for b in b_free)
    c_names = {_basename(c): c for c in c_free}
    c_counts = Counter(_basename(c) for c in c_free)
    for b in list(b_free):
        name = _basename(b)
        if b_names[name] == 1 and c_counts[name] == 1:
            take(b, c_names[name])
    return pairs


def pair_units(benchmark: Dataset, candidate: Dataset) -> Pairing:
    """Pair item slots: by slot name, or the only slot with the only slot (``"0"`` vs ``"image"``)."""
    b_items, c_items = _by_item(benchmark.units), _by_item(candidate.units)
    item_pairs = pair_items(benchmark, candidate)
    matched: dict[int, Unit] = {}
    for b_item, c_item in item_pairs:
        b_units, c_units = b_items[b_item], c_items[c_item]
        if len(b_units) == 1 and len(c_units) == 1:
            matched[id(b_units[0])] = c_units[0]
            continue
        c_slots = {u.slot: u for u in c_units}
        for unit in b_units:
            if unit.slot in c_slots:
                matched[id(unit)] = c_slots[unit.slot]
    pairing = Pairing()
    for unit in benchmark.units:
        other = matched.get(id(unit))
        if other is None:
            pairing.pairs.append((unit, None))
        else:  # whichever side only knows percent is put in the other's pixels
            pairing.pairs.append((align_units(unit, other), align_units(other, unit)))
    paired_candidates = {id(c) for c in matched.values()}
    by_candidate = {id(c): b for b in benchmark.units if (c := matched.get(id(b))) is not None}
    for unit in candidate.units:
        if id(unit) in paired_candidates:
            pairing.candidate_order.append((by_candidate[id(unit)], unit))
        else:
            pairing.candidate_only.append(unit)
    return pairing


def align_units(unit: Unit, reference: Unit) -> Unit:
    """``unit`` in pixels of ``reference`` when ``unit`` only knows percent (Label Studio video, or an export
    without ``original_width``) and the reference knows its pixel size; otherwise ``unit`` itself."""
    if unit.pixel_size_known or not (reference.pixel_size_known and reference.width and reference.height):
        return unit
    sx, sy = reference.width / 100.0, reference.height / 100.0
    frames = {f: [_scaled(s, sx, sy) for s in shapes] for f, shapes in unit.frames.items()}
    return dataclasses.replace(
        unit, width=reference.width, height=reference.height, pixel_size_known=True, frames=frames
    )


def _scaled(shape: Shape, sx: float, sy: float) -> Shape:
    x1, y1, x2, y2 = shape.xyxy
    rings = tuple(tuple(v * (sx if i % 2 == 0 else sy) for i, v in enumerate(r)) for r in shape.polygons)
    return dataclasses.replace(shape, xyxy=(x1 * sx, y1 * sy, x2 * sx, y2 * sy), polygons=rings)


def frame_indices(benchmark: Unit, candidate: Unit | None) -> list[int]:
    """Frames to score: every frame either side lists (a listed empty frame is a frame looked at)."""
    frames = set(benchmark.frames) | (set(candidate.frames) if candidate is not None else set())
    return sorted(frames)
