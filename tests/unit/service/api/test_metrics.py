"""Scrape-time gauges: the Redis queue's health and GPU memory (NVML first, torch only without it)."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

from service import metrics

QUEUE_SERIES = (
    "preannotate_queue_lag",
    "preannotate_queue_pending",
    "preannotate_queue_delayed_retries",
    "preannotate_queue_dead_letters",
)


@pytest.fixture(autouse=True)
def fresh_gauges() -> Iterator[None]:
    metrics.QUEUE_HEALTH.update(None)
    yield
    metrics.QUEUE_HEALTH.update(None)


def value(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_queue_health_is_exposed_at_scrape_time() -> None:
    stats: dict[str, int | None] = {"lag": 3, "pending": 2, "delayed": 1, "dead": 7, "active": 6}
    metrics.observe_scrape(queue_depth=6, busy_workers=0, queue_stats=stats)

    text = generate_latest().decode()

    assert "preannotate_queue_lag 3.0" in text
    assert [value(name) for name in QUEUE_SERIES] == [3, 2, 1, 7]


def test_unknown_queue_health_is_absent_rather_than_zero() -> None:
    # Redis cannot tell the lag (e.g. after an XDEL): that series alone goes
    metrics.observe_scrape(queue_depth=0, busy_workers=0, queue_stats={"lag": None, "pending": 0, "delayed": 0})
    assert value("preannotate_queue_lag") is None
    assert value("preannotate_queue_pending") == 0
    # The SQLite store has no stream; a worker whose Redis is away has nothing to say
    metrics.observe_scrape(queue_depth=0, busy_workers=0, queue_stats=None)
    assert [value(name) for name in QUEUE_SERIES] == [None] * 4
    assert "preannotate_queue_dead_letters" not in generate_latest().decode()


def test_job_outcome_series_exist_before_the_first_job() -> None:
    text = generate_latest().decode()
    for status in ("succeeded", "failed", "partially_failed", "cancelled"):
        assert f'preannotate_jobs_finished_total{{status="{status}"}}' in text


# -- GPU memory --------------------------------------------------------------------------------------------------


@dataclass
class _Proc:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 - NVML's field name


class FakeNvml(types.ModuleType):
    """What ``pynvml`` offers, for two GPUs."""

    def __init__(self, processes: list[list[_Proc]], used: list[int], *, broken: bool = False) -> None:
        super().__init__("pynvml")
        self.processes, self.used, self.broken, self.inits = processes, used, broken, 0

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        self.inits += 1
        if self.broken:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.used)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_Proc]:  # noqa: N802
        return self.processes[handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        return types.SimpleNamespace(used=self.used[handle], total=80 << 30)


def install(monkeypatch: pytest.MonkeyPatch, nvml: FakeNvml | None) -> None:
    monkeypatch.setattr(metrics, "_nvml", None)  # forget what an earlier test found
    monkeypatch.setitem(sys.modules, "pynvml", nvml)  # None: "not installed" (import raises)
    metrics.GPU_MEMORY_BYTES.set(-1)  # a sentinel: "not set by this test's scrape"


def test_nvml_reports_this_processes_memory_on_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    me, other = os.getpid(), os.getpid() + 1
    nvml = FakeNvml([[_Proc(me, 300), _Proc(other, 5000)], [_Proc(me, 200)]], used=[9000, 9000])
    install(monkeypatch, nvml)

    metrics.observe_scrape(queue_depth=0, busy_workers=0)
    metrics.observe_scrape(queue_depth=0, busy_workers=0)

    assert value("preannotate_gpu_memory_bytes") == 500  # an ONNX model's memory too: no torch involved
    assert nvml.inits == 1


def test_nvml_reports_the_visible_gpus_when_it_cannot_see_this_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    # In a container NVML lists host pids, and only the container's GPUs.
    install(monkeypatch, FakeNvml([[_Proc(1, 300)], []], used=[1000, 24]))

    metrics.observe_scrape(queue_depth=0, busy_workers=0)

    assert value("preannotate_gpu_memory_bytes") == 1024


@pytest.mark.parametrize("nvml", [None, FakeNvml([], [], broken=True), FakeNvml([], [])])
def test_without_nvml_or_gpus_the_gauge_is_left_alone(monkeypatch: pytest.MonkeyPatch, nvml: FakeNvml | None) -> None:
    install(monkeypatch, nvml)
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)

    assert metrics.gpu_memory_bytes() is None
    metrics.observe_scrape(queue_depth=0, busy_workers=0)
    assert value("preannotate_gpu_memory_bytes") == -1  # not set


def test_torch_is_the_fallback_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, None)
    fake_cuda = types.SimpleNamespace(is_available=lambda: True, memory_allocated=lambda: 4096)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=fake_cuda))

    metrics.observe_scrape(queue_depth=0, busy_workers=0)

    assert value("preannotate_gpu_memory_bytes") == 4096
