"""Against a real Label Studio 1.23.2 on 127.0.0.1 (tests/integration/label_studio.py): the sync command,
and `preannotate serve` connected to it as an ML backend. Media is served by LS's local-files storage."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
import skimage.data
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes import jobs as jobs_routes
from service.api.state import AppState
from service.backends.label_studio import LabelStudioClient, LabelStudioConfig
from service.backends.registry import Backends
from service.commands.sync import sync_command
from service.config import Settings
from service.jobs.worker import WorkerConfig, WorkerPool
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.pipeline.options import MediaLimits
from service.queue.sqlite_store import SqliteJobStore
from service.samples import write_pan_video
from tests.fakes.promptable import BASE_VERSION, GridPrompts
from tests.integration.label_studio import LabelStudio, running_label_studio
from tests.integration.servers import TOKEN, Server, running, wait_for_job
from tests.unit.models.zero_shot_checkpoints import write_tiny_owlv2

pytestmark = pytest.mark.label_studio

IMAGE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="Face"/><Label value="car"/></RectangleLabels>
</View>"""
VIDEO_CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="face"/></Labels>
  <Video name="video" value="$video" framerate="$fps"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    with running_label_studio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture(scope="module")
def media(ls: LabelStudio) -> dict[str, Path]:
    root = ls.media_root / "clips"
    root.mkdir()
    astronaut = skimage.data.astronaut()
    paths = {"photo": root / "astronaut.png", "camera": root / "camera.png", "video": root / "pan.mp4"}
    cv2.imwrite(str(paths["photo"]), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(paths["camera"]), skimage.data.camera())
    write_pan_video(astronaut, paths["video"], duration_s=2.0, fps=25)
    return paths


def image_project(ls: LabelStudio, media: dict[str, Path], title: str) -> tuple[int, list[int]]:
    project = ls.create_project(title, IMAGE_CONFIG)
    ls.add_local_storage(project, media["photo"].parent)
    tasks = [{"image": ls.local_file_url(media[k])} for k in ("photo", "camera")]
    return project, ls.import_tasks(project, tasks)


def sync(ls: LabelStudio, project: int, capsys: pytest.CaptureFixture[str], **flags: Any) -> tuple[int, str]:
    args = argparse.Namespace(
        **{
            "url": ls.url,
            "api_key": ls.token,
            "project": project,
            "model": None,
            "fps": 5.0,
            "threshold": None,
            "quiet": True,
            "replace": False,
            "alias": None,
            **flags,
        }
    )
    code = sync_command(args)
    return code, capsys.readouterr().err


def test_sync_creates_predictions_once_and_sets_the_model_version(
    ls: LabelStudio, media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    images, image_tasks = image_project(ls, media, "sync images")
    video = ls.create_project("sync video", VIDEO_CONFIG)
    ls.add_local_storage(video, media["video"].parent)
    (video_task,) = ls.import_tasks(video, [{"video": ls.local_file_url(media["video"]), "fps": 25}])

    code, out = sync(ls, images, capsys)
    assert code == 0, out
    assert "2 created, 0 replaced, 0 skipped, 0 failed" in out
    version = ls.project(images)["model_version"]
    assert version.startswith("centerface-")
    (photo_prediction,) = ls.predictions(image_tasks[0])
    assert photo_prediction["model_version"] == version
    regions = photo_prediction["result"]
    assert regions, "the astronaut's face was not found"
    for region in regions:
        assert region["type"] == "rectanglelabels"
        assert (region["from_name"], region["to_name"]) == ("label", "image")
        assert region["value"]["rectanglelabels"] == ["Face"]  # the config's spelling, matched case-insensitively
        assert (region["original_width"], region["original_height"]) == (512, 512)
        value = region["value"]
        assert value["x"] >= 0
        assert value["x"] + value["width"] <= 100
        assert value["y"] >= 0
        assert value["y"] + value["height"] <= 100

    code, out = sync(ls, video, capsys)
    assert code == 0, out
    assert "1 created" in out
    (video_prediction,) = ls.predictions(video_task)
    tracks = video_prediction["result"]
    assert tracks
    assert all(t["type"] == "videorectangle" and t["from_name"] == "box" for t in tracks)
    longest = max(tracks, key=lambda t: len(t["value"]["sequence"]))
    assert longest["value"]["labels"] == ["face"]
    assert longest["value"]["framesCount"] == 50
    frames = [k["frame"] for k in longest["value"]["sequence"]]
    assert frames[0] >= 1
    assert frames == sorted(frames)
    assert longest["value"]["sequence"][-1]["enabled"] is False
    assert ls.project(video)["model_version"] == version

    for project in (images, video):  # a second run creates nothing
        code, out = sync(ls, project, capsys)
        assert code == 0, out
        assert " 0 created, 0 replaced, " in out
        assert "0 failed" in out
    assert [len(ls.predictions(t)) for t in [*image_tasks, video_task]] == [1, 1, 1]


def test_sync_replace_overwrites_in_place(
    ls: LabelStudio, media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project, tasks = image_project(ls, media, "sync replace")
    assert sync(ls, project, capsys)[0] == 0
    before = [p["id"] for p in ls.predictions(tasks[0])]
    code, out = sync(ls, project, capsys, replace=True, threshold=0.99)
    assert code == 0, out
    assert "0 created, 2 replaced" in out
    after = ls.predictions(tasks[0])
    assert [p["id"] for p in after] == before  # patched, not re-created


def test_sync_reports_a_task_whose_media_is_missing(
    ls: LabelStudio, media: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project = ls.create_project("sync missing", IMAGE_CONFIG)
    ls.add_local_storage(project, media["photo"].parent)
    ok, missing = ls.import_tasks(
        project, [{"image": ls.local_file_url(media["photo"])}, {"image": "/data/local-files/?d=clips/nope.png"}]
    )
    code, out = sync(ls, project, capsys)
    assert code == 2, out
    assert f"failed: task {missing}: input_not_found" in out
    assert len(ls.predictions(ok)) == 1
    assert ls.predictions(missing) == []


def test_a_personal_access_token_works(ls: LabelStudio, media: dict[str, Path], tmp_path: Path) -> None:
    project, tasks = image_project(ls, media, "personal token")
    pat = ls.personal_access_token()
    with LabelStudioClient(LabelStudioConfig(url=ls.url, api_key=SecretStr(pat))) as client:
        assert client.get_project(project)["id"] == project  # refreshed to a Bearer access token
        (task,) = [t for t in client.iter_tasks(project) if t["id"] == tasks[0]]
        got = client.download(task["data"]["image"], tmp_path)  # media needs the token too
        assert got.path.read_bytes() == media["photo"].read_bytes()


def test_the_cli_command(ls: LabelStudio, media: dict[str, Path]) -> None:
    def preannotate(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PREANNOTATE_LABEL_STUDIO_API_KEY": ls.token}  # the key stays off the command line
        command = [sys.executable, "-m", "service.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)

    project, tasks = image_project(ls, media, "sync cli")
    first = preannotate("sync", "label-studio", "--url", ls.url, "--project", str(project), "-q")
    assert first.returncode == 0, first.stderr
    assert "2 created" in first.stderr
    again = preannotate("sync", "label-studio", "--url", ls.url, "--project", str(project), "-q")
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 replaced, 2 skipped, 0 failed" in again.stderr
    assert ls.token not in first.stderr + again.stderr
    assert [len(ls.predictions(t)) for t in tasks] == [1, 1]


@pytest.fixture(scope="module")
def server(ls: LabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("ls-backend") / "jobs.db"
    with running(
        db, PREANNOTATE_WORKERS="0", PREANNOTATE_LABEL_STUDIO_URL=ls.url, PREANNOTATE_LABEL_STUDIO_API_KEY=ls.token
    ) as srv:
        yield srv


def job_server(ls: LabelStudio, db: Path, media_root: Path) -> AbstractContextManager[Server]:
    """A server with workers that pushes to ``ls`` and reads media under ``media_root``."""
    return running(
        db,
        PREANNOTATE_LABEL_STUDIO_URL=ls.url,
        PREANNOTATE_LABEL_STUDIO_API_KEY=ls.token,
        PREANNOTATE_LOCAL_ROOTS=str(media_root),
    )


def connect(ls: LabelStudio, server: Server, project: int, password: str = TOKEN) -> httpx.Response:
    body = {
        "url": f"{server.url}/ls",
        "project": project,
        "title": "preannotate",
        "is_interactive": False,
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": "label-studio",
        "basic_auth_pass": password,
    }
    with ls.api() as client:
        return client.post("/api/ml/", json=body)


def test_ml_backend_predictions_appear_in_label_studio(ls: LabelStudio, media: dict[str, Path], server: Server) -> None:
    project, tasks = image_project(ls, media, "ml backend")
    assert connect(ls, server, project, password="wrong-token").status_code == 400  # health check fails: 401

    answer = connect(ls, server, project)
    assert answer.status_code == 201, answer.text
    backend = answer.json()
    assert backend["readable_state"] == "Connected"
    version = backend["model_version"]
    assert version.startswith("centerface-")

    action = {"selectedItems": {"all": False, "included": tasks}}
    params = {"id": "retrieve_tasks_predictions", "project": project}
    with ls.api() as client:
        done = client.post("/api/dm/actions/", params=params, json=action)
    assert done.status_code == 200, done.text
    photo, camera = (ls.predictions(t) for t in tasks)
    assert len(photo) == 1
    assert len(camera) == 1
    assert photo[0]["model_version"] == version
    assert photo[0]["result"]
    assert photo[0]["result"][0]["value"]["rectanglelabels"] == ["Face"]

    with ls.api() as client:  # already predicted for this version: LS does not ask again
        assert client.post("/api/dm/actions/", params=params, json=action).status_code == 200
    assert [len(ls.predictions(t)) for t in tasks] == [1, 1]
    assert ls.token not in server.log()


def test_ml_backend_failure_takes_label_studios_error_path(
    ls: LabelStudio, media: dict[str, Path], server: Server
) -> None:
    """A task whose media 404s: LS gets an error status for a /predict that produced nothing (its error path:
    logged, nothing saved), and in a batch with a good task only the good one gets a prediction."""
    project = ls.create_project("ml backend, missing media", IMAGE_CONFIG)
    ls.add_local_storage(project, media["photo"].parent)
    (missing,) = ls.import_tasks(project, [{"image": ls.local_file_url(media["photo"].parent / "gone.png")}])
    answer = connect(ls, server, project)
    assert answer.status_code == 201, answer.text
    backend = answer.json()["id"]

    with ls.api() as client:  # the ML backend page's "test" button
        tested = client.post(f"/api/ml/{backend}/predict/test", params={"random": "true"})
    assert tested.status_code == 500, tested.text  # was 200 with an empty result that read as success
    assert "did not return any predictions" in tested.json()["detail"]
    warning = f"ls predict: task {missing} ({ls.url}/data/local-files/#"
    assert warning in server.log()  # the task and its redacted URL (the file name is in the dropped query)

    params = {"id": "retrieve_tasks_predictions", "project": project}
    with ls.api() as client:  # the Data Manager's "Retrieve predictions"
        done = client.post(
            "/api/dm/actions/", params=params, json={"selectedItems": {"all": False, "included": [missing]}}
        )
    assert done.status_code == 200, done.text
    assert done.json()["detail"] == "Retrieved 1 predictions"  # LS's fixed wording, whatever happened
    assert "Error occurred: 404 Client Error" in ls.log()  # LS's error path logged our status
    assert ls.predictions(missing) == []

    (good,) = ls.import_tasks(project, [{"image": ls.local_file_url(media["photo"])}])
    with ls.api() as client:
        both = {"selectedItems": {"all": False, "included": [missing, good]}}
        assert client.post("/api/dm/actions/", params=params, json=both).status_code == 200
    assert [len(ls.predictions(t)) for t in (missing, good)] == [0, 1]  # the good task keeps its prediction
    assert ls.token not in server.log()


def test_a_job_pushes_to_label_studio_once(ls: LabelStudio, media: dict[str, Path], tmp_path: Path) -> None:
    """A job naming a Label Studio project as its destination leaves one prediction per task, however
    often it runs, and sets the project's model version."""
    project, tasks = image_project(ls, media, "job destination")
    items = [
        {"name": key, "slots": [{"url": media[key].as_uri()}], "external_ids": {"label_studio": str(task)}}
        for key, task in zip(("photo", "camera"), tasks, strict=True)
    ]
    body = {"items": items, "destinations": [{"backend": "label_studio", "project": project}]}
    with job_server(ls, tmp_path / "jobs.db", media["photo"].parent) as srv, srv.client() as client:
        for key in ("first", "second"):  # two jobs: the second must not add predictions
            job_id = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key}).json()["job_id"]
            job = wait_for_job(client, job_id)
            assert job["status"] == "succeeded", job
        log = srv.log()
    assert [len(ls.predictions(t)) for t in tasks] == [1, 1]
    assert ls.predictions(tasks[0])[0]["result"][0]["value"]["rectanglelabels"] == ["Face"]
    assert ls.project(project)["model_version"].startswith("centerface-")
    assert ls.token not in log


def test_a_job_pushes_video_frames_at_the_tasks_framerate(
    ls: LabelStudio, media: dict[str, Path], tmp_path: Path
) -> None:
    """With framerate="$fps" LS counts frames at the task's rate, not the file's: a 25 fps clip in a task
    that says 50 has 100 LS frames, and the frame sampled at 1 s is LS frame 51."""
    project = ls.create_project("job video framerate", VIDEO_CONFIG)
    ls.add_local_storage(project, media["video"].parent)
    (task,) = ls.import_tasks(project, [{"video": ls.local_file_url(media["video"]), "fps": 50}])
    item = {"name": "pan", "slots": [{"url": media["video"].as_uri()}], "external_ids": {"label_studio": str(task)}}
    body = {"items": [item], "destinations": [{"backend": "label_studio", "project": project}], "fps": 1}
    with job_server(ls, tmp_path / "jobs.db", media["video"].parent) as srv, srv.client() as client:
        job = wait_for_job(client, client.post("/v1/jobs", json=body).json()["job_id"])
        assert job["status"] == "succeeded", job
    (prediction,) = ls.predictions(task)
    tracks = prediction["result"]
    assert {t["value"]["framesCount"] for t in tracks} == {100}
    frames = {k["frame"] for t in tracks for k in t["value"]["sequence"]}
    assert frames == {1, 51}, frames  # 26 would be the file's 25 fps


def test_brush_and_polygon_predictions_are_stored_as_pushed(ls: LabelStudio, media: dict[str, Path]) -> None:
    """Masks attached by hand go through the push's converter call and client: Label Studio takes the
    brushlabels and polygonlabels regions and gives them back unchanged."""
    from service.backends.label_studio_push import predictions_to_ls
    from service.convert.label_studio import parse_label_config
    from service.convert.types import ModelRef
    from service.pipeline.frames import MediaKind, SlotMeta
    from service.pipeline.predictions import ItemPredictions
    from tests.mask_shapes import H, W, masked_result, shapes

    labels = '<Label value="car"/><Label value="person"/>'
    config = (
        '<View><Image name="image" value="$image"/>'
        '<BrushLabels name="mask" toName="image"><Label value="car"/></BrushLabels>'
        '<PolygonLabels name="poly" toName="image"><Label value="person"/></PolygonLabels>'
        f'<RectangleLabels name="label" toName="image">{labels}</RectangleLabels></View>'
    )
    project = ls.create_project("masks", config)
    ls.add_local_storage(project, media["photo"].parent)
    (task,) = ls.import_tasks(project, [{"image": ls.local_file_url(media["photo"])}])
    model = ModelRef(spec="onnx:/m/seg.onnx", version="seg-1", class_names=("car", "person"))
    meta = SlotMeta("a", "0", MediaKind.IMAGE, ("a.png",), W, H, None, 1, 1)
    disk, ring, two = shapes().values()
    item = ItemPredictions("a", (meta,), (masked_result([disk, ring, two, None], [0, 0, 1, 0], item="a"),))
    with LabelStudioClient(LabelStudioConfig(url=ls.url, api_key=SecretStr(ls.token))) as client:
        prediction = predictions_to_ls(
            item, model, parse_label_config(client.get_label_config(project)), task_data=None
        )
        client.upsert_prediction(task, prediction)
    sent = prediction.to_json()["result"]
    assert [r["type"] for r in sent] == ["brushlabels", "brushlabels", "polygonlabels", "rectanglelabels"]
    (stored,) = ls.predictions(task)
    assert stored["result"] == sent


BRUSH_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="Face"/></BrushLabels>
</View>"""
POLYGON_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <PolygonLabels name="outline" toName="image"><Label value="Face"/></PolygonLabels>
</View>"""


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.unit.models.hf_checkpoints import write_tiny_sam

    return write_tiny_sam(tmp_path_factory.mktemp("sam") / "sam")


def _face_mask(region: dict[str, Any]) -> Any:
    from service.evaluate.geometry import ls_brush_rle_to_mask

    return ls_brush_rle_to_mask(region["value"]["rle"], region["original_width"], region["original_height"])


def test_sync_with_a_segmenter_writes_the_masks_the_project_asks_for(
    ls: LabelStudio, media: dict[str, Path], sam_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sync --segmenter``: a BrushLabels project gets brush masks, a PolygonLabels project polygons."""
    brush = ls.create_project("sync brush", BRUSH_CONFIG)
    polygon = ls.create_project("sync polygon", POLYGON_CONFIG)
    tasks = {}
    for project in (brush, polygon):
        ls.add_local_storage(project, media["photo"].parent)
        (tasks[project],) = ls.import_tasks(project, [{"image": ls.local_file_url(media["photo"])}])
        code, out = sync(ls, project, capsys, segmenter=f"hf:{sam_dir}")
        assert code == 0, out
        assert "1 created" in out

    (prediction,) = ls.predictions(tasks[brush])
    (region,) = prediction["result"]  # the astronaut's face
    assert (region["type"], region["from_name"], region["value"]["format"]) == ("brushlabels", "mask", "rle")
    assert region["value"]["brushlabels"] == ["Face"]
    assert _face_mask(region).any()

    (prediction,) = ls.predictions(tasks[polygon])
    (region,) = prediction["result"]
    assert (region["type"], region["from_name"]) == ("polygonlabels", "outline")
    points = region["value"]["points"]
    assert len(points) >= 3
    assert all(0 <= x <= 100 and 0 <= y <= 100 for x, y in points)


def test_ml_backend_with_a_segmenter_answers_brush_masks(
    ls: LabelStudio, media: dict[str, Path], sam_dir: Path, tmp_path: Path
) -> None:
    """Label Studio asks `preannotate serve` (PREANNOTATE_SEGMENTER set) and stores the brush masks it answers."""
    project = ls.create_project("ml backend brush", BRUSH_CONFIG)
    ls.add_local_storage(project, media["photo"].parent)
    (task,) = ls.import_tasks(project, [{"image": ls.local_file_url(media["photo"])}])
    with running(
        tmp_path / "jobs.db",
        PREANNOTATE_WORKERS="0",
        PREANNOTATE_LABEL_STUDIO_URL=ls.url,
        PREANNOTATE_LABEL_STUDIO_API_KEY=ls.token,
        PREANNOTATE_SEGMENTER=f"hf:{sam_dir}",
    ) as server:
        answer = connect(ls, server, project)
        assert answer.status_code == 201, answer.text
        action = {"selectedItems": {"all": False, "included": [task]}}
        with ls.api() as client:
            done = client.post(
                "/api/dm/actions/", params={"id": "retrieve_tasks_predictions", "project": project}, json=action
            )
        assert done.status_code == 200, done.text
    (prediction,) = ls.predictions(task)
    (region,) = prediction["result"]
    assert (region["type"], region["value"]["brushlabels"]) == ("brushlabels", ["Face"])
    assert _face_mask(region).any()


PROMPT_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="hard hat"/><Label value="PED" prompt="pedestrian|person walking"/><Label value="cone"/>
  </RectangleLabels>
</View>"""


def test_sync_prompts_an_open_vocabulary_model_with_the_projects_labels(
    ls: LabelStudio,
    media: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project = ls.create_project("sync prompts", PROMPT_CONFIG)
    # Label Studio keeps the custom attribute in the saved config: it is where the prompt override lives
    saved = ls.project(project)
    assert 'prompt="pedestrian|person walking"' in saved["label_config"]
    assert saved["parsed_label_config"]["label"]["labels_attrs"]["PED"]["prompt"] == "pedestrian|person walking"
    ls.add_local_storage(project, media["photo"].parent)
    (task,) = ls.import_tasks(project, [{"image": ls.local_file_url(media["photo"])}])
    prompt_map = tmp_path / "prompts.json"
    prompt_map.write_text('{"cone": ["traffic cone", "pylon"]}')
    model = GridPrompts()
    monkeypatch.setattr("service.commands.sync.load_detector", lambda spec, options: model)

    code, out = sync(ls, project, capsys, model="fake:gridprompts", threshold=0.0, prompt_map=prompt_map)
    assert code == 0, out
    assert "prompts: hard hat, PED=pedestrian|person walking, cone=traffic cone|pylon" in out
    (prediction,) = ls.predictions(task)
    regions = sorted(prediction["result"], key=lambda r: r["value"]["x"])
    assert [r["value"]["rectanglelabels"] for r in regions] == [["hard hat"], ["PED"], ["cone"]]
    assert prediction["model_version"] == ls.project(project)["model_version"]
    assert prediction["model_version"].startswith(BASE_VERSION + "+")
    assert (
        " 0 created, 0 replaced, 1 skipped"
        in sync(ls, project, capsys, model="fake:gridprompts", prompt_map=prompt_map)[1]
    )


def test_sync_cli_with_an_owlv2_checkpoint_predicts_under_the_projects_own_labels(
    ls: LabelStudio, media: dict[str, Path], tmp_path: Path
) -> None:
    """The issue's case end to end: labels no COCO model knows, a real OWLv2 checkpoint (tiny, random weights:
    what it finds is noise, under which names it writes it is not), the CLI, a real Label Studio."""
    owlv2 = write_tiny_owlv2(tmp_path / "owlv2")
    project = ls.create_project("sync owlv2", PROMPT_CONFIG)
    ls.add_local_storage(project, media["photo"].parent)
    (task,) = ls.import_tasks(project, [{"image": ls.local_file_url(media["photo"])}])
    prompt_map = tmp_path / "prompts.json"
    prompt_map.write_text('{"cone": ["traffic cone", "pylon"]}')
    env = {**os.environ, "PREANNOTATE_LABEL_STUDIO_API_KEY": ls.token}
    command = [sys.executable, "-m", "service.cli", "sync", "label-studio", "--url", ls.url]
    command += [
        "--project",
        str(project),
        "--model",
        f"hf:{owlv2}",
        "--threshold",
        "0",
        "--prompt-map",
        str(prompt_map),
    ]

    first = subprocess.run([*command, "-q"], capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    assert "prompts: hard hat, PED=pedestrian|person walking, cone=traffic cone|pylon" in first.stderr
    (prediction,) = ls.predictions(task)
    labels = {label for region in prediction["result"] for label in region["value"]["rectanglelabels"]}
    assert labels, prediction
    assert labels <= {"hard hat", "PED", "cone"}, labels  # the project's names, never the prompt text
    assert prediction["model_version"].startswith("owlv2-"), prediction["model_version"]
    assert "+" in prediction["model_version"]
    again = subprocess.run([*command, "-q"], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 replaced, 1 skipped, 0 failed" in again.stderr


VEHICLE_AND_CAR = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Vehicle" predicted_values="car,truck"/><Label value="Car"/>
  </RectangleLabels>
</View>"""


def test_a_job_prompted_with_the_projects_labels_pushes_each_box_under_its_own_label(
    ls: LabelStudio, media: dict[str, Path], tmp_path: Path
) -> None:
    """A job for an open-vocabulary model with no prompts of its own: submitting it reads the project's labels
    (Vehicle is asked for the truck, Car for itself), the worker runs the prompted view, and the push converts by
    label name, so the class Car is written under Car, not where predicted_values sends a model's car."""
    project = ls.create_project("job prompts", VEHICLE_AND_CAR)
    (task,) = ls.import_tasks(project, [{"image": ls.local_file_url(media["photo"])}])
    settings = Settings(
        api_tokens=SecretStr(TOKEN),
        db_path=tmp_path / "jobs.db",
        local_roots=[media["photo"].parent],
        model="fake:gridprompts",
        label_studio_url=ls.url,
        label_studio_api_key=SecretStr(ls.token),
    )
    grid = GridPrompts()
    batcher = DynamicBatcher(grid, max_batch_size=4, max_wait_ms=0)
    batcher.start()
    registry = ModelRegistry([LoadedModel("fake:gridprompts", batcher)])
    store = SqliteJobStore(settings.db_path, max_attempts=1)
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(jobs_routes.router)
    fetcher = Fetcher(settings.fetch_policy())
    app.state.preannotate = AppState(
        settings=settings, auth=TokenAuth([TOKEN]), store=store, fetcher=fetcher, models=registry
    )
    item = {"name": "a", "slots": [{"url": media["photo"].as_uri()}], "external_ids": {"label_studio": str(task)}}
    body = {"items": [item], "destinations": [{"backend": "label_studio", "project": project}], "threshold": 0.0}
    backends = Backends(settings, concurrency=1)
    config = WorkerConfig(concurrency=1, lease_s=30.0, heartbeat_s=5.0, limits=MediaLimits(), work_dir=tmp_path)
    pool = WorkerPool(store, registry, fetcher, config, backends)
    try:
        with TestClient(app) as client:
            answer = client.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 202, answer.text
            pool.start()
            deadline = time.monotonic() + 60
            while (store.depth() or pool.busy) and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        pool.stop(grace_s=5.0)
        backends.close()
        store.close()
        registry.close()
    (prediction,) = ls.predictions(task)
    regions = sorted(prediction["result"], key=lambda r: r["value"]["x"])
    assert [r["value"]["rectanglelabels"] for r in regions] == [["Vehicle"], ["Car"]]
    assert prediction["model_version"].startswith(BASE_VERSION + "+")
    assert ls.project(project)["model_version"] == prediction["model_version"]
