"""Read and recognise evaluation inputs: COCO (full or results), Darwin JSON 2.0, Label Studio, Encord label rows.

Every failure is a PreannotateError whose message starts with the file at fault.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from pydantic import JsonValue

from service.convert.label_studio import LabelConfig, parse_label_config
from service.errors import ErrorCode, PreannotateError
from service.evaluate.exports import CocoAnnotation, CocoDocument, DarwinDocument, EncordLabelRow, LsTask
from service.evaluate.geometry import MAX_RASTER_PIXELS
from service.evaluate.load_coco import coco_results_to_dataset, coco_to_dataset
from service.evaluate.load_darwin import darwin_to_dataset
from service.evaluate.load_encord import encord_to_dataset
from service.evaluate.load_label_studio import ANNOTATIONS, PREDICTIONS, label_studio_to_datasets
from service.evaluate.types import Dataset, FormatError

BENCHMARK = "benchmark"
CANDIDATE = "candidate"
FORMATS = ("coco", "coco_results", "darwin", "label_studio", "encord")
_MULTI_DOC_FORMATS = frozenset({"darwin", "encord", "label_studio"})
MAX_COORDINATE = 1e7  # pixels (or percent): far beyond any real frame, well inside float precision
MAX_SHAPES_PER_FRAME = 2000  # the assignment is cubic in this; COCO itself keeps 100 detections per image


@dataclass(frozen=True, slots=True)
class InputSpec:
    """A ``[NAME=]PATH[#SELECTOR]`` argument: ``alice=exports/alice/`` or ``ls.json#predictions=yolo-v2``."""

    name: str
    path: Path
    selector: str | None = None


def text_to_input_spec(text: str, *, default_name: str | None = None) -> InputSpec:
    """Parse ``[NAME=]PATH[#annotations|#predictions[=VERSION]]``; NAME defaults to the file's stem."""
    selector = None
    head, sep, tail = text.rpartition("#")
    if sep and (tail in (ANNOTATIONS, PREDICTIONS) or tail.startswith(PREDICTIONS + "=")):
        text, selector = head, tail
    name, eq, rest = text.partition("=")
    # NAME=PATH only when PATH exists and the whole text does not: paths may contain '='.
    if eq and name and Path(rest).exists() and not Path(text).exists():
        return InputSpec(name=name, path=Path(rest), selector=selector)
    path = Path(text)
    return InputSpec(name=default_name or path.stem or path.name or text, path=path, selector=selector)


def detect_format(doc: JsonValue) -> str | None:
    """The format of a parsed JSON document, by its shape; None when it is none of ours."""
    if isinstance(doc, dict):
        if "images" in doc and "annotations" in doc:
            return "coco"
        if "item" in doc and "annotations" in doc:
            return "darwin"
        if "data_units" in doc:
            return "encord"
        if "data" in doc and (ANNOTATIONS in doc or PREDICTIONS in doc):
            return "label_studio"  # a single task
        return None
    objects = [d for d in doc if isinstance(d, dict)] if isinstance(doc, list) else []
    if objects and isinstance(doc, list) and len(objects) == len(doc):
        first = objects[0]
        if "image_id" in first and "category_id" in first:
            return "coco_results"
        if "data" in first:
            return "label_studio"
        inner = {detect_format(d) for d in objects}
        if len(inner) == 1 and (only := inner.pop()) in ("darwin", "encord"):
            return only
    return None


JOB_RESULT_ARRAYS = ("tasks", "label_rows", "items")
"""Where a job's result document (``GET /v1/jobs/{id}/result?format=labelstudio|encord|darwin``) holds its export."""


def unwrap_job_result(doc: JsonValue) -> JsonValue:
    """A job's result document -> the export inside it (Label Studio tasks, Encord label rows, Darwin items);
    any other document as it is (a job's COCO result is plain COCO already)."""
    if isinstance(doc, dict) and "skipped_items" in doc:
        for key in JOB_RESULT_ARRAYS:
            inner = doc.get(key)
            if isinstance(inner, list):
                return inner
    return doc


def read_json_documents(path: Path) -> list[tuple[str, JsonValue]]:
    """``(source, parsed JSON)`` of a file, or of every ``*.json`` under a directory (sorted, recursive)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{path}: no .json files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{path}: no such file or directory")
    return [(str(f), bytes_to_json(f.read_bytes(), str(f))) for f in files]


def bytes_to_json(data: bytes, source: str) -> JsonValue:
    """Parse JSON, naming the source and the position on failure."""
    if data[:2] == b"PK":
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{source}: a zip archive; unzip the export first")
    try:
        doc: JsonValue = json.loads(data)
    except UnicodeDecodeError:
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{source}: not a JSON text file") from None
    except json.JSONDecodeError as exc:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    return doc


def _as_list(doc: JsonValue) -> list[JsonValue]:
    return doc if isinstance(doc, list) else [doc]


@dataclass(frozen=True, slots=True)
class _Side:
    """What a loader needs to know about the side of the comparison a document is loaded for."""

    name: str
    source: str
    role: str
    selector: str | None
    benchmark: Dataset | None
    config: LabelConfig | None


def _load(fmt: str, doc: JsonValue, side: _Side) -> list[Dataset]:
    """One document of ``fmt`` as datasets, for this side of the comparison.

    The edge where parsed JSON becomes an export's typed shape: ``detect_format`` has recognised it, and
    each loader checks the values it reads (a malformed one gets a message naming the item and field).
    """
    name, source = side.name, side.source
    if fmt == "coco":
        return [coco_to_dataset(cast(CocoDocument, doc), name=name, source=source)]
    if fmt == "coco_results":
        if side.benchmark is None:
            raise FormatError("a COCO results list can only be a candidate (give the COCO it refers to as --benchmark)")
        return [coco_results_to_dataset(cast(list[CocoAnnotation], doc), side.benchmark, name=name, source=source)]
    if fmt == "darwin":
        return [darwin_to_dataset(cast(list[DarwinDocument], _as_list(doc)), name=name, source=source)]
    if fmt == "encord":
        return [encord_to_dataset(cast(list[EncordLabelRow], _as_list(doc)), name=name, source=source)]
    return _label_studio(cast(list[LsTask], _as_list(doc)), side)


def _label_studio(tasks: list[LsTask], side: _Side) -> list[Dataset]:
    """A benchmark is the human annotations; a candidate the model predictions when the export has any (an
    annotator's export has none, so then its annotations), unless the selector says which."""
    selector = side.selector
    if selector is None:
        has_predictions = any(t.get("predictions") for t in tasks)
        selector = PREDICTIONS if side.role == CANDIDATE and has_predictions else ANNOTATIONS
    label_side, _, version = selector.partition("=")
    return label_studio_to_datasets(
        tasks,
        name=side.name,
        source=side.source,
        side=label_side,
        model_version=version or None,
        label_config=side.config,
    )


def documents_to_datasets(
    documents: list[tuple[str, JsonValue]],
    *,
    name: str,
    role: str,
    selector: str | None = None,
    benchmark: Dataset | None = None,
    label_config: str | None = None,
) -> list[Dataset]:
    """Recognise and load documents of one format into datasets (several for a multi-model LS export).

    Args:
        documents: ``(source, parsed JSON)`` pairs; several only for a directory of Darwin/Encord/LS files. A
            job's result document stands for the export it holds (``unwrap_job_result``).
        name: the dataset name.
        role: ``benchmark`` or ``candidate``.
        selector: for Label Studio, ``annotations``, ``predictions`` or ``predictions=VERSION``.
        benchmark: the loaded benchmark, for a candidate (COCO results refer to its image ids).
        label_config: for Label Studio, the project's labeling config (XML): the rate its videos' frames
            are counted at. Exports do not carry it; without it, a task's ``fps`` data is used if any.

    Raises:
        PreannotateError: UNSUPPORTED_MEDIA for an unknown format, INVALID_ARGUMENT for a malformed one.
    """
    config = _parse_config(label_config)
    merged: dict[str, Dataset] = {}
    formats: set[str] = set()
    for source, document in documents:
        doc = unwrap_job_result(document)
        fmt = detect_format(doc)
        if fmt is None:
            raise PreannotateError(
                ErrorCode.UNSUPPORTED_MEDIA,
                f"{source}: not a COCO, COCO results, Darwin JSON 2.0, Label Studio or Encord label-row export",
            )
        formats.add(fmt)
        if len(formats) > 1 or (len(documents) > 1 and fmt not in _MULTI_DOC_FORMATS):
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"{source}: a directory must hold Darwin, Encord or Label Studio files only"
            )
        try:
            loaded = _load(fmt, doc, _Side(name, source, role, selector, benchmark, config))
        except FormatError as exc:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{source}: malformed {fmt} export ({detail})") from None
        for dataset in loaded:
            check_dataset(dataset, source)
            if dataset.name in merged:
                merged[dataset.name].units.extend(dataset.units)
            else:
                merged[dataset.name] = dataset
    datasets = list(merged.values())
    if role == BENCHMARK:
        if len(datasets) != 1:
            names = ", ".join(d.name for d in datasets) or "none"
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT,
                f"{documents[0][0]}: the benchmark must be one label set (got {names}); pick one: #predictions=VERSION",
            )
        if not datasets[0].units:
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"{documents[0][0]}: the benchmark holds no labelled items"
            )
    return datasets


def _parse_config(xml: str | None) -> LabelConfig | None:
    if xml is None:
        return None
    try:
        return parse_label_config(xml)
    except PreannotateError as exc:
        raise PreannotateError(exc.code, f"Label Studio labeling config: {exc.message}") from None


def check_dataset(dataset: Dataset, source: str) -> None:
    """Refuse what would break or stall the scoring: non-finite numbers, huge frames or crowds of shapes."""
    for unit in dataset.units:
        if (unit.width is not None and unit.width <= 0) or (unit.height is not None and unit.height <= 0):
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"{source}: {unit.item} has size {unit.width}x{unit.height}"
            )
        masks = False
        for frame, shapes in unit.frames.items():
            if len(shapes) > MAX_SHAPES_PER_FRAME:
                raise PreannotateError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"{source}: {unit.item} frame {frame} has {len(shapes)} shapes (limit {MAX_SHAPES_PER_FRAME})",
                )
            for shape in shapes:
                numbers = (
                    *shape.xyxy,
                    *(() if shape.score is None else (shape.score,)),
                    *(v for r in shape.polygons for v in r),
                )
                if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in numbers):
                    raise PreannotateError(
                        ErrorCode.INVALID_ARGUMENT,
                        f"{source}: {unit.item} frame {frame}: a shape has a non-finite or out-of-range number",
                    )
                masks = masks or shape.has_mask
        if masks and (unit.width or 0) * (unit.height or 0) > MAX_RASTER_PIXELS:
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT,
                f"{source}: {unit.item} is {unit.width}x{unit.height}: too large to rasterise",
            )


def load_benchmark(text: str, *, label_config: str | None = None) -> Dataset:
    """``--benchmark`` -> the benchmark Dataset (``label_config``: a Label Studio project's config XML)."""
    spec = text_to_input_spec(text, default_name=BENCHMARK)
    return documents_to_datasets(
        read_json_documents(spec.path),
        name=spec.name,
        role=BENCHMARK,
        selector=spec.selector,
        label_config=label_config,
    )[0]


def load_candidates(text: str, benchmark: Dataset, *, label_config: str | None = None) -> list[Dataset]:
    """One ``--candidate`` -> its datasets (one, or one per model version of a Label Studio export)."""
    spec = text_to_input_spec(text)
    return documents_to_datasets(
        read_json_documents(spec.path),
        name=spec.name,
        role=CANDIDATE,
        selector=spec.selector,
        benchmark=benchmark,
        label_config=label_config,
    )
