"""What an ONNX export says about itself outside its tensors: class names, input size, sidecar JSON."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.base import DetectorOptions
from models.errors import ModelLoadError
from models.runtimes.onnx import SessionIO

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE_PX = 640
STRIDE_PX = 32  # the coarsest feature stride of YOLO and DETR-family backbones


def names_sidecar_path(model_path: Path) -> Path:
    """``/m/yolo.onnx`` -> ``/m/yolo.names.json``."""
    return model_path.with_name(f"{model_path.stem}.names.json")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is absent."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}; fix or remove the file") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _as_id_mapping(raw: object, source: str) -> dict[int, str]:
    """A list of names or an ``{id: name}`` mapping (ids may be strings, as JSON keys are) -> {int: str}."""
    if isinstance(raw, list):
        return {i: str(name) for i, name in enumerate(raw)}
    if isinstance(raw, dict):
        try:
            return {int(k): str(v) for k, v in raw.items()}
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"class ids in {source} must be integers: {exc}") from exc
    raise ModelLoadError(f"class names in {source} must be a list or an {{id: name}} object, got {type(raw).__name__}")


def read_class_mapping(model_path: Path, metadata: Mapping[str, str]) -> tuple[dict[int, str] | None, list[Path]]:
    """Find the model's class names.

    Looks, in order, at the ONNX metadata ``names`` (Ultralytics writes a Python dict literal),
    ``<stem>.names.json`` next to the model (a list or ``{id: name}``), then ``config.json``'s
    ``id2label`` next to the model.

    Returns:
        The ``{class_id: name}`` mapping (None when no source has one) and the sidecar files read,
        which belong in the model version.
    """
    if "names" in metadata:
        try:
            raw = ast.literal_eval(metadata["names"])
        except (ValueError, SyntaxError) as exc:
            raise ModelLoadError(f"{model_path}: metadata 'names' is not a Python literal: {exc}") from exc
        return _as_id_mapping(raw, f"{model_path} metadata 'names'"), []
    sidecar = names_sidecar_path(model_path)
    if sidecar.is_file():
        try:
            raw = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {sidecar}: {exc}; fix or remove the file") from exc
        return _as_id_mapping(raw, str(sidecar)), [sidecar]
    config_path = model_path.with_name("config.json")
    config = read_json(config_path)
    if config is not None and "id2label" in config:
        return _as_id_mapping(config["id2label"], f"{config_path} id2label"), [config_path]
    return None, []


def dense_class_names(mapping: Mapping[int, str] | None, num_classes: int | None, model_path: Path) -> tuple[str, ...]:
    """Names indexed by class id; gaps (e.g. COCO's 91 category ids) are filled with ``class_<i>``.

    Args:
        mapping: ``{class_id: name}`` from ``read_class_mapping``.
        num_classes: the count the output tensor implies, when the layout tells (None otherwise).
        model_path: for messages.
    """
    if mapping is None:
        if num_classes is None:
            raise ModelLoadError(
                f"{model_path}: this layout does not say how many classes the model has and no class names were "
                f"found; write them to {names_sidecar_path(model_path)} as a JSON list or {{id: name}} object"
            )
        log.warning(
            "%s has no class names (no 'names' metadata, %s or config.json id2label); using class_0..class_%d",
            model_path,
            names_sidecar_path(model_path).name,
            num_classes - 1,
        )
        return tuple(f"class_{i}" for i in range(num_classes))
    if any(i < 0 for i in mapping):
        raise ModelLoadError(f"{model_path}: class ids must be >= 0, got {sorted(mapping)[:5]}")
    count = num_classes if num_classes is not None else max(mapping, default=-1) + 1
    if num_classes is not None and len(mapping) != num_classes:
        log.warning("%s: %d class names for %d model classes", model_path, len(mapping), num_classes)
    return tuple(mapping.get(i, f"class_{i}") for i in range(count))


def round_to_stride(size_px: int) -> int:
    """Round to the nearest multiple of the network stride (at least one stride)."""
    return max(STRIDE_PX, round(size_px / STRIDE_PX) * STRIDE_PX)


def _metadata_imgsz(metadata: Mapping[str, str]) -> tuple[int, int] | None:
    """Ultralytics' ``imgsz``: ``"[640, 640]"`` (h, w) or ``"640"``."""
    if "imgsz" not in metadata:
        return None
    try:
        raw = ast.literal_eval(metadata["imgsz"])
    except (ValueError, SyntaxError):
        return None
    if isinstance(raw, int):
        return raw, raw
    if isinstance(raw, list | tuple) and len(raw) == 2 and all(isinstance(v, int) for v in raw):
        return raw[0], raw[1]
    return None


def network_input_hw(io: SessionIO, options: DetectorOptions) -> tuple[int, int]:
    """The (height, width) in pixels frames are fitted to.

    A fixed input shape wins; for dynamic height/width, ``options.input_size_px``, then the
    metadata ``imgsz``, then 640, rounded to a multiple of 32 (square).
    """
    height, width = (io.input_shape[2], io.input_shape[3]) if len(io.input_shape) == 4 else (None, None)
    if height is not None and width is not None:
        if options.input_size_px is not None and options.input_size_px != max(height, width):
            log.info("input is fixed at %dx%d; ignoring input_size_px=%d", height, width, options.input_size_px)
        return height, width
    if options.input_size_px is not None:
        size = round_to_stride(options.input_size_px)
        return size, size
    imgsz = _metadata_imgsz(io.metadata)
    if imgsz is not None:
        return round_to_stride(imgsz[0]), round_to_stride(imgsz[1])
    return DEFAULT_INPUT_SIZE_PX, DEFAULT_INPUT_SIZE_PX
