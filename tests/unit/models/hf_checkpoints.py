"""A tiny randomly initialised RT-DETR checkpoint on disk: the ``hf:`` path without downloads."""

from __future__ import annotations

from pathlib import Path

ID2LABEL = {0: "cat", 1: "dog", 2: "car"}


def write_tiny_rtdetr(directory: Path, id2label: dict[int, str] = ID2LABEL) -> Path:
    """Save a few-channel RT-DETR (ResNet-ish backbone, no timm) and its image processor to ``directory``."""
    import torch
    import transformers

    torch.manual_seed(0)
    backbone = transformers.RTDetrResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    config = transformers.RTDetrConfig(
        backbone_config=backbone,
        encoder_in_channels=[16, 32, 64],
        encoder_hidden_dim=32,
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        d_model=32,
        decoder_in_channels=[32, 32, 32],
        decoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        num_queries=20,
        num_denoising=0,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = transformers.RTDetrForObjectDetection(config).eval()
    # Fresh initialisation gives every query the same score and box; perturb so scores spread.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    model.save_pretrained(directory)
    transformers.RTDetrImageProcessor().save_pretrained(directory)
    return directory
