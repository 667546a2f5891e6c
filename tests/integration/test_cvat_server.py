"""The CVAT test helper (tests/cvat_server.py) against a real CVAT 2.23.1: what the CVAT backend's tests rely on.

Each test creates its own uniquely named project or task; the server and its database are shared.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import queue
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests import cvat_server
from tests.cvat_server import CvatServer, running_cvat, split_data_params
from tests.media import write_astronaut_media

START_FRAME, STOP_FRAME, STEP = 3, 40, 2


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pan.mp4`` (50 frames at 25 fps, the astronaut's face in view) and ``astronaut.png``."""
    return write_astronaut_media(tmp_path_factory.mktemp("cvat-media"))


@pytest.fixture(scope="module")
def stepped_video_task(cvat: CvatServer, media: Path) -> int:
    """A video task in a project labelled ``face``: every 2nd frame of 3..40."""
    project_id = cvat.create_project("pa-test-video", ["face"])
    return cvat.create_task(
        "pa-test-video",
        [media / "pan.mp4"],
        project_id=project_id,
        frame_filter=f"step={STEP}",
        start_frame=START_FRAME,
        stop_frame=STOP_FRAME,
    )


@pytest.mark.cvat
def test_a_stepped_video_task_has_the_frames_its_filter_selects(cvat: CvatServer, stepped_video_task: int) -> None:
    kept = range(START_FRAME, STOP_FRAME + 1, STEP)
    meta = cvat.data_meta(stepped_video_task)
    assert cvat.task(stepped_video_task)["size"] == meta["size"] == len(kept) == 19
    assert (meta["start_frame"], meta["frame_filter"]) == (START_FRAME, f"step={STEP}")
    assert meta["stop_frame"] == kept[-1]  # CVAT stores the last frame it kept (39), not the requested 40
    assert [(f["name"], f["width"], f["height"]) for f in meta["frames"]] == [("pan.mp4", 320, 240)]


@pytest.mark.cvat
def test_an_image_task_keeps_each_image_size(cvat: CvatServer, tmp_path: Path) -> None:
    sizes = {"a.png": (64, 48), "b.png": (40, 90)}  # (width, height)
    for name, (width, height) in sizes.items():
        cv2.imwrite(str(tmp_path / name), np.full((height, width, 3), 128, np.uint8))
    task_id = cvat.create_task("pa-test-images", [tmp_path / name for name in sizes], labels=["face", "person"])
    meta = cvat.data_meta(task_id)
    assert meta["size"] == 2
    assert {f["name"]: (f["width"], f["height"]) for f in meta["frames"]} == sizes


def _rectangle(frame: int, left_px: float, *, outside: bool = False) -> dict[str, Any]:
    return {
        "type": "rectangle", "frame": frame, "points": [left_px, 10.0, left_px + 40.0, 60.0],
        "occluded": False, "outside": outside, "z_order": 0, "rotation": 0.0, "attributes": [],
    }  # fmt: skip


@pytest.mark.cvat
def test_a_track_put_with_the_token_reads_back_and_exports_on_video_frames(
    cvat: CvatServer, stepped_video_task: int
) -> None:
    """API frames count the task's frames (0..size-1); the CVAT for video export names the video's frames."""
    with cvat.api() as api:
        labels = api.get("/api/labels", params={"task_id": stepped_video_task}).json()["results"]
    face = next(label["id"] for label in labels if label["name"] == "face")
    keyframes = [_rectangle(0, 10.0), _rectangle(10, 50.0), _rectangle(15, 60.0, outside=True)]
    track = {"frame": 0, "label_id": face, "group": 0, "source": "auto", "attributes": [], "shapes": keyframes}
    body = {"version": 0, "tags": [], "shapes": [], "tracks": [track]}
    response = httpx.put(
        f"{cvat.url}/api/tasks/{stepped_video_task}/annotations",
        json=body,
        headers={"Authorization": f"Token {cvat.token()}"},
        timeout=60.0,
        trust_env=False,
    )
    assert response.status_code == 200, response.text[:500]

    [stored] = cvat.annotations(stepped_video_task)["tracks"]
    assert stored["source"] == "auto"
    assert [(s["frame"], s["outside"]) for s in stored["shapes"]] == [(0, False), (10, False), (15, True)]

    root = ET.fromstring(cvat.export_xml(stepped_video_task, "CVAT for video 1.1"))
    task = root.find("meta/task")
    assert task is not None
    assert (task.findtext("size"), task.findtext("start_frame"), task.findtext("stop_frame")) == ("19", "3", "39")
    [exported] = root.findall("track")
    assert (exported.get("label"), exported.get("source")) == ("face", "auto")
    marked = [
        (int(b.get("frame", "-1")), b.get("outside")) for b in exported.findall("box") if b.get("keyframe") == "1"
    ]
    assert marked == [(START_FRAME + STEP * f, "1" if out else "0") for f, out in [(0, False), (10, False), (15, True)]]


class _Receiver(http.server.BaseHTTPRequestHandler):
    deliveries: queue.Queue[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.deliveries.put(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]]:
    deliveries: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
    handler = type("Receiver", (_Receiver,), {"deliveries": deliveries})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", deliveries
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.cvat
def test_a_webhook_ping_arrives_signed_with_its_secret(
    cvat: CvatServer, receiver: tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]
) -> None:
    url, deliveries = receiver
    project_id = cvat.create_project("pa-test-webhook", ["face"])
    secret = "pa-test-secret"
    webhook_id = cvat.create_webhook(project_id, url, secret, ["create:task", "update:task"])
    with cvat.api() as api:
        assert api.post(f"/api/webhooks/{webhook_id}/ping").is_success
    headers, body = deliveries.get(timeout=30)  # delivered by CVAT's webhooks RQ worker
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-signature-256"], expected)
    assert json.loads(body)["event"] == "ping"


def test_create_task_keywords_split_into_task_and_data_fields() -> None:
    spec, data = split_data_params({"frame_filter": "step=3", "segment_size": 10, "start_frame": 2, "chunk_size": 8})
    assert (spec, data) == ({"segment_size": 10}, {"frame_step": 3, "start_frame": 2, "chunk_size": 8})
    with pytest.raises(ValueError, match="step=N"):
        split_data_params({"frame_filter": "range=1:5"})
    with pytest.raises(TypeError, match="frame_step"):
        split_data_params({"frame_step": 3})  # the SDK's own name: here frame_filter, like the REST API


# The fixture's start/stop decisions, with a stand-in for cvat-server.sh that records its calls (no server).
FAKE_SCRIPT = """#!/usr/bin/env bash
here=$(dirname "$0")
echo "$1" >> "$here/calls"
case "$1" in
  status) if [ -f "$here/running" ]; then echo "server: running (pid 1)"; fi ;;
  env) echo "export CVAT_URL=http://127.0.0.1:9 CVAT_USER=admin CVAT_PASSWORD=pw" ;;
  start) if [ -f "$here/start-fails" ]; then echo "[cvat-server] ERROR: migrate failed" >&2; exit 1; fi
         touch "$here/running" ;;
  stop) rm -f "$here/running" ;;
esac
"""


@pytest.fixture
def fake_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "cvat-server.sh"
    script.write_text(FAKE_SCRIPT)
    monkeypatch.setenv("PREANNOTATE_CVAT_SERVER_SCRIPT", str(script))
    monkeypatch.setenv("PREANNOTATE_CI_CACHE", str(tmp_path / "ci"))  # the start lock
    monkeypatch.delenv("PREANNOTATE_REQUIRE_CVAT", raising=False)
    monkeypatch.setattr(cvat_server, "missing_prerequisite", lambda: None)  # PostgreSQL and the venv "are there"
    return script


def _calls(script: Path) -> list[str]:
    return (script.parent / "calls").read_text().split()


def test_a_running_server_is_used_and_left_running(fake_script: Path) -> None:
    (fake_script.parent / "running").touch()
    with running_cvat() as server:
        assert (server.url, server.user, server.password) == ("http://127.0.0.1:9", "admin", "pw")
    assert _calls(fake_script) == ["status", "env"]
    assert (fake_script.parent / "running").exists()


def test_a_server_the_session_started_is_stopped_after_it(fake_script: Path) -> None:
    with running_cvat():
        assert (fake_script.parent / "running").exists()
    assert _calls(fake_script) == ["status", "start", "env", "stop"]


def test_a_failed_start_skips_with_the_scripts_last_lines_or_fails_when_required(
    fake_script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fake_script.parent / "start-fails").touch()
    with pytest.raises(pytest.skip.Exception, match="migrate failed"), running_cvat():
        pass
    assert _calls(fake_script) == ["status", "start", "stop"]  # whatever part of it started is stopped
    monkeypatch.setenv("PREANNOTATE_REQUIRE_CVAT", "1")
    with pytest.raises(pytest.fail.Exception, match="exit 1"), running_cvat():
        pass


def test_a_missing_script_skips_or_fails_when_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREANNOTATE_CVAT_SERVER_SCRIPT", str(tmp_path / "absent.sh"))
    monkeypatch.delenv("PREANNOTATE_REQUIRE_CVAT", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"absent\.sh"), running_cvat():
        pass
    monkeypatch.setenv("PREANNOTATE_REQUIRE_CVAT", "1")
    with pytest.raises(pytest.fail.Exception, match="script not found"), running_cvat():
        pass


def test_without_the_venv_it_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVAT_SERVER_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(cvat_server.glob, "glob", lambda pattern: [pattern])  # PostgreSQL "is installed"
    reason = cvat_server.missing_prerequisite()
    assert reason is not None
    assert "empty-cache/venv-2.23.1 is not built" in reason
    assert " start` once" in reason
