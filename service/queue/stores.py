"""The job store (and result store) the settings ask for, opened the same way by the API and the workers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from service.config import Settings
from service.queue.results import ResultStore
from service.queue.sqlite_store import SqliteJobStore

if TYPE_CHECKING:
    from service.queue.redis_store import RedisJobStore

log = logging.getLogger(__name__)


def open_sqlite_store(settings: Settings) -> SqliteJobStore:
    """The embedded store at ``db_path``; results inline, jobs kept ``retention_s``."""
    return SqliteJobStore(
        settings.db_path,
        max_attempts=settings.max_attempts,
        retention_s=settings.retention_s,
        max_saved_thresholds=settings.max_saved_thresholds,
    )


def open_result_store(settings: Settings) -> ResultStore | None:
    """The object store at ``results_url``, checked to be writable; None when unset (results stay in Redis).

    Raises:
        PreannotateError: The bucket cannot be reached or written (named, without credentials); MISSING_DEPENDENCY
            without boto3.
    """
    if settings.results_url is None:
        return None
    from service.queue.s3_results import S3ResultStore  # boto3 stays out of the imports of every other mode

    store = S3ResultStore.from_settings(settings)
    try:
        store.check()
    except BaseException:
        store.close()
        raise
    return store


def open_redis_store(settings: Settings) -> RedisJobStore:
    """The distributed store at ``queue_url``, with the object store at ``results_url`` when set."""
    from service.queue.redis_store import RedisJobStore  # redis stays out of embedded imports

    assert settings.queue_url is not None, "open_redis_store needs PREANNOTATE_QUEUE_URL"
    if settings.results_url is None:
        log.warning(
            "item results are kept in Redis memory (PREANNOTATE_RESULTS_URL is unset): set it to an s3:// bucket "
            "for more than a few thousand video items within the retention, and give every process the same one"
        )
    return RedisJobStore(
        settings.queue_url.get_secret_value(),
        max_attempts=settings.max_attempts,
        retention_s=settings.retention_s,
        results=open_result_store(settings),
        max_saved_thresholds=settings.max_saved_thresholds,
    )
