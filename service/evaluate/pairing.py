"""Line the two sides up: items by id, name/path or file name; slots by name; then frames by index."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from service.errors import ErrorCode, PreannotateError
from service.evaluate.types import Dataset, FormatError, Shape, Unit

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


def nothing_paired_hint(pairing: Pairing, *, shown: int = 3) -> str | None:
    """A line saying why a candidate scores nothing when it has items but none pairs with a benchmark item
    (usually names that differ: a path prefix, an extension, another tool's ids); None when something paired."""
    if any(c is not None for _, c in pairing.pairs) or not pairing.pairs or not pairing.candidate_only:
        return None

    def some(units: list[Unit]) -> str:
        names = list(dict.fromkeys(u.item for u in units))
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(repr(n) for n in names[:shown]) + more

    return (
        f"no candidate item pairs with a benchmark item: benchmark has {some([b for b, _ in pairing.pairs])}; "
        f"candidate has {some(pairing.candidate_only)}. Items pair by the tool's item id (same format only), "
        "then by name/path, then by file name alone: make the names match"
    )


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


def pair_slots(b_units: list[Unit], c_units: list[Unit]) -> list[tuple[Unit, Unit]]:
    """An item's slots paired: the only slot with the only slot (``"0"`` vs ``"image"``); else by slot name,
    then what is left on both sides in order, when as many are left on each (a Darwin item's i-th slot and
    an Encord image group's image i, whatever the Darwin slots are called)."""
    if len(b_units) == 1 and len(c_units) == 1:
        return [(b_units[0], c_units[0])]
    c_slots = {u.slot: u for u in c_units}
    pairs = [(u, c_slots[u.slot]) for u in b_units if u.slot in c_slots]
    b_slots = {u.slot for u in b_units}
    b_left = [u for u in b_units if u.slot not in c_slots]
    c_left = [u for u in c_units if u.slot not in b_slots]
    if len(b_left) == len(c_left):
        pairs += zip(b_left, c_left, strict=True)
    return pairs


def pair_units(benchmark: Dataset, candidate: Dataset) -> Pairing:
    """Pair item slots (see ``pair_slots``), then put each pair on one clock and one pixel size."""
    b_items, c_items = _by_item(benchmark.units), _by_item(candidate.units)
    matched: dict[int, Unit] = {}
    for b_item, c_item in pair_items(benchmark, candidate):
        for b_unit, c_unit in pair_slots(b_items[b_item], c_items[c_item]):
            matched[id(b_unit)] = c_unit
    pairing = Pairing()
    for unit in benchmark.units:
        other = matched.get(id(unit))
        if other is None:
            pairing.pairs.append((unit, None))
        else:  # LS video frames re-counted in the other side's frames; percent put in the other's pixels
            b_unit, c_unit = retime_unit(unit, other), retime_unit(other, unit)
            pairing.pairs.append((align_units(b_unit, c_unit), align_units(c_unit, b_unit)))
    paired_candidates = {id(c) for c in matched.values()}
    by_candidate = {id(c): b for b in benchmark.units if (c := matched.get(id(b))) is not None}
    for unit in candidate.units:
        if id(unit) in paired_candidates:
            pairing.candidate_order.append((by_candidate[id(unit)], unit))
        else:
            pairing.candidate_only.append(unit)
    return pairing


def retime_unit(unit: Unit, reference: Unit) -> Unit:
    """``unit``'s frames counted in ``reference``'s when ``unit`` is Label Studio video counted at its
    project's frame rate and ``reference`` knows another rate (a Darwin/Encord video's fps, COCO frame
    timestamps, or another LS project's rate): its tracks are sampled at the times of ``reference``'s frames.

    When ``reference`` knows no rate (a COCO file without timestamps, a Darwin ``"native"`` fps), LS frame N
    stays frame N - 1: the project is taken to play at the file's rate, as label_studio.md asks of it.
    """
    if unit.retime is None or unit.fps is None or reference.fps is None:
        return unit
    if math.isclose(unit.fps, reference.fps, rel_tol=1e-6):
        return unit  # LS frame N - 1 is already the other side's frame
    if reference.retime is not None and unit.fps > reference.fps:
        return unit  # LS against LS: the coarser project is sampled at the finer one's frames, not both
    try:
        frames = unit.retime(reference.fps)
    except FormatError as exc:  # too many frames at that rate: refused like any input too large to score
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{unit.item}: {exc}") from None
    return dataclasses.replace(unit, frames=frames, fps=reference.fps, retime=None)


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
