"""``JobSpec``: what every item of a job shares, parsed once at submit, stored, and parsed once at lease.

The stored form (``to_stored``) is the JSON object jobs have always been stored with, key for key: dedupe keys
hash it (``service.jobs.submit.content_idem``), so a job submitted before this type existed and the same job
submitted now must make the same key, and a stored job of an older release must parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from models.prompts import PromptSet
from service.convert.types import ModelRef
from service.pipeline.options import SamplingMode
from service.spec.requests import Destination, OutputFormat, TracksIn

if TYPE_CHECKING:
    from service.config import Settings
    from service.pipeline.tracks import TrackerOptions


@dataclass(frozen=True, slots=True)
class ModelPin:
    """The model version and classes a job's results are stored under (``JobStore.pin_model``), and whether
    that model makes masks itself (``ModelInfo.makes_masks``)."""

    version: str
    class_names: tuple[str, ...]
    makes_masks: bool = False


class PinnedTracks(BaseModel):
    """The tracker a job's items are linked with, pinned at submit so every worker links them the same way.

    Its fields are ``TrackerOptions``' (``enabled`` aside). A job pinned by a release before trackers took
    seconds (``{"enabled", "iou", "max_gap", "min_length"}``) loads with ``TrackerOptions``' defaults for the
    fields it lacks: its ``iou`` gate and frame-counted ``max_gap`` mean nothing to this tracker.
    """

    enabled: bool
    max_gap_s: float
    distance_gate: float
    max_speed: float
    offline: bool
    join_gap_s: float
    appearance: bool
    min_length: int
    high_score: float | None = None
    """Two-stage tracking's least score to start a track; None is one stage."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _older_pins_take_the_tracker_defaults(cls, stored: object) -> object:
        if not isinstance(stored, Mapping) or all(name in stored for name in _SINCE_SECONDS):
            return stored
        from service.pipeline.tracks import TrackerOptions  # only for jobs pinned by older releases

        defaults = TrackerOptions()
        return {**{name: getattr(defaults, name) for name in _SINCE_SECONDS}, **stored}

    @model_serializer(mode="wrap")
    def _without_unset_high_score(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``high_score`` only when set: a job pinned without it keeps the stored form (and dedupe key) it had."""
        fields: dict[str, Any] = dump(self)
        if self.high_score is None:
            del fields["high_score"]
        return fields

    @classmethod
    def from_request(cls, tracks: TracksIn | None, settings: Settings) -> PinnedTracks:
        """The body's fields, else the settings'."""
        tracks = tracks or TracksIn()
        return cls(
            enabled=settings.tracks if tracks.enabled is None else tracks.enabled,
            max_gap_s=settings.track_max_gap_s if tracks.max_gap_s is None else tracks.max_gap_s,
            distance_gate=settings.track_distance_gate if tracks.distance_gate is None else tracks.distance_gate,
            max_speed=settings.track_max_speed if tracks.max_speed is None else tracks.max_speed,
            offline=settings.track_offline if tracks.offline is None else tracks.offline,
            join_gap_s=settings.track_join_gap_s if tracks.join_gap_s is None else tracks.join_gap_s,
            appearance=settings.track_appearance if tracks.appearance is None else tracks.appearance,
            min_length=settings.track_min_length if tracks.min_length is None else tracks.min_length,
            high_score=settings.track_high_score if tracks.high_score is None else tracks.high_score,
        )


_SINCE_SECONDS = ("max_gap_s", "distance_gate", "max_speed", "offline", "join_gap_s", "appearance")
"""``PinnedTracks`` fields a job pinned before the tracker took seconds lacks."""


def tracker_options(tracks: PinnedTracks | None, *, default: TrackerOptions | None) -> TrackerOptions | None:
    """The tracker ``tracks`` pins, None when off; ``default`` for a job stored before trackers were pinned."""
    if tracks is None:
        return default
    if not tracks.enabled:
        return None
    from service.pipeline.tracks import TrackerOptions  # scipy stays out of the submit path's imports

    return TrackerOptions(
        max_gap_s=tracks.max_gap_s,
        distance_gate=tracks.distance_gate,
        max_speed=tracks.max_speed,
        offline=tracks.offline,
        join_gap_s=tracks.join_gap_s,
        appearance=tracks.appearance,
        min_length=tracks.min_length,
        high_score=tracks.high_score,
    )


class JobSpec(BaseModel):
    """A job's shared parameters, as stored.

    Attributes:
        model: the model's spec (or name) the job runs.
        model_version: the pinned version of its weights; None until a worker publishes the model (distributed
            cold start) and ``JobStore.pin_model`` pins it.
        class_names: the pinned model's labels (None while unpinned).
        fps: frames per second sampled from videos; 0 = every frame.
        sampling: exact or key-frame sampling.
        threshold: least detection score kept.
        classes: the model's classes kept (None = all).
        outputs: formats ``GET /v1/jobs/{id}/result`` can render.
        destinations: labeling tools each finished item is pushed to.
        tracks: the pinned tracker; None for a job stored before trackers were pinned (this process's settings).
        content_sha256: what a client-keyed job was created from (``content_fingerprint``); None otherwise.
        segmenter: the box-prompted segmenter's spec that masks each box; None: boxes only (and every job stored
            before segmenters).
        segmenter_version: its pinned weights' version; None where the submitting process did not load it
            (distributed API pods).
        model_makes_masks: the pinned model makes an instance mask per box itself (``ModelInfo.makes_masks``,
            e.g. a ``-seg`` export); False while unpinned and for every job stored before masks.
        prompts: what an open-vocabulary model is asked to find (the body's ``prompts``, or the destination
            project's labels), pinned at submit; its names are the job's classes. None: a fixed-class model.
        class_thresholds: per-class least scores (``calibrate``'s, or the body's ``thresholds``) over
            ``threshold``, pinned at submit; None: ``threshold`` for every class.
    """

    model: str
    model_version: str | None = None
    class_names: tuple[str, ...] | None = None
    fps: float
    sampling: SamplingMode
    threshold: float
    classes: tuple[str, ...] | None = None
    outputs: tuple[OutputFormat, ...] = ("coco",)
    destinations: tuple[Destination, ...] = ()
    tracks: PinnedTracks | None = None
    content_sha256: str | None = Field(None, description="see service.jobs.submit.content_fingerprint")
    segmenter: str | None = None
    segmenter_version: str | None = None
    model_makes_masks: bool = False
    prompts: PromptSet | None = None
    class_thresholds: dict[str, float] | None = None

    model_config = ConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    @field_validator("prompts", mode="before")
    @classmethod
    def _stored_prompts(cls, value: object) -> object:
        """The stored ``[{"name", "prompts"}, ...]`` (``PromptSet.to_json``) -> a ``PromptSet``."""
        if isinstance(value, list):
            return PromptSet.from_json(value)
        return value

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> JobSpec:
        """Parse a stored request (the one place a job's JSON becomes typed)."""
        return cls.model_validate(stored)

    def to_stored(self) -> dict[str, Any]:
        """The JSON object stored for the job: the shape and values older releases stored and hashed."""
        stored: dict[str, Any] = {
            "model": self.model,
            "model_version": self.model_version,
            "class_names": None if self.class_names is None else list(self.class_names),
            "fps": self.fps,
            "sampling": self.sampling.value,
            "threshold": self.threshold,
            "classes": None if self.classes is None else list(self.classes),
            "outputs": list(self.outputs),
            "destinations": [d.model_dump(exclude_none=True) for d in self.destinations],
        }
        if self.tracks is not None:
            stored["tracks"] = self.tracks.model_dump()
        if self.content_sha256 is not None:
            stored["content_sha256"] = self.content_sha256
        if self.segmenter is not None:  # only then: jobs without one keep the stored form (and dedupe keys) they had
            stored["segmenter"] = self.segmenter
            stored["segmenter_version"] = self.segmenter_version
        if self.model_makes_masks:  # likewise: a boxes-only model's jobs keep their stored form
            stored["model_makes_masks"] = True
        if self.prompts is not None:  # likewise for fixed-class models and jobs without calibrated thresholds
            stored["prompts"] = self.prompts.to_json()
        if self.class_thresholds is not None:
            stored["class_thresholds"] = dict(self.class_thresholds)
        return stored

    @property
    def model_ref(self) -> ModelRef:
        """The model behind the job's predictions, as converters write it (empty version while unpinned)."""
        return ModelRef(spec=self.model, version=self.model_version or "", class_names=self.class_names or ())

    @property
    def makes_masks(self) -> bool:
        """The job's items carry masks: it has a segmenter, or its model makes them. Default Label Studio configs
        and Encord ontologies made for it then have a mask shape, so the masks are not written as boxes."""
        return self.segmenter is not None or self.model_makes_masks

    def tracker(self, settings: Settings) -> TrackerOptions | None:
        """The tracker the job's items are linked with, None when off; a job stored before trackers were
        pinned takes ``settings``'."""
        return tracker_options(self.tracks, default=settings.tracker_options())

    def tracker_or(self, default: TrackerOptions | None) -> TrackerOptions | None:
        """``tracker`` with ``default`` for a job stored before trackers were pinned (a worker's settings)."""
        return tracker_options(self.tracks, default=default)

    @property
    def pin(self) -> ModelPin | None:
        """The model pin the job holds; None while it is unpinned (``model_version`` null)."""
        if self.model_version is None:
            return None
        return ModelPin(self.model_version, self.class_names or (), self.model_makes_masks)

    def pinned(self, version: str, class_names: tuple[str, ...], *, makes_masks: bool = False) -> JobSpec:
        """This spec with its model pinned."""
        update = {"model_version": version, "class_names": class_names, "model_makes_masks": makes_masks}
        return self.model_copy(update=update)
