"""Label Studio tasks as job items, shared by the ``TASKS_CREATED`` webhook and the reconciliation sweep.

A task becomes one item named ``task-<id>`` (as ``preannotate sync`` names it), with one slot per object a
box control points at, named after the object: that is how the push matches slots to ``to_name``. Media
on the Label Studio host is marked ``label-studio+`` so the worker fetches it with the LS key; other
absolute URLs (cloud storage, CDNs) are fetched as they are.

The dedupe key is (project, action, [(task id, updated_at)], job parameters): a repeated delivery, or the
sweep finding the same unchanged task, lands on the same job (label_studio.md §7, reliability.md §3.2).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from pydantic import ValidationError

from service.backends.media import LABEL_STUDIO, via
from service.backends.origin_auth import origin_of
from service.convert.label_studio import LsObject, parse_label_config
from service.errors import ErrorCode, PreannotateError
from service.jobs.submit import key_params
from service.spec.job import JobSpec
from service.spec.requests import SLOT_NAME_PATTERN, ItemIn, SlotIn

TASKS_CREATED = "TASKS_CREATED"
PROJECT_UPDATED = "PROJECT_UPDATED"
_PLAIN_SCHEMES = frozenset({"http", "https", "s3"})


@dataclass(frozen=True, slots=True)
class LsDelivery:
    """The parts of a webhook body we use; ``project`` keeps ``token`` et al. only until this is built.

    Attributes:
        action: ``TASKS_CREATED``, ``PROJECT_UPDATED`` ...
        project_id: ``project.id`` (or the tasks' ``project``), None when absent.
        label_config: ``project.label_config``, None when absent (``send_payload: false``).
        tasks: The ``tasks`` list as sent.
    """

    action: str
    project_id: int | None
    label_config: str | None
    tasks: tuple[Mapping[str, object], ...]


def parse_delivery(body: object) -> LsDelivery:
    """Read a webhook body; nothing from ``project`` but its id and labeling config is kept.

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` for a body that is not a Label Studio webhook.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("action"), str):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a Label Studio webhook body has an 'action'")
    project = body.get("project")
    project = project if isinstance(project, Mapping) else {}
    tasks_raw = body.get("tasks")
    tasks = tuple(t for t in tasks_raw if isinstance(t, Mapping)) if isinstance(tasks_raw, list) else ()
    project_id = as_int(project.get("id"))
    if project_id is None and tasks:
        project_id = as_int(tasks[0].get("project"))
    config = project.get("label_config")
    return LsDelivery(
        action=str(body["action"]),
        project_id=project_id,
        label_config=config if isinstance(config, str) and config.strip() else None,
        tasks=tasks,
    )


def as_int(value: object) -> int | None:
    """An id as int (LS sends ints; strings of digits are accepted), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def targets_of(label_config: str, *, masks: bool = False) -> list[LsObject]:
    """The objects a control points at (what a task needs media for); brush and polygon controls count only for
    jobs that make ``masks`` (``LabelConfig.for_run``).

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` when there are none.
    """
    targets = parse_label_config(label_config).for_run(masks=masks).targets()
    if not targets:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            "the project has no RectangleLabels (on an Image) or VideoRectangle (on a Video)",
        )
    return targets


def media_url(ls_url: str, value: str) -> str:
    """A task's media reference as an absolute URL: LS-relative paths join the LS base URL as a browser
    would (``LabelStudioClient.media_url``); absolute URLs are returned as given."""
    text = value.strip()
    if "://" in text.split("?", 1)[0]:
        return text
    return urljoin(ls_url.rstrip("/") + "/", text)


def slot_url(ls_url: str, value: str) -> str:
    """The slot URL for a task data value: ``label-studio+...`` on the LS host, else the plain URL.

    Raises:
        PreannotateError: ``URL_NOT_ALLOWED`` for a scheme workers cannot fetch (``gs://``, ``data:`` ...).
    """
    absolute = media_url(ls_url, value)
    if origin_of(absolute) is not None and origin_of(absolute) == origin_of(ls_url):
        return via(LABEL_STUDIO, absolute)
    scheme = urlsplit(absolute).scheme.lower()
    if scheme not in _PLAIN_SCHEMES:
        raise PreannotateError(ErrorCode.URL_NOT_ALLOWED, f"media scheme {scheme or '(none)'!r} cannot be fetched")
    return absolute


def task_item(task: Mapping[str, object], targets: Sequence[LsObject], ls_url: str) -> ItemIn:
    """One task as a job item pushed back to that task.

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` (no id, no media for any target, an object name that cannot
            be a slot name) or ``URL_NOT_ALLOWED``.
    """
    task_id = as_int(task.get("id"))
    if task_id is None:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a task without an id")
    data = task.get("data")
    data = data if isinstance(data, Mapping) else {}
    slots: list[SlotIn] = []
    for obj in targets:
        value = data.get(obj.value_key) if obj.value_key else None
        if isinstance(value, str) and value.strip():
            slots.append(_slot(obj, slot_url(ls_url, value), task_id))
    if not slots:
        keys = ", ".join(f"${o.value_key}" for o in targets if o.value_key) or "none"
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"task {task_id}: no media in the task data ({keys})")
    return ItemIn(name=f"task-{task_id}", slots=slots, external_ids={"label_studio": str(task_id)})


def _slot(obj: LsObject, url: str, task_id: int) -> SlotIn:
    try:
        return SlotIn(name=obj.name, url=url, type=obj.kind)
    except ValidationError:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"task {task_id}: object name {obj.name!r} is not a slot name ({SLOT_NAME_PATTERN})",
        ) from None


def task_version(task: Mapping[str, object]) -> tuple[int, str]:
    """``(id, updated_at)``: what identifies this state of a task for dedupe."""
    return as_int(task.get("id")) or 0, str(task.get("updated_at") or task.get("created_at") or "")


def delivery_idem(project_id: int, action: str, tasks: Sequence[tuple[int, str]], spec: JobSpec) -> str:
    """The store key for "these task states, this project and action, these job parameters" (the model's
    version left out: ``SERVER_PINNED``)."""
    canonical = json.dumps(
        {"project": project_id, "action": action, "tasks": sorted(tasks), "params": key_params(spec)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "label-studio:" + hashlib.sha256(canonical.encode()).hexdigest()
