"""The Label Studio reconciliation sweep: Label Studio sends each webhook once (1 s timeout, no retry), so
a delivery lost to a restart, a deploy or a slow answer is found here.

Every ``label_studio_sweep_interval_s`` it lists the tasks of each ``label_studio_projects`` project and,
as ``preannotate sync`` does (``has_prediction``), skips tasks that already carry this model version's
prediction. The rest become jobs through the same path as the webhook: one job per task, keyed on (project,
task, ``updated_at``, job parameters), so repeated sweeps, several API replicas sweeping at once, and a
one-task webhook delivery of the same task all land on one job. Tasks younger than
``label_studio_sweep_min_age_s`` are left to their delivery, which is probably still queued. Whatever
overlap remains (a task of a many-task delivery) costs a second inference at most, never a second
prediction: pushes reconcile before creating.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from service.backends.label_studio import LabelStudioClient, config_from_settings
from service.backends.media import VIA_SCHEMES
from service.backends.retry import BackendError
from service.config import Settings
from service.convert.label_studio import LsObject
from service.errors import ErrorCode, PreannotateError
from service.intake.config import WebhookConfig
from service.intake.label_studio import TASKS_CREATED, delivery_idem, targets_of, task_item, task_version
from service.intake.ls_tasks import has_prediction
from service.jobs.submit import ModelLookup, enqueue, prepare_job
from service.queue.store import JobStore
from service.spec.requests import Destination, JobCreate

log = logging.getLogger(__name__)

ModelsProvider = Callable[[], ModelLookup | None]
"""The loaded models, or None while they load (or the server drains): the sweep then waits a round."""


@dataclass(slots=True)
class ProjectSweep:
    """One project's round.

    Attributes:
        project: The project id.
        submitted: New jobs.
        duplicates: Tasks whose job already existed (same task state and parameters).
        predicted: Tasks that already had this model version's prediction.
        too_young: Tasks left to their webhook delivery.
        failed: Task id -> why it could not become a job (no media, bad URL ...).
        error: Why the whole project was skipped this round (LS unreachable, no box control, queue full).
    """

    project: int
    submitted: int = 0
    duplicates: int = 0
    predicted: int = 0
    too_young: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    error: str | None = None


class LabelStudioSweep:
    """Submits jobs for Label Studio tasks that lack this model version's prediction."""

    def __init__(
        self,
        *,
        settings: Settings,
        config: WebhookConfig,
        store: JobStore,
        models: ModelsProvider,
        tenant: str,
        client: LabelStudioClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Build a sweep (nothing runs until ``sweep_once`` or ``start``).

        Args:
            settings: Limits, defaults and the Label Studio connection.
            config: Projects, interval, minimum task age and model.
            store: Where jobs go.
            models: The loaded models, or None while unavailable.
            tenant: The owner of the jobs (the webhooks' tenant).
            client: A Label Studio client; default: one from the settings, built on first use.
            clock: Wall-clock seconds (tests), compared with tasks' ``created_at``.
        """
        self._settings = settings
        self._config = config
        self._store = store
        self._models = models
        self._tenant = tenant
        self._client = client
        self._own_client = client is None
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one round ---------------------------------------------------------------------------------------------

    def sweep_once(self) -> list[ProjectSweep]:
        """Reconcile every configured project once; empty while the models are unavailable."""
        registry = self._models()
        if registry is None:
            log.info("label studio sweep: models not ready; next round")
            return []
        reports = []
        for project in self._config.label_studio_projects:
            if self._stop.is_set():
                break
            report = self.sweep_project(project, registry)
            reports.append(report)
            # Quiet rounds stay at DEBUG: with a short interval they would flood the log.
            level = logging.INFO if report.submitted or report.failed or report.error else logging.DEBUG
            log.log(
                level,
                "label studio sweep: project %d: %d submitted, %d duplicate, %d predicted, %d too young, %d failed%s",
                project,
                report.submitted,
                report.duplicates,
                report.predicted,
                report.too_young,
                len(report.failed),
                f" ({report.error})" if report.error else "",
            )
        return reports

    def sweep_project(self, project: int, registry: ModelLookup) -> ProjectSweep:
        """One project's round; never raises (a failure is reported and retried next round)."""
        report = ProjectSweep(project)
        try:
            self._sweep(project, registry, report)
        except BackendError as exc:
            report.error = f"label studio: {exc}"
        except PreannotateError as exc:
            report.error = str(exc)
        return report

    def _sweep(self, project: int, registry: ModelLookup, report: ProjectSweep) -> None:
        client = self._label_studio()
        label_config = str(client.get_project(project).get("label_config") or "")
        model = registry.for_job(self._config.label_studio_model)
        # its jobs take the server's segmenter, or a model that makes masks: brush and polygon objects need media too
        targets = targets_of(label_config, masks=self._settings.segmenter is not None or model.makes_masks)
        # None: no worker has published the model yet, so no task can hold its predictions
        version = model.version
        oldest_allowed = self._clock() - self._config.sweep_min_age_s
        for task in client.iter_tasks(project):
            if self._stop.is_set():
                return
            task_id = task_version(task)[0]
            if version is not None and has_prediction(task, version):
                report.predicted += 1
                continue
            if _created_at(task) > oldest_allowed:
                report.too_young += 1
                continue
            try:
                created = self._submit(project, task, registry, client.config.url, targets)
            except PreannotateError as exc:
                if exc.code in (ErrorCode.QUEUE_FULL, ErrorCode.NOT_READY):
                    raise  # every further task would fail the same way: next round
                report.failed[task_id] = str(exc)
                continue
            if created:
                report.submitted += 1
            else:
                report.duplicates += 1

    def _submit(
        self,
        project: int,
        task: Mapping[str, object],
        registry: ModelLookup,
        ls_url: str,
        targets: Sequence[LsObject],
    ) -> bool:
        job = JobCreate(
            items=[task_item(task, targets, ls_url)],
            model=self._config.label_studio_model,
            destinations=[Destination(backend="label_studio", project=project)],
        )
        prepared = prepare_job(job, settings=self._settings, models=registry, extra_schemes=VIA_SCHEMES)
        key = delivery_idem(project, TASKS_CREATED, [task_version(task)], prepared.spec)
        _, created = enqueue(prepared, settings=self._settings, store=self._store, tenant=self._tenant, idem_key=key)
        return created

    def _label_studio(self) -> LabelStudioClient:
        if self._client is None:
            config = config_from_settings(self._settings)
            if config is None:
                raise PreannotateError(
                    ErrorCode.BACKEND_NOT_CONFIGURED, "the sweep needs label_studio_url and label_studio_api_key"
                )
            self._client = LabelStudioClient(config, fetch_policy=self._settings.fetch_policy())
        return self._client

    # -- background thread -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Sweep every ``sweep_interval_s`` on a daemon thread, the first round one interval from now."""
        self._thread = threading.Thread(target=self._run, name="label-studio-sweep", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._config.sweep_interval_s):
            try:
                self.sweep_once()
            except Exception:  # a bug must not end the sweeping for the process's lifetime
                log.exception("label studio sweep failed")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current task; close the client this sweep built."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None


def _created_at(task: Mapping[str, object]) -> float:
    """A task's creation time (epoch seconds); 0 when absent or unreadable, so it counts as old."""
    value = task.get("created_at")
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return 0.0


def start_label_studio_sweep(
    settings: Settings, store: JobStore, models: ModelsProvider, *, tenant: str
) -> LabelStudioSweep | None:
    """Start the sweep when ``label_studio_sweep_interval_s`` > 0 and projects are configured; else None.

    Call from the app lifespan; ``stop()`` it on shutdown.
    """
    config = WebhookConfig.from_settings(settings)
    if config.sweep_interval_s <= 0 or not config.label_studio_projects:
        return None
    if config_from_settings(settings) is None:
        log.warning("label studio sweep not started: label_studio_url / label_studio_api_key are not set")
        return None
    sweep = LabelStudioSweep(settings=settings, config=config, store=store, models=models, tenant=tenant)
    sweep.start()
    log.info("label studio sweep: projects %s every %g s", list(config.label_studio_projects), config.sweep_interval_s)
    return sweep
