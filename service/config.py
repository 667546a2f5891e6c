"""Settings, read once from ``PREANNOTATE_*`` environment variables, a ``.env`` file, or the TOML file
named by ``PREANNOTATE_CONFIG`` (environment variables win over the file)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from models.base import DEFAULT_BATCH_SIZE, DEFAULT_SEGMENTER_MAX_BOXES, MAX_SEGMENTER_MAX_BOXES, DetectorOptions
from models.prompts import MAX_PROMPT_CLASSES
from models.registry import DEFAULT_MODEL_DIR, default_model_spec
from service.pipeline.options import (
    DecoderChoice,
    MediaLimits,
    SamplingMode,
    SamplingOptions,
    TrackBoxSizes,
    TrackGapS,
    removed_track_option,
    usable_cpus,
)
from service.s3_routing import S3Rule, check_rules, parse_results_url

if TYPE_CHECKING:
    from service.pipeline.fetch import FetchPolicy
    from service.pipeline.flow import FlowOptions
    from service.pipeline.tracks import TrackerOptions

CommaList = Annotated[list[str], NoDecode]
# Measured on CPU, batching across requests loses; on a GPU a few ms of waiting fills batches.
DEFAULT_MAX_WAIT_MS = {"cpu": 0.0, "cuda": 5.0}


def default_decode_workers() -> int:
    """One decode thread per core, at least 2 (decoding releases the GIL, and one waits on I/O) and at most 8
    (each holds its queue of frames)."""
    return min(8, max(2, usable_cpus()))


class Settings(BaseSettings):
    """Every knob and limit; command-line flags override these per run."""

    model_config = SettingsConfigDict(env_prefix="PREANNOTATE_", env_file=".env", extra="ignore")

    # Model and inference
    model_dir: Path = Field(
        DEFAULT_MODEL_DIR, description="where `preannotate models fetch` installs models (builtin:nanodet)"
    )
    model: str = Field(
        default_factory=lambda data: default_model_spec(data["model_dir"]),
        description="default model spec (builtin:NAME, onnx:PATH, hf:DIR_OR_ID); unset: builtin:nanodet once "
        "fetched into model_dir, else builtin:centerface",
    )
    model_fetch_timeout_s: float = Field(
        900.0, gt=0, le=86400, description="`preannotate models fetch`: the longest the download may take"
    )
    extra_models: CommaList = Field(default_factory=list, description="more model specs `serve` loads")
    segmenter: str | None = Field(
        None, description="box-prompted segmenter spec (hf:DIR_OR_ID, SAM family): a mask per box; unset = boxes only"
    )
    segmenter_max_boxes: int = Field(
        DEFAULT_SEGMENTER_MAX_BOXES,
        ge=1,
        le=MAX_SEGMENTER_MAX_BOXES,
        description="box prompts per mask-decoder call (each holds a copy of the frame's image embedding)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int | None = Field(None, ge=1, description="frames per forward pass; unset = CPU 1, CUDA 16")
    input_size_px: int | None = Field(None, ge=32, le=8192, description="longest side fed to the model")
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    cpu_threads: int | None = Field(None, ge=1, description="runtime threads on CPU; unset = all cores")
    fp16: bool = Field(True, description="fp16 on CUDA: Hugging Face models; ONNX ones only through TensorRT")
    tensorrt: bool = Field(False, description="ONNX models through ONNX Runtime's TensorRT provider on CUDA")
    torch_compile: bool = Field(False, description="torch.compile Hugging Face models (slow start, faster runs)")
    engine_cache_dir: Path = Field(
        Path.home() / ".cache" / "preannotate" / "tensorrt", description="TensorRT engine cache (a volume)"
    )

    # Sampling
    fps: float = Field(1.0, ge=0.0, le=1000.0, description="frames per second sampled; 0 = every frame")
    sampling: SamplingMode = SamplingMode.EXACT
    decoder: DecoderChoice = Field(
        DecoderChoice.PYAV, description="video decoder for exact sampling: pyav, nvdec (torchcodec on CUDA) or auto"
    )
    prefetch_frames: int = Field(16, ge=1, le=1024, description="decoded frames queued ahead of the model, per slot")
    decode_workers: int = Field(
        default_factory=default_decode_workers,
        ge=1,
        le=64,
        description="slots (files) decoded at once, across the slots and items of a run; default: the CPU count, 2-8",
    )

    # Tracking: a video's, DICOM's or sequence's detections linked into one annotation per object. Used by jobs
    # (a job's "tracks" object overrides it), their pushes, `sync`, the ML backend; `run` flags override it too
    tracks: bool = Field(True, description="link detections into tracks; false = one annotation per detection")
    # Defaults are TrackerOptions' (tests/unit/service/test_config.py holds them equal).
    track_max_gap_s: TrackGapS = Field(2.0, description="seconds a track may go unseen online and still be extended")
    track_distance_gate: TrackBoxSizes = Field(
        0.4, description="box sizes a detection may be from a moving track's predicted centre"
    )
    track_max_speed: TrackBoxSizes = Field(2.0, description="box sizes per second a one-box track may reach")
    track_offline: bool = Field(True, description="join the online pieces over the whole slot (false: online only)")
    track_join_gap_s: TrackGapS = Field(10.0, description="longest gap (s) the offline pass joins pieces across")
    track_appearance: bool = Field(True, description="match and join on appearance descriptors where computed")
    # Removed: set anywhere (environment, .env, the TOML file), they stop startup with what replaced them, where
    # ignoring them would change a user's tracking without a word.
    track_iou: object = Field(None, exclude=True, repr=False, description="removed: track_distance_gate")
    track_max_gap: object = Field(None, exclude=True, repr=False, description="removed: track_max_gap_s")
    track_min_length: int = Field(1, ge=1, le=100_000, description="fewest boxes a kept track has (1 drops nothing)")
    track_high_score: float | None = Field(
        None, gt=0.0, le=1.0, description="two-stage tracking: least score that starts a track (unset: one stage)"
    )

    # Previews (`run --preview`, `demo`, GET .../items/{item}/preview and /sheet); defaults are PreviewOptions'
    # (tests/unit/service/test_config.py: equal)
    preview_px: int = Field(1280, ge=16, le=8192, description="longest side of a preview frame, in pixels")
    preview_sheet_tiles: int = Field(
        16, ge=1, le=1024, description="most frames a slot's contact sheet shows, spread over the slot"
    )

    # Calibration (`preannotate calibrate`): a class with fewer benchmark objects keeps the global threshold
    calibrate_min_support: int = Field(
        10, ge=1, le=1_000_000, description="benchmark objects a class needs before its threshold is calibrated"
    )
    # `evaluate --media`: report.html's thumbnails of the worst errors (their count bounds the report's size)
    evaluate_thumbnails_per_class: int = Field(
        4, ge=1, le=100, description="thumbnails of the worst false positives, and of the misses, per class"
    )
    evaluate_thumbnail_px: int = Field(256, ge=32, le=2048, description="a thumbnail's longer side in pixels")

    # Limits on media (each refuses bad input with a clear error before any decoding)
    max_file_bytes: int = Field(20 * 1024**3, ge=1)
    max_image_pixels: int = Field(100_000_000, ge=1)
    max_frames_per_slot: int = Field(100_000, ge=1)
    max_video_duration_s: float = Field(6 * 3600.0, gt=0)

    # HTTP service
    api_tokens: SecretStr = Field(SecretStr(""), description="comma-separated bearer tokens")
    public_docs: bool = Field(True, description="serve /docs and /openapi.json without a token")
    db_path: Path = Field(Path("preannotate.db"), description="SQLite job store (WAL; a local disk, never NFS)")
    work_dir: Path | None = Field(None, description="scratch space for downloads; unset = the system temp dir")
    local_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="directories file:// URLs may read"
    )
    fetch_allowed_hosts: CommaList = Field(
        default_factory=list, description="hosts exempt from the private-address block (on-prem stores)"
    )
    fetch_allowed_buckets: CommaList = Field(
        default_factory=list, description="s3:// buckets read with the service's own credentials"
    )
    fetch_timeout_s: float = Field(600.0, gt=0, description="total time allowed to download one file")
    max_json_bytes: int = Field(1024**2, ge=1024, description="largest JSON request body")
    max_upload_bytes: int = Field(50 * 1024**2, ge=1024, description="largest /v1/predict upload")
    max_items_per_job: int = Field(1000, ge=1)
    max_slots_per_item: int = Field(16, ge=1)
    max_queue_depth: int = Field(10_000, ge=1, description="queued items before new jobs get 429")
    idempotency_retention_s: float = Field(
        86_400.0,
        gt=0,
        description="a repeated job submission returns a finished job only while it is this young "
        "(a queued or running one always)",
    )
    max_page_size: int = Field(100, ge=1, le=1000, description="largest `limit` of GET /v1/jobs and .../items")
    ui_session_s: int = Field(
        8 * 3600,
        ge=60,
        le=30 * 86_400,
        description="how long the job page's login session (/ui) lasts before the token must be entered again",
    )
    ui_cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto",
        description="the login cookie's Secure flag: auto = when the request is https or a proxy says so "
        "(X-Forwarded-Proto: https)",
    )
    predict_timeout_s: float = Field(30.0, gt=0, description="deadline for one /v1/predict in the batcher")
    # Previews of a job's items (GET /v1/jobs/{id}/items/{item}/preview and /sheet; sizes above)
    preview_cache_mb: int = Field(
        512, ge=0, le=1_000_000, description="disk kept for media fetched for previews (LRU; 0 = none kept)"
    )
    preview_concurrency: int = Field(2, ge=1, le=64, description="previews fetched, decoded and drawn at once")
    preview_timeout_s: float = Field(60.0, gt=0, le=3600, description="deadline for one preview or contact sheet")

    # Batching across requests and job frames (one batcher per model)
    max_batch_size: int | None = Field(None, ge=1, le=512, description="unset = CPU 1, CUDA 16")
    max_wait_ms: float | None = Field(None, ge=0, le=1000, description="unset = CPU 0, CUDA 5")
    max_prompt_sets: int = Field(
        16,
        ge=1,
        le=1000,
        description="prompt sets an open-vocabulary model keeps a batcher for (least recently used closed first)",
    )
    max_prompt_classes: int = Field(
        200,
        ge=1,
        le=MAX_PROMPT_CLASSES,
        description="classes one prompt set may have (each is encoded and scored on every frame)",
    )
    max_prompt_map_bytes: int = Field(
        1_000_000,
        ge=1,
        le=100_000_000,
        description="largest `sync --prompt-map` file read (a label -> prompt map is a few KiB)",
    )

    # Label Studio: `sync label-studio` defaults, and the /ls ML backend's access to task media
    label_studio_url: str | None = Field(None, description="Label Studio base URL, e.g. https://ls.example.com")
    label_studio_api_key: SecretStr | None = Field(
        None, description="Label Studio legacy token or personal access token (never logged)"
    )

    # V7 Darwin backend (service.backends.v7); secrets only ever in headers, never logged
    v7_api_key: SecretStr = Field(SecretStr(""), description="V7 API key, sent as 'Authorization: ApiKey <key>'")
    v7_team_slug: str = Field("", description="V7 team slug")
    v7_dataset_slug: str = Field("", description="V7 dataset slug (registration)")
    v7_dataset_id: int | None = Field(None, ge=1, description="V7 dataset number: /datasets/<id>/ in its URL")
    v7_storage_slug: str | None = Field(None, description="V7 external storage name, for register_existing")
    v7_base_url: str = Field("https://darwin.v7labs.com/api", description="V7 API root (darwin-py: DARWIN_BASE_URL)")

    # Encord backend (service.backends.encord)
    encord_project_hash: str = Field("", description="Encord project whose label rows get the preannotations")
    encord_domain: str = Field("https://api.encord.com", description="https://api.us.encord.com for US tenants")
    encord_ssh_key_file: Path | None = Field(None, description="service account Ed25519 private key file")
    encord_ssh_key: SecretStr = Field(SecretStr(""), description="the key itself (the file wins, as in the SDK)")
    encord_bearer_token: SecretStr = Field(SecretStr(""), description="a bearer token instead of an SSH key")
    encord_created_by: str = Field(
        "preannotate@example.com", description="service account email: createdBy of our objects, how re-runs find them"
    )
    encord_ontology_file: Path | None = Field(None, description="ontology JSON; unset = one bbox object per class")
    encord_class_aliases: dict[str, str] = Field(
        default_factory=dict, description='JSON {"model class": "ontology name or featureNodeHash"}'
    )
    encord_bundle_size: int = Field(100, ge=1, le=1000, description="label rows per Encord request")
    encord_bundle_wait_ms: float = Field(
        200.0, ge=0, le=10_000, description="how long a job item's push waits for others to share its bundle"
    )

    # CVAT backend (service.backends.cvat): `sync cvat` defaults, the `cvat` destination and its media
    cvat_url: str | None = Field(None, description="CVAT base URL, e.g. https://cvat.example.com")
    cvat_token: SecretStr = Field(
        SecretStr(""), description="CVAT personal access token or API key (never logged); or username + password"
    )
    cvat_username: str = Field("", description="CVAT user for basic auth (with cvat_password), when no token")
    cvat_password: SecretStr = Field(SecretStr(""), description="that user's password (never logged)")
    cvat_video_fps: float = Field(
        30.0, gt=0.0, le=1000.0, description="frame rate of a CVAT video task's source (CVAT does not record it)"
    )
    cvat_frame_quality: Literal["original", "compressed"] = Field(
        "original", description="which of CVAT's frames are detected on: the source's, or its JPEG previews"
    )
    cvat_max_frames_per_task: int = Field(
        5000, ge=1, le=100_000, description="most frames of one CVAT task a sync or webhook job samples"
    )

    # Upload webhooks (/v1/webhooks/*): each is off (404) until its secret is set; comma-separate to rotate
    webhook_label_studio_secrets: SecretStr = Field(
        SecretStr(""), description="X-Preannotate-Secret values accepted from Label Studio webhooks"
    )
    webhook_s3_secrets: SecretStr = Field(SecretStr(""), description="MinIO auth_token values (Authorization)")
    webhook_v7_secrets: SecretStr = Field(SecretStr(""), description="Authorization values a V7 webhook stage sends")
    webhook_generic_secrets: SecretStr = Field(SecretStr(""), description="HMAC-SHA256 keys for /v1/webhooks/generic")
    webhook_tolerance_s: float = Field(300.0, ge=1.0, le=3600.0, description="signed timestamps: largest clock skew")
    webhook_max_body_bytes: int = Field(1024**2, ge=1024, description="largest webhook body (413 before any HMAC)")
    webhook_s3_rules: list[S3Rule] = Field(
        default_factory=list,
        description='JSON [{"bucket", "prefix", "destination": "v7"|null, "model", "fps", "threshold"}]',
    )
    webhook_s3_endpoint: str | None = Field(
        None, description="http(s)://host:port of a MinIO: objects fetched path-style from it instead of s3://"
    )
    webhook_label_studio_model: str | None = Field(None, description="model for LS webhooks and the sweep")
    webhook_v7_model: str | None = Field(None, description="model for V7 webhook-stage deliveries")
    webhook_cvat_secrets: SecretStr = Field(
        SecretStr(""), description="secrets of CVAT webhooks (X-Signature-256 HMAC-SHA256 keys)"
    )
    webhook_cvat_model: str | None = Field(None, description="model for CVAT webhook deliveries")
    label_studio_projects: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="projects the LS webhook accepts and the sweep reconciles (empty: any/none)"
    )
    label_studio_sweep_interval_s: float = Field(0.0, ge=0.0, description="seconds between LS sweeps; 0 = off")
    label_studio_sweep_min_age_s: float = Field(
        300.0, ge=0.0, description="the sweep leaves younger tasks to their webhook delivery"
    )

    # Job workers
    workers: int = Field(2, ge=0, le=64, description="items processed concurrently (0 = API only)")
    lease_s: float = Field(60.0, gt=0, description="a crashed worker's items return to the queue after this")
    heartbeat_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="attempts per item before it fails for good")

    # Distributed mode: a Redis Streams queue shared by API pods and `preannotate worker` processes
    queue_url: SecretStr | None = Field(
        None,
        description="redis://[:password@]host:6379/0, rediss://... or unix:///path?db=0; unset = the embedded "
        "SQLite queue. When set, the API loads no models and `preannotate worker` processes run the items",
    )
    worker_grace_s: float = Field(
        30.0, gt=0, description="on SIGTERM, how long a worker lets in-flight items finish (< the pod's grace)"
    )
    model_ttl_s: float = Field(30.0, ge=1, description="a worker's model announcement lapses this long after its last")
    results_url: str | None = Field(
        None,
        description="s3://bucket/prefix: distributed mode writes each item's result there as one compressed object "
        "and keeps only its key in Redis (endpoint and credentials as for s3:// inputs: AWS_ENDPOINT_URL_S3, "
        "AWS_ACCESS_KEY_ID, ...); unset = results in Redis memory",
    )
    result_fetch_concurrency: int = Field(
        16, ge=1, le=256, description="result objects one API request or worker reads from object storage at once"
    )
    result_page_items: int = Field(
        256, ge=1, le=1000, description="most items GET /v1/jobs/{id}/result reads at a time while it streams a job"
    )
    result_page_frames: int = Field(
        20_000,
        ge=1,
        le=10_000_000,
        description="about how many sampled frames' results a page of GET /v1/jobs/{id}/result holds (a decoded "
        "frame with 5 boxes is ~3 KB: a 1-hour video at 1 fps is 3,600 frames, ~12 MB); the first page is 8 items",
    )

    # Retention, in both job stores
    retention_s: float = Field(
        7 * 86400.0,
        ge=60.0,
        le=10 * 365 * 86400.0,
        description="a job, its items and its results are removed this long after it was created",
    )
    max_saved_thresholds: int = Field(
        256, ge=1, le=100_000, description="model versions whose calibrated thresholds the job store keeps"
    )
    thresholds_cache_s: float = Field(
        30.0,
        ge=0.0,
        le=3600.0,
        description="how long /v1/predict and the Label Studio ML backend reuse a version's saved thresholds "
        "before reading the store again (0: every request)",
    )
    expiry_sweep_s: float = Field(
        60.0, ge=1.0, le=86400.0, description="how often the API removes expired jobs and their result objects"
    )

    @field_validator(
        "extra_models",
        "fetch_allowed_hosts",
        "fetch_allowed_buckets",
        "local_roots",
        "label_studio_projects",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("track_iou", "track_max_gap", mode="before")
    @classmethod
    def _removed(cls, value: object, info: ValidationInfo) -> None:
        if value is not None:
            old = (info.field_name or "").removeprefix("track_")
            raise ValueError(removed_track_option(old, lambda name: f"PREANNOTATE_TRACK_{name.upper()}"))

    @field_validator("queue_url", "results_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("results_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_results_url(value)  # ValueError names what is wrong
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.model.strip():
            raise ValueError("model must not be empty")
        if self.heartbeat_s >= self.lease_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s}) must be shorter than lease_s ({self.lease_s})")
        if self.results_url is not None and self.queue_url is None:
            raise ValueError(
                "results_url is for distributed mode (PREANNOTATE_QUEUE_URL): the embedded store keeps results "
                "in its SQLite file"
            )
        if self.webhook_s3_rules:
            check_rules(
                self.webhook_s3_rules,
                endpoint=self.webhook_s3_endpoint,
                allowed_buckets=self.fetch_allowed_buckets,
                allowed_hosts=self.fetch_allowed_hosts,
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings, dotenv_settings)
        config_file = os.environ.get("PREANNOTATE_CONFIG")
        if config_file:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)),)
        return (*sources, file_secret_settings)

    def token_list(self) -> list[str]:
        return [t.strip() for t in self.api_tokens.get_secret_value().split(",") if t.strip()]

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            max_file_bytes=self.max_file_bytes,
            max_pixels=self.max_image_pixels,
            max_frames=self.max_frames_per_slot,
            max_duration_s=self.max_video_duration_s,
        )

    def sampling_options(self) -> SamplingOptions:
        return SamplingOptions(fps=self.fps, mode=self.sampling, decoder=self.decoder)

    def detector_options(self) -> DetectorOptions:
        return DetectorOptions(
            device=self.device,
            batch_size=self.batch_size,
            input_size_px=self.input_size_px,
            num_threads=self.cpu_threads,
            fp16=self.fp16,
            tensorrt=self.tensorrt,
            engine_cache_dir=str(self.engine_cache_dir),
            model_dir=str(self.model_dir),
            compile=self.torch_compile,
            segmenter_max_boxes=self.segmenter_max_boxes,
            max_prompt_sets=self.max_prompt_sets,
        )

    def tracker_options(self) -> TrackerOptions | None:
        """The tracker these settings describe, or None when tracking is off (``PREANNOTATE_TRACKS=false``)."""
        from service.pipeline.tracks import TrackerOptions  # scipy stays out of the settings' imports

        if not self.tracks:
            return None
        return TrackerOptions(
            max_gap_s=self.track_max_gap_s,
            distance_gate=self.track_distance_gate,
            max_speed=self.track_max_speed,
            offline=self.track_offline,
            join_gap_s=self.track_join_gap_s,
            appearance=self.track_appearance,
            min_length=self.track_min_length,
            high_score=self.track_high_score,
        )

    def flow_options(
        self,
        *,
        threshold: float,
        classes: Sequence[str] | None = None,
        class_thresholds: Mapping[str, float] | None = None,
        batch_size: int | None = None,
        keep_partial: bool = True,
        describe_boxes: bool = False,
    ) -> FlowOptions:
        """A run's flow options, with the stage limits (decode workers, frames queued) from these settings;
        ``describe_boxes`` when its tracker looks at boxes (``tracks.needs_appearance``)."""
        from service.pipeline.flow import FlowOptions  # the flow's imports stay out of the settings'

        return FlowOptions(
            threshold=threshold,
            classes=classes,
            class_thresholds=class_thresholds,
            batch_size=batch_size,
            decode_workers=self.decode_workers,
            queue_frames=self.prefetch_frames,
            keep_partial=keep_partial,
            describe_boxes=describe_boxes,
        )

    def fetch_policy(self) -> FetchPolicy:
        from service.pipeline.fetch import FetchPolicy  # httpx stays out of the CLI's imports

        return FetchPolicy(
            local_roots=tuple(self.local_roots),
            allowed_hosts=frozenset(h.lower() for h in self.fetch_allowed_hosts),
            allowed_buckets=frozenset(self.fetch_allowed_buckets),
            max_bytes=self.max_file_bytes,
            total_timeout_s=self.fetch_timeout_s,
        )

    def batching_for(self, device: str) -> tuple[int, float]:
        """(max batch size, max wait ms) for a model on ``device``."""
        size = self.max_batch_size or DEFAULT_BATCH_SIZE.get(device, 1)
        wait = self.max_wait_ms if self.max_wait_ms is not None else DEFAULT_MAX_WAIT_MS.get(device, 0.0)
        return size, wait


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
