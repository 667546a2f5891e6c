"""Per-class score thresholds calibrated on a benchmark (``preannotate calibrate``): the file it writes, and what
runs apply (``class -> least score``; a class not listed keeps the run's global threshold)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_THRESHOLD_CLASSES = 10_000


class ClassThreshold(BaseModel):
    """One class's calibrated threshold and what it achieved on the benchmark.

    Attributes:
        threshold: the least score kept for this class.
        precision, recall, f1: achieved at ``threshold`` on the benchmark (None: the class had no benchmark or
            candidate rows to score).
        support: the class's benchmark objects.
        calibrated: False when the class had too little support and keeps the global threshold (``reason`` says).
        reason: why it was not calibrated; None when it was.
    """

    threshold: float = Field(ge=0.0, le=1.0)
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    support: int = Field(0, ge=0)
    calibrated: bool = True
    reason: str | None = None

    model_config = ConfigDict(frozen=True, extra="ignore")


class ThresholdsFile(BaseModel):
    """What ``preannotate calibrate --out`` writes and ``--thresholds`` reads.

    ``{"model_version": "...", "objective": "f1", "classes": {"NAME": {"threshold": t, "precision": p, "recall": r,
    "f1": f, "support": n}}}``, plus the matching IoU and the global threshold the uncalibrated classes keep.
    """

    model_version: str = ""
    objective: str = "f1"
    iou: float = Field(0.5, gt=0.0, le=1.0)
    global_threshold: float | None = Field(None, ge=0.0, le=1.0)
    classes: dict[str, ClassThreshold] = Field(default_factory=dict, max_length=MAX_THRESHOLD_CLASSES)

    model_config = ConfigDict(frozen=True, extra="ignore")

    def class_thresholds(self) -> dict[str, float]:
        """The thresholds a run applies: the calibrated classes only (the others keep the run's own)."""
        return {name: entry.threshold for name, entry in self.classes.items() if entry.calibrated}

    @classmethod
    def read(cls, path: Path) -> ThresholdsFile:
        """Parse a thresholds file; ValueError naming the file on anything wrong with it."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the thresholds file ({exc.strerror or exc})") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the document"
            raise ValueError(f"{path}: not a thresholds file ({where}: {first['msg']})") from None

    def to_json_text(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def check_class_thresholds(thresholds: Mapping[str, float]) -> dict[str, float]:
    """``{class: least score}`` as given in a job body or a file: names non-blank, scores in [0, 1]; ValueError."""
    if len(thresholds) > MAX_THRESHOLD_CLASSES:
        raise ValueError(f"{len(thresholds)} class thresholds; at most {MAX_THRESHOLD_CLASSES}")
    checked: dict[str, float] = {}
    for name, value in thresholds.items():
        if not name.strip():
            raise ValueError("a class threshold needs a class name")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"threshold of {name!r} must be a number, got {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold of {name!r} must be in [0, 1], got {value}")
        checked[name] = float(value)
    return checked


__all__ = ["ClassThreshold", "ThresholdsFile", "check_class_thresholds"]
