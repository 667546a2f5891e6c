"""Wire types of the HTTP API (request and response bodies), with OpenAPI examples."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.queue.store import ItemState, JobStatus
from service.spec.requests import PROMPTS_DESCRIPTION, PromptsIn


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable error code")
    message: str
    retryable: bool = Field(description="whether retrying the same request may succeed")


class ErrorResponse(BaseModel):
    error: ErrorBody

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": {"code": "unauthorized", "message": "missing bearer token", "retryable": False}}]
        }
    )


_DESCRIPTIONS = {
    401: "missing or invalid bearer token",
    404: "unknown job or model (or item, slot, frame)",
    409: "the job (or item) has not finished, or has nothing to preview",
    413: "request body too large",
    415: "unsupported media type",
    422: "invalid request, URL not allowed, or bad media",
    429: "queue full (see Retry-After)",
    502: "the URL's server failed or refused (or a job's media are gone)",
    503: "not ready (models loading or shutting down)",
    504: "timed out fetching the URL or waiting for the model",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with the ErrorResponse body."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}


# --- predict -----------------------------------------------------------------------------------


class PredictUrlRequest(BaseModel):
    url: str = Field(
        min_length=1,
        max_length=16_384,
        description="https://, http://, s3:// or file:// (under PREANNOTATE_LOCAL_ROOTS)",
    )
    model: str | None = Field(None, description="a loaded model's spec or name; default: the service default")
    threshold: float | None = Field(None, strict=True, ge=0.0, le=1.0)  # strict: `false` is not 0.0
    classes: list[str] | None = Field(None, description="keep only these class names")
    prompts: PromptsIn | None = Field(None, description=PROMPTS_DESCRIPTION)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": "https://media.example.com/street.jpg", "threshold": 0.4}]},
    )


class MaskRlePublic(BaseModel):
    """A mask as COCO's compressed RLE of the whole image (pycocotools ``decode`` reads it as it is)."""

    size: list[int] = Field(description="[height, width] of the image in pixels", min_length=2, max_length=2)
    counts: str = Field(description="COCO compressed RLE, column-major (Fortran order), as pycocotools encodes")


class DetectionPublic(BaseModel):
    xyxy: list[float] = Field(description="x1, y1, x2, y2 in pixels of the image")
    score: float
    label: str
    class_id: int
    mask: MaskRlePublic | None = Field(
        None,
        description="the detection's instance mask on the whole image; present only when the run makes masks "
        "(PREANNOTATE_SEGMENTER is set, or the model makes masks itself) and this detection has one",
    )


class PredictResponse(BaseModel):
    model: str
    model_version: str
    width: int
    height: int
    detections: list[DetectionPublic]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "builtin:centerface",
                    "model_version": "centerface-df866bcb8a86",
                    "width": 512,
                    "height": 512,
                    "detections": [
                        {"xyxy": [181.5, 58.2, 269.9, 177.8], "score": 0.93, "label": "face", "class_id": 0}
                    ],
                }
            ]
        }
    )


# --- jobs (request bodies live in service.spec.requests) ------------------------------------------


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    created: bool = Field(description="false when an identical or same-key job already existed")


class JobProgress(BaseModel):
    items_total: int
    items_done: int
    items_succeeded: int
    items_failed: int
    frames_planned: int
    frames_done: int


class ItemErrorPublic(BaseModel):
    item: str
    code: str
    message: str
    retryable: bool = Field(description="whether submitting the item again may succeed (as for API errors)")


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    model: str
    model_version: str | None = Field(
        description="null until a worker runs one of its items, for a job submitted before any worker had "
        "published its model (distributed mode)"
    )
    created_at: float
    updated_at: float
    progress: JobProgress
    errors: list[ItemErrorPublic]


class JobList(BaseModel):
    jobs: list[JobPublic] = Field(description="this token's jobs, newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null after the last page")


class ItemPublic(BaseModel):
    position: int = Field(description="the item's index in the submitted job")
    name: str
    state: ItemState
    error: ItemErrorPublic | None = Field(description="why it failed, once it has failed for good")
    result: dict[str, Any] | None = Field(
        description="with `format`, a succeeded item's preannotations: what /result gives for a job of this item alone"
    )


class ItemPage(BaseModel):
    job_id: str
    job_status: JobStatus
    items: list[ItemPublic] = Field(description="in job order")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null after the last page")


# --- models ------------------------------------------------------------------------------------


class ModelPublic(BaseModel):
    spec: str
    kind: Literal["detector", "segmenter"] = Field(
        "detector",
        description="detector: a model jobs name in `model`; segmenter: the box-prompted segmenter that masks the "
        "boxes (PREANNOTATE_SEGMENTER; a job's `segmenter`), listed last, with null classes and never the default; "
        "in distributed mode the API loads none, so it is listed with `known: false` (the workers load it)",
    )
    known: bool = Field(
        True,
        description="false in distributed mode while no worker has published this configured model: its name, "
        "version, classes, runtime, device and batch size are null until one does (jobs for it are accepted)",
    )
    name: str | None
    version: str | None
    classes: list[str] | None
    runtime: str | None
    device: str | None
    max_batch_size: int | None
    default: bool
    open_vocabulary: bool = Field(
        False, description="the model finds what a job's or request's `prompts` describe; it has no classes of its own"
    )
    thresholds: dict[str, float] | None = Field(
        None,
        description="per-class least scores saved for this version (`calibrate --save`): jobs without their own "
        "`thresholds`, /v1/predict and the Label Studio backend apply them; null: none saved",
    )


# --- previews of a job's items -------------------------------------------------------------------------------------


class PreviewFramePublic(BaseModel):
    frame_index: int = Field(description="the source frame's index (display order): `frame` of .../preview")
    timestamp_s: float | None = Field(description="seconds from the first frame; null for stills and untimed DICOM")
    width: int = Field(description="the source frame's width in pixels")
    height: int
    detections: int = Field(description="stored detections on this frame")


class PreviewSlotPublic(BaseModel):
    name: str = Field(description="the slot's name: `slot` of .../preview and .../sheet")
    media: str | None = Field(description="image, video, dicom, sequence or pdf (a pdf has no frames to preview)")
    frames: list[PreviewFramePublic] = Field(description="the stored (sampled) frames, in time order")


class ItemWarningPublic(BaseModel):
    code: str = Field(description="an error code (e.g. partial_media): what went wrong with one of the item's files")
    message: str = Field(description="what did not decode, naming the file")


class ItemFramesPublic(BaseModel):
    job_id: str
    position: int = Field(description="the item's position in the job, as in GET /v1/jobs/{id}/items")
    name: str
    slots: list[PreviewSlotPublic] = Field(description="in the item's order; the first is the routes' default")
    warnings: list[ItemWarningPublic] = Field(
        default_factory=list,
        description="the item succeeded with what decoded; these say what did not (e.g. a video cut short)",
    )
