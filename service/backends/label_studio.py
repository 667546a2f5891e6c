"""Label Studio REST client: the only module that talks to a Label Studio server (docs ``label_studio.md``).

Auth is a legacy token (``Authorization: Token <key>``) or a personal access token, which is a JWT *refresh*
token: it is exchanged at ``/api/token/refresh/`` for a 5-minute access token sent as ``Bearer``, renewed
before it expires and once more on a 401. The key never appears in a log line, an error message or a repr.

Pushes are reconcile-before-create (reliability.md §3.6): LS has no idempotency keys and stores every POST,
so a task's predictions are listed first and one of the same ``model_version`` is skipped or replaced. A
create that may have landed (timeout, 5xx) is never blindly re-sent: the loop lists again and adopts it.

Task media (``/data/upload/...``, ``/data/local-files/?d=...``) is resolved against the configured base URL
and fetched through the SSRF-guarded :class:`~service.pipeline.fetch.Fetcher`. The LS host is added to its
allow-list, and the token is attached per request, only when the request goes to that host: a redirect to
another host (cloud storage) gets no token.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NotRequired
from urllib.parse import urljoin

import httpx
from pydantic import ConfigDict, JsonValue, SecretStr, with_config
from typing_extensions import TypedDict  # pydantic validates TypedDicts from typing_extensions before 3.12

from service.backends.http import VendorHttp, parse_answer
from service.backends.origin_auth import DEFAULT_PORTS, Origin, OriginAuthTransport, host_entry, origin_of
from service.backends.retry import (
    BackendError,
    RetryPolicy,
    backend_error_to_preannotate,
    check_response,
    send_with_retries,
    transport_error,
)
from service.config import Settings
from service.convert.label_studio import LsPrediction
from service.errors import PreannotateError
from service.pipeline.fetch import FetchedFile, Fetcher, FetchPolicy

log = logging.getLogger(__name__)

BACKEND = "label_studio"
ACCESS_TOKEN_MARGIN_S = 30.0
"""Renew an access token this long before its ``exp``: a request must not race its expiry."""
# Reliability.md §4: base 0.5 s, cap 30 s, 6 attempts or a 2-minute budget.
DEFAULT_RETRY = RetryPolicy(
    max_attempts=6, base_delay_s=0.5, max_delay_s=30.0, max_retry_after_s=60.0, max_total_s=120.0
)


# -- what Label Studio answers: validated once here, every other key kept as sent --------------------------------


@with_config(ConfigDict(extra="allow"))
class LsUser(TypedDict):
    id: int
    email: NotRequired[str | None]


@with_config(ConfigDict(extra="allow"))
class LsProject(TypedDict):
    id: int
    title: NotRequired[str | None]
    label_config: NotRequired[str | None]


@with_config(ConfigDict(extra="allow"))
class LsPredictionRef(TypedDict):
    """A stored prediction; what a push reconciles by."""

    id: int
    model_version: NotRequired[str | None]


@with_config(ConfigDict(extra="allow"))
class LsTask(TypedDict):
    """A task as ``GET /api/tasks/`` lists it (``predictions`` are ids unless listed with ``fields=all``)."""

    id: int
    data: NotRequired[dict[str, JsonValue]]
    predictions: NotRequired[list[LsPredictionRef | int]]
    created_at: NotRequired[str | None]
    updated_at: NotRequired[str | None]
    project: NotRequired[int | None]


@dataclass(frozen=True, slots=True)
class LabelStudioConfig:
    """Where Label Studio is and how to authenticate; the key stays a ``SecretStr`` until a header needs it.

    Attributes:
        url: base URL, e.g. ``https://ls.example.com`` (no credentials, query or fragment).
        api_key: a legacy token or a personal access token (JWT refresh token).
        timeout_s: per HTTP request to the API.
        retry: how 429 / 5xx / connection failures are retried.
        page_size: tasks per page when listing.
    """

    url: str
    api_key: SecretStr = field(repr=False)
    timeout_s: float = 30.0
    retry: RetryPolicy = DEFAULT_RETRY
    page_size: int = 100

    def __post_init__(self) -> None:
        try:
            parsed = httpx.URL(self.url)
        except httpx.InvalidURL:
            raise ValueError("Label Studio URL is not a valid URL") from None
        if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
            raise ValueError("Label Studio URL must be http:// or https:// with a host")
        if parsed.userinfo or parsed.query or parsed.fragment:
            raise ValueError("Label Studio URL must not carry credentials, a query or a fragment")
        if not self.api_key.get_secret_value().strip():
            raise ValueError("Label Studio API key is empty")
        if not 1 <= self.page_size <= 10_000:
            raise ValueError(f"page_size must be in [1, 10000], got {self.page_size}")
        object.__setattr__(self, "url", str(parsed).rstrip("/"))

    @property
    def origin(self) -> Origin:
        """``(scheme, host, port)``: what a URL must match to be sent the token."""
        found = origin_of(self.url)
        assert found is not None  # checked in __post_init__
        return found

    @property
    def host_entry(self) -> str:
        """The ``host:port`` entry this server takes in ``FetchPolicy.allowed_hosts``."""
        return host_entry(self.origin)


class PushOutcome(enum.StrEnum):
    CREATED = "created"
    SKIPPED = "skipped"  # a prediction of this model_version was already there
    REPLACED = "replaced"


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: PushOutcome
    prediction_id: int


class TokenSource:
    """Turns the configured key into an ``Authorization`` value; thread-safe."""

    def __init__(self, config: LabelStudioConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        self._config = config
        self._transport = transport
        self._key = config.api_key.get_secret_value().strip()
        self.refreshable = _is_refresh_jwt(self._key)
        self._lock = threading.Lock()
        self._access: str | None = None
        self._expires_at = 0.0

    def header(self) -> str:
        """``Token <key>``, or ``Bearer <access>`` renewed when close to expiry."""
        if not self.refreshable:
            return f"Token {self._key}"
        with self._lock:
            if self._access is None or time.time() > self._expires_at - ACCESS_TOKEN_MARGIN_S:
                self._access, self._expires_at = self._refresh()
            return f"Bearer {self._access}"

    def invalidate(self) -> None:
        """Forget the access token (after a 401): the next header() gets a fresh one."""
        with self._lock:
            self._access = None

    def _refresh(self) -> tuple[str, float]:
        with httpx.Client(
            base_url=self._config.url, timeout=self._config.timeout_s, transport=self._transport, trust_env=False
        ) as client:
            request = client.build_request("POST", "/api/token/refresh/", json={"refresh": self._key})
            try:
                response = send_with_retries(client, request, self._config.retry)
            except httpx.TransportError as exc:
                raise transport_error(BACKEND, exc, "refreshing the access token") from None
        if response.status_code in (400, 401, 403):
            # The body may echo the token back in a validation message: never include it.
            raise BackendError(
                BACKEND,
                f"the personal access token was refused (HTTP {response.status_code})",
                status=response.status_code,
                retryable=False,
            )
        check_response(BACKEND, response, "refreshing the access token")
        access = response.json().get("access")
        if not isinstance(access, str) or not access:
            raise BackendError(
                BACKEND, "token refresh returned no access token", status=response.status_code, retryable=False
            )
        expires = _jwt_claims(access).get("exp")
        return access, float(expires) if isinstance(expires, int | float) else time.time() + 300.0


def _jwt_claims(token: str) -> Mapping[str, object]:
    """The payload of a JWT, unverified (LS verifies it; we only read ``token_type`` and ``exp``)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _is_refresh_jwt(key: str) -> bool:
    # The SDK's rule too: a key that decodes as a JWT is a personal access token, anything else is legacy.
    return _jwt_claims(key).get("token_type") == "refresh"


class _TokenAuth(httpx.Auth):
    """Adds the header to API calls; on a 401 with a personal access token, renews it and tries once more."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._tokens.header()
        response = yield request
        if response.status_code == 401 and self._tokens.refreshable:
            self._tokens.invalidate()
            request.headers["Authorization"] = self._tokens.header()
            yield request


class LabelStudioClient:
    """Projects, tasks, predictions and task media of one Label Studio server; thread-safe."""

    def __init__(
        self,
        config: LabelStudioConfig,
        *,
        fetch_policy: FetchPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        media_transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Connect lazily (no request is made here).

        Args:
            config: server and key.
            fetch_policy: the service's policy for task media; the LS host is added to its allow-list.
            transport: replaces the network for API calls (tests only).
            media_transport: replaces the network for media downloads (tests only).
        """
        self.config = config
        self._tokens = TokenSource(config, transport=transport)
        client = httpx.Client(
            base_url=config.url,
            timeout=config.timeout_s,
            transport=transport,
            auth=_TokenAuth(self._tokens),
            follow_redirects=False,  # a redirect must not take the token anywhere
            trust_env=False,
            headers={"Accept": "application/json"},
        )
        self._http = VendorHttp(BACKEND, client, config.retry)
        policy = fetch_policy or FetchPolicy()
        policy = replace(policy, allowed_hosts=policy.allowed_hosts | {config.host_entry})
        transport = OriginAuthTransport(config.origin, self._tokens.header, inner=media_transport)
        self._fetcher = Fetcher(policy, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- projects and tasks ------------------------------------------------------------------------------------

    def whoami(self) -> LsUser:
        """The key's user: a cheap check that URL and key work."""
        return self._http.call_as(LsUser, "GET", "/api/current-user/whoami", what="checking the API key")

    def iter_projects(self) -> Iterator[LsProject]:
        """Every project the key can see (page by page; ``next`` links are not followed: they name LS's
        public host, which may not be the one configured here)."""
        page = 1
        while True:
            data = self._http.call_json(
                "GET",
                "/api/projects/",
                what="listing projects",
                params={"page": page, "page_size": self.config.page_size},
                ok_statuses=frozenset({404}),
            )
            if not isinstance(data, dict) or not data.get("results"):
                return
            yield from parse_answer(BACKEND, list[LsProject], data["results"], "listing projects")
            if not data.get("next"):
                return
            page += 1

    def get_project(self, project_id: int) -> LsProject:
        return self._http.call_as(
            LsProject, "GET", f"/api/projects/{project_id}/", what=f"reading project {project_id}"
        )

    def get_task(self, task_id: int) -> LsTask:
        return self._http.call_as(LsTask, "GET", f"/api/tasks/{task_id}/", what=f"reading task {task_id}")

    def get_label_config(self, project_id: int) -> str:
        return str(self.get_project(project_id).get("label_config") or "")

    def set_project_model_version(self, project_id: int, model_version: str) -> None:
        """Make annotators see this version's predictions: the labeling stream shows only predictions of
        the project's ``model_version``, and pushing predictions does not set it (reference §4.5)."""
        self._http.call(
            "PATCH",
            f"/api/projects/{project_id}/",
            what=f"setting project {project_id}'s model version",
            json_body={"model_version": model_version},
        )

    def iter_tasks(self, project_id: int, *, with_predictions: bool = True) -> Iterator[LsTask]:
        """Every task of a project, by 1-based pages; LS answers 404 for a page past the end."""
        page = 1
        params: dict[str, str | int] = {"project": project_id, "page_size": self.config.page_size}
        if with_predictions:
            params["fields"] = "all"
        what = f"listing tasks of project {project_id}"
        while True:
            response = self._http.call(
                "GET",
                "/api/tasks/",
                what=what,
                params={**params, "page": page},
                ok_statuses=frozenset({404}),
            )
            if response.status_code == 404:
                return
            tasks = parse_answer(BACKEND, list[LsTask], response.json().get("tasks") or [], what)
            yield from tasks
            if len(tasks) < self.config.page_size:
                return
            page += 1

    # -- predictions -------------------------------------------------------------------------------------------

    def list_predictions(self, task_id: int) -> list[LsPredictionRef]:
        what = f"listing predictions of task {task_id}"
        data = self._http.call_json("GET", "/api/predictions/", what=what, params={"task": task_id})
        found = [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []
        return parse_answer(BACKEND, list[LsPredictionRef], found, what)

    def upsert_prediction(
        self, task_id: int, prediction: LsPrediction, *, replace_existing: bool = False
    ) -> PushResult:
        """Leave exactly one prediction of ``prediction.model_version`` on the task.

        Reconcile before create: an existing prediction of that version is kept (``SKIPPED``) or overwritten
        (``REPLACED``, extra copies deleted). A create whose outcome is unknown is not re-sent: the next round
        lists again and adopts what landed.

        Raises:
            BackendError: LS refused, or kept failing past the retry policy.
        """
        policy = self.config.retry
        started = time.monotonic()
        sent = False
        for attempt in range(1, policy.max_attempts + 1):
            mine = [p for p in self.list_predictions(task_id) if p.get("model_version") == prediction.model_version]
            if mine:
                if sent:  # our earlier create landed after all
                    return PushResult(PushOutcome.CREATED, mine[0]["id"])
                if not replace_existing:
                    return PushResult(PushOutcome.SKIPPED, mine[0]["id"])
                return PushResult(PushOutcome.REPLACED, self._replace(mine, prediction))
            try:
                created = self._create(task_id, prediction)
            except BackendError as exc:
                if not exc.retryable or attempt == policy.max_attempts:
                    raise
                sent = True
                delay = policy.backoff_s(attempt)
                if time.monotonic() - started + delay > policy.max_total_s:
                    raise
                log.warning("task %d: creating a prediction failed (%s); listing again in %.2f s", task_id, exc, delay)
                policy.sleep(delay)
                continue
            return PushResult(PushOutcome.CREATED, created["id"])
        raise AssertionError("unreachable")  # pragma: no cover

    def _create(self, task_id: int, prediction: LsPrediction) -> LsPredictionRef:
        # Not idempotent: retried in place only where LS cannot have stored it (429: throttled before the view).
        once = replace(self.config.retry, statuses=frozenset({429}), retry_transport_errors=False)
        return self._http.call_as(
            LsPredictionRef,
            "POST",
            "/api/predictions/",
            what=f"creating a prediction on task {task_id}",
            json_body={"task": task_id, **prediction.to_json()},
            retry=once,
        )

    def _replace(self, mine: list[LsPredictionRef], prediction: LsPrediction) -> int:
        keep, *extra = sorted(mine, key=lambda p: p["id"])
        self._http.call(
            "PATCH",
            f"/api/predictions/{keep['id']}/",
            what=f"replacing prediction {keep['id']}",
            json_body=prediction.to_json(),
        )
        for duplicate in extra:  # left by an older client or a crash between create and bookkeeping
            self._http.call(
                "DELETE",
                f"/api/predictions/{duplicate['id']}/",
                what=f"deleting duplicate prediction {duplicate['id']}",
                ok_statuses=frozenset({404}),
            )
        return keep["id"]

    # -- media -------------------------------------------------------------------------------------------------

    def media_url(self, value: str) -> str:
        """A task's media reference as an absolute URL: LS-relative paths (``/data/upload/...``,
        ``/data/local-files/?d=...``) join the base URL as a browser would; others are returned as given."""
        text = value.strip()
        if "://" in text.split("?", 1)[0]:
            return text
        return urljoin(self.config.url + "/", text)

    def is_label_studio_url(self, url: str) -> bool:
        try:
            return origin_of(url) == self.config.origin
        except httpx.InvalidURL:
            return False

    def download(self, value: str, dest_dir: Path, *, deadline_s: float | None = None) -> FetchedFile:
        """Fetch a task's media into ``dest_dir`` (the token goes only to the LS origin).

        Raises:
            PreannotateError: the fetcher's codes (``URL_NOT_ALLOWED``, ``FETCH_DENIED``, ``INPUT_NOT_FOUND`` ...).
        """
        return self._fetcher.fetch(self.media_url(value), dest_dir, deadline_s=deadline_s)


def config_from_settings(settings: Settings) -> LabelStudioConfig | None:
    """The configured Label Studio backend, or None when ``label_studio_url`` / ``label_studio_api_key`` are unset."""
    url, key = settings.label_studio_url, settings.label_studio_api_key
    if not url or not url.strip() or key is None or not key.get_secret_value().strip():
        return None
    return LabelStudioConfig(url=url.strip(), api_key=key)


def as_preannotate_error(exc: BackendError) -> PreannotateError:
    """The service's error for a failed Label Studio call (the mapping every backend shares)."""
    return backend_error_to_preannotate(exc)
