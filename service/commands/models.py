"""``preannotate models``: what can be loaded, without loading anything."""

from __future__ import annotations

import argparse

from models.registry import BUILTINS, DEFAULT_MODEL_SPEC

_SPECS = """\
model specs:
  builtin:NAME         weights shipped in an installed package (offline)
  onnx:PATH            Ultralytics YOLOv8/YOLO11 export, or an end-to-end export (boxes/scores/labels, RT-DETR)
  hf:DIR_OR_HUB_ID     transformers AutoModelForObjectDetection (pip install 'preannotate[hf]')
COCO detectors are brought by you, e.g. hf:PekingU/rtdetr_v2_r18vd (downloaded once, then cached) or a local
directory holding config.json, preprocessor_config.json and the weights."""


def models_command(args: argparse.Namespace) -> int:
    print("built-in models:")
    for name, builtin in BUILTINS.items():
        default = " (default)" if f"builtin:{name}" == DEFAULT_MODEL_SPEC else ""
        classes = ", ".join(builtin.classes)
        print(f"  builtin:{name}{default}: {builtin.description}; {builtin.license}; classes: {classes}")
    print(_SPECS)
    return 0
