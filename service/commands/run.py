"""``preannotate run``: inputs -> sampled frames -> detections (-> tracks) -> a COCO file or Darwin JSON files."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, TypeVar, cast

from models.base import DetectorOptions, Segmenter
from models.errors import ModelError
from models.prompts import PromptSet
from models.registry import load_detector
from service.commands.common import (
    Progress,
    check_output_dir,
    check_output_file,
    exit_code_for,
    load_settings,
    prompted_detector,
    sampling_from_args,
    thresholds_from_args,
    write_json_atomic,
)
from service.config import Settings
from service.convert.coco import frame_results_to_coco
from service.convert.coco_types import CocoDocument, CocoMaskStyle
from service.convert.darwin import item_to_darwin
from service.convert.darwin_types import DarwinDocument, DarwinMaskStyle
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.pipeline.flow import ItemOutput, detector_sampling, run_flow, slot_opener, track_stage
from service.pipeline.inputs import Expanded, Skipped, expand_inputs
from service.pipeline.masking import open_segmenter
from service.pipeline.media import ItemSpec, parse_slot_arg
from service.pipeline.options import SamplingOptions
from service.pipeline.predictions import ItemPredictions
from service.pipeline.run import SlotFailure
from service.pipeline.tracks import TrackerOptions, needs_appearance, tracks_of
from service.spec.requests import prompt_set

if TYPE_CHECKING:  # supervision and PyAV load only for a run that draws previews
    from service.render.previews import PreviewOptions
    from service.render.tap import PreviewTap

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RunInputs:
    """The items to run, and the files of folders and lists that are no item (each named on stderr)."""

    items: list[ItemSpec]
    skipped: list[Skipped]


def items_from_args(
    inputs: list[Path], item: str | None, slots: list[str], *, sequence: bool | None = None
) -> RunInputs:
    """Positional inputs (a file: one item; a folder or @list: one item per file, see ``expand_inputs``)
    plus the --item/--slot item; names made unique."""
    expansion = expand_inputs(inputs, sequence=sequence)
    expanded = list(expansion.items)
    if slots and not item:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "--slot needs --item NAME")
    if item:
        if not slots:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "--item needs at least one --slot SLOT=PATH")
        specs = tuple(parse_slot_arg(text) for text in slots)
        duplicates = [name for name, n in Counter(s.name for s in specs).items() if n > 1]
        if duplicates:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"slot names must be unique: {', '.join(duplicates)}")
        expanded.append(Expanded(ItemSpec(name=item, slots=specs), item))
    if not expanded and not expansion.skipped:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "nothing to do: give INPUT files or --item with --slot")
    return RunInputs(items=unique_names(expanded), skipped=expansion.skipped)


def unique_names(expanded: list[Expanded]) -> list[ItemSpec]:
    """Items whose names clash (``img.jpg`` from two folders) are named by the shortest end of their path
    that tells them apart (``d1/img.jpg``, ``d2/img.jpg``), never an absolute path; one file given twice
    is refused. A new name can clash with one that did not (``x1/face.png`` from a list): then those items
    are renamed too, over all of them, until every name is unique."""
    original = [e.item.name for e in expanded]
    names = list(original)
    renamed: set[int] = set()
    while clashes := {name for name, n in Counter(names).items() if n > 1}:
        renamed |= {n for n, name in enumerate(names) if name in clashes}
        at = sorted(renamed)
        try:
            suffixes = unique_path_suffixes([_source_path(expanded[n]) for n in at])
        except ValueError as exc:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
        names = list(original)
        for n, name in zip(at, suffixes, strict=True):
            names[n] = name
    return [ItemSpec(name=name, slots=e.item.slots) for name, e in zip(names, expanded, strict=True)]


def _source_path(expanded: Expanded) -> str | PurePath:
    """The file an item of one single-file slot came from; else its folder or list as given."""
    slots = expanded.item.slots
    return slots[0].paths[0] if len(slots) == 1 and len(slots[0].paths) == 1 else expanded.qualified


def unique_path_suffixes(paths: Sequence[str | PurePath]) -> list[str]:
    """Each path's shortest ending that no other path ends with: ``/a/x1/img.jpg``, ``/a/x2/img.jpg`` ->
    ``x1/img.jpg``, ``x2/img.jpg``. Relative paths are read from the working directory; the answers are
    relative, ``/``-separated and never hold ``..`` (paths are normalised first). A path given twice: ValueError.

    Endings of 1, 2, ... parts are counted over the paths not yet named, so it takes O(paths x depth):
    a path named by its n-part ending shares no longer ending with another.
    """
    parts = [PurePath(os.path.normpath(os.path.abspath(p))).parts[1:] for p in paths]
    for path, count in Counter(parts).items():
        if count > 1:
            raise ValueError(f"/{'/'.join(path)}: given twice as an input")
    names: list[str] = [""] * len(parts)
    left = list(range(len(parts)))
    length = 1
    while left:
        counts = Counter(parts[i][-length:] for i in left)
        # a path no longer than ``length`` has nothing longer to offer: its whole self
        done = [i for i in left if counts[parts[i][-length:]] == 1 or len(parts[i]) <= length]
        for i in done:
            names[i] = "/".join(parts[i][-length:])
        left = sorted(set(left) - set(done))
        length += 1
    return names


def detector_options(args: argparse.Namespace, settings: Settings) -> DetectorOptions:
    base = settings.detector_options()
    try:
        # replace(), not a new DetectorOptions: every setting the flags do not name (model_dir, ...) is kept.
        return replace(
            base,
            device=args.device or base.device,
            batch_size=args.batch_size or base.batch_size,
            input_size_px=args.input_size or base.input_size_px,
        )
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One ``run``: what to read, which model, how to sample, where to write.

    ``out`` is a file for ``coco`` and a directory for ``darwin`` (one file per item). ``tracker``
    links video detections into tracks; None leaves them unlinked.
    """

    items: list[ItemSpec]
    model_spec: str
    detector_options: DetectorOptions
    sampling: SamplingOptions
    threshold: float
    classes: list[str] | None
    out: Path
    quiet: bool
    output_format: str = "coco"
    tracker: TrackerOptions | None = field(default_factory=TrackerOptions)
    segmenter_spec: str | None = None
    """A box-prompted segmenter (``--segmenter``): a mask per box; None: boxes only."""
    coco_masks: CocoMaskStyle = "rle"
    darwin_masks: DarwinMaskStyle = "polygon"
    prompts: PromptSet | None = None
    """An open-vocabulary model's classes (``--prompts``): outputs are written under their names."""
    class_thresholds: dict[str, float] | None = None
    """Per-class least scores over ``threshold`` (``--thresholds``); None: ``threshold`` for every class."""
    preview: Path | None = None
    """``--preview DIR``: the predictions drawn on the frames this run decodes (``service.render.tap``)."""
    preview_options: PreviewOptions | None = None
    """Preview sizes (``Settings.preview_options``); None: the defaults."""


def tracker_from_args(args: argparse.Namespace, settings: Settings) -> TrackerOptions | None:
    """The run's tracker: each ``--track-*`` flag over its ``PREANNOTATE_TRACK_*`` setting (``--track-online``
    and ``--no-track-appearance`` turn the two switches off); None with ``--no-tracks`` or
    ``PREANNOTATE_TRACKS=false``. Flags absent from the parser count as unset.
    """
    base = settings.tracker_options()
    if getattr(args, "tracks", True) is False or base is None:
        return None

    def flag(name: str, setting: _T) -> _T:
        value = getattr(args, f"track_{name}", None)
        return setting if value is None else cast(_T, value)

    try:
        return replace(
            base,
            max_gap_s=flag("max_gap_s", base.max_gap_s),
            distance_gate=flag("distance_gate", base.distance_gate),
            max_speed=flag("max_speed", base.max_speed),
            offline=flag("offline", base.offline),
            join_gap_s=flag("join_gap_s", base.join_gap_s),
            appearance=flag("appearance", base.appearance),
            min_length=flag("min_length", base.min_length),
            high_score=flag("high_score", base.high_score),
        )
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"tracking flags: {exc}") from None


def run_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    threshold = settings.threshold if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--threshold must be in [0, 1], got {threshold}")
    class_thresholds = thresholds_from_args(getattr(args, "thresholds", None))
    inputs = items_from_args(args.inputs, args.item, args.slot, sequence=getattr(args, "sequence", None))
    preview: Path | None = getattr(args, "preview", None)
    for skipped in inputs.skipped:
        print(skipped.line(), file=sys.stderr)
    if not inputs.items:
        return exit_code_for([], inputs.skipped)
    request = RunRequest(
        items=inputs.items,
        model_spec=args.model or settings.model,
        detector_options=detector_options(args, settings),
        sampling=sampling_from_args(args, settings),
        threshold=threshold,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
        out=args.out,
        quiet=args.quiet,
        output_format=args.format,
        tracker=tracker_from_args(args, settings),
        segmenter_spec=getattr(args, "segmenter", None) or settings.segmenter,
        coco_masks=getattr(args, "coco_masks", "rle"),
        darwin_masks=getattr(args, "darwin_masks", "polygon"),
        prompts=prompt_set(getattr(args, "prompts", None), field="--prompts", max_classes=settings.max_prompt_classes),
        class_thresholds=class_thresholds,
        preview=preview,
        preview_options=None if preview is None else preview_options(settings, longest_px=args.preview_px),
    )
    # Before the model loads and any frame is decoded: a bad --out must not cost the run's work.
    if request.output_format == "darwin":
        check_output_dir(request.out)
    else:
        check_output_file(request.out)
    if request.preview is not None:
        check_output_dir(request.preview, flag="--preview")
    _, failures = execute_run(request, settings)
    return exit_code_for(failures, inputs.skipped)


@dataclass(frozen=True, slots=True)
class RunOutput:
    """What a run wrote: the COCO document (``coco`` format) or the Darwin documents by item name (``darwin``)."""

    coco: CocoDocument | None = None
    darwin: dict[str, DarwinDocument] = field(default_factory=dict)
    previews: list[Path] = field(default_factory=list)
    """The preview files drawn (``RunRequest.preview``), in item order."""
    gallery: Path | None = None
    """``index.html`` over the previews (``service.render.gallery``), when any were drawn."""


def execute_run(request: RunRequest, settings: Settings) -> tuple[RunOutput, list[SlotFailure]]:
    """Load the model, run every item through it, write the output; report per-slot failures.

    Returns:
        What was written (the COCO document, or the Darwin documents by item name), and the failures.
    """
    try:
        loaded = load_detector(request.model_spec, request.detector_options)
    except ModelError as exc:
        raise _naming_spec(from_model_error(exc), request.model_spec) from None
    segmenter: Segmenter | None = None
    try:
        detector = prompted_detector(loaded, request.prompts)  # an open-vocabulary model: its view
        detector.warmup()
        if request.segmenter_spec is not None:
            segmenter = open_segmenter(request.segmenter_spec, request.detector_options)
    except ModelError as exc:
        loaded.close()
        raise _naming_spec(from_model_error(exc), request.model_spec) from None
    except BaseException:
        loaded.close()
        raise
    seg_info = None if segmenter is None else segmenter.info

    progress = Progress(quiet=request.quiet)
    outputs: list[ItemOutput] = []
    previews: list[Path] = []
    open_slot = slot_opener(detector_sampling(request.sampling, detector.info, seg_info), settings.media_limits())
    tap = _preview_tap(request, detector.info.class_names, settings)
    try:
        for done in run_flow(
            request.items,
            detector,
            settings.flow_options(
                threshold=request.threshold,
                classes=request.classes,
                class_thresholds=request.class_thresholds,
                keep_partial=False,
                describe_boxes=needs_appearance(request.tracker),
            ),
            open_slot=open_slot if tap is None else tap.opener(open_slot),  # the frames decoded once, for both
            on_slot=progress.on_slot,
            on_frame=lambda _: progress.advance(),
            on_error=progress.on_error,
            finish_item=track_stage(request.tracker),  # each item's tracks, once
            segmenter=segmenter,
        ):
            outputs.append(done)
            if tap is not None:  # drawn as each item is done (tracked), its kept frames deleted
                previews += _render_previews(tap, done)
    except ModelError as exc:  # a frame that alone does not fit on the device (bigger batches were split)
        raise from_model_error(exc) from None
    finally:
        progress.close()
        loaded.close()  # a view shares the loaded model's weights: closing that is enough
        if segmenter is not None:
            segmenter.close()
        if tap is not None:
            tap.close()

    info = detector.info
    # Items with no slot that opened are left out, as they were from the output.
    items = [ItemPredictions(name=o.name, slots=o.slots, frames=o.frames) for o in outputs if o.slots]
    results = [result for item in items for result in item.frames]
    summary_tracks = ""
    if request.tracker is not None:
        summary_tracks = f", {sum(len(tracks_of(item.frames)) for item in items)} tracks"
    if request.output_format == "darwin":
        model = ModelRef(spec=info.spec, version=info.version, class_names=info.class_names)
        documents = write_darwin_files(request.out, items, model, masks=request.darwin_masks)
        output = RunOutput(darwin=documents, previews=previews)
        annotations = sum(len(d["annotations"]) for d in documents.values())
        summary = f"{len(documents)} Darwin JSON file(s), {annotations} annotations"
    else:
        coco = frame_results_to_coco(
            results,
            class_names=info.class_names,
            multi_slot_items=frozenset(i.name for i in request.items if len(i.slots) > 1),
            model=info,
            masks=request.coco_masks,
        )
        write_json_atomic(request.out, coco)
        output = RunOutput(coco=coco, previews=previews)
        summary = f"{len(coco['images'])} images/frames and {len(coco['annotations'])} detections"
    print(f"wrote {summary}{summary_tracks} ({info.name}, {info.device}) to {request.out}", file=sys.stderr)
    if request.preview is not None:
        output = replace(
            output, gallery=_write_gallery(request.preview, previews, title=f"Previews of {request.out.name}")
        )
        print(f"wrote {len(previews)} preview file(s) to {request.preview}", file=sys.stderr)
        if output.gallery is not None:
            print(f"open {output.gallery}", file=sys.stderr)
        if tap is not None and tap.error is not None:
            print(f"warning: previews incomplete: {tap.error}", file=sys.stderr)
    for failure in progress.failures:
        print(f"failed: {failure.item}/{failure.slot}: {failure.error}", file=sys.stderr)
    return output, progress.failures


def preview_options(settings: Settings, *, longest_px: int | None = None) -> PreviewOptions:
    """``PreviewOptions.from_settings``, imported only by a run that draws (supervision and PyAV load then)."""
    from service.render.previews import PreviewOptions

    return PreviewOptions.from_settings(settings, longest_px=longest_px)


def _preview_tap(request: RunRequest, class_names: Sequence[str], settings: Settings) -> PreviewTap | None:
    if request.preview is None:
        return None
    from service.render.tap import PreviewTap

    return PreviewTap(request.preview, class_names, request.preview_options, scratch_parent=settings.work_dir)


def _write_gallery(out_dir: Path, previews: list[Path], *, title: str) -> Path | None:
    """The previews' ``index.html``; one that cannot be written is a warning (the previews are there)."""
    if not previews:
        return None
    from service.render.gallery import write_gallery

    try:
        return write_gallery(out_dir, previews, title=title)
    except OSError as exc:
        print(f"warning: no index.html in {out_dir}: {exc}", file=sys.stderr)
        return None


def _render_previews(tap: PreviewTap, output: ItemOutput) -> list[Path]:
    """An item's previews; one that cannot be written is named on stderr and the run goes on (its predictions
    are the run's work, the pictures only a view of them)."""
    try:
        return tap.render(output)
    except Exception as exc:  # a drawing or encoding error (cv2, PyAV) must not lose the run's predictions
        print(f"warning: no preview of {output.name}: {exc}", file=sys.stderr)
        return []


def _naming_spec(error: PreannotateError, spec: str) -> PreannotateError:
    """The error with the model spec in front where its message does not name it (device errors do not)."""
    if spec in error.message:
        return error
    return PreannotateError(error.code, f"{spec}: {error.message}")


def write_darwin_files(
    out_dir: Path, items: list[ItemPredictions], model: ModelRef, *, masks: DarwinMaskStyle = "polygon"
) -> dict[str, DarwinDocument]:
    """Write ``out_dir/<item>.json`` per item (masks as ``masks`` says); returns the documents by item name."""
    documents: dict[str, DarwinDocument] = {}
    taken: set[str] = set()
    for item in items:
        document = item_to_darwin(item, model, masks=masks)
        write_json_atomic(out_dir / item_file_name(item.name, taken), document)
        documents[item.name] = document
    return documents


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def item_file_name(item: str, taken: set[str]) -> str:
    """``<item>.json`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``.

    Leading dots go (no hidden files, no ``..``); a name already in ``taken`` (compared without case,
    as macOS and Windows compare) gets ``-2``, ``-3``, ... The chosen name is added to ``taken``.
    """
    stem = _UNSAFE_CHARS.sub("_", item).lstrip(".") or "item"
    name, n = stem, 2
    while name.lower() in taken:
        name, n = f"{stem}-{n}", n + 1
    taken.add(name.lower())
    return f"{name}.json"
