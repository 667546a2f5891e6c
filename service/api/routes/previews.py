"""Previews of a job's items: a stored frame drawn on its media, a slot's contact sheet (JPEG), and the frames
there are to preview (JSON, for the job page)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import StateDep, TenantDep
from service.api.schemas import (
    ItemFramesPublic,
    ItemWarningPublic,
    PreviewFramePublic,
    PreviewSlotPublic,
    error_responses,
)
from service.jobs.previews import PreviewService, StoredSlot, slot_named
from service.pipeline.frames import FrameResult
from service.spec.requests import SLOT_NAME_PATTERN

router = APIRouter(prefix="/v1/jobs", tags=["previews"], responses=error_responses(401, 404, 409, 422, 503))

MAX_AGE_S = 300
"""How long a browser may reuse a preview: its stored detections never change, only expire with the job."""

ITEM_DESCRIPTION = (
    "the item's position in the job (0-based), as `position` in GET /v1/jobs/{job_id}/items. Names are not "
    "accepted: a name may itself be a number, and positions are what the listing pages by"
)
ItemPath = Annotated[int, Path(ge=0, lt=2**63, description=ITEM_DESCRIPTION)]
SlotQuery = Annotated[
    str | None,
    Query(max_length=128, pattern=SLOT_NAME_PATTERN, description="the slot's name; default: the item's first slot"),
]
_JPEG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}, "description": "JPEG"},
    304: {"description": "the ETag sent in If-None-Match still holds"},
    **error_responses(502, 504),
}


async def dep_previews(state: StateDep) -> PreviewService:
    """The app's preview service, made on first use; async: made on the event loop (one, never two racing
    threads), where its anyio limiter belongs."""
    if state.previews is None:
        state.previews = PreviewService(state.settings)
    return state.previews


PreviewsDep = Annotated[PreviewService, Depends(dep_previews)]


def _target(
    state: StateDep,
    previews: PreviewService,
    place: tuple[str, str, int],
    slot: str | None,
    frame: int | None,
    kind: str,
) -> tuple[StoredSlot, tuple[FrameResult, ...], str]:
    """The stored slot, the frames to draw (one, or the sheet's) and their ETag (blocking: a store read, and
    hashing up to ``PREANNOTATE_PREVIEW_SHEET_TILES`` frames)."""
    tenant, job_id, item = place
    slots = previews.items.get(state.store, tenant=tenant, job_id=job_id, position=item).slots
    stored = slot_named(slots, slot)
    chosen = (stored.frame(frame),) if kind == "frame" else previews.renderer.sheet_frames(stored)
    if not chosen:
        stored.frame(None)  # raises preview_unavailable: nothing to show
    return stored, chosen, stored.etag(kind, chosen, previews.renderer.options)


def _jpeg(body: bytes, etag: str) -> Response:
    return Response(body, media_type="image/jpeg", headers=_cache_headers(etag))


def _cache_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": f"private, max-age={MAX_AGE_S}"}


def _not_modified(if_none_match: str | None, etag: str) -> Response | None:
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=_cache_headers(etag))
    return None


@router.get("/{job_id}/items/{item}/frames", responses=error_responses(409))
async def item_frames(
    job_id: str, item: ItemPath, state: StateDep, tenant: TenantDep, previews: PreviewsDep
) -> ItemFramesPublic:
    """A succeeded item's slots and their stored frames (index, time, size, detection count): what
    ``.../preview?slot=&frame=`` can draw. 409 ``item_not_finished`` while it is queued or running,
    ``preview_unavailable`` once failed or cancelled; 404 ``item_not_found`` past the job's last item."""
    stored = await run_in_threadpool(
        partial(previews.items.get, state.store, tenant=tenant, job_id=job_id, position=item)
    )
    slots = stored.slots
    return ItemFramesPublic(
        job_id=job_id,
        position=item,
        name=slots[0].item,
        slots=[
            PreviewSlotPublic(
                name=slot.spec.name,
                media=None if slot.media is None else slot.media.value,
                frames=[
                    PreviewFramePublic(
                        frame_index=f.info.frame_index,
                        timestamp_s=f.info.timestamp_s,
                        width=f.info.width,
                        height=f.info.height,
                        detections=len(f.detections),
                    )
                    for f in slot.frames
                ],
            )
            for slot in slots
        ],
        warnings=[ItemWarningPublic(code=code, message=message) for code, message in stored.warnings],
    )


@router.get("/{job_id}/items/{item}/preview", response_class=Response, responses=_JPEG)
async def item_preview(
    job_id: str,
    item: ItemPath,
    state: StateDep,
    tenant: TenantDep,
    previews: PreviewsDep,
    slot: SlotQuery = None,
    frame: Annotated[
        int | None, Query(ge=0, lt=2**63, description="a stored frame's `frame_index`; default: the slot's first")
    ] = None,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """One stored frame of a succeeded item, its predictions drawn (boxes, masks, ``class score #track``),
    scaled to ``PREANNOTATE_PREVIEW_PX``, as JPEG. The media are fetched as the job's worker fetched them (kept
    in a disk cache of ``PREANNOTATE_PREVIEW_CACHE_MB``) and decoded at just that frame. 404 ``item_not_found``,
    ``slot_not_found``, ``frame_not_found``; 409 ``item_not_finished`` (retry later) or ``preview_unavailable``;
    502 ``media_unreachable`` when the job's media are gone; 504 past ``PREANNOTATE_PREVIEW_TIMEOUT_S``."""
    stored, (shown,), etag = await run_in_threadpool(
        _target, state, previews, (tenant, job_id, item), slot, frame, "frame"
    )
    if (unchanged := _not_modified(if_none_match, etag)) is not None:
        return unchanged
    body = previews.jpegs.get((tenant, etag))
    if body is None:
        what = f"{stored.item}/{stored.spec.name} frame {shown.info.frame_index}"
        body = await previews.render(partial(previews.renderer.frame_jpeg, tenant, stored, shown), what)
        previews.jpegs.put((tenant, etag), body)
    return _jpeg(body, etag)


@router.get("/{job_id}/items/{item}/sheet", response_class=Response, responses=_JPEG)
async def item_sheet(
    job_id: str,
    item: ItemPath,
    state: StateDep,
    tenant: TenantDep,
    previews: PreviewsDep,
    slot: SlotQuery = None,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """A slot's contact sheet: up to ``PREANNOTATE_PREVIEW_SHEET_TILES`` of its stored frames, spread evenly
    (first and last included), drawn and captioned ``frame N | T s``, in a near-square grid; JPEG. Errors as
    for ``.../preview``."""
    stored, _, etag = await run_in_threadpool(_target, state, previews, (tenant, job_id, item), slot, None, "sheet")
    if (unchanged := _not_modified(if_none_match, etag)) is not None:
        return unchanged
    body = previews.jpegs.get((tenant, etag))
    if body is None:
        what = f"{stored.item}/{stored.spec.name} contact sheet"
        body = (await previews.render(partial(previews.renderer.sheet_jpeg, tenant, stored), what))[0]
        previews.jpegs.put((tenant, etag), body)
    return _jpeg(body, etag)
