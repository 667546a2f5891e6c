"""Errors raised by ``models``; the service maps each to one ``ErrorCode``."""


class ModelError(Exception):
    """Base class for model loading and inference errors."""


class ModelSpecError(ModelError):
    """The spec string is malformed or names an unknown scheme or builtin."""


class ModelNotFoundError(ModelError):
    """The spec points at a file, directory or hub id that does not exist (or is not cached)."""


class ModelLoadError(ModelError):
    """The model exists but cannot be loaded or is not a supported detector layout."""


class InvalidModelError(ModelLoadError):
    """The model loads, but running it as found would give wrong detections (e.g. an export missing the sidecar
    files that say how to read its outputs); the message says what to add."""


class DeviceUnavailableError(ModelError):
    """``cuda`` was asked for but no usable CUDA device or runtime is present."""


class MissingDependencyError(ModelError):
    """An optional dependency needed for this model (e.g. torch for ``hf:``) is not installed."""


class DeviceOutOfMemoryError(ModelError):
    """The accelerator ran out of memory for this batch; a smaller batch may fit."""


class PromptsRequiredError(ModelError):
    """An open-vocabulary model was run without prompts (it has no classes of its own), or given a prompt it
    cannot take (longer than its text window), or a fixed-class model was given prompts it cannot use."""


class ModelFetchError(ModelError):
    """A model's files could not be fetched or checked (the tool that fetches them is missing, the download
    failed, or a checksum differs); the message says what to do."""
