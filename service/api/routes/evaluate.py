"""``POST /v1/evaluate``: score candidates against a benchmark; inline JSON or multipart uploads in, summary out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from service.api.deps import TenantDep
from service.api.schemas import error_responses
from service.errors import ErrorCode, PreannotateError
from service.evaluate.api import (
    MAX_CANDIDATES,
    SELECT_PATTERN,
    EvaluateRequest,
    ThresholdsIn,
    request_to_evaluation,
    uploads_to_evaluation,
)
from service.evaluate.evaluation import Evaluation, Thresholds, evaluation_to_summary
from service.evaluate.inputs import bytes_to_json

router = APIRouter(prefix="/v1", tags=["evaluate"], responses=error_responses(401, 413, 415, 422))


class _FormParams(ThresholdsIn):
    """The multipart form's non-file fields (the thresholds plus these)."""

    iou: float = Field(0.5, strict=True, gt=0, le=1)
    benchmark_select: str | None = Field(None, pattern=SELECT_PATTERN)
    candidate_select: str | None = Field(None, pattern=SELECT_PATTERN)


_FORM_FIELDS = ("names", *_FormParams.model_fields)


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined, so the route needs no published component."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    result: dict[str, Any] = resolve(schema)
    return result


_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["benchmark", "candidate"],
    "properties": {
        "benchmark": {"type": "string", "format": "binary", "description": "the gold labels (any supported format)"},
        "candidate": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "one file per candidate; named after the file unless `names` is given",
        },
        "names": {"type": "string", "description": "comma-separated candidate names, in upload order"},
        "iou": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "benchmark_select": {"type": "string"},
        "candidate_select": {"type": "string"},
        **{name: {"type": "number", "minimum": 0, "maximum": 1} for name in ThresholdsIn.model_fields},
    },
}
_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_schema(EvaluateRequest)},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}


def _problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


async def _from_multipart(request: Request) -> Evaluation:
    form = await request.form(max_files=MAX_CANDIDATES + 1, max_fields=len(_FORM_FIELDS))
    bench = form.get("benchmark")
    uploads = [u for u in form.getlist("candidate") if isinstance(u, UploadFile)]
    if not isinstance(bench, UploadFile) or not uploads:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "multipart needs a 'benchmark' file and 'candidate' files")
    fields = {k: v for k in _FORM_FIELDS if isinstance(v := form.get(k), str) and v}
    names = [n.strip() for n in fields.pop("names", "").split(",") if n.strip()]
    if names and len(names) != len(uploads):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"names: {len(names)} names for {len(uploads)} candidates")
    try:
        # Form fields are text; the model's numbers are strict (JSON ``false`` must not pass as 0), so parse here.
        numbers = {k: float(fields.pop(k)) for k in list(fields) if k == "iou" or k.startswith("min_")}
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"iou and min_* must be numbers ({exc})") from None
    try:
        params = _FormParams.model_validate(fields | numbers)
    except ValidationError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, _problem(exc)) from None
    bench_source = "upload:" + (bench.filename or "benchmark")
    bench_doc = (bench_source, bytes_to_json(await bench.read(), bench_source))
    candidates = []
    for i, upload in enumerate(uploads):
        filename = upload.filename or f"candidate-{i + 1}"
        name = names[i] if names else filename.rsplit("/", 1)[-1].removesuffix(".json")
        candidates.append((name, f"upload:{filename}", bytes_to_json(await upload.read(), f"upload:{filename}")))
    return await run_in_threadpool(
        uploads_to_evaluation,
        bench_doc,
        candidates,
        iou=params.iou,
        thresholds=Thresholds(**params.model_dump(exclude={"iou", "benchmark_select", "candidate_select"})),
        benchmark_select=params.benchmark_select,
        candidate_select=params.candidate_select,
    )


@router.post("/evaluate", openapi_extra=_OPENAPI_BODY)
async def evaluate_route(request: Request, tenant: TenantDep) -> dict[str, Any]:
    """Score candidates against a benchmark (one-to-one per frame, COCO mAP when scored); returns the summary."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        evaluation = await _from_multipart(request)
    elif content_type == "application/json":
        try:
            body = EvaluateRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, _problem(exc)) from None
        evaluation = await run_in_threadpool(request_to_evaluation, body)
    else:
        raise PreannotateError(
            ErrorCode.UNSUPPORTED_MEDIA, "send JSON {benchmark, candidates: [{name, data}]} or multipart uploads"
        )
    # A plain dict: the documented response stays an open JSON object (a TypedDict would become its schema).
    return dict(evaluation_to_summary(evaluation))
