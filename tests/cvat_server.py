"""A real CVAT 2.23.1 for integration tests, run by the shared ``cvat-server.sh`` (no Docker; issue 18).

The script lives outside the repository, at ``../shared/tools/cvat-server.sh`` beside a checkout (any parent of
the checkout is searched, so a worktree finds it too), or at ``$PREANNOTATE_CVAT_SERVER_SCRIPT``. It keeps its
~1 GB venv and its instance (PostgreSQL, Redis, media) under ``$CVAT_SERVER_CACHE`` (default
``~/.cache/cvat-server``): a start is seconds when the server's state is warm, ~80 s when only the venv is.
Building the venv takes 5-10 minutes, longer than a test may run, so the tests never build it: run
``cvat-server.sh start`` once (CI does, see .ci/run).

Without the script, PostgreSQL or the venv (and a Python 3.10 to build it), or when the start fails, the CVAT
tests skip, unless ``PREANNOTATE_REQUIRE_CVAT=1`` (CI), where they fail with the reason and the script's log.

A server that is already running (a developer's, or one shared by several sessions on a machine) is used and
left running; the fixture stops only a server it started itself. The database persists between runs: every
project, task and webhook the helper creates gets a unique name.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from tests.integration.label_studio import ci_cache_dir

if TYPE_CHECKING:
    from cvat_sdk import Client

CVAT_VERSION = "2.23.1"
SCRIPT_NAME = "cvat-server.sh"
START_TIMEOUT_S = 240.0  # cold state (initdb + ~300 migrations) is ~80 s here; under pytest's 300 s per test
STATUS_CHECK_PERIOD_S = 0.5  # the SDK polls task creation and exports this often (its default: 5 s)
REQUEST_TIMEOUT_S = 60.0
# create_task's keywords that belong to the task itself, not to its data (the SDK's upload_data drops them)
TASK_SPEC_PARAMS = frozenset({"segment_size", "overlap"})
# what the SDK's upload_data passes on to POST /api/tasks/{id}/data; anything else it drops silently
DATA_PARAMS = frozenset(
    {"chunk_size", "image_quality", "sorting_method", "start_frame", "stop_frame", "use_cache", "use_zip_chunks"}
)

LabelSpec = str | Mapping[str, Any]


def server_script() -> Path | None:
    """``$PREANNOTATE_CVAT_SERVER_SCRIPT``, else ``shared/tools/cvat-server.sh`` beside the checkout or a parent."""
    override = os.environ.get("PREANNOTATE_CVAT_SERVER_SCRIPT")
    if override:
        return Path(override) if Path(override).is_file() else None
    repo = Path(__file__).resolve().parent.parent
    for folder in (repo, *repo.parents):
        candidate = folder / "shared" / "tools" / SCRIPT_NAME
        if candidate.is_file():
            return candidate
    return None


def server_cache() -> Path:
    """The script's cache (``CVAT_SERVER_CACHE``), where its venv lives."""
    return Path(os.environ.get("CVAT_SERVER_CACHE") or Path.home() / ".cache" / "cvat-server")


def python_310() -> str | None:
    """The interpreter the script would build CVAT's venv with (its own search order), or None."""
    if os.environ.get("CVAT_PYTHON"):
        return os.environ["CVAT_PYTHON"]
    # pyenv's, then one on PATH: the script looks in the same places (this only words the skip message)
    found = sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / "3.10*" / "bin" / "python3.10")))
    return found[0] if found else shutil.which("python3.10")


def missing_prerequisite() -> str | None:
    """Why the script could not start a server here, or None (checked only when none is running)."""
    postgres = [tool for tool in ("initdb", "pg_ctl") if not glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")]
    if postgres:
        install = "apt-get install -y --no-install-recommends postgresql"
        return f"PostgreSQL's {' and '.join(postgres)} not found ({install})"
    venv = server_cache() / f"venv-{CVAT_VERSION}"
    if not (venv / ".complete").exists():
        python = python_310()
        needs = f"with {python}" if python else "which needs a Python 3.10 (none found; set CVAT_PYTHON)"
        return (
            f"CVAT's venv {venv} is not built: run `bash {server_script()} start` once "
            f"(5-10 min, too long for a test; {needs})"
        )
    return None


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("PREANNOTATE_REQUIRE_CVAT") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _run_script(script: Path, command: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), command],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def is_running(script: Path) -> bool:
    """Whether the script's CVAT (its uvicorn) is up; `status` prints ``server: running (pid N)``."""
    return any(line.startswith("server: running") for line in _run_script(script, "status").stdout.splitlines())


def unique(name: str) -> str:
    """CVAT's database outlives a test run: a name no earlier run or other session used."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def label_specs(labels: Sequence[LabelSpec]) -> list[dict[str, Any]]:
    """Label names become CVAT labels of any shape type; dicts pass as they are (attributes, type...)."""
    return [
        {"name": label, "type": "any", "attributes": []} if isinstance(label, str) else dict(label) for label in labels
    ]


def split_data_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task spec fields, upload_data params) from create_task's keywords; ``frame_filter="step=N"`` becomes the
    SDK's ``frame_step=N``. An unknown keyword is an error: the SDK would drop it without a word."""
    spec: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for key, value in params.items():
        if key in TASK_SPEC_PARAMS:
            spec[key] = value
        elif key in DATA_PARAMS:
            data[key] = value
        elif key == "frame_filter":
            step = str(value).removeprefix("step=")
            if not step.isdigit() or step == str(value):
                raise ValueError(f"frame_filter must be 'step=N', got {value!r}")
            data["frame_step"] = int(step)
        else:
            raise TypeError(f"create_task: unknown data parameter {key!r}")
    return spec, data


@dataclass(frozen=True)
class CvatServer:
    """A running CVAT and the calls the tests make as its admin (basic auth; ``token()`` for token auth)."""

    url: str
    user: str
    password: str

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, auth=(self.user, self.password), timeout=REQUEST_TIMEOUT_S, trust_env=False
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.api() as client:
            response = client.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def sdk(self) -> Client:
        """A logged-in ``cvat_sdk.Client`` (close it: ``with cvat.sdk() as client``)."""
        from cvat_sdk import Client, Config

        client = Client(self.url, config=Config(status_check_period=STATUS_CHECK_PERIOD_S))
        client.login((self.user, self.password))
        return client

    def token(self) -> str:
        """The admin's API key from ``POST /api/auth/login``, what ``Authorization: Token <key>`` takes."""
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
            response = client.post("/api/auth/login", json={"username": self.user, "password": self.password})
        assert response.is_success, f"login: {response.status_code} {response.text[:500]}"
        return str(response.json()["key"])

    def create_project(self, name: str, labels: Sequence[LabelSpec]) -> int:
        """A project named ``name-<uuid>`` with these labels; its id."""
        body = {"name": unique(name), "labels": label_specs(labels)}
        return int(self._json("POST", "/api/projects", json=body)["id"])

    def create_task(
        self,
        name: str,
        files: Sequence[Path],
        *,
        project_id: int | None = None,
        labels: Sequence[LabelSpec] | None = None,
        **data_params: Any,
    ) -> int:
        """A task named ``name-<uuid>`` with ``files`` uploaded; its id once CVAT has prepared the data.

        ``data_params``: start_frame, stop_frame, frame_filter="step=N", chunk_size, image_quality, sorting_method,
        use_cache, use_zip_chunks, and the task's segment_size and overlap.
        """
        from cvat_sdk.core.proxies.tasks import ResourceType

        if project_id is None and not labels:
            raise ValueError("a task outside a project needs labels")
        spec_params, upload_params = split_data_params(data_params)
        spec: dict[str, Any] = {"name": unique(name), **spec_params}
        if project_id is not None:
            spec["project_id"] = project_id
        if labels:
            spec["labels"] = label_specs(labels)
        with self.sdk() as client:
            task = client.tasks.create_from_data(
                spec=spec,  # type: ignore[arg-type]  # the SDK's own model accepts the plain dict
                resources=[str(path) for path in files],
                resource_type=ResourceType.LOCAL,
                data_params=upload_params,
            )
            return int(task.id)

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/tasks/{task_id}"))

    def data_meta(self, task_id: int) -> dict[str, Any]:
        """``GET /api/tasks/{id}/data/meta``: size, start/stop frame, frame filter, each frame's size."""
        return dict(self._json("GET", f"/api/tasks/{task_id}/data/meta"))

    def annotations(self, task_id: int) -> dict[str, Any]:
        """``GET /api/tasks/{id}/annotations``: its tags, shapes and tracks."""
        return dict(self._json("GET", f"/api/tasks/{task_id}/annotations"))

    def export_xml(self, task_id: int, fmt: str = "CVAT for video 1.1") -> str:
        """``annotations.xml`` of an export without images (``CVAT for video 1.1`` or ``CVAT for images 1.1``)."""
        with tempfile.TemporaryDirectory(prefix="pa-cvat-export-") as folder, self.sdk() as client:
            archive = Path(folder) / "export.zip"
            client.tasks.retrieve(task_id).export_dataset(fmt, archive, include_images=False)
            with zipfile.ZipFile(archive) as opened:
                return opened.read("annotations.xml").decode()

    def create_webhook(self, project_id: int, url: str, secret: str, events: Sequence[str]) -> int:
        """A project webhook posting JSON to ``url``, signed with ``secret`` (``X-Signature-256``); its id."""
        body = {
            "target_url": url,
            "description": unique("preannotate-test"),
            "type": "project",
            "project_id": project_id,
            "content_type": "application/json",
            "secret": secret,
            "events": list(events),
            "is_active": True,
            "enable_ssl": False,
        }
        return int(self._json("POST", "/api/webhooks", json=body)["id"])


def _read_env(script: Path) -> CvatServer:
    """``cvat-server.sh env`` prints ``export CVAT_URL=... CVAT_USER=... CVAT_PASSWORD=...``."""
    answer = _run_script(script, "env")
    values = dict(word.split("=", 1) for word in shlex.split(answer.stdout) if "=" in word)
    missing = {"CVAT_URL", "CVAT_USER", "CVAT_PASSWORD"} - values.keys()
    if answer.returncode != 0 or missing:
        raise RuntimeError(f"`{script} env` gave no {sorted(missing)}:\n{_tail(answer.stdout + answer.stderr)}")
    return CvatServer(url=values["CVAT_URL"], user=values["CVAT_USER"], password=values["CVAT_PASSWORD"])


def _start(script: Path) -> str | None:
    """Start the server; None when it came up, else why not (with the script's last lines)."""
    reason = missing_prerequisite()
    if reason:
        return reason
    try:
        started = _run_script(script, "start", timeout_s=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        return f"`{script} start` did not finish in {START_TIMEOUT_S:.0f} s:\n{_tail(output)}"
    if started.returncode != 0:
        return f"`{script} start` failed with exit {started.returncode}:\n{_tail(started.stdout + started.stderr)}"
    return None


@contextlib.contextmanager
def running_cvat() -> Iterator[CvatServer]:
    """The script's CVAT, started if it is not running (and then stopped afterwards); skips without it."""
    script = server_script()
    if script is None:
        where = os.environ.get("PREANNOTATE_CVAT_SERVER_SCRIPT") or f"shared/tools/{SCRIPT_NAME} beside the checkout"
        skip_or_fail(f"CVAT server script not found ({where}); set PREANNOTATE_CVAT_SERVER_SCRIPT")
    ci_cache_dir().mkdir(parents=True, exist_ok=True)
    with (ci_cache_dir() / "cvat-server.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions must not start it at once
        started_here = not is_running(script)
        if started_here:
            failure = _start(script)
            if failure:
                _run_script(script, "stop")  # whatever part of it did start
                skip_or_fail(failure)
    try:
        yield _read_env(script)
    finally:
        if started_here:
            _run_script(script, "stop")
