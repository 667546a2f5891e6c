"""Upload webhooks under ``/v1/webhooks``: Label Studio, S3/MinIO, V7 and generic HMAC-signed senders.

These routes are the exception to "a bearer token on every route": the senders cannot send one (Label
Studio only static headers, MinIO one ``Authorization`` value, V7 one configured header). Each authenticates
with its own secret from the settings and answers 404 while that secret is unset:

| Route | Secret setting | Sent as |
|---|---|---|
| ``/label-studio`` | ``webhook_label_studio_secrets`` | ``X-Preannotate-Secret`` (a custom header on the LS webhook) |
| ``/s3`` | ``webhook_s3_secrets`` | ``Authorization`` (MinIO ``auth_token``; ``Bearer`` optional) |
| ``/v7`` | ``webhook_v7_secrets`` | ``Authorization`` (the webhook stage's authorisation header) |
| ``/cvat`` | ``webhook_cvat_secrets`` | HMAC: ``X-Signature-256: sha256=<HMAC-SHA256 of the body>`` (CVAT's own) |
| ``/generic`` | ``webhook_generic_secrets`` | HMAC: ``X-Preannotate-Timestamp`` / ``-Signature`` / ``-Delivery`` |

Each request: body capped (413 before any secret check), secret compared in constant time (401), parsed,
turned into jobs through ``service.jobs.submit`` with a dedupe key, answered 202 with the job ids (200 when
all of them already existed). The store work runs off the event loop. Webhook jobs belong to the tenant of
the first ``PREANNOTATE_API_TOKENS`` entry, so that token can follow them at ``/v1/jobs/{id}``. Payloads are
never logged: a Label Studio one carries the project's ``token``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import ValidationError
from starlette.routing import NoMatchFound

from service.api.bodies import json_body
from service.api.deps import StateDep, dep_models
from service.api.openapi import schema_ref
from service.api.schemas import error_responses
from service.api.state import AppState
from service.backends.cvat import CvatClient, CvatTaskInfo
from service.backends.cvat import config_from_settings as cvat_config_from_settings
from service.backends.label_studio import config_from_settings
from service.backends.media import VIA_SCHEMES
from service.backends.origin_auth import origin_of
from service.backends.retry import BackendError, RetryPolicy, backend_error_to_preannotate
from service.convert.cvat_types import CvatFrames
from service.errors import ErrorCode, PreannotateError
from service.intake import cvat as cvat_intake
from service.intake import label_studio as ls
from service.intake import v7
from service.intake.auth import check_authorization, check_shared_secret, read_body, require_enabled
from service.intake.config import WebhookConfig
from service.intake.cvat_tasks import frame_stride, plan_frames, task_items
from service.intake.cvat_tasks import task_idem as cvat_task_idem
from service.intake.responses import Outcome, WebhookAccepted
from service.intake.s3_events import S3Object, object_idem, parse_events, s3_job
from service.intake.signatures import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_delivery_id,
    verify,
)
from service.jobs.submit import PreparedJob, check_urls, enqueue, prepare_job, validation_problem
from service.queue.store import JobRecord
from service.s3_routing import match_rule, object_url
from service.spec.requests import Destination, ItemIn, JobCreate

log = logging.getLogger(__name__)

LS_SECRET_HEADER = "X-Preannotate-Secret"
_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": WebhookAccepted, "description": "nothing new: every job already existed (a replay)"},
    **error_responses(401, 404, 413, 422, 429, 503),
}
_STATE_LOCK = threading.Lock()
# One thread for all webhook store writes: off the event loop (a 1,000-task delivery takes a while), and one at a
# time, because concurrent SQLite writers only queue in SQLite's busy handler, which sleeps up to 100 ms per try.
_STORE_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-store")
# How long a generic delivery id is remembered. Senders retry with a fresh signature (hours later, for some),
# so it must outlive the timestamp tolerance: a day, as reliability.md §3.2 recommends.
DELIVERY_TTL_S = 86400.0
_T = TypeVar("_T")
CVAT_WEBHOOK_TIMEOUT_S = 4.0
CVAT_WEBHOOK_RETRY = RetryPolicy(max_attempts=2, base_delay_s=0.2, max_delay_s=0.5, max_total_s=2.0)
"""A CVAT webhook reads the task before it answers, within the 10 s CVAT waits (its WEBHOOK_TIMEOUT)."""

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _body_doc(description: str, schema: Mapping[str, object]) -> dict[str, Any]:  # FastAPI's openapi_extra
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def dep_webhook_config(request: Request, state: StateDep) -> WebhookConfig:
    """The settings' webhook view, built once per app."""
    with _STATE_LOCK:
        config: WebhookConfig | None = getattr(request.app.state, "webhook_config", None)
        if config is None:
            config = WebhookConfig.from_settings(state.settings)
            request.app.state.webhook_config = config
        return config


WebhookConfigDep = Annotated[WebhookConfig, Depends(dep_webhook_config)]


def webhook_tenant(state: AppState) -> str:
    """Who owns webhook jobs: the first API token's tenant (the operator's)."""
    return state.auth.tenant_for(state.settings.token_list()[0])


def _status_url(request: Request) -> Callable[[str], str]:
    def url(job_id: str) -> str:
        try:
            return str(request.url_for("get_job", job_id=job_id))
        except NoMatchFound:  # an app without the jobs router (tests)
            return f"/v1/jobs/{job_id}"

    return url


async def _in_store_writer(work: Callable[[], _T]) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_STORE_WRITER, work)


def _makes_masks(state: AppState, model: str | None) -> bool:
    """Whether a webhook job for ``model`` makes masks: the server's segmenter, or a model that makes them itself
    (False while the model is not ready or unknown: submitting the job answers that)."""
    if state.settings.segmenter is not None:
        return True
    try:
        return dep_models(state).for_job(model).makes_masks
    except PreannotateError:
        return False


def _enqueue(outcome: Outcome, state: AppState, tenant: str, prepared: PreparedJob, key: str, what: str) -> None:
    record, created = enqueue(prepared, settings=state.settings, store=state.store, tenant=tenant, idem_key=key)
    outcome.add(record, created)
    log.debug("webhook job %s for %s (%s)", record.id, what, "new" if created else "duplicate")


# -- Label Studio ------------------------------------------------------------------------------------------------


@router.post(
    "/label-studio",
    status_code=202,
    responses=_ANSWERS,
    openapi_extra=_body_doc(
        "A Label Studio webhook delivery (TASKS_CREATED makes jobs; other actions are acknowledged).",
        {"type": "object", "required": ["action"], "properties": {"action": {"type": "string"}}},
    ),
)
async def label_studio_webhook(
    request: Request,
    response: Response,
    state: StateDep,
    config: WebhookConfigDep,
    x_preannotate_secret: Annotated[str | None, Header(description="one of webhook_label_studio_secrets")] = None,
) -> WebhookAccepted:
    """``TASKS_CREATED``: the new tasks, as one job per delivery, pushed back to their project."""
    require_enabled(config.label_studio_secrets, "label-studio")
    body = await read_body(request, config.max_body_bytes)
    check_shared_secret(x_preannotate_secret, config.label_studio_secrets, LS_SECRET_HEADER)
    delivery = ls.parse_delivery(json_body(body))
    outcome = Outcome(_status_url(request))
    if delivery.action != ls.TASKS_CREATED:
        # PROJECT_UPDATED fires on our own model_version PATCH after every push: acting on it would loop.
        log.debug("label studio webhook: action %s acknowledged", delivery.action)
        outcome.ignore(f"action {delivery.action} makes no jobs")
        return outcome.answer(response)
    project = delivery.project_id
    if project is None:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "the delivery names no project")
    if config.label_studio_projects and project not in config.label_studio_projects:
        log.warning("label studio webhook for project %d, which is not in label_studio_projects: ignored", project)
        outcome.ignore(f"project {project} is not in label_studio_projects", len(delivery.tasks))
        return outcome.answer(response)
    ls_config = config_from_settings(state.settings)
    if ls_config is None:
        raise PreannotateError(ErrorCode.BACKEND_NOT_CONFIGURED, "label_studio_url / label_studio_api_key are not set")
    if delivery.label_config is None:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "no project.label_config: enable send_payload")
    # a job that makes masks (the server's segmenter, a model that makes them): brush and polygon objects need media
    targets = ls.targets_of(delivery.label_config, masks=_makes_masks(state, config.label_studio_model))
    tasks: list[tuple[ItemIn, tuple[int, str]]] = []
    for task in delivery.tasks:
        version = ls.task_version(task)
        if ls.as_int(task.get("project")) not in (None, project):
            outcome.ignore(f"task {version[0]} belongs to another project")
            continue
        try:
            item = ls.task_item(task, targets, ls_config.url)
            # Per task, so one task's bad URL (credentials, say) is ignored instead of failing the delivery.
            check_urls([item], state.settings.max_slots_per_item, extra_schemes=VIA_SCHEMES)
            tasks.append((item, version))
        except PreannotateError as exc:
            outcome.ignore(exc.message)
    if tasks:
        models = dep_models(state)
        tenant = webhook_tenant(state)
        size = state.settings.max_items_per_job

        def submit() -> None:
            for start in range(0, len(tasks), size):
                chunk = tasks[start : start + size]
                job = JobCreate(
                    items=[item for item, _ in chunk],
                    model=config.label_studio_model,
                    destinations=[Destination(backend="label_studio", project=project)],
                )
                prepared = prepare_job(job, settings=state.settings, models=models, extra_schemes=VIA_SCHEMES)
                key = ls.delivery_idem(project, delivery.action, [v for _, v in chunk], prepared.spec)
                _enqueue(outcome, state, tenant, prepared, key, f"label studio project {project}")

        await _in_store_writer(submit)
    log.info(
        "label studio webhook: project %d, %d tasks: %d jobs (%d duplicate), %d ignored",
        project,
        len(delivery.tasks),
        len(outcome.jobs),
        sum(not j.created for j in outcome.jobs),
        outcome.ignored,
    )
    return outcome.answer(response)


# -- S3 / MinIO --------------------------------------------------------------------------------------------------


@router.post(
    "/s3",
    status_code=202,
    responses=_ANSWERS,
    openapi_extra=_body_doc(
        "An S3 / MinIO event notification; ObjectCreated records make one job each.",
        {"type": "object", "properties": {"Records": {"type": "array", "items": {"type": "object"}}}},
    ),
)
async def s3_webhook(
    request: Request,
    response: Response,
    state: StateDep,
    config: WebhookConfigDep,
    authorization: Annotated[str | None, Header(description="MinIO's auth_token: one of webhook_s3_secrets")] = None,
) -> WebhookAccepted:
    """One job per created object, routed by ``webhook_s3_rules``; unrouted objects are counted as ignored."""
    require_enabled(config.s3_secrets, "s3")
    body = await read_body(request, config.max_body_bytes)
    check_authorization(authorization, config.s3_secrets)
    events = parse_events(json_body(body))
    outcome = Outcome(_status_url(request))
    if events.other:
        outcome.ignore(f"{events.other} records are not ObjectCreated events", events.other)
    planned: list[tuple[S3Object, JobCreate]] = []
    for obj in events.created:
        rule = match_rule(config.s3_rules, obj.bucket, obj.key)
        url = object_url(obj.bucket, obj.key, config.s3_endpoint)
        if obj.key.endswith("/"):
            outcome.ignore(f"s3://{obj.bucket}/{obj.key} is a folder marker")
        elif rule is None:
            outcome.ignore(f"no webhook_s3_rules entry for s3://{obj.bucket}/{obj.key}")
        elif url is None:
            outcome.ignore(f"s3://{obj.bucket}/{obj.key}: '?' or '#' in the key; set webhook_s3_endpoint")
        else:
            planned.append((obj, s3_job(obj, url, rule)))
    if planned:
        models = dep_models(state)
        tenant = webhook_tenant(state)

        def submit() -> None:
            for obj, job in planned:
                try:
                    prepared = prepare_job(job, settings=state.settings, models=models)
                except PreannotateError as exc:  # a rule naming an unknown model: retrying will not help
                    log.warning("s3 webhook: s3://%s/%s makes no job: %s", obj.bucket, obj.key, exc)
                    outcome.ignore(f"s3://{obj.bucket}/{obj.key}: {exc.message}")
                    continue
                _enqueue(outcome, state, tenant, prepared, object_idem(obj, prepared.spec), "s3 object")

        await _in_store_writer(submit)
    log.info(
        "s3 webhook: %d created objects: %d jobs (%d duplicate), %d ignored",
        len(events.created),
        len(outcome.jobs),
        sum(not j.created for j in outcome.jobs),
        outcome.ignored,
    )
    return outcome.answer(response)


# -- V7 ----------------------------------------------------------------------------------------------------------


@router.post(
    "/v7",
    status_code=202,
    responses=_ANSWERS,
    openapi_extra=_body_doc(
        "A V7 workflow webhook-stage delivery: the item's Darwin JSON 2.0.",
        {"type": "object", "properties": {"version": {"type": "string"}, "item": {"type": "object"}}},
    ),
)
async def v7_webhook(
    request: Request,
    response: Response,
    state: StateDep,
    config: WebhookConfigDep,
    authorization: Annotated[str | None, Header(description="the stage's header: one of webhook_v7_secrets")] = None,
) -> WebhookAccepted:
    """Preannotate the item's slots and import the result into that item (overwrite: redeliveries are harmless).

    V7's ``v7-signature`` HMAC header is not verified: its scheme is undocumented (darwin_v2.md §10).
    """
    require_enabled(config.v7_secrets, "v7")
    body = await read_body(request, config.max_body_bytes)
    check_authorization(authorization, config.v7_secrets)
    settings = state.settings
    v7_origin = origin_of(settings.v7_base_url) if settings.v7_api_key.get_secret_value() else None
    delivery = v7.parse_delivery(json_body(body), v7_origin=v7_origin)
    outcome = Outcome(_status_url(request))
    if delivery is None:
        outcome.ignore("not a webhook-stage item delivery (no item slots)")
        return outcome.answer(response)
    for reason in delivery.skipped_slots:
        outcome.ignore(reason)
    models = dep_models(state)
    tenant = webhook_tenant(state)
    job = JobCreate(items=[delivery.item], model=config.v7_model, destinations=[Destination(backend="v7")])

    def submit() -> None:
        prepared = prepare_job(job, settings=settings, models=models, extra_schemes=VIA_SCHEMES)
        key = v7.delivery_idem(delivery.item_id, delivery.media_hash, prepared.spec)
        _enqueue(outcome, state, tenant, prepared, key, "v7 item")

    await _in_store_writer(submit)
    log.info("v7 webhook: item %s: %s", delivery.item_id, "new job" if outcome.jobs[0].created else "duplicate")
    return outcome.answer(response)


# -- CVAT --------------------------------------------------------------------------------------------------------


def _cvat_client(request: Request, state: AppState) -> CvatClient:
    """The server's CVAT client, built once per app (it logs in on first use)."""
    with _STATE_LOCK:
        client: CvatClient | None = getattr(request.app.state, "cvat_client", None)
        if client is None:
            config = cvat_config_from_settings(state.settings)
            if config is None:
                raise PreannotateError(
                    ErrorCode.BACKEND_NOT_CONFIGURED, "the CVAT webhook needs cvat_url and a token or username/password"
                )
            # CVAT waits 10 s for an answer and does not send a delivery again: reads here must be quick.
            quick = replace(config, timeout_s=CVAT_WEBHOOK_TIMEOUT_S, retry=CVAT_WEBHOOK_RETRY)
            client = CvatClient(quick, fetch_policy=state.settings.fetch_policy())
            request.app.state.cvat_client = client
        return client


@router.post(
    "/cvat",
    status_code=202,
    responses=_ANSWERS,
    openapi_extra=_body_doc(
        "A CVAT webhook delivery (create:task, update:task and create:job make jobs; other events are acknowledged).",
        {"type": "object", "required": ["event"], "properties": {"event": {"type": "string"}}},
    ),
)
async def cvat_webhook(
    request: Request,
    response: Response,
    state: StateDep,
    config: WebhookConfigDep,
    signature: Annotated[
        str | None, Header(alias=cvat_intake.SIGNATURE_HEADER, description="sha256=<HMAC-SHA256 of the body>")
    ] = None,
) -> WebhookAccepted:
    """Preannotate the task the delivery is about, once its data is there, and push the result to that task.

    The job's key is the task and its data (``task_idem``): a repeated or replayed delivery is a no-op.
    """
    require_enabled(config.cvat_secrets, "cvat")
    body = await read_body(request, config.max_body_bytes)
    cvat_intake.verify_signature(signature, body, config.cvat_secrets)
    delivery = cvat_intake.parse_delivery(json_body(body))
    outcome = Outcome(_status_url(request))
    if not delivery.starts_work or delivery.task_id is None:
        outcome.ignore(f"{delivery.event}: no task to preannotate")
        return outcome.answer(response)
    task_id = delivery.task_id
    settings = state.settings
    client = _cvat_client(request, state)
    models = dep_models(state)
    tenant = webhook_tenant(state)

    def read_task() -> tuple[CvatTaskInfo, CvatFrames] | None:
        try:
            task = client.task(task_id)
            if not task.has_data:  # its jobs come once CVAT has processed the data: create:job says so
                return None
            return task, client.frames(task)
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None

    found = await asyncio.to_thread(read_task)  # off the event loop, and off the store writer other webhooks share
    if found is None:
        outcome.ignore(f"task {task_id} has no data yet")
        return outcome.answer(response)
    task, frames = found

    def submit() -> None:
        every = frame_stride(frames, fps=settings.fps, video_fps=settings.cvat_video_fps)
        plan = plan_frames(frames, every, max_frames=settings.cvat_max_frames_per_task, task_id=task_id)
        items = task_items(client.config.url, task, frames, plan, quality=settings.cvat_frame_quality)
        destination = Destination(backend="cvat", task=task_id)
        size = settings.max_items_per_job
        for n, start in enumerate(range(0, len(items), size)):
            job = JobCreate(items=items[start : start + size], model=config.cvat_model, destinations=[destination])
            prepared = prepare_job(job, settings=settings, models=models, extra_schemes=VIA_SCHEMES)
            key = cvat_task_idem(task, frames, prepared.spec) + (f":{n}" if n else "")
            _enqueue(outcome, state, tenant, prepared, key, f"cvat task {task_id}")

    await _in_store_writer(submit)
    log.info(
        "cvat webhook: %s task %d: %s",
        delivery.event,
        task_id,
        "ignored" if not outcome.jobs else ("new job" if any(j.created for j in outcome.jobs) else "duplicate"),
    )
    return outcome.answer(response)


# -- generic (HMAC) ----------------------------------------------------------------------------------------------


@router.post(
    "/generic",
    status_code=202,
    responses=_ANSWERS,
    openapi_extra=_body_doc("A job, signed: HMAC-SHA256 over '{timestamp}.{raw body}'.", schema_ref(JobCreate)),
)
async def generic_webhook(
    request: Request,
    response: Response,
    state: StateDep,
    config: WebhookConfigDep,
    timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER, description="Unix seconds")] = None,
    signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER, description="sha256=<hex>")] = None,
    delivery: Annotated[str | None, Header(alias=DELIVERY_HEADER, description="unique per delivery")] = None,
) -> WebhookAccepted:
    """A signed ``JobCreate``; a repeated delivery id (for a day, whatever the body), or the same content, is a
    200 no-op."""
    require_enabled(config.generic_secrets, "generic")
    body = await read_body(request, config.max_body_bytes)
    verify(
        timestamp=timestamp,
        signature=signature,
        body=body,
        secrets=config.generic_secrets,
        tolerance_s=config.tolerance_s,
    )
    delivery_id = check_delivery_id(delivery)
    payload = json_body(body)
    if not isinstance(payload, dict):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "the body must be a JSON object (a job)")
    try:
        job = JobCreate.model_validate(payload)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    models = dep_models(state)
    tenant = webhook_tenant(state)
    store = state.store

    def submit() -> tuple[JobRecord | None, bool]:
        prepared = prepare_job(job, settings=state.settings, models=models)
        key = prepared.content_key()
        if delivery_id:
            # The claim lives in the job store, so a replay is caught by any API process, and after a restart.
            # It names the content key: a retry with the same body (after a 429, say) goes on to the usual
            # content dedupe, and a replay with another body is answered with the first body's job.
            holder = store.claim_delivery(f"generic:{delivery_id}", key, ttl_s=DELIVERY_TTL_S)
            if holder != key:
                return store.find_job(tenant=tenant, idem_key=holder), False
        return enqueue(prepared, settings=state.settings, store=store, tenant=tenant, idem_key=key)

    record, created = await _in_store_writer(submit)
    outcome = Outcome(_status_url(request))
    if record is None:  # the first delivery made no job (refused, or still being stored elsewhere)
        response.status_code = 200
        outcome.ignore(f"delivery {delivery_id} was already received with another body")
        log.info("generic webhook: delivery %s replayed with another body: no-op", delivery_id)
        return outcome.answer(response)
    outcome.add(record, created)
    log.info("generic webhook: delivery %s: job %s (%s)", delivery_id, record.id, "new" if created else "duplicate")
    return outcome.answer(response)
