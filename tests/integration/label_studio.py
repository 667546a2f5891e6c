"""A real Label Studio on 127.0.0.1 for integration tests, run from its own venv (label_studio.md §2).

Label Studio never goes into the service venv (its pins and second cv2 break it): it runs from the venv
``tests/tools/make_ls_venv.sh`` creates, at ``$PREANNOTATE_LS_VENV`` or
``~/.cache/preannotate-ci/ls-venv-<version>``. Without it the tests skip, unless
``PREANNOTATE_REQUIRE_LABEL_STUDIO`` is set (CI), where they fail.

A cold start runs ~100 migrations (30-50 s); so the first start's data dir is kept as a template next to
the venv, keyed on the LS version and the test user, and every session starts from a copy (~3 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

LS_VERSION = "1.23.2"
USERNAME = "admin@example.com"
PASSWORD = "admin12345"
TOKEN = "preannotate-ls-test-token-0b7e51c2"  # legacy token (> 5 characters); only ever on loopback
COLD_START_S = 180.0
WARM_START_S = 60.0


def ci_cache_dir() -> Path:
    """Where CI keeps its venvs (the test-only judges' venvs too)."""
    base = os.environ.get("PREANNOTATE_CI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "preannotate-ci"
    )
    return Path(base)


def ls_venv() -> Path:
    return Path(os.environ.get("PREANNOTATE_LS_VENV") or ci_cache_dir() / f"ls-venv-{LS_VERSION}")


def require_label_studio() -> Path:
    """The ``label-studio`` executable; skips (or fails under PREANNOTATE_REQUIRE_LABEL_STUDIO) without it."""
    exe = ls_venv() / "bin" / "label-studio"
    if not exe.exists():
        reason = (
            f"Label Studio venv not found at {ls_venv()}: create it with tests/tools/make_ls_venv.sh "
            "(or point PREANNOTATE_LS_VENV at one)"
        )
        if os.environ.get("PREANNOTATE_REQUIRE_LABEL_STUDIO"):
            pytest.fail(reason)
        pytest.skip(reason)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _environment(data_dir: Path, media_root: Path, home: Path) -> dict[str, str]:
    """A clean environment: LS reads LABEL_STUDIO_X, then HEARTEX_X, then plain X, so a stray PORT, HOST,
    USERNAME, DEBUG or CI from the caller would change its behaviour (§2.3)."""
    return {
        "PATH": f"{ls_venv() / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": USERNAME,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # only takes effect when the org is created
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media_root),
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",  # our ML backend listens on 127.0.0.1
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }


@dataclass
class LabelStudio:
    """A running Label Studio and the REST calls the tests make (as the admin, with the legacy token)."""

    url: str
    media_root: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    token: str = TOKEN

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=60.0, trust_env=False
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.api() as client:
            response = client.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def create_project(self, title: str, label_config: str) -> int:
        return int(self._json("POST", "/api/projects/", json={"title": title, "label_config": label_config})["id"])

    def add_local_storage(self, project_id: int, directory: Path) -> None:
        """Let LS serve files under ``directory`` at ``/data/local-files/?d=<path under media_root>``."""
        body = {"project": project_id, "path": str(directory), "use_blob_urls": False, "title": "media"}
        self._json("POST", "/api/storages/localfiles/", json=body)

    def local_file_url(self, path: Path) -> str:
        return f"/data/local-files/?d={path.relative_to(self.media_root).as_posix()}"

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        answer = self._json(
            "POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=tasks
        )
        return [int(i) for i in answer["task_ids"]]

    def project(self, project_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/projects/{project_id}/"))

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/predictions/", params={"task": task_id}))

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._json("POST", path, **kwargs)

    def personal_access_token(self) -> str:
        """The admin's personal access token (a JWT refresh token), created the way a browser would (§3)."""
        with httpx.Client(base_url=self.url, trust_env=False, timeout=60.0) as web:
            web.get("/user/login/")
            form = {"email": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": web.cookies["csrftoken"]}
            login = web.post("/user/login/", data=form, headers={"Referer": f"{self.url}/user/login/"})
            assert login.status_code == 302, login.text[:500]
            headers = {"X-CSRFToken": web.cookies["csrftoken"], "Referer": self.url}
            created = web.post("/api/token/", headers=headers)
            if created.status_code != 201:  # one per user: a second session rotates it
                created = web.post("/api/token/rotate/", headers=headers)
            assert created.is_success, created.text[:500]
            return str(created.json()["token"])


def _start(data_dir: Path, media_root: Path, home: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    if not port_is_free(port):
        # LS would silently move to the next free port (§2.3).
        raise RuntimeError(f"port {port} is taken")
    exe = require_label_studio()
    home.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            # 127.0.0.1: the default bind is 0.0.0.0. `start` explicitly: a bare `label-studio --version` starts too.
            [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
            env=_environment(data_dir, media_root, home),
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_healthy(process: subprocess.Popen[bytes], port: int, log_path: Path, timeout_s: float) -> None:
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Label Studio exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            # /health does not touch the DB; migrations and the user are done before the socket opens.
            if httpx.get(f"{url}/health", timeout=1.0, trust_env=False).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    else:
        raise TimeoutError(f"Label Studio not healthy after {timeout_s} s:\n{_tail(log_path)}")
    started = re.search(
        r"Starting development server at http://127\.0\.0\.1:(\d+)/", log_path.read_text(errors="replace")
    )
    if started and int(started.group(1)) != port:
        raise RuntimeError(f"Label Studio moved to port {started.group(1)} instead of {port}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def template_dir() -> Path:
    """A migrated data dir with the admin and its legacy token, made once per LS version and user."""
    key = hashlib.sha256(f"{LS_VERSION}\x1f{USERNAME}\x1f{PASSWORD}\x1f{TOKEN}".encode()).hexdigest()[:10]
    template = ci_cache_dir() / f"ls-template-{LS_VERSION}-{key}"
    if (template / ".complete").exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with (template.parent / f"{template.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions (xdist, two CI jobs) build it once
        if (template / ".complete").exists():
            return template
        building = template.with_name(template.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        data, scratch = building / "data", building / "scratch"
        data.mkdir(parents=True)
        (scratch / "media").mkdir(parents=True)
        port = free_port()
        log_path = building / "start.log"
        process = _start(data, scratch / "media", scratch, port, log_path)
        try:
            _wait_healthy(process, port, log_path, COLD_START_S)
        finally:
            _stop(process)
        shutil.rmtree(template, ignore_errors=True)
        shutil.copytree(data, template)
        (template / ".complete").touch()
        shutil.rmtree(building, ignore_errors=True)
    return template


@contextlib.contextmanager
def running_label_studio(root: Path) -> Iterator[LabelStudio]:
    """Start Label Studio from a copy of the template under ``root``; media goes in ``root/media``."""
    require_label_studio()
    template = template_dir()
    data, media, home = root / "ls-data", root / "media", root / "ls-home"
    shutil.copytree(template, data, ignore=shutil.ignore_patterns(".complete"))
    media.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = root / "label-studio.log"
    process = _start(data, media, home, port, log_path)
    try:
        _wait_healthy(process, port, log_path, WARM_START_S)
        yield LabelStudio(url=f"http://127.0.0.1:{port}", media_root=media, process=process, log_path=log_path)
    finally:
        _stop(process)
