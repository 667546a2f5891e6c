"""``preannotate render``: a predictions file drawn on its media, as previews people can look at.

The file is one ``run`` wrote (COCO, Darwin JSON 2.0 file or folder) or a job's Label Studio / Encord result;
the evaluate loaders read every one of them into units of frames of shapes. Each unit is matched to an INPUT
item as ``evaluate`` pairs items (name/path, then the file name alone), and exactly the frames the file lists
are decoded again (a video is never decoded whole for a handful of frames) and drawn: stills as JPEGs, videos
as an MP4 of those frames plus a contact sheet, and an ``index.html`` over all of them.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.commands.common import check_output_dir, load_settings
from service.commands.run import items_from_args
from service.errors import ErrorCode, PreannotateError
from service.evaluate.detections import class_names_of, frame_shapes, shapes_to_detections, track_numbers
from service.evaluate.frame_clock import open_shown_frames
from service.evaluate.inputs import CANDIDATE, documents_to_datasets, read_json_documents, text_to_input_spec
from service.evaluate.pairing import pair_items, pair_slots
from service.evaluate.types import Dataset, Shape, Unit, normalise_item_key
from service.pipeline.frames import MediaKind
from service.pipeline.media import ItemSpec, SlotSpec, looks_like_video, not_media_error, sniff
from service.pipeline.options import MediaLimits
from service.render.gallery import write_gallery
from service.render.previews import ItemPreviewWriter, PreviewOptions


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """An INPUT item's slot and the predictions' unit drawn on it."""

    slot: SlotSpec
    unit: Unit


@dataclass(frozen=True, slots=True)
class ItemPlan:
    item: ItemSpec
    slots: tuple[SlotPlan, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to draw, and the predictions' units no INPUT matched (warned about, not drawn)."""

    items: list[ItemPlan]
    unmatched: list[Unit]


def render_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    options = PreviewOptions.from_settings(settings, longest_px=args.preview_px, sheet_tiles=args.sheet_tiles)
    inputs = items_from_args(args.inputs, None, [])
    for skipped in inputs.skipped:
        print(skipped.line(), file=sys.stderr)
    check_media(inputs.items)
    check_output_dir(args.out)
    spec = text_to_input_spec(args.predictions, default_name="predictions")
    dataset = load_predictions(args.predictions)
    plan = plan_items(dataset, inputs.items, source=str(spec.path))
    for unit in plan.unmatched:
        where = f"{spec.path}: item {unit.item!r} slot {unit.slot!r}"
        print(f"warning: {where} matches no INPUT; not drawn", file=sys.stderr)
    class_names = class_names_of(dataset)
    written: list[Path] = []
    taken: set[str] = set()  # every item's preview names: none overwrites another's
    failed = False
    for item_plan in plan.items:
        writer = ItemPreviewWriter(args.out, class_names, options, taken=taken)
        drawn = 0
        try:
            for slot_plan in item_plan.slots:
                drawn += render_slot(item_plan.item.name, slot_plan, writer, class_names, settings.media_limits())
        except PreannotateError as exc:
            failed = True
            print(f"error: {item_plan.item.name}: {exc}", file=sys.stderr)
        finally:
            files = writer.close()
        written += files
        shown = ", ".join(str(p.relative_to(args.out)) for p in files) or "nothing"
        print(f"{item_plan.item.name}: {drawn} frame(s) drawn -> {shown}")
    gallery = write_gallery(args.out, written, title=f"Previews of {spec.path.name}")
    print(f"open {gallery}")
    return ErrorCode.INVALID_ARGUMENT.exit_code if failed or any(s.fails_run for s in inputs.skipped) else 0


def check_media(items: Sequence[ItemSpec]) -> None:
    """Refuse, before any work, an INPUT file that is no media at all (text, an archive): ``sniff`` would take
    it for video and its predictions would fail late."""
    for item in items:
        for slot in item.slots:
            for path in slot.paths:
                if path.is_file() and sniff(path) is MediaKind.VIDEO and not looks_like_video(path):
                    raise not_media_error(path)


def load_predictions(text: str) -> Dataset:
    """``--predictions FILE`` (``FILE#predictions=VERSION`` picks one model of a Label Studio export) as one
    dataset; a file of no known format, or of several models, is INVALID_ARGUMENT / UNSUPPORTED_MEDIA naming it."""
    spec = text_to_input_spec(text, default_name="predictions")
    datasets = documents_to_datasets(
        read_json_documents(spec.path), name=spec.name, role=CANDIDATE, selector=spec.selector
    )
    if len(datasets) != 1:
        versions = ", ".join(d.model_version or d.name for d in datasets) or "none"
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"{spec.path}: holds the predictions of {len(datasets)} models ({versions}); "
            "pick one: --predictions FILE#predictions=VERSION",
        )
    return datasets[0]


def plan_items(dataset: Dataset, items: Sequence[ItemSpec], *, source: str) -> Plan:
    """Each INPUT item with the predictions' units for its slots, paired as ``evaluate`` pairs items (the full
    name/path first, then the file name alone when it is unique on both sides) and slots (by name, or the only
    one with the only one). Nothing paired at all is INVALID_ARGUMENT, naming what each side has."""
    by_key = {normalise_item_key(item.name): item for item in items}
    media = Dataset(
        name="inputs",
        source="INPUT",
        format="media",
        units=[Unit(item=key, slot=slot.name) for key, item in by_key.items() for slot in item.slots],
    )
    media_units: dict[str, list[Unit]] = defaultdict(list)
    for unit in media.units:
        media_units[unit.item].append(unit)
    predicted: dict[str, list[Unit]] = defaultdict(list)
    for unit in dataset.units:
        predicted[unit.item].append(unit)
    plans: list[ItemPlan] = []
    used: set[int] = set()
    for media_key, predicted_key in pair_items(media, dataset):
        item = by_key[media_key]
        slots = {slot.name: slot for slot in item.slots}
        pairs = pair_slots(media_units[media_key], predicted[predicted_key])
        used.update(id(unit) for _, unit in pairs)
        if pairs:
            plans.append(ItemPlan(item, tuple(SlotPlan(slots[m.slot], unit) for m, unit in pairs)))
    if not plans:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, _nothing_matched(source, dataset, list(by_key)))
    return Plan(items=plans, unmatched=[u for u in dataset.units if id(u) not in used])


def _nothing_matched(source: str, dataset: Dataset, inputs: list[str], shown: int = 3) -> str:
    def some(names: list[str]) -> str:
        unique = list(dict.fromkeys(names))
        more = f" and {len(unique) - shown} more" if len(unique) > shown else ""
        return (", ".join(repr(n) for n in unique[:shown]) or "none") + more

    return (
        f"{source}: no item in it matches an INPUT: it has {some([u.item for u in dataset.units])}; "
        f"the INPUTs are {some(inputs)}. Items match by name/path, then by file name alone: "
        "give the media the predictions were made on"
    )


def merged_shapes(unit: Unit, frames: Sequence[int], width_px: int, height_px: int) -> list[Shape]:
    """The shapes of the unit's ``frames`` that one source frame shows (a file counting faster than the video):
    all of them, a track once (its first listed frame's shape), so nothing listed goes undrawn."""
    shapes: list[Shape] = []
    tracks: set[str] = set()
    for frame in frames:
        for shape in frame_shapes(unit, frame, width_px, height_px):
            if shape.track_id is not None:
                if shape.track_id in tracks:
                    continue
                tracks.add(shape.track_id)
            shapes.append(shape)
    return shapes


def render_slot(
    item: str,
    plan: SlotPlan,
    writer: ItemPreviewWriter,
    class_names: Sequence[str],
    limits: MediaLimits,
) -> int:
    """Decode the frames ``plan.unit`` lists (listed empty frames too: misses are worth seeing), draw its
    shapes on them into ``writer``; returns how many frames were drawn."""
    unit = plan.unit
    listed = sorted(f for f in (unit.frames if unit.keyframes is None else unit.keyframes) if f >= 0)
    if not listed:
        return 0
    reader, to_source = open_shown_frames(item, plan.slot, ((f, unit.fps) for f in listed), limits)
    try:
        by_source: dict[int, list[int]] = defaultdict(list)
        for (listed_frame, _), source in sorted(to_source.items()):
            by_source[source].append(listed_frame)
        class_ids = {name: i for i, name in enumerate(class_names)}
        tracks = track_numbers(unit)
        drawn = 0
        for decoded in reader:
            if decoded.info.frame_index not in by_source:
                continue  # an image sequence yields every file (it does not take frame_indices)
            width_px, height_px = decoded.info.width, decoded.info.height
            shapes = merged_shapes(unit, by_source[decoded.info.frame_index], width_px, height_px)
            detections = shapes_to_detections(
                shapes, class_ids=class_ids, tracks=tracks, width_px=width_px, height_px=height_px
            )
            writer.add(decoded.info, decoded.image, detections)
            drawn += 1
    finally:
        reader.close()
    if drawn < len(by_source):
        print(
            f"warning: {item}/{plan.slot.name}: {len(by_source) - drawn} listed frame(s) are not in the media",
            file=sys.stderr,
        )
    return drawn
