"""Jobs: submit (202), list, status, items, result, cancel. Also accepts Encord's cloud-registration JSON as a body."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.api.bodies import json_body, require_json
from service.api.deps import ModelsDep, StateDep, TenantDep
from service.api.openapi import schema_ref
from service.api.schemas import (
    ItemErrorPublic,
    ItemPage,
    ItemPublic,
    JobAccepted,
    JobList,
    JobProgress,
    JobPublic,
    error_responses,
)
from service.backends.encord_registration import encord_registration_to_items, is_encord_registration
from service.config import Settings
from service.convert.coco_types import CocoMaskStyle
from service.convert.darwin_types import DarwinMaskStyle
from service.errors import ErrorCode, PreannotateError, error_code_named
from service.jobs.outputs import MaskStyles, job_result
from service.jobs.result_stream import PageBudget, coalesced, job_result_chunks, logged_to_end, succeeded_items
from service.jobs.submit import create_job_from, idempotency_key_idem, validation_problem
from service.queue.store import ItemError, ItemResult, ItemState, JobRecord, JobStatus, parse_cursor
from service.spec.requests import JobCreate

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 404, 422, 503))

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A job (items of named slots), or an Encord cloud-registration JSON "
        "(images, videos, image_groups, dicom_series, skip_duplicate_urls) with model/fps/threshold "
        "as query parameters.",
        "content": {"application/json": {"schema": schema_ref(JobCreate)}},
    }
}


DEFAULT_PAGE_SIZE = 20
_FORMAT_PATTERN = "^(coco|darwin|labelstudio|encord)$"
LimitQuery = Annotated[int | None, Query(ge=1, description="page size; default 20, at most PREANNOTATE_MAX_PAGE_SIZE")]
CursorQuery = Annotated[str | None, Query(max_length=200, description="the next_cursor of the previous page")]


def _item_error(error: ItemError) -> ItemErrorPublic:
    known = error_code_named(error.code)
    return ItemErrorPublic(
        item=error.item, code=error.code, message=error.message, retryable=known is not None and known.retryable
    )


def _page_size(limit: int | None, settings: Settings) -> int:
    if limit is None:
        return min(DEFAULT_PAGE_SIZE, settings.max_page_size)
    if limit > settings.max_page_size:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"limit {limit} is over the largest page, {settings.max_page_size}"
        )
    return limit


# A cursor is opaque to clients: the store's position, tagged with what it pages, in URL-safe base64.
def _cursor(kind: str, position: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def _position(kind: str, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        tag, sep, position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(":")
    except ValueError:  # not base64, not UTF-8
        tag, sep, position = "", "", ""
    if tag != kind or not sep:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "cursor: not a next_cursor this route returned")
    return position


def _bad_cursor(exc: ValueError) -> PreannotateError:
    return PreannotateError(ErrorCode.INVALID_ARGUMENT, f"cursor: not a next_cursor this route returned ({exc})")


def _job_public(job: JobRecord) -> JobPublic:
    return JobPublic(
        id=job.id,
        status=job.status,
        model=job.spec.model,
        model_version=job.spec.model_version,
        created_at=job.created_at,
        updated_at=job.updated_at,
        progress=JobProgress(
            items_total=job.items_total,
            items_done=job.items_succeeded + job.items_failed,
            items_succeeded=job.items_succeeded,
            items_failed=job.items_failed,
            frames_planned=job.frames_planned,
            frames_done=job.frames_done,
        ),
        errors=[_item_error(e) for e in job.errors],
    )


def _parse_job(body: object, query: dict[str, str | float], max_items: int) -> JobCreate:
    if not isinstance(body, dict):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "the body must be a JSON object")
    try:
        if is_encord_registration(body):
            items = encord_registration_to_items(body, max_items=max_items)
            return JobCreate.model_validate({**query, "items": [i.model_dump(exclude_none=True) for i in items]})
        job = JobCreate.model_validate(body)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    if len(job.items) > max_items:
        raise PreannotateError(ErrorCode.TOO_MANY_ITEMS, f"{len(job.items)} items in one job; the limit is {max_items}")
    return job


@router.post(
    "",
    status_code=202,
    openapi_extra=_OPENAPI_BODY,
    responses={
        200: {"model": JobAccepted, "description": "an identical or same-key job already existed"},
        **error_responses(413, 415, 429),
    },
)
async def create_job(
    request: Request,
    response: Response,
    state: StateDep,
    tenant: TenantDep,
    models: ModelsDep,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
    model: Annotated[str | None, Query(description="for Encord registration bodies")] = None,
    fps: Annotated[float | None, Query(ge=0, le=1000, description="for Encord registration bodies")] = None,
    threshold: Annotated[float | None, Query(ge=0, le=1, description="for Encord registration bodies")] = None,
) -> JobAccepted:
    """Queue items for preannotation; 200 with the existing job for a repeated key or identical body."""
    settings = state.settings
    require_json(request.headers.get("content-type", ""))
    body = json_body(await request.body())
    query = {k: v for k, v in {"model": model, "fps": fps, "threshold": threshold}.items() if v is not None}
    job = _parse_job(body, query, settings.max_items_per_job)
    # off the event loop: prompts from a destination project are an HTTP call (with retries) to its tool
    record, created = await run_in_threadpool(
        create_job_from,
        job,
        settings=settings,
        store=state.store,
        models=models,
        tenant=tenant,
        # None: the same body for the same model version is the same job
        idem_key=idempotency_key_idem(idempotency_key) if idempotency_key else None,
    )
    status_url = str(request.url_for("get_job", job_id=record.id))
    response.headers["Location"] = status_url
    if not created:
        response.status_code = 200
    return JobAccepted(job_id=record.id, status_url=status_url, created=created)


def _job_or_404(job: JobRecord | None, job_id: str) -> JobRecord:
    if job is None:
        raise PreannotateError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}")
    return job


@router.get("")
def list_jobs(state: StateDep, tenant: TenantDep, limit: LimitQuery = None, cursor: CursorQuery = None) -> JobList:
    """This token's jobs, newest first, a page at a time (a job id lost by the client can be found here)."""
    size = _page_size(limit, state.settings)
    try:
        page, after = state.store.list_jobs(tenant=tenant, limit=size, cursor=_position("jobs", cursor))
    except ValueError as exc:
        raise _bad_cursor(exc) from None
    return JobList(
        jobs=[_job_public(job) for job in page], next_cursor=None if after is None else _cursor("jobs", after)
    )


@router.get("/{job_id}")
def get_job(job_id: str, state: StateDep, tenant: TenantDep) -> JobPublic:
    """Status, progress and per-item errors."""
    return _job_public(_job_or_404(state.store.get_job(tenant=tenant, job_id=job_id), job_id))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, state: StateDep, tenant: TenantDep) -> JobPublic:
    """Cancel what has not finished; finished items keep their results."""
    return _job_public(_job_or_404(state.store.cancel_job(tenant=tenant, job_id=job_id), job_id))


@router.delete(
    "/{job_id}",
    response_model=JobPublic,
    responses={
        200: {"description": "the job had unfinished items: they are cancelled, and the job is kept"},
        204: {"description": "the finished job and its results are removed"},
    },
)
def delete_job(job_id: str, state: StateDep, tenant: TenantDep) -> JobPublic | Response:
    """Remove a finished job with its results (and result objects) and its idempotency key: 204, and the same
    request makes a new job. A job still running is cancelled instead, as ``POST .../cancel`` does (200, its
    finished items keep their results); a second DELETE removes it."""
    removed = state.store.delete_job(tenant=tenant, job_id=job_id)
    if removed is None:
        raise PreannotateError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}")
    if removed:
        return Response(status_code=204)
    return cancel_job(job_id, state, tenant)


@router.get("/{job_id}/result", responses=error_responses(409), response_model=dict[str, Any])
def get_result(
    job_id: str,
    state: StateDep,
    tenant: TenantDep,
    format: Annotated[str, Query(pattern=_FORMAT_PATTERN)] = "coco",
    coco_masks: Annotated[
        CocoMaskStyle, Query(description="COCO segmentation of masked detections: rle, or polygon (RLE with holes)")
    ] = "rle",
    darwin_masks: Annotated[
        DarwinMaskStyle, Query(description="Darwin masks: polygon, or raster (mask + raster_layer annotations)")
    ] = "polygon",
) -> StreamingResponse:
    """The preannotations of a finished job (succeeded items): COCO, Darwin JSON 2.0, Label Studio
    predictions or Encord label rows; video detections linked into tracks, masks as ``coco_masks`` and
    ``darwin_masks`` say."""
    job = _job_or_404(state.store.get_job(tenant=tenant, job_id=job_id), job_id)
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise PreannotateError(ErrorCode.JOB_NOT_FINISHED, f"job {job_id} is {job.status.value}; poll its status")
    # Streamed a page of items at a time; the first page is read before the response starts, so an unreachable
    # store is still a 503 (a failure after that can only cut the body short).
    budget = PageBudget(state.settings.result_page_items, state.settings.result_page_frames)
    items = succeeded_items(state.store, tenant=tenant, job_id=job_id, budget=budget)
    if items is None:  # deleted since it was read
        raise PreannotateError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}")
    masks = MaskStyles(coco=coco_masks, darwin=darwin_masks)
    chunks = job_result_chunks(format, job, items, state.settings, masks)
    return StreamingResponse(logged_to_end(coalesced(chunks), f"job {job_id}"), media_type="application/json")


def _item_public(item: ItemResult, job: JobRecord, fmt: str | None, settings: Settings) -> ItemPublic:
    result = None
    if fmt is not None and item.state is ItemState.SUCCEEDED:
        result = dict(job_result(fmt, job, [item], settings))
    return ItemPublic(
        position=item.position,
        name=item.name,
        state=item.state,
        error=None if item.error is None else _item_error(item.error),
        result=result,
    )


@router.get("/{job_id}/items")
def list_items(
    job_id: str,
    state: StateDep,
    tenant: TenantDep,
    states: Annotated[
        list[ItemState] | None,
        Query(alias="state", description="only items in these states (repeat it); e.g. succeeded and failed"),
    ] = None,
    format: Annotated[
        str | None, Query(pattern=_FORMAT_PATTERN, description="include each succeeded item's result in this format")
    ] = None,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
) -> ItemPage:
    """The job's items in job order, a page at a time, with each one's state and error, and with ``format``
    its result: finished items can be read while the job still runs. The cursor is a position, so a pass
    filtered by state is a snapshot: items behind the cursor that finish later show on the next pass."""
    size = _page_size(limit, state.settings)
    try:
        after = _position("items", cursor)
        rows = state.store.results(
            tenant=tenant,
            job_id=job_id,
            states=states,
            after=-1 if after is None else parse_cursor(after),
            limit=size + 1,
            with_results=format is not None,  # a status listing reads no result (no object-store request either)
        )
    except ValueError as exc:
        raise _bad_cursor(exc) from None
    if rows is None:
        raise PreannotateError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}")
    # The job after its items: a worker pins a cold-started job's model before it completes an item, so every
    # succeeded item read above has its model's classes in the job read now (read before, they could be missing).
    job = _job_or_404(state.store.get_job(tenant=tenant, job_id=job_id), job_id)  # 404: expired since
    page = rows[:size]
    return ItemPage(
        job_id=job.id,
        job_status=job.status,
        items=[_item_public(item, job, format, state.settings) for item in page],
        next_cursor=_cursor("items", str(page[-1].position)) if len(rows) > size else None,
    )
