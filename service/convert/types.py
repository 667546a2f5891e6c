"""What every converter takes besides the item's predictions (``service.pipeline.predictions``): the model
that made them, and the error a format raises when it cannot hold an item."""

from __future__ import annotations

from dataclasses import dataclass


class UnsupportedByFormatError(ValueError):
    """A format cannot hold this item (e.g. an Encord label row with a video and stills): the item is skipped
    with ``unsupported_by_format``. Any other exception from a converter is a bug, logged as ``output_failed``."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """The model behind a set of predictions (converters write it as provenance)."""

    spec: str
    version: str
    class_names: tuple[str, ...]
