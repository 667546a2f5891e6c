"""The CVAT backend against a real CVAT 2.23.1 (tests/cvat_server.py): `preannotate sync cvat`, the `cvat`
destination of a job, and CVAT's own webhook, each on fresh uniquely named projects and tasks.

The video is the astronaut panned past (her whole face in view, which CenterFace scores ~0.9), then grey frames:
the face is gone from source frame ``FACE_FRAMES`` on, so its track must end (``outside``) where the grey begins.
Its task keeps every 2nd source frame of 3..40, so task frame ``n`` is source frame ``3 + 2 n``.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
import pytest
import skimage.data

from service.convert.cvat import marker_version
from service.intake.cvat import SIGNATURE_HEADER, sign
from service.samples import write_pan_video
from tests.cvat_server import CvatServer
from tests.integration.servers import Server, running, wait_for_job

pytestmark = pytest.mark.cvat

START_FRAME, STOP_FRAME, STEP = 3, 40, 2
SOURCE_FPS = 25
FACE_FRAMES = 30  # source frames 0..29 show the face, 30..49 are grey
LABELS = [{"name": "face", "type": "rectangle", "attributes": []}, {"name": "car", "type": "any", "attributes": []}]
MODEL_SPEC = "builtin:centerface"
# `--fps 4` of a 25 fps source on a step-2 task (12.5 task frames a second): every 3rd task frame, so task frames
# 0, 3, ..., 12 (source 3..27) see the face and 15 (source 33, grey) is where the track ends.
FPS_FLAGS = ("--fps", "4", "--video-fps", str(SOURCE_FPS))
SAMPLED, GONE_AT = [0, 3, 6, 9, 12], 15
# `--fps 2.5`: every 5th task frame: 0, 5, 10 see the face, 15 is grey.
OTHER_FPS_FLAGS = ("--fps", "2.5", "--video-fps", str(SOURCE_FPS))
OTHER_SAMPLED = [0, 5, 10]
WEBHOOK_SECRET = "s3cret"


def source_frame(task_frame: int) -> int:
    return START_FRAME + STEP * task_frame


def write_face_then_grey(path: Path) -> None:
    """The astronaut pan (2 s at 25 fps, 320x480 so her whole face is in view) with grey from ``FACE_FRAMES`` on."""
    pan = path.with_name("pan-whole.mp4")
    write_pan_video(skimage.data.astronaut(), pan, height_px=480, duration_s=2.0, fps=SOURCE_FPS)
    with av.open(str(pan)) as src, av.open(str(path), mode="w") as dst:
        stream = dst.add_stream("libx264", rate=SOURCE_FPS, options={"g": "25", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 320, 480, "yuv420p"  # type: ignore[attr-defined]
        for n, frame in enumerate(src.decode(video=0)):
            image = frame.to_ndarray(format="rgb24")
            if n >= FACE_FRAMES:
                image = np.full_like(image, 128)
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))  # type: ignore[attr-defined]
        dst.mux(stream.encode(None))  # type: ignore[attr-defined]
    pan.unlink()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pan.mp4`` (see the module docs), ``astronaut.png`` (one face) and ``camera.png``."""
    root = tmp_path_factory.mktemp("cvat-media")
    write_face_then_grey(root / "pan.mp4")
    cv2.imwrite(str(root / "astronaut.png"), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "camera.png"), skimage.data.camera())
    return root


@pytest.fixture(scope="module")
def token(cvat: CvatServer) -> str:
    return cvat.token()


def video_task(cvat: CvatServer, media: Path, project_id: int) -> int:
    return cvat.create_task(
        "pa-sync-video",
        [media / "pan.mp4"],
        project_id=project_id,
        frame_filter=f"step={STEP}",
        start_frame=START_FRAME,
        stop_frame=STOP_FRAME,
    )


def sync(
    cvat: CvatServer, *args: str, token: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``preannotate sync cvat --url ... [--token ...] ARGS`` as a user runs it."""
    auth = ("--token", token) if token is not None else ()
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "sync", "cvat", "--url", cvat.url, *auth, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    return run.stderr


def face_label(cvat: CvatServer, task_id: int) -> dict[str, Any]:
    with cvat.api() as api:
        labels = api.get("/api/labels", params={"task_id": task_id}).json()["results"]
    return next(label for label in labels if label["name"] == "face")


def marker_spec_id(cvat: CvatServer, task_id: int) -> int:
    return next(a["id"] for a in face_label(cvat, task_id)["attributes"] if a["name"] == "preannotate")


def marker_of(obj: dict[str, Any], spec_id: int) -> str | None:
    return next((a["value"] for a in obj["attributes"] if a["spec_id"] == spec_id), None)


def keyframes(track: dict[str, Any]) -> list[tuple[int, bool]]:
    return [(s["frame"], s["outside"]) for s in track["shapes"]]


def ids(annotations: dict[str, Any]) -> dict[str, list[int]]:
    return {kind: sorted(o["id"] for o in annotations[kind]) for kind in ("shapes", "tracks")}


def patch(
    cvat: CvatServer, task_id: int, action: str, *, shapes: Sequence[Any] = (), tracks: Sequence[Any] = ()
) -> None:
    """``PATCH /api/tasks/{id}/annotations?action=...`` as CVAT's UI sends it."""
    body = {"version": 0, "tags": [], "shapes": list(shapes), "tracks": list(tracks)}
    with cvat.api() as api:
        answer = api.patch(f"/api/tasks/{task_id}/annotations", params={"action": action}, json=body)
    assert answer.is_success, answer.text[:500]


def rectangle(frame: int, points: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "type": "rectangle", "frame": frame, "points": points, "occluded": False, "outside": False,
        "z_order": 0, "rotation": 0.0, "attributes": [], **extra,
    }  # fmt: skip


# -- 1. a project synced with the token -------------------------------------------------------------------------


@dataclass(frozen=True)
class Synced:
    project: int
    video: int
    images: int
    first: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def synced(cvat: CvatServer, media: Path, token: str) -> Synced:
    """A project with a stepped video task and an image task (astronaut, camera), synced once with the token."""
    project = cvat.create_project("pa-sync", LABELS)
    video = video_task(cvat, media, project)
    images = cvat.create_task("pa-sync-images", [media / "astronaut.png", media / "camera.png"], project_id=project)
    first = sync(cvat, "--project", str(project), *FPS_FLAGS, token=token)
    return Synced(project, video, images, first)


def test_sync_makes_one_track_on_the_video_task_and_shapes_on_the_image_task(cvat: CvatServer, synced: Synced) -> None:
    out = ok(synced.first)
    assert "2 created, 0 replaced, 0 unchanged, 0 skipped, 0 failed" in out

    annotations = cvat.annotations(synced.video)
    assert annotations["shapes"] == []
    [track] = annotations["tracks"]  # one face, one track: not a shape per frame
    spec_id = marker_spec_id(cvat, synced.video)
    marker = marker_of(track, spec_id)
    assert track["source"] == "auto"
    assert marker is not None
    assert marker.startswith(f"{MODEL_SPEC}@centerface-")
    assert track["label_id"] == face_label(cvat, synced.video)["id"]
    # a keyframe on each sampled task frame that shows the face, hidden on the first one that does not
    assert keyframes(track) == [(n, False) for n in SAMPLED] + [(GONE_AT, True)]
    first_box = track["shapes"][0]["points"]
    assert 150 < (first_box[0] + first_box[2]) / 2 < 260  # the face's centre, at the left of the pan
    assert 60 < (first_box[1] + first_box[3]) / 2 < 180

    # CVAT for video 1.1 numbers the video's own frames: source frame = start + step x task frame
    root = ET.fromstring(cvat.export_xml(synced.video, "CVAT for video 1.1"))
    [exported] = root.findall("track")
    assert (exported.get("label"), exported.get("source")) == ("face", "auto")
    boxes = exported.findall("box")
    assert {int(b.get("frame", "-1")) for b in boxes} <= {source_frame(n) for n in range(19)}
    marked = [(int(b.get("frame", "-1")), b.get("outside")) for b in boxes if b.get("keyframe") == "1"]
    assert marked == [(source_frame(n), "0") for n in SAMPLED] + [(source_frame(GONE_AT), "1")]
    assert {b.findtext("attribute[@name='preannotate']") for b in boxes} == {marker}

    # the image task: shapes on the astronaut's frame, with the same marker
    frame_of = {f["name"]: n for n, f in enumerate(cvat.data_meta(synced.images)["frames"])}
    shapes = cvat.annotations(synced.images)["shapes"]
    on_astronaut = [s for s in shapes if s["frame"] == frame_of["astronaut.png"]]
    assert len(on_astronaut) == 1
    [face] = on_astronaut
    face_marker = marker_of(face, spec_id)
    assert (face["type"], face["source"]) == ("rectangle", "auto")
    assert face_marker is not None
    assert marker_version(face_marker) == marker_version(marker)  # each push adds the digest of what it wrote
    assert face["points"][0] == pytest.approx(181.53, abs=2.0)  # the box every other backend's test sees
    assert face["points"][1] == pytest.approx(58.2, abs=2.0)
    assert cvat.annotations(synced.images)["tracks"] == []

    images_root = ET.fromstring(cvat.export_xml(synced.images, "CVAT for images 1.1"))
    exported_boxes = {
        (image.get("name"), box.get("label"), box.get("source"))
        for image in images_root.findall("image")
        for box in image.findall("box")
    }
    assert ("astronaut.png", "face", "auto") in exported_boxes
    assert len(images_root.findall("image/box")) == len(shapes)


# -- 2. idempotence ---------------------------------------------------------------------------------------------


def test_a_second_sync_creates_nothing_and_another_fps_replaces_our_track(
    cvat: CvatServer, synced: Synced, token: str
) -> None:
    ok(synced.first)
    before = {task: ids(cvat.annotations(task)) for task in (synced.video, synced.images)}

    again = ok(sync(cvat, "--project", str(synced.project), *FPS_FLAGS, token=token))
    assert "0 created, 0 replaced, 0 unchanged, 2 skipped, 0 failed" in again
    assert {task: ids(cvat.annotations(task)) for task in before} == before

    replace = ok(sync(cvat, "--project", str(synced.project), *FPS_FLAGS, "--replace", token=token))
    assert "0 created, 0 replaced, 2 unchanged, 0 skipped, 0 failed" in replace
    assert {task: ids(cvat.annotations(task)) for task in before} == before

    # basic auth this time: --user, and the password from the environment
    other = sync(
        cvat,
        "--user",
        cvat.user,
        "--task",
        str(synced.video),
        *OTHER_FPS_FLAGS,
        "--replace",
        env={"PREANNOTATE_CVAT_PASSWORD": cvat.password, "PREANNOTATE_CVAT_TOKEN": ""},
    )
    assert "0 created, 1 replaced, 0 unchanged, 0 skipped, 0 failed" in ok(other)
    [track] = cvat.annotations(synced.video)["tracks"]
    assert track["id"] not in before[synced.video]["tracks"]  # ours replaced, not added to
    assert keyframes(track) == [(n, False) for n in OTHER_SAMPLED] + [(GONE_AT, True)]
    assert ids(cvat.annotations(synced.images)) == before[synced.images]


def test_a_task_of_several_jobs_gets_each_job_its_part_of_the_track(cvat: CvatServer, media: Path, token: str) -> None:
    """CVAT keeps a track per job: each job (what an annotator opens) gets one track for the face, on that job's
    frames, and a second push is `unchanged` although CVAT stores the parts with keyframes of its own at their ends."""
    project = cvat.create_project("pa-sync-jobs", LABELS)
    task = cvat.create_task(
        "pa-sync-jobs",
        [media / "pan.mp4"],
        project_id=project,
        frame_filter=f"step={STEP}",
        start_frame=START_FRAME,
        stop_frame=STOP_FRAME,
        segment_size=7,
        overlap=0,
    )
    ok(sync(cvat, "--task", str(task), "--every", "1", token=token))
    with cvat.api() as api:
        jobs = api.get("/api/jobs", params={"task_id": task, "page_size": 100}).json()["results"]
        parts = {j["id"]: api.get(f"/api/jobs/{j['id']}/annotations").json() for j in jobs}
    ranges = {j["id"]: (j["start_frame"], j["stop_frame"]) for j in jobs}
    assert len(jobs) >= 2
    seen = [job for job, part in parts.items() if part["tracks"]]
    assert seen, "no job got the face's track"
    for job in seen:
        [track] = parts[job]["tracks"]  # one object, one track in each job that shows it
        start, stop = ranges[job]
        visible = [s["frame"] for s in track["shapes"] if not s["outside"]]
        assert start <= min(visible)
        assert max(visible) <= stop
    before = {job: ids(part) for job, part in parts.items()}

    again = ok(sync(cvat, "--task", str(task), "--every", "1", "--replace", token=token))
    assert "0 created, 0 replaced, 1 unchanged" in again
    with cvat.api() as api:
        after = {j: ids(api.get(f"/api/jobs/{j}/annotations").json()) for j in parts}
    assert after == before


def test_a_duplicate_is_repaired_and_a_finished_job_left_alone(cvat: CvatServer, media: Path, token: str) -> None:
    """Two copies of our track in one job (two pushes raced) make the next --replace rewrite that job; a job people
    accepted is never written to; the run after that finds the push complete and skips the task."""
    project = cvat.create_project("pa-sync-repair", LABELS)
    task = cvat.create_task("pa-sync-repair", [media / "pan.mp4"], project_id=project, segment_size=12, overlap=0)
    ok(sync(cvat, "--task", str(task), "--every", "2", token=token))
    with cvat.api() as api:
        jobs = sorted(api.get("/api/jobs", params={"task_id": task}).json()["results"], key=lambda j: j["start_frame"])
        first, second = jobs[0]["id"], jobs[1]["id"]
        [track] = api.get(f"/api/jobs/{first}/annotations").json()["tracks"]
        copy = {k: v for k, v in track.items() if k != "id"}
        copy["shapes"] = [{k: v for k, v in shape.items() if k != "id"} for shape in track["shapes"]]
        body = {"version": 0, "tags": [], "shapes": [], "tracks": [copy]}
        assert api.patch(f"/api/jobs/{first}/annotations", params={"action": "create"}, json=body).is_success
        assert api.patch(f"/api/jobs/{second}", json={"stage": "acceptance"}).is_success
        accepted = ids(api.get(f"/api/jobs/{second}/annotations").json())
        assert len(api.get(f"/api/jobs/{first}/annotations").json()["tracks"]) == 2

    repaired = ok(sync(cvat, "--task", str(task), "--every", "2", "--replace", token=token))
    assert "1 replaced" in repaired
    with cvat.api() as api:
        assert len(api.get(f"/api/jobs/{first}/annotations").json()["tracks"]) == 1
        assert ids(api.get(f"/api/jobs/{second}/annotations").json()) == accepted

    assert "1 skipped" in ok(sync(cvat, "--task", str(task), "--every", "2", token=token))

    empty = cvat.create_project("pa-sync-empty", LABELS)
    run = sync(cvat, "--project", str(empty), token=token)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: invalid_argument: CVAT project {empty} has no tasks (or none this user can see)"
    ]


# -- 3. people's work -------------------------------------------------------------------------------------------


def test_people_s_objects_and_other_models_objects_are_never_touched(cvat: CvatServer, media: Path, token: str) -> None:
    project = cvat.create_project("pa-sync-people", LABELS)
    task = video_task(cvat, media, project)
    ok(sync(cvat, "--task", str(task), *FPS_FLAGS, token=token))
    [ours] = cvat.annotations(task)["tracks"]
    spec_id = marker_spec_id(cvat, task)
    face = face_label(cvat, task)["id"]

    # a person draws a box, edits our track (CVAT's UI makes it semi-auto), and another model left a track
    manual = {"label_id": face, "group": 0, "source": "manual", **rectangle(4, [10.0, 10.0, 60.0, 70.0])}
    foreign = {
        "frame": 0, "label_id": face, "group": 0, "source": "auto",
        "attributes": [{"spec_id": spec_id, "value": "builtin:other-model@v1"}],
        "shapes": [rectangle(0, [200.0, 300.0, 260.0, 380.0]), rectangle(18, [200.0, 300.0, 260.0, 380.0])],
    }  # fmt: skip
    patch(cvat, task, "create", shapes=[manual], tracks=[foreign])
    edited = {**ours, "source": "semi-auto"}
    edited["shapes"] = [{**ours["shapes"][0], "points": [150.0, 60.0, 240.0, 170.0]}, *ours["shapes"][1:]]
    patch(cvat, task, "update", tracks=[edited])
    people = cvat.annotations(task)
    assert len(people["shapes"]) == 1
    assert len(people["tracks"]) == 2

    def still_there(now: dict[str, Any]) -> None:
        for kind in ("shapes", "tracks"):
            for obj in people[kind]:
                assert obj in now[kind], f"{kind[:-1]} {obj['id']} changed or gone"

    # our track is now a person's: the next run writes ours anew and leaves theirs
    created = ok(sync(cvat, "--task", str(task), *OTHER_FPS_FLAGS, "--replace", token=token))
    assert "1 created" in created
    after_first = cvat.annotations(task)
    still_there(after_first)
    [new] = [t for t in after_first["tracks"] if t["id"] not in {o["id"] for o in people["tracks"]}]
    new_marker, our_marker = marker_of(new, spec_id), marker_of(ours, spec_id)
    assert new["source"] == "auto"
    assert new_marker is not None
    assert our_marker is not None
    assert marker_version(new_marker) == marker_version(our_marker)

    # and a run that replaces that one deletes it alone
    replaced = ok(sync(cvat, "--task", str(task), *FPS_FLAGS, "--replace", token=token))
    assert "1 replaced" in replaced
    after = cvat.annotations(task)
    still_there(after)
    assert new["id"] not in {t["id"] for t in after["tracks"]}
    [latest] = [t for t in after["tracks"] if t["id"] not in {o["id"] for o in people["tracks"]}]
    assert keyframes(latest) == [(n, False) for n in SAMPLED] + [(GONE_AT, True)]
    assert len(after["shapes"]) == 1


# -- 4. errors --------------------------------------------------------------------------------------------------


def test_sync_errors_are_one_clear_line(cvat: CvatServer, synced: Synced) -> None:
    wrong = "wrong-token-" + "z" * 24
    refused = sync(cvat, "--task", str(synced.images), token=wrong)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "credentials" in lines[0]
    assert wrong not in refused.stderr + refused.stdout

    missing = sync(cvat, "--task", "987654321", token=cvat.token())
    assert missing.returncode != 0, missing.stderr
    assert "1 failed" in missing.stderr
    assert "failed: task 987654321" in missing.stderr
    assert "Traceback" not in missing.stderr

    both = sync(cvat, "--task", str(synced.images), "--project", str(synced.project), token=cvat.token())
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    assert "Traceback" not in both.stderr


# -- 5. the `cvat` destination of a job -------------------------------------------------------------------------


def serve_env(cvat: CvatServer, token: str, media: Path, **extra: str) -> dict[str, str]:
    return {
        "PREANNOTATE_CVAT_URL": cvat.url,
        "PREANNOTATE_CVAT_TOKEN": token,
        "PREANNOTATE_LOCAL_ROOTS": str(media),
        "PREANNOTATE_CVAT_VIDEO_FPS": str(SOURCE_FPS),
        **extra,
    }


def pushes(server: Server, job_id: str) -> list[dict[str, Any]]:
    """The push records the worker stored with each item's result (the store is the server's SQLite file)."""
    with sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT result FROM items WHERE job_id = ? ORDER BY position", (job_id,)).fetchall()
    return [push for (result,) in rows for push in json.loads(result)["pushes"]]


def test_a_job_with_a_cvat_destination_puts_one_track_on_the_stepped_task(
    cvat: CvatServer, media: Path, token: str, tmp_path: Path
) -> None:
    """A job on the source video, pushed to a task made of every 2nd frame from 3: source frame f -> (f - 3) / 2."""
    task = video_task(cvat, media, cvat.create_project("pa-destination", LABELS))
    body = {
        "items": [{"name": "pan", "slots": [{"url": (media / "pan.mp4").as_uri()}]}],
        "fps": 5,  # source frames 0, 5, 10, ...: 5, 15, 25 are task frames 1, 6, 11
        "destinations": [{"backend": "cvat", "task": task}],
    }
    with running(tmp_path / "jobs.db", **serve_env(cvat, token, media)) as server, server.client() as client:
        submitted = client.post("/v1/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded", job
        coco = client.get(f"/v1/jobs/{job_id}/result").json()
        # the CVAT webhook is off on a server without its secret: no route at all
        off = httpx.post(f"{server.url}/v1/webhooks/cvat", content=b"{}", timeout=30)
        nowhere = httpx.post(f"{server.url}/v1/webhooks/no-such-tool", content=b"{}", timeout=30)
        assert off.status_code == nowhere.status_code == 404, off.text
        assert off.json()["error"]["code"] == nowhere.json()["error"]["code"] == "not_found"
        log = server.log()
    assert token not in log

    [push] = pushes(server, job_id)
    assert (push["backend"], push["task"], push["outcome"], push["tracks"]) == ("cvat", task, "created", 1)
    [track] = cvat.annotations(task)["tracks"]
    assert track["source"] == "auto"
    shown = [s for s in track["shapes"] if not s["outside"]]
    seen = {image["frame_index"]: image["id"] for image in coco["images"]}
    boxes = {a["image_id"]: a["bbox"] for a in coco["annotations"]}
    on_grid = [f for f in sorted(seen) if START_FRAME <= f <= STOP_FRAME and (f - START_FRAME) % STEP == 0]
    assert on_grid == [5, 15, 25, 35]
    for f in on_grid:
        if seen[f] not in boxes:
            continue  # grey: no face
        [shape] = [s for s in shown if s["frame"] == (f - START_FRAME) // STEP]
        x, y, w, h = boxes[seen[f]]
        assert shape["points"] == pytest.approx([x, y, x + w, y + h], abs=0.05)
    assert {s["frame"] for s in shown} >= {1, 6, 11}
    # every keyframe is the task frame nearest a sampled source frame, and the track ends on the first grey one
    assert all(min(abs(source_frame(s["frame"]) - f) for f in seen) <= 1 for s in track["shapes"])
    [end] = [s for s in track["shapes"] if s["outside"]]
    assert end == track["shapes"][-1]
    assert source_frame(end["frame"]) - 1 <= FACE_FRAMES <= source_frame(end["frame"]) + 1


# -- 6. CVAT's webhook ------------------------------------------------------------------------------------------


class Relay:
    """Forwards CVAT's deliveries to ``target`` and keeps each one's exact body and signature (for a replay)."""

    def __init__(self, target: str) -> None:
        self.deliveries: queue.Queue[tuple[bytes, str, int]] = queue.Queue()
        deliveries = self.deliveries

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                signature = self.headers.get(SIGNATURE_HEADER, "")
                headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
                answer = httpx.post(target, content=body, headers=headers, timeout=30)
                deliveries.put((body, signature, answer.status_code))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def drain(self, quiet_s: float = 2.0) -> list[tuple[bytes, str, int]]:
        """Every delivery so far, once none has come for ``quiet_s``."""
        got: list[tuple[bytes, str, int]] = []
        while True:
            try:
                got.append(self.deliveries.get(timeout=quiet_s))
            except queue.Empty:
                return got


@pytest.fixture
def webhook_server(cvat: CvatServer, token: str, media: Path, tmp_path: Path) -> Iterator[Server]:
    env = serve_env(cvat, token, media, PREANNOTATE_WEBHOOK_CVAT_SECRETS=WEBHOOK_SECRET, PREANNOTATE_FPS="4")
    with running(tmp_path / "jobs.db", **env) as server:
        yield server


def test_a_signed_cvat_webhook_preannotates_the_new_task_once(
    cvat: CvatServer, media: Path, webhook_server: Server
) -> None:
    project = cvat.create_project("pa-webhook", LABELS)
    target = f"{webhook_server.url}/v1/webhooks/cvat"
    with Relay(target) as relay, webhook_server.client() as client:
        cvat.create_webhook(project, relay.url, WEBHOOK_SECRET, ["create:task", "update:task", "create:job"])
        task = video_task(cvat, media, project)

        deadline = time.monotonic() + 60
        while not (jobs := client.get("/v1/jobs").json()["jobs"]):
            assert time.monotonic() < deadline, f"no job from CVAT's deliveries:\n{webhook_server.log()[-3000:]}"
            time.sleep(0.5)
        [job] = jobs
        assert wait_for_job(client, job["id"])["status"] == "succeeded"
        deliveries = relay.drain()
        assert deliveries, "CVAT's deliveries went elsewhere"
        assert all(status in (200, 202) for _, _, status in deliveries), deliveries

        # CVAT's last delivery again, byte for byte with its signature: the same job, nothing new
        body, signature, _ = deliveries[-1]
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
        replay = httpx.post(target, content=body, headers=headers, timeout=30)
        assert replay.status_code == 200, replay.text
        assert [j["job_id"] for j in replay.json()["jobs"]] == [job["id"]]
        assert replay.json()["duplicates"] == 1
        assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]] == [job["id"]]

        forged = {**headers, SIGNATURE_HEADER: sign("not-the-secret", body)}
        refused = httpx.post(target, content=body, headers=forged, timeout=30)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unauthorized"

    assert json.loads(body)["event"] in ("create:task", "update:task", "create:job")
    [track] = cvat.annotations(task)["tracks"]
    assert track["source"] == "auto"
    assert keyframes(track) == [(n, False) for n in SAMPLED] + [(GONE_AT, True)]
