"""V7 "Bring your own model" endpoints (darwin_v2.md §8): ``POST /v7/infer`` and ``GET /v7/classes``.

Register ``https://<host>/v7`` in V7 (Models -> Register External Model) with an Authorization header
``Bearer <one of PREANNOTATE_API_TOKENS>``. V7 sends one image per call, by presigned URL or base64, and gets the
default model's boxes in pixels; when the run makes masks (a segmenter, or a model that makes them) every class is
a ``polygon`` class and every result a polygon (V7 maps a class by name and type, and a BYOM polygon is one path:
the outer ring of the mask's largest part; a row without a mask is its box's four corners). Answers follow V7's
inference-response schema (the vendored ``v7_byom_inference_response.schema.json``); a failure after
authentication still answers in that schema
(``status: failed``, no results) with our error next to it, so V7 can read it either way.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.masks import Masks
from models.ops.boxes import clip_xyxy
from service.api.deps import LocalModelsDep, StateDep, TenantDep
from service.api.schemas import ErrorBody, error_responses
from service.api.state import AppState
from service.convert.masks import mask_to_polygons
from service.errors import ErrorCode, PreannotateError
from service.loaded_models import ModelRegistry
from service.pipeline.flow import detect_one
from service.pipeline.frames import Frame, FrameInfo, MediaKind
from service.pipeline.images import load_rgb
from service.pipeline.options import SamplingOptions

router = APIRouter(prefix="/v7", tags=["v7"], responses=error_responses(401, 503))

_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


class ByomImage(BaseModel):
    url: str | None = Field(None, min_length=1, max_length=16_384, description="a presigned https URL")
    base64: str | None = Field(None, min_length=1, description="the image bytes, base64 (a data: URL prefix is fine)")

    # V7 may add fields we do not know of (darwin_v2.md §8: unverified); ignore them rather than fail its calls.
    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"oneOf": [{"required": ["url"]}, {"required": ["base64"]}]}
    )

    @model_validator(mode="after")
    def _one_source(self) -> ByomImage:
        if (self.url is None) == (self.base64 is None):
            raise ValueError("image needs exactly one of url or base64")
        return self


class ByomInferRequest(BaseModel):
    image: ByomImage

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"image": {"url": "https://storage.example.com/bucket/L_CC.png"}}]},
    )


class ByomBoundingBox(BaseModel):
    x: float
    y: float
    w: float = Field(ge=0)
    h: float = Field(ge=0)


class ByomPoint(BaseModel):
    x: float
    y: float


class ByomPolygon(BaseModel):
    path: list[ByomPoint] = Field(description="one closed ring in pixels, the first point not repeated")


class ByomResult(BaseModel):
    name: str
    label: str
    confidence: float = Field(ge=0, le=1)
    bounding_box: ByomBoundingBox | None = Field(None, description="exactly one of bounding_box and polygon")
    polygon: ByomPolygon | None = None


class ByomInferResponse(BaseModel):
    status: Literal["succeeded", "failed"]
    results: list[ByomResult]
    error: ErrorBody | None = Field(None, description="ours, when status is failed")


class ByomClass(BaseModel):
    name: str
    type: Literal["bounding_box", "polygon"]


def _makes_masks(models: ModelRegistry) -> bool:
    """V7's calls get masks: a segmenter is loaded, or the default model makes them itself."""
    return models.segmenter is not None or models.default.info.makes_masks


@router.get("/classes")
async def byom_classes(tenant: TenantDep, models: LocalModelsDep) -> list[ByomClass]:
    """The default model's classes, as V7 BYOM lists label types: polygons when the run makes masks."""
    shape: Literal["bounding_box", "polygon"] = "polygon" if _makes_masks(models) else "bounding_box"
    return [ByomClass(name=name, type=shape) for name in models.default.info.class_names]


# A failure body ({"status": "failed", "results": [], "error": ...}) is also a valid ErrorResponse.
@router.post(
    "/infer",
    response_model=ByomInferResponse,
    response_model_exclude_none=True,
    responses=error_responses(404, 413, 415, 422, 502, 504),
)
async def byom_infer(
    body: ByomInferRequest, state: StateDep, tenant: TenantDep, models: LocalModelsDep
) -> JSONResponse:
    """Detect objects in one image for V7 (boxes in pixels, top-left x, y and size; polygons in pixels when the
    run makes masks)."""
    try:
        model = models.default
        with TemporaryDirectory(dir=state.settings.work_dir, prefix="v7-infer-") as scratch:
            result = await detect_one(
                partial(_open, body.image, state, Path(scratch)),
                model.batcher,
                threshold=state.settings.threshold,
                timeout_s=state.settings.predict_timeout_s,
                segmenter=models.segmenter,
            )
    except PreannotateError as exc:
        return _failed(exc)
    detections, names = result.detections, model.info.class_names
    polygons = _makes_masks(models)
    results = []
    for i, ((x1, y1, x2, y2), score, class_id) in enumerate(
        zip(
            clip_xyxy(detections.xyxy, result.info.width, result.info.height).tolist(),
            detections.confidence.tolist(),
            detections.class_id.tolist(),
            strict=True,
        )
    ):
        name = names[class_id] if 0 <= class_id < len(names) else f"class_{class_id}"
        confidence = round(min(max(score, 0.0), 1.0), 5)
        if polygons:
            path = _outer_ring(detections.masks, i) or _corners(x1, y1, x2, y2)
            results.append(ByomResult(name=name, label=name, confidence=confidence, polygon=ByomPolygon(path=path)))
            continue
        box = ByomBoundingBox(x=round(x1, 2), y=round(y1, 2), w=round(x2 - x1, 2), h=round(y2 - y1, 2))
        results.append(ByomResult(name=name, label=name, confidence=confidence, bounding_box=box))
    response = ByomInferResponse(status="succeeded", results=results)
    return JSONResponse(response.model_dump(exclude_none=True))


def _outer_ring(masks: Masks | None, i: int) -> list[ByomPoint]:
    """Row ``i``'s mask as one BYOM path: the outer ring of its largest part (a BYOM polygon has one path, so
    holes are filled and smaller parts left out); [] for a row without a mask."""
    parts = [] if masks is None else mask_to_polygons(masks, i)
    if not parts:
        return []
    return [ByomPoint(x=round(x, 2), y=round(y, 2)) for x, y in parts[0].outer_xy.tolist()]


def _corners(x1: float, y1: float, x2: float, y2: float) -> list[ByomPoint]:
    """A box as a polygon path (clockwise from the top-left): a row without a mask, in its class's shape."""
    return [ByomPoint(x=round(x, 2), y=round(y, 2)) for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]


def _open(image: ByomImage, state: AppState, scratch: Path, _sampling: SamplingOptions) -> Frame:
    """V7's one image, for ``detect_one``: fetched or base64-decoded into ``scratch``, then decoded at full size
    (``load_rgb`` takes stills only, whatever the sampling)."""
    if image.url is not None:
        path = state.fetcher.fetch(image.url, scratch).path
    else:
        path = scratch / "image"
        path.write_bytes(_decode_base64(image.base64 or "", state.settings.max_upload_bytes))
    pixels = load_rgb(path, state.settings.media_limits())
    height, width = pixels.shape[:2]
    info = FrameInfo("v7", "0", str(path), MediaKind.IMAGE, frame_index=0, timestamp_s=None, width=width, height=height)
    return Frame(info=info, image=pixels)


def _decode_base64(text: str, max_bytes: int) -> bytes:
    text = _DATA_URL.sub("", text.strip(), count=1)
    # Checked before decoding: 4 characters carry 3 bytes.
    if len(text) // 4 * 3 > max_bytes:
        raise PreannotateError(ErrorCode.FILE_TOO_LARGE, f"the base64 image is over {max_bytes} bytes")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "image.base64: not valid base64") from None


def _failed(exc: PreannotateError) -> JSONResponse:
    error = ErrorBody(code=exc.code.code, message=" ".join(exc.message.split()), retryable=exc.code.retryable)
    body = ByomInferResponse(status="failed", results=[], error=error)
    headers = {"Retry-After": str(exc.retry_after_s or 5)} if exc.code.retryable else None
    return JSONResponse(body.model_dump(), status_code=exc.code.http_status, headers=headers)
