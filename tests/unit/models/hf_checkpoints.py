"""Tiny randomly initialised checkpoints on disk (RT-DETR, SAM, SAM 2, Mask2Former): the ``hf:`` path without
downloads."""

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


def write_tiny_sam(directory: Path, image_size_px: int = 256) -> Path:
    """Save a few-channel SAM (ViT image encoder, prompt encoder, mask decoder) and its processor to ``directory``:
    frames go in at ``image_size_px`` on the longest side, padded square, as SAM's 1024."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.SamConfig(
        vision_config=transformers.SamVisionConfig(
            hidden_size=32,
            output_channels=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size_px,
            patch_size=16,
            window_size=4,
            global_attn_indexes=[1],
            num_pos_feats=16,
            mlp_dim=64,
        ),
        prompt_encoder_config=transformers.SamPromptEncoderConfig(
            hidden_size=32, image_size=image_size_px, patch_size=16, mask_input_channels=4
        ),
        mask_decoder_config=_tiny_mask_decoder(transformers.SamMaskDecoderConfig),
    )
    model = transformers.SamModel(config).eval()
    _perturb(model)
    model.save_pretrained(directory)
    side = {"height": image_size_px, "width": image_size_px}
    processor = transformers.SamImageProcessorPil(size={"longest_edge": image_size_px}, pad_size=side)
    transformers.SamProcessor(image_processor=processor).save_pretrained(directory)
    return directory


def write_tiny_sam2(directory: Path, image_size_px: int = 256) -> Path:
    """Save a few-channel SAM 2 (Hiera image encoder) and its image processor's settings to ``directory``: frames
    are stretched to ``image_size_px`` square. The settings are written by hand: transformers' SAM 2 image
    processor needs torchvision, which the test environment (like the ``hf`` extra) does not have."""
    import json

    import torch
    import transformers

    torch.manual_seed(0)
    stride_px = 4  # Hiera's patch stride; each later stage halves the grid
    grids = [image_size_px // stride_px // 2**k for k in range(3)]
    backbone = transformers.Sam2HieraDetConfig(
        hidden_size=16,
        image_size=[image_size_px, image_size_px],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 4],
        global_attention_blocks=[3],  # not a stage-change block: those pool inside windows
    )
    config = transformers.Sam2Config(
        vision_config=transformers.Sam2VisionConfig(
            backbone_config=backbone,
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[g, g] for g in grids],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=transformers.Sam2PromptEncoderConfig(
            hidden_size=32, image_size=image_size_px, patch_size=16, mask_input_channels=4
        ),
        mask_decoder_config=_tiny_mask_decoder(transformers.Sam2MaskDecoderConfig),
    )
    model = transformers.Sam2Model(config).eval()
    _perturb(model)
    model.save_pretrained(directory)
    settings = {
        "image_processor_type": "Sam2ImageProcessor",
        "do_resize": True,
        "size": {"height": image_size_px, "width": image_size_px},
        "mask_size": {"height": image_size_px // 4, "width": image_size_px // 4},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "do_convert_rgb": True,
        "resample": 2,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(settings, indent=2))
    return directory


def _tiny_mask_decoder(config_class: type) -> object:
    return config_class(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=32)


def _perturb(model: object) -> None:
    """Fresh initialisation gives near-constant masks; spread the weights so masks vary with image and box."""
    import torch

    with torch.no_grad():
        for param in model.parameters():  # type: ignore[attr-defined]
            param.add_(torch.randn_like(param) * 0.3)


def write_tiny_mask2former(directory: Path, id2label: dict[int, str] = ID2LABEL) -> Path:
    """Save a few-channel Mask2Former (tiny Swin backbone, no timm) and its image processor to ``directory``:
    frames go in at 64 px on the short side, at most 96 on the long one, sides rounded up to 32s."""
    import torch
    import transformers

    torch.manual_seed(0)
    backbone = transformers.SwinConfig(
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        image_size=64,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone,
        hidden_dim=32,  # the pixel decoder's GroupNorm(32, ...) needs a multiple of 32
        feature_size=32,
        mask_feature_size=32,
        num_queries=8,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=1,
        dim_feedforward=32,
        encoder_feedforward_dim=32,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        use_pretrained_backbone=False,
    )
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    _perturb(model)
    model.save_pretrained(directory)
    transformers.Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(directory)
    return directory
