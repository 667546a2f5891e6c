"""The one retry policy: capped exponential backoff with full jitter, bounded in attempts and in total time.

Vendor HTTP calls (``service.backends.retry.send_with_retries``), a failed job item's requeue delay
(``service.jobs.worker``) and the worker's reconnects to the job queue (``service.queue.resilient_store``) all
wait by it. A leaf module (standard library only) so that every layer may import it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# 2 ** 63 x any sane base is past every cap; a larger exponent only risks a float overflow (a queue down for
# hours counts thousands of failures).
_MAX_DOUBLINGS = 63


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one operation, and how long to wait between tries.

    ``max_attempts``, ``max_retry_after_s``, ``statuses`` and ``retry_transport_errors`` are read by the HTTP loop
    only; the job worker and the queue reconnects use the backoff (``backoff_s``) and count attempts themselves.

    Attributes:
        max_attempts: Sends in all, the first included.
        base_delay_s: Backoff ceiling before the second attempt; it doubles per attempt.
        max_delay_s: Largest backoff ceiling; the sleep is uniform in ``[0, ceiling]`` (full jitter).
        max_retry_after_s: Longest ``Retry-After`` honoured; a server asking for more gets its answer returned
            at once, so the caller can requeue the work instead of holding a worker.
        max_total_s: No new attempt starts when the next sleep would end past this (from the first send).
        statuses: Response codes worth another attempt.
        retry_transport_errors: Also retry connect/read failures and timeouts. Only safe for requests the
            server treats idempotently; every backend call here is (overwrite imports, whole-row saves,
            registrations reconciled on ``ALREADY_EXISTS``).
        sleep: Injected for tests.
        random: Injected for tests; returns a float in ``[0, 1)``.
    """

    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_retry_after_s: float = 300.0
    max_total_s: float = 600.0
    statuses: frozenset[int] = RETRY_STATUSES
    retry_transport_errors: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    random: Callable[[], float] = field(default=random.random, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0 or self.max_total_s < 0:
            raise ValueError("delays must be >= 0")

    def backoff_s(self, attempt: int) -> float:
        """The sleep after failed attempt ``attempt`` (1-based): full jitter under a doubling, capped ceiling."""
        return self.random() * self.ceiling_s(attempt)

    def ceiling_s(self, attempt: int) -> float:
        """The largest sleep after failed attempt ``attempt`` (1-based): ``base_delay_s`` doubled per attempt
        after the first, capped at ``max_delay_s``."""
        doublings = min(max(0, attempt - 1), _MAX_DOUBLINGS)
        return min(self.max_delay_s, self.base_delay_s * 2.0**doublings)
