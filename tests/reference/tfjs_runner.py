"""The original TF.js graph of a model, run in Node with the pure-JavaScript ``@tensorflow/tfjs`` (CPU backend).

It is the judge of our ONNX conversions of TF.js graph models (issue 17: NanoDet): ``run_tfjs_graph`` feeds the
same float32 tensors to the TF.js graph and returns every output of its signature as numpy arrays. No tfjs-node,
no native binary, no wasm: only JavaScript, so it runs wherever Node does.

The packages (``tfjs/package.json``, pinned by ``tfjs/package-lock.json``) are installed by ``npm ci`` into
``~/.cache/preannotate-ci/tfjs-<hash of package.json + lock>`` (or ``$PREANNOTATE_TFJS_DIR``), once; the runner
script ``tfjs/run_graph.mjs`` is copied there on every use. Without ``node``/``npm`` the tests that need them
skip, unless ``PREANNOTATE_REQUIRE_NODE=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.integration.label_studio import ci_cache_dir

PACKAGE_DIR = Path(__file__).with_name("tfjs")
SCRIPT = "run_graph.mjs"
_LOCKED = ("package.json", "package-lock.json")
_MARKER = ".complete"  # holds the key of a finished install
INSTALL_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 600.0


class TfjsUnavailableError(RuntimeError):
    """``node`` or ``npm`` is missing, or the packages could not be installed."""


class TfjsRunError(RuntimeError):
    """The TF.js runner failed (its message is in the error) or ran past its timeout."""


@dataclass(frozen=True)
class TfjsRun:
    """One run of ``run_graph.mjs``: outputs per case (name -> array), and how long it took."""

    outputs: dict[str, dict[str, np.ndarray]]
    case_ms: dict[str, float]
    load_ms: float
    tfjs_version: str


def package_key() -> str:
    """What decides the install: the hash of package.json and its lock."""
    digest = hashlib.sha256()
    for name in _LOCKED:
        digest.update((PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def tfjs_dir() -> Path:
    return Path(os.environ.get("PREANNOTATE_TFJS_DIR") or ci_cache_dir() / f"tfjs-{package_key()}")


def missing_tools() -> list[str]:
    return [tool for tool in ("node", "npm") if shutil.which(tool) is None]


def _is_installed(target: Path, key: str) -> bool:
    marker = target / _MARKER
    return marker.is_file() and marker.read_text().strip() == key


def _npm_ci(staging: Path, key: str) -> None:
    for name in _LOCKED:
        shutil.copy2(PACKAGE_DIR / name, staging / name)
    # --prefer-offline: npm's own cache first (CI keeps it); --ignore-scripts: the packages need no build step
    command = ["npm", "ci", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund", "--no-update-notifier"]
    try:
        done = subprocess.run(command, cwd=staging, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise TfjsUnavailableError(f"npm ci in {staging} ran past {INSTALL_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise TfjsUnavailableError(f"npm ci of {PACKAGE_DIR / 'package.json'} failed ({done.returncode}):\n{tail}")
    (staging / _MARKER).write_text(key)


def _install(target: Path, key: str) -> None:
    """npm ci into a sibling temp dir, then rename it into place (a reader never sees half an install)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    stale = target.with_name(f".{target.name}-stale-{os.getpid()}")
    try:
        _npm_ci(staging, key)
        if target.exists() and not _is_installed(target, key):
            target.rename(stale)  # an install for another lock (PREANNOTATE_TFJS_DIR reused): replace it
        try:
            staging.rename(target)
        except OSError:
            if not _is_installed(target, key):  # not a concurrent installer that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)


def _refresh_script(target: Path) -> None:
    """The runner script is not part of the key: copy it whenever it differs, atomically."""
    source = (PACKAGE_DIR / SCRIPT).read_bytes()
    dest = target / SCRIPT
    if dest.is_file() and dest.read_bytes() == source:
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{SCRIPT}-", dir=target)
    with os.fdopen(fd, "wb") as handle:
        handle.write(source)
    os.replace(tmp, dest)


def ensure_tfjs() -> Path:
    """The directory holding the installed packages and ``run_graph.mjs``; installs them on first use.

    Raises:
        TfjsUnavailableError: ``node`` or ``npm`` is not installed, or ``npm ci`` failed.
    """
    missing = missing_tools()
    if missing:
        raise TfjsUnavailableError(
            f"{' and '.join(missing)} not found on PATH: the TF.js reference needs Node.js 20+ and npm "
            "(apt-get install -y --no-install-recommends nodejs npm)"
        )
    target, key = tfjs_dir(), package_key()
    if not _is_installed(target, key):
        _install(target, key)
    _refresh_script(target)
    return target


def require_tfjs() -> Path:
    """``ensure_tfjs()`` for a test: skips where it is unavailable, fails instead under PREANNOTATE_REQUIRE_NODE=1."""
    try:
        return ensure_tfjs()
    except TfjsUnavailableError as exc:
        if os.environ.get("PREANNOTATE_REQUIRE_NODE") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def _write_inputs(in_dir: Path, inputs: Mapping[str, np.ndarray], feed: str) -> None:
    entries = []
    for index, (name, array) in enumerate(inputs.items()):
        if array.dtype != np.float32:
            raise TypeError(f"input {name!r} is {array.dtype}: the TF.js reference is fed float32 only")
        file = f"{index}.f32"
        np.ascontiguousarray(array, dtype="<f4").tofile(in_dir / file)
        entries.append({"name": name, "feed": feed, "shape": list(array.shape), "file": file})
    (in_dir / "manifest.json").write_text(json.dumps({"inputs": entries}))


def _read_outputs(out_dir: Path) -> TfjsRun:
    manifest = json.loads((out_dir / "manifest.json").read_text())
    outputs: dict[str, dict[str, np.ndarray]] = {}
    case_ms: dict[str, float] = {}
    for case in manifest["cases"]:
        outputs[case["name"]] = {
            out["name"]: np.fromfile(out_dir / out["file"], dtype="<f4").reshape(out["shape"])
            for out in case["outputs"]
        }
        case_ms[case["name"]] = float(case["ms"])
    return TfjsRun(outputs, case_ms, float(manifest["load_ms"]), str(manifest["tfjs"]))


def run_tfjs(
    model_json: Path,
    weights_bin: Path,
    inputs: Mapping[str, np.ndarray],
    feed: str,
    *,
    timeout_s: float = RUN_TIMEOUT_S,
) -> TfjsRun:
    """Runs the TF.js graph ``model_json`` on each input (case name -> float32 array fed to ``feed``).

    ``weights_bin`` is the model's single .bin, or the directory of the .bin files its weightsManifest names.
    Raises TfjsUnavailableError without node/npm, TfjsRunError when the runner fails or times out.
    """
    if not inputs:
        raise ValueError("run_tfjs needs at least one input")
    runner = ensure_tfjs()
    with tempfile.TemporaryDirectory(prefix="pa-tfjs-") as tmp:
        in_dir, out_dir = Path(tmp, "in"), Path(tmp, "out")
        in_dir.mkdir()
        _write_inputs(in_dir, inputs, feed)
        command = ["node", str(runner / SCRIPT), str(model_json), str(weights_bin), str(in_dir), str(out_dir)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise TfjsRunError(f"the TF.js runner on {model_json} ran past {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            raise TfjsRunError(f"the TF.js runner failed on {model_json}: {_runner_message(done)}")
        return _read_outputs(out_dir)


def _runner_message(done: subprocess.CompletedProcess[str]) -> str:
    """The runner's own message (from its ``run_graph:`` line on), past tfjs's banner on stderr."""
    lines = done.stderr.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("run_graph: ")]
    if not starts:
        return "\n".join(lines[-10:]) or f"no message, exit status {done.returncode}"
    return "\n".join(lines[starts[-1] :]).removeprefix("run_graph: ")


def run_tfjs_graph(
    model_json: Path,
    weights_bin: Path,
    inputs: Mapping[str, np.ndarray],
    feed: str,
    *,
    timeout_s: float = RUN_TIMEOUT_S,
) -> dict[str, dict[str, np.ndarray]]:
    """Every output of the graph per case: case name -> output name (as in its signature) -> float32 array."""
    return run_tfjs(model_json, weights_bin, inputs, feed, timeout_s=timeout_s).outputs
