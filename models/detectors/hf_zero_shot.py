"""``hf:DIR_OR_HUB_ID`` for an open-vocabulary checkpoint (``AutoModelForZeroShotObjectDetection``): OWLv2, OWL-ViT,
Grounding DINO and MM-Grounding-DINO. The registry picks this when the checkpoint's config is a zero-shot type.

The model has no classes of its own; ``prompted(PromptSet)`` gives the ``Detector`` for one prompt set (views share
the weights). Each set's text work is done once and cached with its view:
- OWL: the prompts' query embeddings (text tower + projection, as the model's forward does); per batch only the
  image tower and the class/box heads run.
- Grounding DINO: text and image fuse in the encoder, so each batch runs the forward with the prompt caption
  ("a. b. c."); the tokenization and each prompt's token span are cached, and a set too long for one text window
  (``config.max_text_len``) is split into captions that fit, each run in turn.

torch and transformers are imported when a detector is built, not when this module is imported.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import DEFAULT_BATCH_SIZE, Detector, DetectorOptions, PromptableDetector
from models.detectors.hf_checkpoint import ZERO_SHOT_DETECTION, checkpoint_model_type, load_checkpoint
from models.detectors.hf_transformers import _size_fields, processor_size_override
from models.errors import DeviceOutOfMemoryError, ModelLoadError, PromptsRequiredError
from models.ops.boxes import clip_xyxy
from models.prompts import PromptSet
from models.runtimes.torch import autocast_dtype, require, to_device, torch_device_for
from models.types import Detections, ModelInfo, RGBImage

if TYPE_CHECKING:
    import torch

OWL_TYPES = frozenset({"owlv2", "owlvit"})
GROUNDING_TYPES = frozenset({"grounding-dino", "mm-grounding-dino"})


def zero_shot_model_types() -> frozenset[str]:
    """Every ``model_type`` transformers' ``AutoModelForZeroShotObjectDetection`` loads."""
    require("transformers", needed_for="hf: zero-shot checkpoints")
    from transformers.models.auto.modeling_auto import MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES

    return frozenset(MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES)


def _refuse_unsupported(spec: str, model_type: str | None) -> None:
    if model_type is not None and model_type not in OWL_TYPES | GROUNDING_TYPES:
        raise ModelLoadError(
            f"{spec}: {model_type} zero-shot checkpoints are not supported (OmDet-Turbo's backbone needs timm and "
            f"its processor torchvision, which the hf extra does not install); use an OWLv2, OWL-ViT or Grounding "
            f"DINO checkpoint"
        )


class HFZeroShotDetector(PromptableDetector):
    """An open-vocabulary transformers checkpoint; ``prompted`` gives the detector for one prompt set."""

    def __init__(self, spec: str, target: str, options: DetectorOptions) -> None:
        device = torch_device_for(spec, device=options.device, num_threads=options.num_threads)
        _refuse_unsupported(spec, checkpoint_model_type(target))  # before loading: OmDet-Turbo's would fail deep
        checkpoint = load_checkpoint(target, ZERO_SHOT_DETECTION)
        model_type = str(checkpoint.model.config.model_type)
        _refuse_unsupported(spec, model_type)
        self._device = device
        self._autocast = autocast_dtype(device, options.fp16)
        self._model = checkpoint.model.to(device=device).eval()
        self._processor = checkpoint.processor
        # One model call at a time, whichever view's thread asks: the model and its caches are shared.
        self._lock = threading.Lock()
        self._views: OrderedDict[str, _PromptedView] = OrderedDict()
        self._max_views = options.max_prompt_sets
        self._engine: _Engine = (
            _OwlEngine(self._model, self._processor, device, options.input_size_px)
            if model_type in OWL_TYPES
            else _GroundingEngine(self._model, self._processor, device, options.input_size_px)
        )
        self.info = ModelInfo(
            spec=spec,
            name=checkpoint.name,
            version=checkpoint.version,
            class_names=(),
            runtime="torch",
            device=device,
            batch_size=options.batch_size or DEFAULT_BATCH_SIZE[device],
            input_size_px=self._engine.input_size_px,
            dtype=str(self._autocast).removeprefix("torch.") if self._autocast else "float32",
            keeps_aspect=self._engine.keeps_aspect,
            open_vocabulary=True,
        )

    def prompted(self, prompts: PromptSet) -> Detector:
        """The view for ``prompts``: built (and its text encoded) once, then reused while among the last
        ``options.max_prompt_sets`` sets asked for (a dropped view still works for whoever holds it)."""
        with self._lock:
            view = self._views.get(prompts.key)
            if view is None:
                with self._running(f"encoding {len(prompts.texts)} prompts"):
                    text = self._engine.encode(prompts)
                view = _PromptedView(self, prompts, text)
                self._views[prompts.key] = view
                while len(self._views) > self._max_views:
                    self._views.popitem(last=False)
            self._views.move_to_end(prompts.key)
            return view

    def _run(self, text: Any, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        # Pixels are prepared before taking the lock: other views' batches keep the model busy meanwhile.
        with self._running(f"preparing {len(images)} frames"):
            pixels = self._engine.prepare(images)
        with self._lock, self._running(f"a batch of {len(images)} frames"):
            return self._engine.detect(text, pixels, images, threshold)

    @contextmanager
    def _running(self, what: str) -> Iterator[None]:
        import torch

        with torch.inference_mode():
            try:
                with torch.autocast(
                    device_type="cuda", dtype=self._autocast or torch.float16, enabled=self._autocast is not None
                ):
                    yield
            except torch.cuda.OutOfMemoryError as exc:  # == torch.OutOfMemoryError; a smaller batch may fit
                raise DeviceOutOfMemoryError(f"{self._device} out of memory on {what}") from exc

    def close(self) -> None:
        """Drop the model and every view's cached text; on CUDA, hand cached blocks back to the driver."""
        import torch

        with self._lock:
            self._views.clear()
            del self._model
            self._engine.close()
        if self._device == "cuda":
            torch.cuda.empty_cache()


class _PromptedView(Detector):
    """The detector for one prompt set: the shared model plus this set's cached text."""

    def __init__(self, base: HFZeroShotDetector, prompts: PromptSet, text: Any) -> None:
        self._base = base
        self._text = text
        self.prompts = prompts
        self.info = replace(base.info, class_names=prompts.class_names, version=f"{base.info.version}+{prompts.key}")

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        return self._base._run(self._text, images, threshold)


class _Engine:
    """One model family's text encoding and per-batch detection (called under the detector's lock); ``prepare``
    turns frames into the model's pixel inputs on its device and runs outside the lock (it touches no shared state).
    """

    input_size_px: int | None
    keeps_aspect: bool
    _processor: Any
    _size_kwargs: dict[str, Any]
    _device: str

    def encode(self, prompts: PromptSet) -> Any:
        raise NotImplementedError

    def prepare(self, images: Sequence[RGBImage]) -> dict[str, torch.Tensor]:
        """The processor's pixel inputs (``pixel_values``, and ``pixel_mask`` where it pads) on the device."""
        pixels = self._processor.image_processor(
            images=list(images), return_tensors="pt", input_data_format="channels_last", **self._size_kwargs
        )
        return {name: to_device(tensor, self._device) for name, tensor in pixels.items()}

    def detect(
        self, text: Any, pixels: dict[str, torch.Tensor], images: Sequence[RGBImage], threshold: float
    ) -> list[Detections]:
        raise NotImplementedError

    def close(self) -> None:
        self.__dict__.clear()


def _image_size_kwargs(processor: Any, input_size_px: int | None) -> tuple[dict[str, Any], int | None]:
    """The processor's ``size`` override for ``input_size_px`` (never above its own size), and the long side."""
    size, long_side_px = processor_size_override(_size_fields(processor.image_processor.size), input_size_px)
    return ({"size": size} if size is not None else {}), long_side_px


def _too_long(prompt: str, tokens: int, max_tokens: int) -> PromptsRequiredError:
    return PromptsRequiredError(
        f"prompt {prompt[:60]!r} is {tokens} tokens, longer than the model's text window of {max_tokens}: shorten it"
    )


def _rows(
    boxes_cxcywh: torch.Tensor, scores: torch.Tensor, class_ids: torch.Tensor, image: RGBImage, scale: Sequence[float]
) -> Detections:
    """One frame's kept rows: normalized centre boxes scaled by ``scale`` (x, y) into frame pixels, best first."""
    from models.ops.boxes import cxcywh_to_xyxy

    height, width = image.shape[:2]
    cxcywh = boxes_cxcywh.detach().float().cpu().numpy().astype(np.float32).reshape(-1, 4)
    xyxy = cxcywh_to_xyxy(cxcywh) * np.array([scale[0], scale[1], scale[0], scale[1]], np.float32)
    dets = Detections.from_arrays(
        clip_xyxy(xyxy, width, height), scores.detach().float().cpu().numpy(), class_ids.detach().cpu().numpy()
    )
    return dets[np.argsort(-dets.confidence, kind="stable")]


@dataclass(frozen=True, slots=True)
class _OwlText:
    """A prompt set for OWL: each prompt's query embedding (unit norm), and each prompt's class id."""

    query_embeds: torch.Tensor  # (prompts, dim)
    class_ids: torch.Tensor  # (prompts,) int64
    num_classes: int


class _OwlEngine(_Engine):
    """OWLv2 / OWL-ViT: text tower once per prompt set; per batch the image tower and the class and box heads."""

    def __init__(self, model: Any, processor: Any, device: str, input_size_px: int | None) -> None:
        self._model = model
        self._processor = processor
        self._device = device
        self._pads_square = model.config.model_type == "owlv2"  # OWLv2's processor pads frames square first
        self._size_kwargs, self.input_size_px = _image_size_kwargs(processor, input_size_px)
        size = self._size_kwargs.get("size")
        if size is not None and getattr(processor.image_processor, "crop_size", None) is not None:
            self._size_kwargs["crop_size"] = size  # OWL-ViT crops to crop_size after resizing
        native_px = int(model.config.vision_config.image_size)
        self._interpolate = self.input_size_px is not None and self.input_size_px != native_px
        self.keeps_aspect = self._pads_square
        self._max_tokens = int(model.config.text_config.max_position_embeddings)
        # On a GPU OWLv2's pixels are done there; on the CPU its processor is faster (0.19 s vs 0.46 s a 1080p frame).
        self._owlv2_pixels = (
            None if device == "cpu" else _Owlv2Pixels.of(processor.image_processor, self._size_kwargs.get("size"))
        )

    def encode(self, prompts: PromptSet) -> _OwlText:
        """The prompts' query embeddings, as the model's forward computes them (text tower, projection, norm)."""
        import torch

        # The text tower's window is short (16 tokens for OWL): a longer prompt would fail deep in the model.
        for text, ids in zip(prompts.texts, self._processor.tokenizer(list(prompts.texts))["input_ids"], strict=True):
            if len(ids) > self._max_tokens:
                raise _too_long(text, len(ids), self._max_tokens)
        tokens = self._processor(text=list(prompts.texts), return_tensors="pt")
        owl = self._model.owlv2 if self._pads_square else self._model.owlvit
        embeds = owl.get_text_features(
            input_ids=to_device(tokens["input_ids"], self._device),
            attention_mask=to_device(tokens["attention_mask"], self._device),
        ).pooler_output
        embeds = embeds / torch.linalg.norm(embeds, ord=2, dim=-1, keepdim=True)
        class_ids = torch.tensor(prompts.text_class_ids, dtype=torch.int64, device=self._device)
        return _OwlText(embeds, class_ids, len(prompts.classes))

    def prepare(self, images: Sequence[RGBImage]) -> dict[str, torch.Tensor]:
        if self._owlv2_pixels is None:
            return super().prepare(images)
        return {"pixel_values": self._owlv2_pixels.prepare(images, self._device)}

    def detect(
        self, text: _OwlText, pixels: dict[str, torch.Tensor], images: Sequence[RGBImage], threshold: float
    ) -> list[Detections]:
        import torch

        feature_map, _ = self._model.image_embedder(
            pixel_values=pixels["pixel_values"], interpolate_pos_encoding=self._interpolate
        )
        batch, rows, cols, dim = feature_map.shape
        image_feats = feature_map.reshape(batch, rows * cols, dim)
        queries = text.query_embeds.to(image_feats.dtype).unsqueeze(0).expand(batch, -1, -1)
        query_mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=queries.device)
        logits, _ = self._model.class_predictor(image_feats, queries, query_mask)  # (batch, patches, prompts)
        boxes = self._model.box_predictor(image_feats, feature_map, self._interpolate).float()
        # A class's logit is the best of its prompts' (sigmoid is monotonic: max then sigmoid = the best score).
        index = text.class_ids.expand(batch, rows * cols, -1)
        class_logits = torch.full(
            (batch, rows * cols, text.num_classes), float("-inf"), dtype=torch.float32, device=logits.device
        )
        class_logits = class_logits.scatter_reduce(-1, index, logits.float(), reduce="amax")
        best, class_ids = class_logits.max(dim=-1)
        scores = torch.sigmoid(best)
        out = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            # OWLv2's boxes are fractions of the padded square (the long side); OWL-ViT's of the stretched frame.
            scale = (max(height, width),) * 2 if self._pads_square else (width, height)
            keep = scores[i] >= threshold
            out.append(_rows(boxes[i][keep], scores[i][keep], class_ids[i][keep], image, scale))
        return out


@dataclass(frozen=True, slots=True)
class _Owlv2Pixels:
    """OWLv2's image processor redone in torch on the device (the PIL one costs ~0.24 s of CPU per 1080p frame):
    rescale, pad square with 0 (bottom, right), anti-aliased resize as scikit-image does, normalise."""

    out_hw: tuple[int, int]
    rescale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, image_processor: Any, size: dict[str, int] | None) -> _Owlv2Pixels | None:
        """None unless the processor is OWLv2's with every step on (then the processor itself is used)."""
        fields = size or _size_fields(image_processor.size)
        steps = ("do_rescale", "do_pad", "do_resize", "do_normalize")
        if not type(image_processor).__name__.startswith("Owlv2ImageProcessor") or not all(
            getattr(image_processor, step, False) for step in steps
        ):
            return None
        if "height" not in fields or "width" not in fields:
            return None
        return cls(
            (fields["height"], fields["width"]),
            float(image_processor.rescale_factor),
            tuple(float(v) for v in image_processor.image_mean),
            tuple(float(v) for v in image_processor.image_std),
        )

    def prepare(self, images: Sequence[RGBImage], device: str) -> torch.Tensor:
        import torch
        import torch.nn.functional as functional

        from models.runtimes.torch_preprocess import antialiased_resize

        mean = torch.tensor(self.mean, device=device).view(3, 1, 1)
        std = torch.tensor(self.std, device=device).view(3, 1, 1)
        out = torch.empty((len(images), 3, *self.out_hw), device=device)
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            frame = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float()
            frame = functional.pad(
                frame * self.rescale, (0, max(height, width) - width, 0, max(height, width) - height)
            )
            out[i] = (antialiased_resize(frame, self.out_hw) - mean) / std
        return out


@dataclass(frozen=True, slots=True)
class _Caption:
    """One text window of a Grounding DINO prompt set: its tokens, and each prompt's token span and class."""

    tokens: dict[str, torch.Tensor]  # input_ids, token_type_ids, attention_mask: (1, tokens)
    spans: tuple[tuple[int, int], ...]  # [start, end) token positions of each prompt
    class_ids: tuple[int, ...]


class _GroundingEngine(_Engine):
    """Grounding DINO / MM-Grounding-DINO: the caption's tokens are cached; each batch runs the fused forward once
    per caption (one, unless the prompt set overflows ``max_text_len`` tokens)."""

    def __init__(self, model: Any, processor: Any, device: str, input_size_px: int | None) -> None:
        self._model = model
        self._processor = processor
        self._device = device
        self._max_tokens = int(model.config.max_text_len)
        self._size_kwargs, self.input_size_px = _image_size_kwargs(processor, input_size_px)
        self.keeps_aspect = True
        _encode_identical_rows_once(model.model.text_backbone)

    def encode(self, prompts: PromptSet) -> tuple[_Caption, ...]:
        # Lower-cased and dot-free as the processor writes captions: a "." inside a prompt would split its phrase.
        texts = [" ".join(t.replace(".", " ").lower().split()) for t in prompts.texts]
        lengths = [len(self._processor.tokenizer.tokenize(t)) + 1 for t in texts]  # + its "."
        for prompt, length in zip(prompts.texts, lengths, strict=True):
            if length + 2 > self._max_tokens:  # even alone in a caption, with [CLS] and [SEP]
                raise _too_long(prompt, length + 2, self._max_tokens)
        captions: list[_Caption] = []
        start, used = 0, 2  # [CLS] and [SEP]
        for k, length in enumerate(lengths):
            if used + length > self._max_tokens and k > start:
                captions.append(self._caption(texts[start:k], prompts.text_class_ids[start:k]))
                start, used = k, 2
            used += length
        captions.append(self._caption(texts[start:], prompts.text_class_ids[start:]))
        return tuple(captions)

    def _caption(self, texts: Sequence[str], class_ids: Sequence[int]) -> _Caption:
        caption = ". ".join(texts) + "."
        encoded = self._processor.tokenizer(
            caption, return_tensors="pt", return_offsets_mapping=True, return_token_type_ids=True
        )
        if encoded["input_ids"].shape[1] > self._max_tokens:  # encode's per-prompt check keeps this from happening
            raise _too_long(texts[0], int(encoded["input_ids"].shape[1]), self._max_tokens)
        offsets = encoded.pop("offset_mapping")[0].tolist()
        spans = []
        char_start = 0
        for text in texts:
            char_end = char_start + len(text)
            inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= char_start and b <= char_end]
            spans.append((min(inside), max(inside) + 1) if inside else (0, 0))
            char_start = char_end + 2  # ". "
        tokens = {name: to_device(tensor, self._device) for name, tensor in encoded.items()}
        return _Caption(tokens, tuple(spans), tuple(class_ids))

    def detect(
        self, text: tuple[_Caption, ...], pixels: dict[str, torch.Tensor], images: Sequence[RGBImage], threshold: float
    ) -> list[Detections]:
        parts = [self._detect_caption(caption, pixels, images, threshold) for caption in text]
        return [_concat(frame_parts) for frame_parts in zip(*parts, strict=True)]

    def _detect_caption(
        self, caption: _Caption, feeds: dict[str, torch.Tensor], images: Sequence[RGBImage], threshold: float
    ) -> list[Detections]:
        import torch

        batch = len(images)
        tokens = {name: tensor.expand(batch, -1) for name, tensor in caption.tokens.items()}
        outputs = self._model(**feeds, **tokens)
        probs = torch.sigmoid(outputs.logits.float())  # (batch, queries, max_text_len)
        best = torch.full(probs.shape[:2], -1.0, device=probs.device)
        best_class = torch.zeros(probs.shape[:2], dtype=torch.int64, device=probs.device)
        for (start, end), class_id in zip(caption.spans, caption.class_ids, strict=True):
            if end <= start:
                continue
            score = probs[..., start:end].amax(dim=-1)  # a prompt scores its best token, as transformers does
            better = score > best  # ties keep the earlier prompt
            best = torch.where(better, score, best)
            best_class = torch.where(better, torch.full_like(best_class, class_id), best_class)
        boxes = outputs.pred_boxes.float()
        out = []
        for i, image in enumerate(images):
            height, width = image.shape[:2]
            keep = best[i] >= threshold
            out.append(_rows(boxes[i][keep], best[i][keep], best_class[i][keep], image, (width, height)))
        return out


def _encode_identical_rows_once(text_backbone: Any) -> None:
    """Make Grounding DINO's text encoder (BERT) run once for a batch whose rows are one caption repeated, as every
    batch here is (the forward takes the caption per frame), and hand each frame that row: rows are independent, so
    the result is the same, without B - 1 copies of the text encoder's work. Other batches run as before."""
    rows = [1]  # the batch size the running call was cut down from (calls run one at a time, under the lock)

    def one_row(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        import torch

        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        batch = int(tensors[0].shape[0]) if tensors else 1
        if batch == 1 or not all(t.shape[0] == batch and bool((t == t[:1]).all()) for t in tensors):
            rows[0] = 1
            return args, kwargs

        def first(value: Any) -> Any:
            return value[:1] if isinstance(value, torch.Tensor) else value

        rows[0] = batch
        return tuple(first(a) for a in args), {name: first(v) for name, v in kwargs.items()}

    def all_rows(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        batch = rows[0]
        if batch == 1:
            return output
        if isinstance(output, tuple):
            return (output[0].expand(batch, *output[0].shape[1:]), *output[1:])
        output["last_hidden_state"] = output["last_hidden_state"].expand(batch, *output["last_hidden_state"].shape[1:])
        return output

    text_backbone.register_forward_pre_hook(one_row, with_kwargs=True)
    text_backbone.register_forward_hook(all_rows, with_kwargs=True)


def _concat(parts: Sequence[Detections]) -> Detections:
    if len(parts) == 1:
        return parts[0]
    dets = Detections.from_arrays(
        np.concatenate([p.xyxy for p in parts]),
        np.concatenate([p.confidence for p in parts]),
        np.concatenate([p.class_id for p in parts]),
    )
    return dets[np.argsort(-dets.confidence, kind="stable")]
