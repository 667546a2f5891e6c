"""Write preannotations into Encord label rows: fetch each row, replace our objects, keep everyone else's, save.

Encord has no documented REST API for label rows; its SDK (encord 0.1.211) talks to one RPC endpoint,
``POST {domain}/public``, and this client sends byte-for-byte what the SDK sends there (``encord/http/request.py``,
``encord/client.py``: ``list_label_rows``, ``create_label_rows``, ``get_label_rows``, ``save_label_rows``;
``encord/configs.py`` for the headers). The contract tests run the real SDK against the same fake server, so a
change on either side shows up there. The row itself is ``service.convert.encord``'s.

- Auth: a bearer token, or the service account's Ed25519 SSH key (``Authorization: <public hex>:<signature hex>``
  over SHA-256 of the body; needs ``cryptography``, which the ``encord`` extra brings). Never logged.
- Saves replace the whole row ("last writer wins", encord.md §2), so each bundle is read, merged and saved in
  one go, and re-reading before every write makes a retried push idempotent (reliability.md §3.6).
- Bundles of ``bundle_size`` rows per request (Encord's limit is 1000; its agents use 100): 3 or 4 requests per
  bundle, whatever its size. ``push_each`` fails an item alone when only it is at fault (a data hash the project
  lacks, a row it does not fit), and a bundle's items together when a request fails. Job items finishing
  together are gathered into bundles by ``service.backends.encord_bundler.EncordBundler``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NotRequired, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic validates TypedDicts from typing_extensions before 3.12

from service.backends.http import VendorHttp, parse_answer
from service.backends.retry import BackendError, RetryPolicy
from service.config import Settings
from service.convert.encord import (
    DEFAULT_CREATED_BY,
    EncordOntology,
    EncordRowStats,
    build_encord_label_row,
    default_ontology,
)
from service.convert.encord_types import EncordLabelRowJson
from service.convert.types import ModelRef
from service.pipeline.predictions import ItemPredictions

logger = logging.getLogger(__name__)

BACKEND = "encord"
DEFAULT_DOMAIN = "https://api.encord.com"  # US tenants: https://api.us.encord.com
PUBLIC_PATH = "/public"
MAX_BUNDLE = 1000  # LABEL_ROW_BUNDLE_*_LIMIT in encord/http/limits.py
T = TypeVar("T")
_RETRYABLE_ENVELOPE_ERRORS = frozenset({"RATE_LIMIT_ERROR", "UNKNOWN_ERROR"})

# What the SDK's list_label_rows sends, with list_label_rows_v2's include_uninitialised_labels=True.
_LIST_PAYLOAD_DEFAULTS: dict[str, str | bool | list[str] | None] = {
    "edited_before": None,
    "edited_after": None,
    "label_statuses": None,
    "shadow_data_state": None,
    "include_uninitialised_labels": True,
    "data_hashes": None,
    "label_hashes": None,
    "data_title_eq": None,
    "data_title_like": None,
    "workflow_graph_node_title_eq": None,
    "workflow_graph_node_title_like": None,
    "include_client_metadata": False,
    "include_images_data": False,
    "include_children": False,
    "include_workflow_graph_node": True,
    "include_all_label_branches": False,
    "branch_name": None,
    "client_metadata_as_signed_url": False,
}


class EncordRowMeta(BaseModel):
    """A label row as ``labelrowmetadata`` lists it: ``label_hash`` None for a row never opened."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    data_hash: str
    label_hash: str | None = None


@with_config(ConfigDict(extra="allow"))
class EncordRow(TypedDict):
    """A whole label row as Encord answers it; merged into by ``service.convert.encord`` and saved back, so every
    key it holds is kept (only the two we index by are checked here)."""

    data_hash: str
    label_hash: NotRequired[str | None]


class EncordAuth(Protocol):
    """Makes the ``Authorization`` header for one request body."""

    def authorization(self, body: bytes) -> str: ...


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """``Authorization: Bearer <token>`` (``EncordUserClient.create_with_bearer_token``)."""

    token: str = field(repr=False)

    def authorization(self, body: bytes) -> str:
        return f"Bearer {self.token}"


class SshKeyAuth:
    """The SDK's v1 signature: Ed25519 over SHA-256 of the exact body, sent as ``<public hex>:<signature hex>``."""

    def __init__(self, private_key_pem: str) -> None:
        """Load an OpenSSH or PEM Ed25519 private key (the service account's, from a secret).

        Raises:
            BackendError: ``cryptography`` is missing, or the key is not an unencrypted Ed25519 key.
        """
        try:
            serialization = importlib.import_module("cryptography.hazmat.primitives.serialization")
            ed25519 = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
        except ImportError:
            raise BackendError(
                BACKEND, "SSH key auth needs the 'cryptography' package", status=None, retryable=False
            ) from None
        data = private_key_pem.encode()
        try:
            loader = serialization.load_ssh_private_key if b"OPENSSH" in data else serialization.load_pem_private_key
            key = loader(data, password=None)
        except (ValueError, TypeError):
            # The key text must never reach a message or a log.
            raise BackendError(BACKEND, "the SSH private key cannot be read", status=None, retryable=False) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise BackendError(BACKEND, "the SSH private key must be Ed25519", status=None, retryable=False)
        self._key = key
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        self.public_key_hex: str = key.public_key().public_bytes(*raw).hex()

    def __repr__(self) -> str:
        return f"SshKeyAuth(public_key_hex={self.public_key_hex[:8]}...)"

    def authorization(self, body: bytes) -> str:
        signature: bytes = self._key.sign(hashlib.sha256(body).digest())
        return f"{self.public_key_hex}:{signature.hex()}"


@dataclass(frozen=True, slots=True)
class EncordConfig:
    """One Encord project to write to.

    Attributes:
        project_hash: The project's id (UUID).
        domain: ``https://api.encord.com``, or ``https://api.us.encord.com`` for US tenants.
        created_by: ``createdBy`` of our objects: the service account's email. Also how our objects are told
            from people's on a re-run, so keep it stable.
        bundle_size: Rows per request (1..1000).
        branch_name: Label branch; ``main`` is what the editor shows.
        timeout_s: Per request; the SDK allows 180 s for large rows.
    """

    project_hash: str
    domain: str = DEFAULT_DOMAIN
    created_by: str = DEFAULT_CREATED_BY
    bundle_size: int = 100
    branch_name: str = "main"
    timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if not 1 <= self.bundle_size <= MAX_BUNDLE:
            raise ValueError(f"bundle_size must be in [1, {MAX_BUNDLE}], got {self.bundle_size}")


@dataclass(frozen=True, slots=True)
class EncordPush:
    """One item to write: the Encord data unit (``data_hash``) its media was registered as."""

    data_hash: str
    item: ItemPredictions


@dataclass(frozen=True, slots=True)
class EncordPushResult:
    data_hash: str
    label_hash: str
    stats: EncordRowStats


EncordItemError = BackendError | ValueError
"""Why one item of a :meth:`EncordBackend.push_each` was not written."""


class EncordBackend:
    """A synchronous client for one project; thread-safe as far as ``httpx.Client`` is."""

    def __init__(
        self,
        config: EncordConfig,
        auth: EncordAuth,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self._auth = auth
        client = httpx.Client(
            base_url=config.domain.rstrip("/"), timeout=config.timeout_s, transport=transport, follow_redirects=False
        )
        self._http = VendorHttp(BACKEND, client, retry or RetryPolicy())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EncordBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the four row calls ------------------------------------------------------------------------------------------

    def list_rows(self, data_hashes: Sequence[str]) -> list[EncordRowMeta]:
        """Label row metadata (``label_hash`` None for rows never opened) for these data units, in one call."""
        payload = _LIST_PAYLOAD_DEFAULTS | {"data_hashes": list(data_hashes), "branch_name": self.config.branch_name}
        what = "listing label rows"
        return self._rows(list[EncordRowMeta], self._call("labelrowmetadata", "GET", None, payload, what), what)

    def create_rows(self, data_hashes: Sequence[str]) -> list[EncordRow]:
        """Create the label rows of never-labelled data units; returns them initialised (empty)."""
        payload = {"multi_request": True, "get_signed_url": False, "branch_name": self.config.branch_name}
        what = "creating label rows"
        return self._rows(list[EncordRow], self._call("labelrow", "PUT", list(data_hashes), payload, what), what)

    def get_rows(self, label_hashes: Sequence[str]) -> list[EncordRow]:
        """Initialised label rows, every object included (a filtered row must never be saved back)."""
        payload = {
            "get_signed_url": False,
            "multi_request": True,
            "include_object_feature_hashes": None,
            "include_classification_feature_hashes": None,
            "include_reviews": False,
            "include_export_history": False,
            "include_archived": False,
        }
        what = "reading label rows"
        return self._rows(list[EncordRow], self._call("labelrow", "GET", list(label_hashes), payload, what), what)

    def save_rows(self, rows: Sequence[EncordLabelRowJson]) -> None:
        """Save whole rows (replacing what the server has) in one call."""
        payload = {"multi_request": True, "labels": list(rows), "validate_before_saving": False}
        self._call("labelrow", "POST", [str(row["label_hash"]) for row in rows], payload, "saving label rows")

    # -- the workflow ----------------------------------------------------------------------------------------------

    def push(
        self, items: Sequence[EncordPush], model: ModelRef, ontology: EncordOntology, *, now: datetime | None = None
    ) -> list[EncordPushResult]:
        """Write ``model``'s predictions for ``items``: per bundle, read rows, merge, save.

        Raises:
            BackendError: The API refused or failed (``retryable`` says whether to requeue); a data hash the
                project does not have is not retryable. Raised for the first item that failed, once every
                bundle was tried (the other items' rows are saved).
            ValueError: A data hash given twice, or an item that does not fit its row (``build_encord_label_row``).
        """
        results: list[EncordPushResult] = []
        for outcome in self.push_each(items, model, ontology, now=now):
            if isinstance(outcome, Exception):
                raise outcome
            results.append(outcome)
        return results

    def push_each(
        self, items: Sequence[EncordPush], model: ModelRef, ontology: EncordOntology, *, now: datetime | None = None
    ) -> list[EncordPushResult | EncordItemError]:
        """:meth:`push`, with each item's outcome in place of raising: its result, or the error that failed it.

        A bundle is read and saved in one request each, so an API failure fails exactly the items of its bundle
        (each gets that ``BackendError``); a data hash the project lacks, or an item that does not fit its row
        (``ValueError``), fails alone and the bundle's other rows are saved.

        Raises:
            ValueError: A data hash given twice (two saves of one row would lose one of them).
        """
        hashes = [p.data_hash for p in items]
        if len(set(hashes)) != len(hashes):
            # Two pushes to one row in a bundle would each start from the same server row: one would be lost.
            raise ValueError("each data_hash may appear once per push")
        outcomes: list[EncordPushResult | EncordItemError] = []
        size = self.config.bundle_size
        for start in range(0, len(items), size):
            outcomes += self._push_bundle(items[start : start + size], model, ontology, now)
        return outcomes

    def _push_bundle(
        self, bundle: Sequence[EncordPush], model: ModelRef, ontology: EncordOntology, now: datetime | None
    ) -> list[EncordPushResult | EncordItemError]:
        try:
            rows = self._initialise([p.data_hash for p in bundle])
        except BackendError as exc:
            return [exc] * len(bundle)
        merged: list[EncordLabelRowJson] = []
        outcomes: list[EncordPushResult | EncordItemError] = []
        for push in bundle:
            existing = rows.get(push.data_hash)
            if existing is None:
                message = f"data unit {push.data_hash} is not in the project"
                outcomes.append(BackendError(BACKEND, message, status=None, retryable=False))
                continue
            try:
                built = build_encord_label_row(
                    push.item,
                    model,
                    ontology,
                    existing_row=dict(existing),
                    created_by=self.config.created_by,
                    created_at=now,
                )
            except ValueError as exc:
                outcomes.append(exc)
                continue
            merged.append(built.row)
            outcomes.append(EncordPushResult(push.data_hash, str(built.row["label_hash"]), built.stats))
        if not merged:
            return outcomes
        try:
            self.save_rows(merged)
        except BackendError as exc:  # nothing of this bundle was saved
            return [exc if isinstance(o, EncordPushResult) else o for o in outcomes]
        results = [o for o in outcomes if isinstance(o, EncordPushResult)]
        logger.info(
            "encord: saved %d label rows in one bundle (%d objects written, %d replaced, %d kept)",
            len(merged),
            sum(r.stats.objects for r in results),
            sum(r.stats.replaced for r in results),
            sum(r.stats.kept for r in results),
        )
        return outcomes

    def initialise_rows(self, data_hashes: Sequence[str]) -> dict[str, EncordRow]:
        """``data_hash`` -> the row as the server has it now, creating rows that do not exist yet.

        Raises:
            BackendError: A data hash the project does not have (not retryable), or an API failure.
        """
        rows = self._initialise(data_hashes)
        missing = [h for h in data_hashes if h not in rows]
        if missing:
            raise BackendError(
                BACKEND,
                f"{len(missing)} data units are not in the project, e.g. {missing[0]}",
                status=None,
                retryable=False,
            )
        return rows

    def _initialise(self, data_hashes: Sequence[str]) -> dict[str, EncordRow]:
        """The rows of the data hashes the project has (list, then create and/or get: 2 or 3 requests)."""
        metas = {m.data_hash: m.label_hash for m in self.list_rows(data_hashes)}
        known = [h for h in data_hashes if h in metas]
        to_create = [h for h in known if not metas[h]]
        to_get = [label for h in known if (label := metas[h])]
        rows = {r["data_hash"]: r for r in (self.create_rows(to_create) if to_create else [])}
        rows |= {r["data_hash"]: r for r in (self.get_rows(to_get) if to_get else [])}
        if set(rows) != set(known):
            raise BackendError(BACKEND, "the server returned other rows than asked for", status=None, retryable=True)
        return rows

    # -- transport -------------------------------------------------------------------------------------------------

    def _call(
        self, query_type: str, method: str, uid: list[str] | None, payload: Mapping[str, object], what: str
    ) -> object:
        # Serialised once: the SSH signature covers these exact bytes.
        body = json.dumps(
            {"query_type": query_type, "query_method": method, "values": {"uid": uid, "payload": payload}}
        ).encode()
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "ResourceType": "project",
            "ResourceID": self.config.project_hash,
            "Authorization": self._auth.authorization(body),
            "User-Agent": "preannotate (encord v1 rpc)",
        }
        response = self._http.call("POST", PUBLIC_PATH, what, content=body, headers=headers)
        envelope = self._http.json_of(response, what)
        if not isinstance(envelope, dict):
            raise BackendError(BACKEND, f"{what}: unexpected answer", status=response.status_code, retryable=False)
        # Encord answers HTTP 200 with the real status inside ("legacy envelope", encord/http/querier.py).
        if envelope.get("status") != 200:
            error = envelope.get("response")
            name = error[0] if isinstance(error, list) and error else str(error)
            retryable = name in _RETRYABLE_ENVELOPE_ERRORS
            raise BackendError(
                BACKEND, f"{what}: {name}", status=int(envelope.get("status") or 0) or None, retryable=retryable
            )
        return envelope.get("response")

    @staticmethod
    def _rows(kind: type[list[T]], result: object, what: str) -> list[T]:
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise BackendError(BACKEND, "unexpected answer: not a list of rows", status=None, retryable=False)
        return parse_answer(BACKEND, kind, result, what)


def encord_config_from(settings: Settings) -> EncordConfig:
    """The Encord project the settings name; ValueError when they name none."""
    if not settings.encord_project_hash:
        raise ValueError("Encord needs encord_project_hash")
    return EncordConfig(
        project_hash=settings.encord_project_hash,
        domain=settings.encord_domain,
        created_by=settings.encord_created_by,
        bundle_size=settings.encord_bundle_size,
    )


def encord_auth_from(settings: Settings) -> EncordAuth:
    """The Encord credentials the settings hold: an SSH key (file or value), else a bearer token."""
    if settings.encord_ssh_key_file is not None:
        return SshKeyAuth(settings.encord_ssh_key_file.read_text())
    if settings.encord_ssh_key.get_secret_value():
        return SshKeyAuth(settings.encord_ssh_key.get_secret_value())
    if settings.encord_bearer_token.get_secret_value():
        return BearerAuth(settings.encord_bearer_token.get_secret_value())
    raise ValueError("Encord needs encord_ssh_key_file, encord_ssh_key or encord_bearer_token")


def encord_ontology_from(settings: Settings, class_names: tuple[str, ...], *, masks: bool = False) -> EncordOntology:
    """The project's ontology (``encord_ontology_file``), else one object per class name (and with ``masks``, a
    run that makes masks, a polygon object per class too: ``default_ontology``)."""
    if settings.encord_ontology_file is None:
        return default_ontology(class_names, masks=masks)
    return EncordOntology.from_json(
        json.loads(settings.encord_ontology_file.read_text()), aliases=settings.encord_class_aliases
    )
