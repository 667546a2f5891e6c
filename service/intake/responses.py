"""The webhooks' answer: 202 with the job ids (200 when every job already existed: a replay, a no-op)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field
from starlette.responses import Response

from service.queue.store import JobRecord

MAX_REASONS = 10


class WebhookJob(BaseModel):
    job_id: str
    status_url: str = Field(description="GET it with the API token whose tenant owns webhook jobs")
    created: bool = Field(description="false: this delivery (or the same content) had already made the job")


class WebhookAccepted(BaseModel):
    jobs: list[WebhookJob] = Field(description="one per job this delivery maps to, new or existing")
    duplicates: int = Field(0, description="jobs that already existed (replays, redeliveries, same content)")
    ignored: int = Field(0, description="events, records or tasks that made no job (see reasons)")
    reasons: list[str] = Field(default_factory=list, description=f"why things were ignored (at most {MAX_REASONS})")


class Outcome:
    """Collects a delivery's jobs and ignored parts while it is processed."""

    def __init__(self, status_url: Callable[[str], str]) -> None:
        self._status_url = status_url
        self.jobs: list[WebhookJob] = []
        self.ignored = 0
        self.reasons: list[str] = []

    def add(self, record: JobRecord, created: bool) -> None:
        self.jobs.append(WebhookJob(job_id=record.id, status_url=self._status_url(record.id), created=created))

    def add_existing(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self.jobs.append(WebhookJob(job_id=job_id, status_url=self._status_url(job_id), created=False))

    def ignore(self, reason: str, count: int = 1) -> None:
        self.ignored += count
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    def answer(self, response: Response) -> WebhookAccepted:
        """The body; sets 200 when there were jobs and none was new (nothing happened), else 202."""
        if self.jobs and not any(job.created for job in self.jobs):
            response.status_code = 200
        return WebhookAccepted(
            jobs=self.jobs,
            duplicates=sum(not job.created for job in self.jobs),
            ignored=self.ignored,
            reasons=self.reasons,
        )
