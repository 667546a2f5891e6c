"""``preannotate models``: what can be loaded, without loading anything."""

from __future__ import annotations

import argparse

from models.registry import BUILTINS, DEFAULT_MODEL_SPEC

_SPECS = """\
model specs:
  builtin:NAME         weights shipped in an installed package (offline)
  onnx:PATH            Ultralytics YOLOv8/YOLO11 export (-seg exports give masks too), or an end-to-end export
                       (boxes/scores/labels, RT-DETR)
  hf:DIR_OR_HUB_ID     transformers AutoModelForObjectDetection, or a Mask2Former instance-segmentation
                       checkpoint (masks) (pip install 'preannotate[hf]')
COCO detectors are brought by you, e.g. hf:PekingU/rtdetr_v2_r18vd (downloaded once, then cached) or a local
directory holding config.json, preprocessor_config.json and the weights.
segmenter specs (--segmenter, PREANNOTATE_SEGMENTER: a mask for each detected box):
  hf:DIR_OR_HUB_ID     transformers SAM family (SamModel, Sam2Model, EdgeTamModel), e.g. hf:facebook/sam-vit-base"""


def models_command(args: argparse.Namespace) -> int:
    print("built-in models:")
    for name, builtin in BUILTINS.items():
        default = " (default)" if f"builtin:{name}" == DEFAULT_MODEL_SPEC else ""
        classes = ", ".join(builtin.classes)
        print(f"  builtin:{name}{default}: {builtin.description}; {builtin.license}; classes: {classes}")
    print(_SPECS)
    return 0
