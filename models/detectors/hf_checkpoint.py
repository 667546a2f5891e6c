"""Find and load a transformers checkpoint (a detector, or a SAM-family segmenter): a local directory or a hub id
(cache first)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import MissingDependencyError, ModelLoadError, ModelNotFoundError
from models.provenance import files_digest
from models.runtimes.torch import require

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TRUTHY = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class CheckpointKind:
    """What kind of checkpoint to load, and how.

    Attributes:
        what: named in errors (``detection``, ``SAM-family``).
        required: file groups a directory must hold, one file of each group (in the version hash when present).
        load: ``(transformers, source, local_files_only) -> (processor, model)``; raises OSError when the files
            are missing, ValueError/KeyError when they do not form this kind of checkpoint.
        example_hub_id: a hub id of this kind, for the not-found hint.
        hashed: further files in the version hash when present (a tokenizer's: new text ids are a new model).
    """

    what: str
    required: tuple[tuple[str, ...], ...]
    load: Callable[[Any, str, bool], tuple[Any, Any]]
    example_hub_id: str = "PekingU/rtdetr_r50vd"
    hashed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A loaded processor + model pair and where it came from.

    Attributes:
        processor: what ``CheckpointKind.load`` gives (detection: the ``AutoImageProcessor`` instance).
        model: the model instance (detection: ``AutoModelForObjectDetection``, or for an instance-segmentation
            checkpoint such as Mask2Former ``AutoModelForUniversalSegmentation``), on CPU, fp32.
        name: a short name (directory or repo name).
        version: ``<name>-<hash>``: config + weights digest for a directory, snapshot commit for the hub.
    """

    processor: Any
    model: Any
    name: str
    version: str


def looks_like_path(target: str) -> bool:
    """True for things a hub id can never be: absolute, ``./``/``~`` relative, or more than one ``/``."""
    return target.startswith(("/", ".", "~")) or "\\" in target or target.count("/") > 1


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


def _directory_version(directory: Path, kind: CheckpointKind) -> str:
    names = [name for group in kind.required for name in group] + list(kind.hashed)
    files = [directory / name for name in names if (directory / name).is_file()]
    files += sorted(p for p in directory.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    return f"{directory.name}-{files_digest(files)}"


def _hub_version(repo_id: str) -> str:
    """The cached snapshot's commit (``.../snapshots/<commit>/config.json``)."""
    hub = require("huggingface_hub", needed_for=f"hf:{repo_id}")
    cached = hub.try_to_load_from_cache(repo_id, "config.json")
    name = repo_id.rsplit("/", 1)[-1]
    if isinstance(cached, str):
        return f"{name}-{Path(cached).parent.name[:12]}"
    return f"{name}-unknown"


# Universal-segmentation models whose outputs ``instance_detections`` reads: class and mask logits per query, from
# pixel_values alone (OneFormer also needs text task inputs, EoMT its own tiling of the frame).
INSTANCE_SEGMENTATION_TYPES = frozenset({"mask2former"})


def segments(model: Any) -> bool:
    """An instance-segmentation model (Mask2Former): rows come with masks."""
    return getattr(model.config, "model_type", None) in INSTANCE_SEGMENTATION_TYPES


def _load_detection(transformers: Any, source: str, local_files_only: bool) -> tuple[Any, Any]:
    processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=local_files_only)
    config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_files_only)
    model = _auto_model_class(transformers, config).from_pretrained(
        source, config=config, local_files_only=local_files_only
    )
    return processor, model


def _auto_model_class(transformers: Any, config: Any) -> Any:
    """``AutoModelForObjectDetection``, or ``AutoModelForUniversalSegmentation`` for a config only that class
    knows; an unknown config gets the detection class and its error."""
    from transformers.models.auto import modeling_auto

    known = type(config)
    if known in modeling_auto.MODEL_FOR_OBJECT_DETECTION_MAPPING or (
        known not in modeling_auto.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING
    ):
        return transformers.AutoModelForObjectDetection
    if config.model_type not in INSTANCE_SEGMENTATION_TYPES:
        raise ValueError(
            f"{config.model_type} segmentation checkpoints are not supported; instance segmentation works with "
            f"{', '.join(sorted(INSTANCE_SEGMENTATION_TYPES))} checkpoints"
        )
    return transformers.AutoModelForUniversalSegmentation


DETECTION = CheckpointKind(
    "detection or instance-segmentation", (("config.json",), ("preprocessor_config.json",)), _load_detection
)


def _load_zero_shot(transformers: Any, source: str, local_files_only: bool) -> tuple[Any, Any]:
    processor = transformers.AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
    model = transformers.AutoModelForZeroShotObjectDetection.from_pretrained(source, local_files_only=local_files_only)
    return processor, model


# OWLv2, OWL-ViT, Grounding DINO, OmDet-Turbo: the processor (``AutoProcessor``) pairs an image processor with the
# tokenizer the prompts go through, so the tokenizer's files are part of the version.
ZERO_SHOT_DETECTION = CheckpointKind(
    "zero-shot detection",
    (
        ("config.json",),
        ("processor_config.json", "preprocessor_config.json"),
        ("tokenizer.json", "vocab.json", "vocab.txt"),
    ),
    _load_zero_shot,
    example_hub_id="google/owlv2-base-patch16-ensemble",
    hashed=("tokenizer_config.json", "special_tokens_map.json", "merges.txt", "vocab.json", "vocab.txt"),
)


def checkpoint_model_type(target: str) -> str | None:
    """The ``model_type`` in a checkpoint's config.json: a directory's, or a hub id's (the cached one; else, unless
    ``HF_HUB_OFFLINE`` is set, downloaded first); None when it cannot be read (the loader then reports what is
    wrong)."""
    directory = Path(target).expanduser()
    config_path: str | Path | None = directory / "config.json"
    if not directory.is_dir():
        if looks_like_path(target):
            return None
        try:
            hub = require("huggingface_hub", needed_for=f"hf:{target}")
        except MissingDependencyError:
            return None
        config_path = hub.try_to_load_from_cache(target, "config.json")
        if not isinstance(config_path, str) and not _hub_offline():
            # Not cached yet: its config alone says which loader fetches the rest (a zero-shot model or not).
            try:
                config_path = hub.hf_hub_download(target, "config.json")
            except Exception:  # any hub failure: the loader then reports it, with its hint
                return None
    if not isinstance(config_path, (str, Path)) or not Path(config_path).is_file():
        return None
    try:
        model_type = json.loads(Path(config_path).read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return model_type if isinstance(model_type, str) else None


def _load_directory(transformers: Any, directory: Path, kind: CheckpointKind) -> Checkpoint:
    missing = [" or ".join(group) for group in kind.required if not any((directory / n).is_file() for n in group)]
    if missing:
        raise ModelLoadError(
            f"{directory} is not a transformers checkpoint: it lacks {', '.join(missing)} "
            "(save both the model and its image processor with save_pretrained)"
        )
    try:
        processor, model = kind.load(transformers, str(directory), True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the {kind.what} checkpoint in {directory}: {exc}") from exc
    return Checkpoint(processor, model, directory.name, _directory_version(directory, kind))


def _load_hub(transformers: Any, repo_id: str, kind: CheckpointKind) -> Checkpoint:
    hint = (
        f"pre-download it where there is network (`hf download {repo_id}`, then copy the HF cache or set "
        f"HF_HOME), or save it to a directory and use hf:/path/to/dir"
    )
    try:
        processor, model = kind.load(transformers, repo_id, True)
    except OSError as cache_miss:
        if _hub_offline():
            raise ModelNotFoundError(
                f"hf:{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
            ) from cache_miss
        log.info("hf:%s is not cached; downloading from the Hugging Face Hub", repo_id)
        try:
            processor, model = kind.load(transformers, repo_id, False)
        except OSError as exc:
            raise ModelNotFoundError(f"cannot find or download hf:{repo_id} ({exc}); {hint}") from exc
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(f"hf:{repo_id} is cached but is not a loadable {kind.what} checkpoint: {exc}") from exc
    return Checkpoint(processor, model, repo_id.rsplit("/", 1)[-1], _hub_version(repo_id))


def load_checkpoint(target: str, kind: CheckpointKind = DETECTION) -> Checkpoint:
    """Load a ``kind`` checkpoint (by default ``AutoImageProcessor`` + ``AutoModelForObjectDetection``) from a
    directory or a hub id.

    A directory is read with ``local_files_only=True``. A hub id is read from the local HF cache
    first; when it is not cached and ``HF_HUB_OFFLINE`` is not set, it is downloaded.

    Raises:
        ModelNotFoundError: the directory does not exist, or the hub id is neither cached nor downloadable.
        ModelLoadError: the files exist but do not form a ``kind`` checkpoint.
        MissingDependencyError: torch or transformers is not installed.
    """
    directory = Path(target).expanduser()
    if not directory.is_dir() and looks_like_path(target):
        raise ModelNotFoundError(
            f"checkpoint directory {directory} does not exist; point hf: at a directory holding "
            f"{', '.join(' or '.join(group) for group in kind.required)} and the weights, or use a hub id such as "
            f"{kind.example_hub_id}"
        )
    require("torch", needed_for=f"hf:{target}")
    transformers = require("transformers", needed_for=f"hf:{target}")
    if directory.is_dir():
        return _load_directory(transformers, directory.resolve(), kind)
    return _load_hub(transformers, target, kind)
