"""Small pure parts of the job runner and worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.registry import load_detector
from service.errors import PreannotateError
from service.jobs.runner import display_source, run_item
from service.jobs.worker import retry_delay_s
from service.loaded_models import LoadedModel
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher, FetchPolicy
from service.pipeline.options import MediaLimits
from service.queue.store import Lease
from service.samples import write_video
from service.spec.job import JobSpec
from service.spec.requests import ItemIn
from tests.media import corrupt_payloads, cut_copy
from tests.media_dicom import series_slice
from tests.unit.service import fetch_servers as fs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://b.s3.amazonaws.com/v/a.mp4?X-Amz-Signature=abc&X-Amz-Credential=k",
            "https://b.s3.amazonaws.com/v/a.mp4",
        ),
        ("https://user:pw@host:8443/a.png#frag", "https://host:8443/a.png"),
        ("file:///data/a.png", "file:///data/a.png"),
        ("s3://bucket/key/a.dcm", "s3://bucket/key/a.dcm"),
    ],
)
def test_display_source_drops_credentials(url: str, expected: str) -> None:
    assert display_source(url) == expected


@pytest.mark.parametrize(("attempt", "cap"), [(1, 2.0), (2, 4.0), (3, 8.0), (20, 300.0)])
def test_retry_delay_is_jittered_and_capped(attempt: int, cap: float) -> None:
    delays = [retry_delay_s(attempt) for _ in range(200)]
    assert all(0 <= d <= cap for d in delays)
    assert len(set(delays)) > 100  # full jitter, not a fixed schedule


def _lease(item: dict[str, Any], *, fps: float) -> Lease:
    """A first attempt at ``item`` with the default model, exact sampling at ``fps``."""
    return Lease(
        item_id=1,
        job_id="j",
        position=0,
        item=ItemIn.model_validate(item),
        spec=JobSpec.from_stored({"model": "builtin:centerface", "fps": fps, "sampling": "exact", "threshold": 0.5}),
        attempt=1,
    )


def _clip_lease(url: str) -> Lease:
    return _lease({"name": "clip", "slots": [{"name": "0", "url": url}]}, fps=1.0)


def _run_with_the_default_model(lease: Lease, root: Path) -> dict[str, Any]:
    """``run_item`` as a worker runs it: the real default model behind a batcher, ``file://`` under ``root``."""
    batcher = DynamicBatcher(load_detector("builtin:centerface"), max_batch_size=1, max_wait_ms=0)
    batcher.start()
    try:
        return run_item(
            lease,
            model=LoadedModel("builtin:centerface", batcher),
            fetcher=Fetcher(FetchPolicy(local_roots=(root,))),
            limits=MediaLimits(),
            work_dir=root,
            on_progress=lambda done, planned: True,
        ).to_json()
    finally:
        batcher.close()


def test_a_partly_corrupt_video_keeps_what_decoded_and_says_what_did_not(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mkv"
    corrupt_payloads(clips["bframes"], broken, range(60, 100))  # two of six GOPs
    lease = _lease({"name": "clip", "slots": [{"name": "0", "url": broken.as_uri()}]}, fps=2.0)
    result = _run_with_the_default_model(lease, tmp_path)
    planned = result["slots"][0]["planned_frames"]
    assert 0 < len(result["frames"]) < planned
    (warning,) = result["warnings"]
    assert warning["code"] == "corrupt_media"
    assert f"of {planned} sampled frames could not be decoded" in warning["message"]


def test_a_series_sent_out_of_order_lists_its_urls_in_frame_order(tmp_path: Path) -> None:
    # Three slices at z = 0, 5, 10 sent as 10, 0, 5: the reader sorts them, the item's sources follow.
    urls = []
    for z in (10, 0, 5):
        path = series_slice(tmp_path / f"z{z}.dcm", z * 10, series_uid="1.2.3", position=(0, 0, z))
        urls.append(path.as_uri())
    lease = _lease({"name": "ct", "slots": [{"name": "0", "urls": urls}]}, fps=1.0)
    result = _run_with_the_default_model(lease, tmp_path)
    assert result["slots"][0]["source_files"] == [urls[1], urls[2], urls[0]]


def test_a_truncated_video_keeps_what_it_has_and_says_how_much_is_missing(tmp_path: Path) -> None:
    """A partial upload: the item keeps its detections, its result warns with frames expected vs decoded."""
    whole, cut = tmp_path / "whole.mkv", tmp_path / "cut.mkv"
    write_video(whole, duration_s=10.0, gop=30)
    cut_copy(whole, cut, 0.4)
    lease = _lease({"name": "clip", "slots": [{"name": "0", "url": cut.as_uri()}]}, fps=1.0)
    result = _run_with_the_default_model(lease, tmp_path)
    decoded = len(result["frames"])
    assert 2 <= decoded < 10
    (warning,) = result["warnings"]
    assert warning["code"] == "corrupt_media"
    assert "cut.mkv: truncated" in warning["message"]
    assert f"{10 - decoded} of 10 sampled frames could not be decoded ({decoded} decoded)" in warning["message"]
    assert result["slots"][0]["frame_count"] < 300  # what the file holds, not what its header promised


def _run_over_http(lease: Lease, server: fs.LoopServer, work_dir: Path) -> dict[str, Any]:
    """``run_item`` with a fetcher that may reach the loopback server: the body lands in a scratch file."""
    batcher = DynamicBatcher(load_detector("builtin:centerface"), max_batch_size=1, max_wait_ms=0)
    batcher.start()
    try:
        return run_item(
            lease,
            model=LoadedModel("builtin:centerface", batcher),
            fetcher=Fetcher(FetchPolicy(allowed_hosts=frozenset({server.netloc}))),
            limits=MediaLimits(),
            work_dir=work_dir,
            on_progress=lambda done, planned: True,
        ).to_json()
    finally:
        batcher.close()


@pytest.fixture
def server() -> Iterator[fs.LoopServer]:
    loop = fs.LoopServer()
    try:
        yield loop
    finally:
        loop.close()


def test_a_warning_names_the_url_not_the_workers_scratch_file(tmp_path: Path, server: fs.LoopServer) -> None:
    whole, cut = tmp_path / "whole.mkv", tmp_path / "cut.mkv"
    write_video(whole, duration_s=10.0, gop=30)
    cut_copy(whole, cut, 0.4)
    server.routes["/media/cut.mkv"] = fs.body(cut.read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    result = _run_over_http(_clip_lease(f"http://{server.netloc}/media/cut.mkv?sig=secret"), server, scratch)

    (warning,) = result["warnings"]
    assert warning["message"].startswith(f"http://{server.netloc}/media/cut.mkv: truncated: ")
    assert str(scratch) not in warning["message"]
    assert "secret" not in warning["message"]


def test_a_slot_that_cannot_be_opened_names_the_url_not_the_scratch_file(tmp_path: Path, server: fs.LoopServer) -> None:
    server.routes["/media/notes.mkv"] = fs.body(b"these are notes, not a video\n" * 20)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    with pytest.raises(PreannotateError) as caught:
        _run_over_http(_clip_lease(f"http://{server.netloc}/media/notes.mkv?sig=secret"), server, scratch)

    assert f"http://{server.netloc}/media/notes.mkv" in caught.value.message
    assert str(scratch) not in caught.value.message
    assert "secret" not in caught.value.message
