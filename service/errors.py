"""One error enum for the whole service: HTTP status, stable code, retryability, CLI exit code."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from models import errors as model_errors


class ErrorCode(enum.Enum):
    """``(code, http_status, retryable)``. Codes are a public contract: never rename one."""

    INVALID_ARGUMENT = ("invalid_argument", 422, False)
    INPUT_NOT_FOUND = ("input_not_found", 404, False)
    UNSUPPORTED_MEDIA = ("unsupported_media", 415, False)
    CORRUPT_MEDIA = ("corrupt_media", 422, False)
    FILE_TOO_LARGE = ("file_too_large", 413, False)
    DIMENSIONS_TOO_LARGE = ("dimensions_too_large", 422, False)
    TOO_MANY_FRAMES = ("too_many_frames", 422, False)
    VIDEO_TOO_LONG = ("video_too_long", 422, False)
    UNSUPPORTED_ENCODING = ("unsupported_encoding", 422, False)
    INVALID_MODEL_SPEC = ("invalid_model_spec", 422, False)
    MODEL_NOT_FOUND = ("model_not_found", 404, False)
    MODEL_LOAD_FAILED = ("model_load_failed", 422, False)
    INVALID_MODEL = ("invalid_model", 422, False)  # loads, but would run wrongly as found (missing sidecars)
    INVALID_PROMPTS = ("invalid_prompts", 422, False)  # open-vocabulary model without prompts, or prompts it can't use
    MISSING_DEPENDENCY = ("missing_dependency", 501, False)
    MODEL_FETCH_FAILED = ("model_fetch_failed", 502, True)  # `models fetch`: npm missing, offline, checksum differs
    DEVICE_UNAVAILABLE = ("device_unavailable", 503, False)
    OUTPUT_FAILED = ("output_failed", 500, False)
    # A succeeded item whose result object is gone from object storage (a lifecycle rule shorter than the retention)
    RESULT_MISSING = ("result_missing", 410, False)
    UNSUPPORTED_BY_FORMAT = ("unsupported_by_format", 422, False)  # an item or slot an output format cannot hold
    # HTTP service
    UNAUTHORIZED = ("unauthorized", 401, False)
    CROSS_SITE_REQUEST = ("cross_site_request", 403, False)  # /ui/login or /ui/logout posted from another site
    JOB_NOT_FOUND = ("job_not_found", 404, False)
    JOB_NOT_FINISHED = ("job_not_finished", 409, True)
    # Previews of a job's items: the item, slot or stored frame a URL names is not in the job
    ITEM_NOT_FOUND = ("item_not_found", 404, False)
    SLOT_NOT_FOUND = ("slot_not_found", 404, False)
    FRAME_NOT_FOUND = ("frame_not_found", 404, False)
    ITEM_NOT_FINISHED = ("item_not_finished", 409, True)  # queued or running: it has no predictions yet
    # Nothing to draw: a failed or cancelled item, a PDF slot, media that no longer decode as the job saw them
    PREVIEW_UNAVAILABLE = ("preview_unavailable", 409, False)
    MEDIA_UNREACHABLE = ("media_unreachable", 502, False)  # a job's media gone (404/410) or refused since
    ROUTE_NOT_FOUND = ("not_found", 404, False)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405, False)
    REQUEST_TOO_LARGE = ("request_too_large", 413, False)
    TOO_MANY_ITEMS = ("too_many_items", 422, False)
    DUPLICATE_ITEM_NAME = ("duplicate_item_name", 422, False)  # two items of one job share a name
    QUEUE_FULL = ("queue_full", 429, True)
    IDEMPOTENCY_KEY_REUSED = ("idempotency_key_reused", 422, False)  # one Idempotency-Key, two different bodies
    LEASE_EXPIRED = ("lease_expired", 500, False)  # an item's worker died max_attempts times
    # A job stored in a form this release cannot parse (written by a newer release, edited by hand): its items
    # fail with this code instead of stalling the queue; resubmitting the job (to this release) is the fix.
    INVALID_STORED_JOB = ("invalid_stored_job", 422, False)
    NOT_READY = ("not_ready", 503, True)
    # Object storage (PREANNOTATE_RESULTS_URL) unreachable, refusing, or not the store an item's result was written to
    RESULTS_UNAVAILABLE = ("results_unavailable", 503, True)
    ROUTE_UNAVAILABLE = ("route_unavailable", 501, False)  # needs models in-process; distributed API pods have none
    # Fetching media by URL
    URL_NOT_ALLOWED = ("url_not_allowed", 422, False)
    FETCH_FAILED = ("fetch_failed", 502, True)
    FETCH_DENIED = ("fetch_denied", 502, False)  # 401/403 upstream, e.g. an expired presigned URL
    FETCH_TIMEOUT = ("fetch_timeout", 504, True)
    # Labeling-tool backends (V7, Encord, Label Studio)
    BACKEND_NOT_CONFIGURED = ("backend_not_configured", 422, False)
    BACKEND_UNAVAILABLE = ("backend_unavailable", 502, True)  # 429/5xx/timeouts after retries; item still processing
    BACKEND_AUTH_FAILED = ("backend_auth_failed", 422, False)  # the tool refused our credentials
    BACKEND_REJECTED = ("backend_rejected", 422, False)  # other 4xx: unknown item, task or data hash
    # Inference
    DEADLINE_EXCEEDED = ("deadline_exceeded", 504, True)
    DEVICE_OUT_OF_MEMORY = ("device_out_of_memory", 503, True)
    INTERNAL = ("internal", 500, True)

    def __init__(self, code: str, http_status: int, retryable: bool) -> None:
        self.code = code
        self.http_status = http_status
        self.retryable = retryable

    @property
    def exit_code(self) -> int:
        """CLI exit status: 2 for bad input (the caller can fix it), 1 for our failures.

        A missing optional dependency or an absent device is a server fault over HTTP (501, 503) but the
        caller's to fix on the command line (install the extra, pick ``--device cpu``): exit 2.
        """
        if self.http_status < 500 or self in _CALLER_FIXABLE_IN_CLI:
            return 2
        return 1


_CALLER_FIXABLE_IN_CLI = frozenset(
    {ErrorCode.MISSING_DEPENDENCY, ErrorCode.DEVICE_UNAVAILABLE, ErrorCode.MODEL_FETCH_FAILED}
)


_BY_CODE = {member.code: member for member in ErrorCode}


def error_code_named(code: str) -> ErrorCode | None:
    """The enum member whose stable code is ``code`` (a stored item error's), or None for one it does not know."""
    return _BY_CODE.get(code)


class PreannotateError(Exception):
    """An expected failure with a code; the message names the file or value at fault."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s  # sent as Retry-After on 429/503

    def __str__(self) -> str:
        # One line, whatever the cause's message looked like: CLI output and logs stay greppable.
        return f"{self.code.code}: {' '.join(self.message.split())}"


def with_paths_shown(text: str, shown: Mapping[str, str]) -> str:
    """``text`` with each scratch path of ``shown`` replaced by what a client is shown for it (the URL the file
    was fetched from): a worker's temporary paths mean nothing to a client, and leak the server's layout."""
    for path in sorted(shown, key=len, reverse=True):  # a longer path first, should one contain another
        text = text.replace(path, shown[path])
    return text


def error_with_paths_shown(error: PreannotateError, shown: Mapping[str, str]) -> PreannotateError:
    """``error`` naming files as ``with_paths_shown`` does (the same error when it names none of them)."""
    message = with_paths_shown(error.message, shown)
    if message == error.message:
        return error
    return PreannotateError(error.code, message, retry_after_s=error.retry_after_s)


class PartialMediaError(PreannotateError):
    """Raised after a slot's last readable frame: the frames that decoded were delivered, the rest could not be.

    The CLI reports it (exit 2); jobs and ``sync`` keep the delivered frames' detections and record a warning,
    so one bad packet never costs a long video all its work.
    """

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.CORRUPT_MEDIA, message)


_MODEL_ERROR_CODES: dict[type[model_errors.ModelError], ErrorCode] = {
    model_errors.ModelSpecError: ErrorCode.INVALID_MODEL_SPEC,
    model_errors.ModelNotFoundError: ErrorCode.MODEL_NOT_FOUND,
    model_errors.ModelLoadError: ErrorCode.MODEL_LOAD_FAILED,
    model_errors.InvalidModelError: ErrorCode.INVALID_MODEL,
    model_errors.DeviceUnavailableError: ErrorCode.DEVICE_UNAVAILABLE,
    model_errors.MissingDependencyError: ErrorCode.MISSING_DEPENDENCY,
    model_errors.DeviceOutOfMemoryError: ErrorCode.DEVICE_OUT_OF_MEMORY,
    model_errors.PromptsRequiredError: ErrorCode.INVALID_PROMPTS,
    model_errors.ModelFetchError: ErrorCode.MODEL_FETCH_FAILED,
}


def from_model_error(exc: model_errors.ModelError) -> PreannotateError:
    """Translate an error raised in ``models`` (which cannot import this module)."""
    for cls in type(exc).__mro__:
        if cls in _MODEL_ERROR_CODES:
            return PreannotateError(_MODEL_ERROR_CODES[cls], str(exc))
    return PreannotateError(ErrorCode.MODEL_LOAD_FAILED, str(exc))
