"""CVAT client: the only module that talks to a CVAT server, through the ``cvat-sdk`` client (the ``cvat`` extra).

Every call goes through the SDK's generated API client with ``_parse_response=False``: the SDK builds and sends the
request, and the JSON answer is validated here into our own models (SDK model objects never leave this module).
The SDK's urllib3 retries are switched off and our :class:`~service.retry.RetryPolicy` runs instead (429/5xx and
transport errors, backoff with jitter, ``Retry-After`` honoured, bounded in attempts and time).

Auth: a token is tried as an API key (``Authorization: Token <key>``, CVAT 2.x) and, if CVAT refuses that, as a
personal access token (``Bearer <token>``, newer CVAT); or a username and password log in once (``/api/auth/login``,
which answers an API key). Credentials only ever travel in that header, which nothing logs.

Task media are fetched through the SSRF-guarded :class:`~service.pipeline.fetch.Fetcher`, with the header attached
only to requests for the CVAT origin. A frame is named by its API URL (``frame_url``): the task's frame ``number``
as CVAT numbers it, whatever the task's start, stop and step.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import parse_qs, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from service.backends.http import parse_answer
from service.backends.origin_auth import DEFAULT_PORTS, Origin, OriginAuthTransport, host_entry, origin_of
from service.backends.retry import BackendError, RetryPolicy, parse_retry_after
from service.config import Settings
from service.convert.cvat_types import MARKER_ATTRIBUTE, CvatAnnotations, CvatFrames, CvatLabel, parse_frame_step
from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import FetchedFile, Fetcher, FetchPolicy

if TYPE_CHECKING:
    from cvat_sdk import Client

log = logging.getLogger(__name__)

BACKEND = "cvat"
# Reliability.md §4, as for Label Studio: base 0.5 s, cap 30 s, 6 attempts or a 2-minute budget.
DEFAULT_RETRY = RetryPolicy(
    max_attempts=6, base_delay_s=0.5, max_delay_s=30.0, max_retry_after_s=60.0, max_total_s=120.0
)
FRAME_QUALITIES = ("original", "compressed")
T = TypeVar("T")
Endpoint = Callable[[Any], Callable[..., Any]]
"""Picks one SDK endpoint method off the API client: ``lambda api: api.tasks_api.retrieve``."""


# -- what CVAT answers (validated once here; fields we do not use are ignored) ---------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CvatJobsSummary(_Answer):
    count: int = 0


class CvatTaskInfo(_Answer):
    """A task as ``GET /api/tasks/{id}`` answers it (``jobs.count`` is 0 until CVAT has processed its data)."""

    id: int
    name: str = ""
    size: int = 0
    mode: str = ""
    project_id: int | None = None
    dimension: str = "2d"
    updated_date: str | None = None
    jobs: CvatJobsSummary | None = None

    @property
    def has_data(self) -> bool:
        """Whether the task's frames can be read: CVAT creates the jobs once its data is processed."""
        return self.size > 0 and (self.jobs is None or self.jobs.count > 0)


class CvatFrameInfo(_Answer):
    name: str = ""
    width: int = 0
    height: int = 0


class CvatDataMeta(_Answer):
    """``GET /api/tasks/{id}/data/meta``: how the task's frames were taken from its media."""

    size: int = 0
    start_frame: int = 0
    stop_frame: int = 0
    frame_filter: str = ""
    frames: tuple[CvatFrameInfo, ...] = ()
    deleted_frames: tuple[int, ...] = ()
    chunks_updated_date: str | None = None


class CvatAttributeSpec(_Answer):
    id: int
    name: str


class CvatLabelInfo(_Answer):
    id: int
    name: str
    type: str | None = "any"
    attributes: tuple[CvatAttributeSpec, ...] = ()

    def marker_id(self) -> int | None:
        return next((a.id for a in self.attributes if a.name == MARKER_ATTRIBUTE), None)

    def as_label(self) -> CvatLabel:
        return CvatLabel(id=self.id, name=self.name, type=self.type or "any", marker_id=self.marker_id())


class _Page(_Answer):
    count: int = 0
    next: str | None = None
    results: list[dict[str, Any]] = Field(default_factory=list)


class CvatAttributeRead(_Answer):
    spec_id: int
    value: str = ""


class CvatStoredObject(BaseModel):
    """A shape or track as stored (every key kept: a delete sends the object back as CVAT gave it)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: int
    frame: int
    label_id: int
    source: str = ""
    attributes: tuple[CvatAttributeRead, ...] = ()
    shapes: tuple[dict[str, Any], ...] | None = None  # a track's keyframes

    def marker(self, spec_id: int | None) -> str | None:
        if spec_id is None:
            return None
        return next((a.value for a in self.attributes if a.spec_id == spec_id), None)

    def frames(self) -> tuple[int, ...]:
        if self.shapes is None:
            return (self.frame,)
        return tuple(int(s.get("frame", self.frame)) for s in self.shapes)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class CvatJobInfo(_Answer):
    """A job: the task frames ``start_frame..stop_frame`` (inclusive) that one annotator works on. Jobs of a task may
    overlap; a ``ground_truth`` job (CVAT's quality control) holds reference annotations and is never written."""

    id: int
    start_frame: int
    stop_frame: int
    type: str = "annotation"
    stage: str = "annotation"
    state: str = "new"

    @property
    def protected(self) -> bool:
        """Whether people have finished with it (accepted, or marked completed): pushes leave it alone."""
        return self.stage == "acceptance" or self.state == "completed"


class CvatStoredAnnotations(_Answer):
    """``GET /api/tasks/{id}/annotations``."""

    shapes: tuple[CvatStoredObject, ...] = ()
    tracks: tuple[CvatStoredObject, ...] = ()


# -- configuration -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CvatConfig:
    """Where CVAT is and how to authenticate; secrets stay ``SecretStr`` until a header needs them.

    Attributes:
        url: Base URL, e.g. ``https://cvat.example.com`` (no credentials, query or fragment).
        token: An API key or a personal access token; empty to log in with ``username``/``password``.
        username: For basic auth, when there is no token.
        password: That user's password.
        timeout_s: Per HTTP request.
        retry: How 429 / 5xx / connection failures are retried.
        page_size: Objects per page when listing.
    """

    url: str
    token: SecretStr = field(default=SecretStr(""), repr=False)
    username: str = ""
    password: SecretStr = field(default=SecretStr(""), repr=False)
    timeout_s: float = 60.0
    retry: RetryPolicy = DEFAULT_RETRY
    page_size: int = 100

    def __post_init__(self) -> None:
        try:
            parsed = httpx.URL(self.url.strip())
        except httpx.InvalidURL:
            raise ValueError("the CVAT URL is not a valid URL") from None
        if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
            raise ValueError("the CVAT URL must be http:// or https:// with a host")
        if parsed.userinfo or parsed.query or parsed.fragment:
            raise ValueError("the CVAT URL must not carry credentials, a query or a fragment")
        if not self.token.get_secret_value().strip() and not (
            self.username.strip() and self.password.get_secret_value()
        ):
            raise ValueError("CVAT needs a token, or a username and password")
        if not 1 <= self.page_size <= 1000:
            raise ValueError(f"page_size must be in [1, 1000], got {self.page_size}")
        object.__setattr__(self, "url", str(parsed).rstrip("/"))

    @property
    def origin(self) -> Origin:
        found = origin_of(self.url)
        assert found is not None  # checked in __post_init__
        return found


def config_from_settings(settings: Settings) -> CvatConfig | None:
    """The configured CVAT, or None when ``cvat_url`` or its credentials are unset."""
    url = (settings.cvat_url or "").strip()
    has_token = bool(settings.cvat_token.get_secret_value().strip())
    has_login = bool(settings.cvat_username.strip() and settings.cvat_password.get_secret_value())
    if not url or not (has_token or has_login):
        return None
    return CvatConfig(
        url=url, token=settings.cvat_token, username=settings.cvat_username, password=settings.cvat_password
    )


# -- frame URLs ------------------------------------------------------------------------------------------------------


def frame_url(base_url: str, task_id: int, number: int, quality: str = "original") -> str:
    """The API URL of one task frame (what a job's slot names, marked ``cvat+``)."""
    if quality not in FRAME_QUALITIES:
        raise ValueError(f"quality must be one of {FRAME_QUALITIES}, got {quality!r}")
    return f"{base_url.rstrip('/')}/api/tasks/{task_id}/data?type=frame&number={number}&quality={quality}"


def parse_frame_url(url: str) -> tuple[int, int] | None:
    """``(task id, frame number)`` of a ``frame_url`` (marked or not); None for any other URL."""
    parts = urlsplit(url.partition("+")[2] if url.startswith("cvat+") else url)
    segments = parts.path.rstrip("/").split("/")
    if len(segments) < 5 or segments[-4:-2] != ["api", "tasks"] or segments[-1] != "data":
        return None
    query = parse_qs(parts.query)
    number = (query.get("number") or [""])[0]
    if not segments[-2].isdigit() or not number.isdigit() or (query.get("type") or [""])[0] != "frame":
        return None
    return int(segments[-2]), int(number)


# -- the client ------------------------------------------------------------------------------------------------------


class CvatClient:
    """Tasks, labels, annotations and frames of one CVAT server; thread-safe (the SDK's pool is).

    The SDK client is built, and credentials checked, on the first call.
    """

    def __init__(self, config: CvatConfig, *, fetch_policy: FetchPolicy | None = None) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._sdk: Client | None = None
        self._authorization: str | None = None
        policy = fetch_policy or FetchPolicy()
        policy = replace(policy, allowed_hosts=policy.allowed_hosts | {host_entry(config.origin)})
        self._fetcher = Fetcher(policy, transport=OriginAuthTransport(config.origin, self.authorization))

    def close(self) -> None:
        with self._lock:
            sdk, self._sdk = self._sdk, None
        if sdk is not None:
            sdk.close()

    def __enter__(self) -> CvatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection ------------------------------------------------------------------------------------------------

    def authorization(self) -> str:
        """The ``Authorization`` value every request carries (logs in on first use)."""
        self._client()
        assert self._authorization is not None
        return self._authorization

    def _client(self) -> Client:
        with self._lock:
            if self._sdk is None:
                self._sdk, self._authorization = self._connect()
            return self._sdk

    def _connect(self) -> tuple[Client, str]:
        try:
            from cvat_sdk import Client, Config
            from cvat_sdk.api_client import rest
        except ImportError:
            raise PreannotateError(
                ErrorCode.MISSING_DEPENDENCY, "the CVAT backend needs cvat-sdk: pip install 'preannotate[cvat]'"
            ) from None
        client = Client(self.config.url, config=Config(status_check_period=1.0), check_server_version=False)
        # Our retry policy is the only one: the SDK's urllib3 pool would retry on its own, without backoff.
        client.api_client.configuration.retries = False
        client.api_client.rest_client = rest.RESTClientObject(client.api_client.configuration)
        api = client.api_client
        token = self.config.token.get_secret_value().strip()
        if not token:
            login = self._send(
                "logging in",
                lambda: api.auth_api.create_login(
                    _sdk_model(
                        "LoginSerializerExRequest",
                        username=self.config.username,
                        password=self.config.password.get_secret_value(),
                    ),
                    _parse_response=False,
                    _request_timeout=self.config.timeout_s,
                ),
                auth=True,
            )
            key = login.get("key") if isinstance(login, dict) else None
            if not isinstance(key, str) or not key:
                raise BackendError(BACKEND, "logging in answered no API key", status=None, retryable=False)
            candidates = [f"Token {key}"]
        else:
            candidates = [f"Token {token}", f"Bearer {token}"]  # a CVAT 2.x API key, then a personal access token
        for n, header in enumerate(candidates):
            api.set_default_header("Authorization", header)
            try:
                self._send(
                    "checking the credentials",
                    lambda: api.users_api.retrieve_self(_parse_response=False, _request_timeout=self.config.timeout_s),
                    auth=True,
                )
            except BackendError as exc:
                if exc.status == 401 and n + 1 < len(candidates):
                    continue
                client.close()
                raise
            return client, header
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one call with our retry policy ----------------------------------------------------------------------------

    def _call(
        self, what: str, send: Callable[[Any], tuple[object, Any]], *, retry: RetryPolicy | None = None
    ) -> object:
        api = self._client().api_client
        return self._send(what, lambda: send(api), retry=retry)

    def _send(
        self, what: str, send: Callable[[], tuple[object, Any]], *, retry: RetryPolicy | None = None, auth: bool = False
    ) -> object:
        import urllib3
        from cvat_sdk.api_client.exceptions import ApiException

        policy = retry or self.config.retry
        started = time.monotonic()
        for attempt in range(1, policy.max_attempts + 1):
            retry_after: float | None = None
            try:
                _, response = send()
                body = response.data
                return json.loads(body) if body else None
            except ApiException as exc:
                status = int(exc.status or 0)
                retry_after = parse_retry_after((exc.headers or {}).get("Retry-After"))
                error = _api_error(what, status, exc.body, policy, retry_after, auth=auth)
            except urllib3.exceptions.HTTPError as exc:
                error = BackendError(
                    BACKEND,
                    f"{what} failed: {type(exc).__name__}",
                    status=None,
                    retryable=policy.retry_transport_errors,
                )
            except ValueError:
                error = BackendError(BACKEND, f"{what}: the answer is not JSON", status=None, retryable=True)
            if not error.retryable or attempt == policy.max_attempts:
                raise error
            if retry_after is not None and retry_after > policy.max_retry_after_s:
                raise error
            delay = max(policy.backoff_s(attempt), retry_after or 0.0)
            if time.monotonic() - started + delay > policy.max_total_s:
                raise error
            log.warning(
                "cvat: %s: %s, retry %d/%d in %.2f s", what, error.message, attempt, policy.max_attempts - 1, delay
            )
            policy.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _as(self, kind: type[T], what: str, send: Callable[[Any], tuple[object, Any]], **kwargs: Any) -> T:
        return parse_answer(BACKEND, kind, self._call(what, send, **kwargs), what)

    # -- reads -------------------------------------------------------------------------------------------------------

    def _get(self, kind: type[T], what: str, endpoint: Endpoint, *args: Any) -> T:
        """One answer of ``endpoint`` (``lambda api: api.tasks_api.retrieve``) for ``args``, validated as ``kind``."""
        return self._as(kind, what, functools.partial(_send_endpoint, endpoint, args, {}, self.config.timeout_s))

    def _list(self, what: str, endpoint: Endpoint, **filters: int) -> list[dict[str, Any]]:
        """Every entry of a paged list endpoint (``next`` links are not followed: they name CVAT's public host)."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            query = {**filters, "page": page, "page_size": self.config.page_size}
            answer = self._as(
                _Page, what, functools.partial(_send_endpoint, endpoint, (), query, self.config.timeout_s)
            )
            found += answer.results
            if not answer.next or not answer.results:
                return found
            page += 1

    def task(self, task_id: int) -> CvatTaskInfo:
        return self._get(CvatTaskInfo, f"reading task {task_id}", lambda api: api.tasks_api.retrieve, task_id)

    def data_meta(self, task_id: int) -> CvatDataMeta:
        what = f"reading task {task_id}'s data"
        return self._get(CvatDataMeta, what, lambda api: api.tasks_api.retrieve_data_meta, task_id)

    def frames(self, task: CvatTaskInfo) -> CvatFrames:
        """How the task numbers its frames.

        Raises:
            BackendError: the task has no data yet, or a frame filter we do not know.
        """
        if not task.has_data:
            raise BackendError(BACKEND, f"task {task.id} has no data yet", status=None, retryable=False)
        meta = self.data_meta(task.id)
        try:
            step = parse_frame_step(meta.frame_filter)
        except ValueError as exc:
            raise BackendError(BACKEND, f"task {task.id}: {exc}", status=None, retryable=False) from None
        return CvatFrames(
            size=meta.size or task.size,
            start_frame=meta.start_frame,
            stop_frame=meta.stop_frame,
            step=step,
            names=tuple(f.name for f in meta.frames),
            video=task.mode == "interpolation",
            deleted=frozenset(meta.deleted_frames),
        )

    def labels(self, task_id: int) -> list[CvatLabelInfo]:
        """The task's labels (its project's, for a task in a project)."""
        what = f"listing task {task_id}'s labels"
        found = self._list(what, lambda api: api.labels_api.list, task_id=task_id)
        return parse_answer(BACKEND, list[CvatLabelInfo], found, what)

    def project_tasks(self, project_id: int) -> list[int]:
        """Every task of a project, by id."""
        found = self._list(
            f"listing project {project_id}'s tasks", lambda api: api.tasks_api.list, project_id=project_id
        )
        return sorted(int(task["id"]) for task in found if isinstance(task.get("id"), int))

    def jobs(self, task_id: int) -> list[CvatJobInfo]:
        """The task's annotation jobs, by first frame (ground-truth jobs left out)."""
        what = f"listing task {task_id}'s jobs"
        jobs = parse_answer(
            BACKEND, list[CvatJobInfo], self._list(what, lambda api: api.jobs_api.list, task_id=task_id), what
        )
        return sorted((j for j in jobs if j.type == "annotation"), key=lambda j: (j.start_frame, j.id))

    def job_annotations(self, job_id: int) -> CvatStoredAnnotations:
        what = f"reading job {job_id}'s annotations"
        return self._get(CvatStoredAnnotations, what, lambda api: api.jobs_api.retrieve_annotations, job_id)

    def annotations(self, task_id: int) -> CvatStoredAnnotations:
        what = f"reading task {task_id}'s annotations"
        return self._get(CvatStoredAnnotations, what, lambda api: api.tasks_api.retrieve_annotations, task_id)

    # -- writes ------------------------------------------------------------------------------------------------------

    def add_marker(self, label: CvatLabelInfo) -> CvatLabelInfo:
        """Give ``label`` the ``preannotate`` text attribute (immutable over a track) that names our objects' model.

        Two processes adding it at once: the second is refused, reads the label again and finds it.
        """
        if label.marker_id() is not None:
            return label
        timeout = self.config.timeout_s
        attribute = _sdk_model(
            "AttributeRequest", name=MARKER_ATTRIBUTE, mutable=False, input_type="text", default_value="", values=[""]
        )
        try:
            self._call(
                f"adding the {MARKER_ATTRIBUTE!r} attribute to label {label.name!r}",
                lambda api: api.labels_api.partial_update(
                    label.id,
                    patched_label_request=_sdk_model("PatchedLabelRequest", attributes=[attribute]),
                    _parse_response=False,
                    _request_timeout=timeout,
                ),
            )
        except BackendError as exc:
            if exc.status != 400:
                raise
        timeout = self.config.timeout_s
        again = self._as(
            CvatLabelInfo,
            f"reading label {label.id}",
            lambda api: api.labels_api.retrieve(label.id, _parse_response=False, _request_timeout=timeout),
        )
        if again.marker_id() is None:
            raise BackendError(
                BACKEND,
                f"label {label.name!r} did not take the {MARKER_ATTRIBUTE!r} attribute",
                status=None,
                retryable=False,
            )
        return again

    def change_job_annotations(
        self,
        job_id: int,
        action: Literal["create", "delete"],
        body: CvatAnnotations | Mapping[str, Any],
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``PATCH /api/jobs/{id}/annotations?action=create|delete``: one transaction on the server.

        Jobs, not the task: a task-level write splits a track at the jobs' boundaries itself and, where jobs overlap,
        a task-level read merges the pieces, so a task-level delete misses some of them.
        """
        timeout = self.config.timeout_s
        request = _sdk_model("PatchedLabeledDataRequest", **dict(body))
        self._call(
            f"{action} annotations of job {job_id}",
            lambda api: api.jobs_api.partial_update_annotations(
                action, job_id, patched_labeled_data_request=request, _parse_response=False, _request_timeout=timeout
            ),
            retry=retry,
        )

    # -- media -------------------------------------------------------------------------------------------------------

    def frame_url(self, task_id: int, number: int, quality: str = "original") -> str:
        return frame_url(self.config.url, task_id, number, quality)

    def is_cvat_url(self, url: str) -> bool:
        try:
            return origin_of(url) == self.config.origin
        except httpx.InvalidURL:
            return False

    def download(self, url: str, dest_dir: Path, *, deadline_s: float | None = None) -> FetchedFile:
        """Fetch a task frame (or other CVAT media URL) into ``dest_dir``; the credentials go to CVAT's origin only.

        Raises:
            PreannotateError: the fetcher's codes (``URL_NOT_ALLOWED``, ``FETCH_DENIED``, ``INPUT_NOT_FOUND`` ...).
        """
        if not self.is_cvat_url(url):
            raise PreannotateError(ErrorCode.URL_NOT_ALLOWED, "not on the configured CVAT")
        self.authorization()  # log in before the fetcher asks for the header
        return self._fetcher.fetch(url, dest_dir, deadline_s=deadline_s)


def _send_endpoint(
    endpoint: Endpoint, args: tuple[Any, ...], query: Mapping[str, int], timeout_s: float, api: Any
) -> tuple[object, Any]:
    """Call one SDK endpoint for its raw answer (we validate the JSON ourselves), within ``timeout_s``."""
    return cast(tuple[object, Any], endpoint(api)(*args, **query, _parse_response=False, _request_timeout=timeout_s))


def _sdk_model(model: str, /, **values: Any) -> Any:
    """An SDK request model built from plain values (nested dicts become its nested models)."""
    from cvat_sdk import models

    return getattr(models, model)(**values)


def _api_error(
    what: str, status: int, body: object, policy: RetryPolicy, retry_after: float | None, *, auth: bool
) -> BackendError:
    if status == 401 or (status == 403 and auth):
        # The body may echo the submitted credential back (a token revoked mid-run too): never include it. A 403
        # past the login is a permission, whose text says which.
        return BackendError(
            BACKEND, f"{what}: CVAT refused the credentials (HTTP {status})", status=status, retryable=False
        )
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    detail = " ".join(text[:200].split())
    return BackendError(
        BACKEND,
        f"{what} failed with HTTP {status}: {detail}",
        status=status,
        retryable=status in policy.statuses,
        retry_after_s=retry_after,
    )
