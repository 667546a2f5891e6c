"""Randomly initialised checkpoints in the exact architectures of real detectors: the compute is
the real model's, the accuracy is not (timing only; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path


def detr_r50(directory: Path) -> Path:
    """``facebook/detr-resnet-50``'s architecture (41.5 M parameters) with its image processor."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=transformers.ResNetConfig(out_features=["stage4"]),
        num_labels=91,
    )
    transformers.DetrForObjectDetection(config).eval().save_pretrained(directory)
    transformers.DetrImageProcessor().save_pretrained(directory)
    return directory


def rtdetr_r18(directory: Path) -> Path:
    """RT-DETR with ResNet-18 (``PekingU/rtdetr_r18vd``-like; 26 M parameters with transformers defaults)."""
    import torch
    import transformers

    torch.manual_seed(0)
    backbone = transformers.RTDetrResNetConfig(
        depths=[2, 2, 2, 2],
        hidden_sizes=[64, 128, 256, 512],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    config = transformers.RTDetrConfig(
        backbone_config=backbone, encoder_in_channels=[128, 256, 512], decoder_layers=3, num_labels=80
    )
    transformers.RTDetrForObjectDetection(config).eval().save_pretrained(directory)
    transformers.RTDetrImageProcessor().save_pretrained(directory)
    return directory


ARCHITECTURES = {"detr-r50": detr_r50, "rtdetr-r18": rtdetr_r18}
