"""``POST /v1/predict``: one image in, detections out, through the flow's one-frame entry (``detect_one``)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from models.masks import Masks
from service.api.deps import LocalModelsDep, StateDep, TenantDep
from service.api.openapi import schema_ref
from service.api.schemas import DetectionPublic, MaskRlePublic, PredictResponse, PredictUrlRequest, error_responses
from service.convert.masks import mask_to_coco_rle
from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import Fetcher, redact_url
from service.pipeline.flow import detect_one
from service.pipeline.frames import Frame, MediaKind
from service.pipeline.media import SlotSpec, looks_like_video, not_media_error, open_slot, sniff
from service.pipeline.options import MediaLimits, SamplingOptions
from service.spec.requests import prompt_set

PROMPTS_FORM_DESCRIPTION = "an open-vocabulary model's classes: 'person, red car, PED=pedestrian|person walking'"

router = APIRouter(prefix="/v1", tags=["predict"], responses=error_responses(401, 404, 413, 415, 422, 502, 503, 504))

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "an image or DICOM file"},
                        "model": {"type": "string"},
                        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                        "classes": {"type": "string", "description": "comma-separated class names"},
                        "prompts": {"type": "string", "description": PROMPTS_FORM_DESCRIPTION},
                    },
                }
            },
            "application/json": {"schema": schema_ref(PredictUrlRequest)},
        },
    }
}


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def _upload_name(filename: str | None) -> str:
    """What error messages call an upload: the client's file name (its last part, printable), else "upload"."""
    name = _UNPRINTABLE.sub("", (filename or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()[:100]
    return name or "upload"


def _frame_opener(
    source: tuple[Path, str] | str, fetcher: Fetcher, limits: MediaLimits, scratch: Path
) -> Callable[[SamplingOptions], Frame]:
    """The request's one frame, for ``detect_one``: the upload (a path and its name for messages), or a URL
    fetched into ``scratch`` first."""

    def open_frame(sampling: SamplingOptions) -> Frame:
        if isinstance(source, str):
            path, shown = fetcher.fetch(source, scratch).path, redact_url(source)
        else:
            path, shown = source
        return _first_frame(path, sampling, limits, shown, scratch)

    return open_frame


def _first_frame(path: Path, sampling: SamplingOptions, limits: MediaLimits, shown: str, scratch: Path) -> Frame:
    """``_decode_first_frame``, with errors naming the file as the client knows it (``shown``): the decoders name
    the path they read, and the server's scratch directory is none of the client's business."""
    try:
        return _decode_first_frame(path, sampling, limits)
    except PreannotateError as exc:
        message = exc.message.replace(str(path), shown).replace(str(scratch), "<scratch>")
        raise PreannotateError(exc.code, message, retry_after_s=exc.retry_after_s) from None


def _decode_first_frame(path: Path, sampling: SamplingOptions, limits: MediaLimits) -> Frame:
    """Decode a still image (or a DICOM's first frame); anything with a timeline belongs in a job."""
    kind = sniff(path)
    if kind is MediaKind.VIDEO and not looks_like_video(path):
        raise not_media_error(path, "image (JPEG, PNG, WebP, TIFF, BMP, GIF) or DICOM file")
    if kind not in (MediaKind.IMAGE, MediaKind.DICOM):
        raise PreannotateError(
            ErrorCode.UNSUPPORTED_MEDIA, f"/v1/predict takes one image (got {kind.value}); use /v1/jobs for that"
        )
    reader = open_slot("predict", SlotSpec("0", (path,)), sampling, limits)
    try:
        frame = next(iter(reader), None)
    finally:
        reader.close()
    if frame is None:
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, "the file holds no frame")
    return frame


async def _parse(request: Request, scratch: Path) -> tuple[PredictUrlRequest, tuple[Path, str] | None]:
    """The parameters, and the uploaded file with its name for messages (None for a URL: it is fetched once the
    request checks out)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "the multipart body needs a 'file' field")
        fields: dict[str, object] = {
            k: v for k in ("model", "threshold", "classes", "prompts") if isinstance(v := form.get(k), str) and v
        }
        if "classes" in fields:
            fields["classes"] = str(fields["classes"]).split(",")
        if "threshold" in fields:
            try:
                fields["threshold"] = float(str(fields["threshold"]))
            except ValueError:
                raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "threshold: must be a number") from None
        try:
            params = PredictUrlRequest.model_validate({"url": "upload", **fields})
        except ValidationError as exc:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, _first_problem(exc)) from None
        path = scratch / "upload"
        with path.open("wb") as out:
            await run_in_threadpool(shutil.copyfileobj, upload.file, out)
        return params, (path, _upload_name(upload.filename))
    if content_type == "application/json":
        try:
            params = PredictUrlRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, _first_problem(exc)) from None
        return params, None
    raise PreannotateError(
        ErrorCode.UNSUPPORTED_MEDIA, "send multipart/form-data with a 'file' field, or JSON {\"url\": ...}"
    )


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


# exclude_none: a detection without a mask has no "mask" key, so answers without masks are what they were
@router.post("/predict", openapi_extra=_OPENAPI_BODY, response_model_exclude_none=True)
async def predict(request: Request, state: StateDep, tenant: TenantDep, models: LocalModelsDep) -> PredictResponse:
    """Detect objects in one image (multipart upload or a URL); synchronous, for interactive use. With a
    segmenter (``PREANNOTATE_SEGMENTER``) or a model that makes masks, each detection carries its ``mask``. An
    open-vocabulary model needs ``prompts`` (a string; in JSON also a list or an object): labels are their names."""
    with TemporaryDirectory(dir=state.settings.work_dir, prefix="predict-") as scratch:
        params, upload = await _parse(request, Path(scratch))
        prompts = prompt_set(params.prompts, max_classes=state.settings.max_prompt_classes)
        # a prompted model: its view, held for this request; made off the loop (encoding waits for the model)
        model = await run_in_threadpool(models.acquire, params.model, prompts)
        try:
            open_frame = _frame_opener(
                upload or params.url, state.fetcher, state.settings.media_limits(), Path(scratch)
            )
            result = await detect_one(
                open_frame,
                model.batcher,
                threshold=state.settings.threshold if params.threshold is None else params.threshold,
                classes=params.classes,
                # the calibration saved for exactly this model version, if any (``calibrate --save``)
                class_thresholds=await run_in_threadpool(
                    state.saved_thresholds().class_thresholds, model.info.version, model.info.class_names
                ),
                timeout_s=state.settings.predict_timeout_s,
                segmenter=models.segmenter,
            )
        finally:
            await run_in_threadpool(models.release, model)  # may close an evicted view: joins its thread
    detections, names = result.detections, model.info.class_names
    height_px, width_px = result.info.height, result.info.width
    return PredictResponse(
        model=model.spec,
        model_version=model.info.version,
        width=width_px,
        height=height_px,
        detections=[
            DetectionPublic(
                xyxy=[round(v, 2) for v in box],
                score=round(score, 5),
                label=names[cls],
                class_id=cls,
                mask=mask,
            )
            for box, score, cls, mask in zip(
                detections.xyxy.tolist(),
                detections.confidence.tolist(),
                detections.class_id.tolist(),
                _masks_public(detections.masks, len(detections), height_px, width_px),
                strict=True,
            )
        ],
    )


def _masks_public(masks: Masks | None, rows: int, height_px: int, width_px: int) -> list[MaskRlePublic | None]:
    """Each row's mask as COCO RLE of the whole image; None for a row without one (its box says it all)."""
    if masks is None:
        return [None] * rows
    return [
        MaskRlePublic.model_validate(mask_to_coco_rle(masks, i, height_px, width_px)) if has else None
        for i, has in enumerate(masks.has_mask().tolist())
    ]
