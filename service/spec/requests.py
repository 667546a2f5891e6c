"""Job requests as clients send them: items of named slots, each one file or an ordered series."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.prompts import PromptSet
from service.errors import ErrorCode, PreannotateError
from service.pipeline.options import (
    REMOVED_TRACK_OPTIONS,
    SamplingMode,
    TrackBoxSizes,
    TrackGapS,
    removed_track_option,
)
from service.spec.thresholds import ThresholdsFile, check_class_thresholds

SLOT_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"  # safe as a file or path component anywhere downstream
OutputFormat = Literal["coco", "darwin", "labelstudio", "encord"]

MAX_URL_LENGTH = 16_384  # Encord's documented limit, and ours
NO_SEGMENTER = "none"
"""A job's ``segmenter`` that opts out of the server's (``PREANNOTATE_SEGMENTER``): boxes only."""


PromptsIn = str | list[str] | dict[str, str | list[str]]
"""An open-vocabulary model's prompts as clients send them: ``"person, red car, PED=pedestrian|person walking"``
(``PromptSet.parse``), class names that prompt for themselves (``["person", "car"]``), or each class's prompts
(``{"PED": "pedestrian", "car": ["car", "automobile"]}``)."""
PROMPTS_DESCRIPTION = (
    "an open-vocabulary model's classes: 'person, red car, PED=pedestrian|person walking', a list of class names, "
    "or {label: prompt or [prompts]}; detections are written under the labels"
)


def prompt_set(
    prompts: PromptsIn | None, *, field: str = "prompts", max_classes: int | None = None
) -> PromptSet | None:
    """``prompts`` in any of the ``PromptsIn`` forms as a ``PromptSet`` (None stays None), with at most
    ``max_classes`` classes when given (``check_prompt_classes``).

    Raises:
        PreannotateError: INVALID_PROMPTS (422) naming ``field``: blank, duplicate or too many classes or prompts.
    """
    if prompts is None:
        return None
    try:
        if isinstance(prompts, str):
            parsed = PromptSet.parse(prompts)
        elif isinstance(prompts, list):
            parsed = PromptSet.from_names(prompts)
        else:
            parsed = PromptSet.from_mapping(prompts)
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_PROMPTS, f"{field}: {exc}") from None
    return parsed if max_classes is None else check_prompt_classes(parsed, max_classes, field=field)


def check_prompt_classes(prompts: PromptSet, max_classes: int, *, field: str = "prompts") -> PromptSet:
    """The one check of ``PREANNOTATE_MAX_PROMPT_CLASSES`` wherever prompts enter (a body, a CLI flag, a project's
    labels, a model view): every class costs a detector text to encode and score each frame against.

    Raises:
        PreannotateError: INVALID_PROMPTS (422; CLI exit 2) naming ``field`` and the setting.
    """
    if len(prompts.classes) > max_classes:
        raise PreannotateError(
            ErrorCode.INVALID_PROMPTS,
            f"{field}: {len(prompts.classes)} prompted classes; at most {max_classes} (PREANNOTATE_MAX_PROMPT_CLASSES)",
        )
    return prompts


class SlotIn(BaseModel):
    name: str = Field("0", pattern=SLOT_NAME_PATTERN, description="slot name (V7's term); '0' for single files")
    url: str | None = Field(None, max_length=MAX_URL_LENGTH, description="the slot's file")
    urls: list[Annotated[str, Field(max_length=MAX_URL_LENGTH)]] | None = Field(
        None, min_length=1, description="an ordered image sequence or DICOM series instead of one file"
    )
    type: Literal["image", "video", "dicom", "pdf"] | None = Field(
        None, description="optional hint; the media is sniffed anyway. 'pdf' slots are listed, never fetched"
    )

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _one_source(self) -> SlotIn:
        if (self.url is None) == (self.urls is None):
            raise ValueError("a slot needs exactly one of url or urls")
        return self

    def all_urls(self) -> list[str]:
        return [self.url] if self.url is not None else list(self.urls or [])


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=300)
    slots: list[SlotIn] = Field(min_length=1)
    external_ids: (
        dict[Literal["label_studio", "v7", "encord", "cvat"], Annotated[str, Field(max_length=300)]] | None
    ) = Field(
        None,
        description="the item in each destination: LS task id, V7 item id (else found by name), Encord data hash, "
        "CVAT task id",
    )

    model_config = ConfigDict(extra="forbid")

    @field_validator("slots")
    @classmethod
    def _unique_slots(cls, slots: list[SlotIn]) -> list[SlotIn]:
        names = [slot.name for slot in slots]
        if len(set(names)) != len(names):
            raise ValueError(f"slot names must be unique within an item, got {names}")
        return slots


class Destination(BaseModel):
    """A labeling tool the job pushes each finished item to (credentials come from the server's settings)."""

    backend: Literal["label_studio", "v7", "encord", "cvat"]
    project: int | None = Field(None, ge=1, description="Label Studio project id")
    task: int | None = Field(None, ge=1, description="CVAT task id")

    model_config = ConfigDict(extra="forbid")


class TracksIn(BaseModel):
    """How a job links video, DICOM and sequence detections into tracks; unset fields take the server's
    ``PREANNOTATE_TRACKS`` / ``PREANNOTATE_TRACK_*`` settings, and the result is pinned with the job."""

    enabled: bool | None = Field(None, strict=True, description="false: one annotation per detection, no tracks")
    max_gap_s: TrackGapS | None = Field(
        None,
        strict=True,
        description="seconds a track may go unseen and still be extended (at 1 fps, 2.0 survives two missed samples)",
    )
    distance_gate: TrackBoxSizes | None = Field(
        None, strict=True, description="box sizes a detection may be from a moving track's predicted centre"
    )
    max_speed: TrackBoxSizes | None = Field(
        None, strict=True, description="box sizes per second a track seen once may have moved"
    )
    offline: bool | None = Field(
        None, strict=True, description="join the online pieces over the whole slot; false: online tracks only"
    )
    join_gap_s: TrackGapS | None = Field(
        None, strict=True, description="longest gap (seconds) the offline pass joins a track's pieces across"
    )
    appearance: bool | None = Field(
        None, strict=True, description="match and join on how the boxes look, where the model described them"
    )
    min_length: int | None = Field(
        None, strict=True, ge=1, le=100_000, description="fewest boxes a kept track has (1 drops nothing)"
    )
    high_score: float | None = Field(
        None,
        strict=True,
        gt=0.0,
        le=1.0,
        description="two-stage tracking: scores at least this start tracks, lower ones only extend them",
    )

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_removed_options(cls, body: object) -> object:
        """Older releases' ``iou`` / ``max_gap``: a 422 that says what replaced them, not only "extra input"."""
        if isinstance(body, dict):
            for old in REMOVED_TRACK_OPTIONS:
                if old in body:
                    raise ValueError(removed_track_option(old, lambda name: f"tracks.{name}"))
        return body


class JobCreate(BaseModel):
    items: list[ItemIn] = Field(min_length=1)
    model: str | None = Field(None, description="a loaded model's spec or name; default: the service default")
    fps: float | None = Field(
        None, strict=True, ge=0.0, le=1000.0, description="frames per second sampled; 0 = every frame"
    )
    sampling: SamplingMode | None = None
    threshold: float | None = Field(None, strict=True, ge=0.0, le=1.0)  # strict: `false` is not 0.0
    classes: list[str] | None = None
    outputs: list[OutputFormat] = Field(default=["coco"])
    destinations: list[Destination] = Field(default_factory=list, max_length=3)
    tracks: TracksIn | None = Field(None, description="video tracking; default: the server's settings")
    segmenter: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="box-prompted segmenter spec (a mask per box); must be the one the server runs "
        f"(PREANNOTATE_SEGMENTER); {NO_SEGMENTER!r}: boxes only; default: the server's, if any",
    )
    prompts: PromptsIn | None = Field(None, description=PROMPTS_DESCRIPTION)
    thresholds: dict[str, float] | None = Field(
        None,
        description='per-class least scores over threshold: {"CLASS": 0.4, ...}, or a whole `calibrate --out` file '
        "(its calibrated classes); {}: none; default: those saved for the pinned model version, if any",
    )

    @field_validator("thresholds", mode="before")
    @classmethod
    def _class_thresholds(cls, value: object) -> object:
        """A thresholds file object (``classes`` holding objects) -> its calibrated ``{class: t}``; either form is
        then checked (``check_class_thresholds``: a number in [0, 1] per non-blank name; ``true`` is no number)."""
        if value is None or not isinstance(value, dict):
            return value
        if isinstance(value.get("classes"), dict):
            return ThresholdsFile.model_validate(value).class_thresholds()
        return check_class_thresholds(value)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "name": "case-17",
                            "slots": [
                                {"name": "left", "url": "https://media.example.com/case-17/left.jpg"},
                                {"name": "clip", "url": "https://media.example.com/case-17/clip.mp4", "type": "video"},
                            ],
                        }
                    ],
                    "fps": 1,
                    "threshold": 0.5,
                }
            ]
        },
    )
