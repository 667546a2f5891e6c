"""Tiny randomly initialised zero-shot (open-vocabulary) checkpoints on disk, each with a small tokenizer built here:
OWLv2 and OWL-ViT (CLIP BPE vocab/merges), Grounding DINO (BERT WordPiece vocab.txt). No downloads.

Random weights give random detections: tests built on these check the plumbing (text caching, class mapping, box
placement) against transformers' own processor + model + post-processing, not quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Every word the tests prompt with; one token each in both tokenizers, so prompts are easy to reason about.
WORDS = (
    "person",
    "car",
    "red",
    "pedestrian",
    "walking",
    "dog",
    "cat",
    "bus",
    "truck",
    "bike",
    "tree",
    "sign",
    "lamp",
    "road",
    "bird",
    "boat",
)
OWL_IMAGE_SIZE_PX = 64
OWL_PATCH_PX = 16
OWL_TEXT_LEN = 16


def _perturb(model: Any, scale: float = 0.3) -> None:
    """Fresh initialisation gives every query nearly the same score; spread them."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * scale)


def _clip_tokenizer() -> Any:
    """A byte-level BPE CLIP tokenizer over ``WORDS``: every word one token (``word</w>``)."""
    import transformers

    symbols = sorted({ch for word in WORDS for ch in word})
    vocab: dict[str, int] = {}
    for sym in symbols:
        vocab.setdefault(sym, len(vocab))
        vocab.setdefault(sym + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:  # merge left to right: w+o, wo+r, ... ending in the word's end-of-word token
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            rule = (pieces[0], pieces[1])
            if rule not in merges:
                merges.append(rule)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged, *pieces[2:]]
    for special in ("<|startoftext|>", "<|endoftext|>", "!"):
        vocab.setdefault(special, len(vocab))
    # save_pretrained writes it (tokenizer.json) beside the model
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=OWL_TEXT_LEN)


def _owl_configs(transformers: Any, tokenizer: Any, config_class: str) -> Any:
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": OWL_TEXT_LEN,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": OWL_IMAGE_SIZE_PX,
        "patch_size": OWL_PATCH_PX,
    }
    return getattr(transformers, config_class)(text_config=text, vision_config=vision, projection_dim=16)


def write_tiny_owlv2(directory: Path) -> Path:
    """Save a tiny OWLv2 (pads frames square, then resizes to 64 px) with its processor and tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    config = _owl_configs(transformers, tokenizer, "Owlv2Config")
    model = transformers.Owlv2ForObjectDetection(config).eval()
    _perturb(model)
    model.save_pretrained(directory)
    size = {"height": OWL_IMAGE_SIZE_PX, "width": OWL_IMAGE_SIZE_PX}
    image_processor = transformers.Owlv2ImageProcessorPil(size=size)
    transformers.Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def write_tiny_owlvit(directory: Path) -> Path:
    """Save a tiny OWL-ViT (stretches frames to 64 px square) with its processor and tokenizer."""
    import torch
    import transformers

    torch.manual_seed(1)
    tokenizer = _clip_tokenizer()
    config = _owl_configs(transformers, tokenizer, "OwlViTConfig")
    model = transformers.OwlViTForObjectDetection(config).eval()
    _perturb(model)
    model.save_pretrained(directory)
    size = {"height": OWL_IMAGE_SIZE_PX, "width": OWL_IMAGE_SIZE_PX}
    image_processor = transformers.OwlViTImageProcessorPil(size=size, crop_size=size)
    transformers.OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def write_tiny_grounding_dino(directory: Path, *, max_text_len: int = 256) -> Path:
    """Save a tiny Grounding DINO (Swin backbone without timm, 2-layer BERT) with its processor and a WordPiece
    tokenizer; frames go in at most 96 px on the long side. A small ``max_text_len`` makes prompt sets overflow
    one text window."""
    import torch
    import transformers

    torch.manual_seed(2)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = [*specials, ".", "?", ",", *WORDS]
    tokenizer = transformers.BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    backbone = transformers.SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max(64, max_text_len),
    )
    config = transformers.GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # transformers ties box heads across layers: one layer fails its tying check
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=12,
        num_feature_levels=3,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=max_text_len,
    )
    model = transformers.GroundingDinoForObjectDetection(config).eval()
    _perturb(model, 0.2)
    model.save_pretrained(directory)
    image_processor = transformers.GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    transformers.GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory
