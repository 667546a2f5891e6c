"""The SSRF guard (reliability.md §3.1, §5 row 8), limits and redaction of ``service.pipeline.fetch``.

Everything runs against servers on loopback. Fake public names resolve through an injected resolver; numeric
spellings go through the real ``getaddrinfo``, which is what turns ``2852039166`` into 169.254.169.254.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import Fetcher, FetchPolicy, redact_url, system_resolver
from tests.unit.service import fetch_servers as fs

CANARY = "CANARY-7f3a9c"
PUBLIC4, PUBLIC6 = "93.184.215.14", "2606:4700::1111"
_NUMERIC = re.compile(r"^[0-9a-fx.:]+$")


class FakeResolver:
    """Names from a table; a name with several answers gets the next one on each call (rebinding)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        with self._lock:
            self.calls.append(host)
            answers = self.table.get(host)
            if answers is None:
                if _NUMERIC.match(host):  # numeric spellings only: never a real DNS query
                    return system_resolver(host, port)
                raise socket.gaierror(socket.EAI_NONAME, "unknown name")
            return answers.pop(0) if len(answers) > 1 else answers[0]


def one(*ips: str) -> list[list[str]]:
    return [list(ips)]


@dataclass
class Net:
    origin: fs.LoopServer  # allow-listed as media.example.com
    origin2: fs.LoopServer  # allow-listed as media2.example.com
    canaries: list[fs.LoopServer]  # must never be hit
    twin: fs.LoopServer | None  # 127.0.0.2 on origin's port: the rebinding target
    fmt: dict[str, object] = field(default_factory=dict)

    def canary_hits(self) -> list[fs.Hit]:
        return [hit for server in self.canaries for hit in server.hits]


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    origin, canary1 = fs.LoopServer(), fs.LoopServer()
    canary2, canary6 = fs.try_server("127.0.0.2"), fs.try_server("::1")
    origin2 = fs.try_server("127.0.0.2") or fs.LoopServer()
    twin = fs.try_server("127.0.0.2", origin.port)
    canaries = [s for s in (canary1, canary2, canary6, twin) if s is not None]
    po, p1 = origin.port, canary1.port
    p2, p6 = (canary2 or canary1).port, (canary6 or canary1).port
    net = Net(origin, origin2, canaries, twin, fmt={"po": po, "p1": p1, "p2": p2, "p6": p6})
    origin.routes.update(
        {
            "/ok.bin": fs.body(b"hello bytes", content_type="image/png"),
            "/small-chunked": fs.chunked(b"ab", 3),
            "/big-chunked": fs.chunked(b"x" * 1000, 50),
            "/big-declared": fs.declares(10_000),
            "/stall": fs.stall(3),
            "/drip": fs.chunked(b"x", 200, delay_s=0.05),
            "/no-location": fs.body(b"", status=302),
            "/hop/1": fs.redirect(f"http://media2.example.com:{origin2.port}/hop/2?n={CANARY}"),
            **{f"/status/{n}": fs.body(b"nope", status=n) for n in (401, 403, 404, 410, 429, 500, 503)},
            **{f"/chain/{n}": fs.redirect(f"/chain/{n - 1}") for n in range(1, 5)},
            "/chain/0": fs.redirect(f"http://trusted-canary.example.com:{p1}/"),  # reached only past the limit
            "/secret-redirect": fs.redirect(f"http://evil.example.com:{p1}/x?token={CANARY}"),
        }
    )
    origin2.routes.update(
        {"/hop/2": fs.redirect("/hop/3"), "/hop/3": fs.redirect(f"http://media.example.com:{po}/ok.bin")}
    )
    for name, target in REDIRECTS.items():
        origin.routes[f"/r/{name}"] = fs.redirect(target.format(**net.fmt))
    yield net
    for server in {id(s): s for s in (origin, origin2, *canaries)}.values():
        server.close()


def table(net: Net) -> dict[str, list[list[str]]]:
    return {
        "media.example.com": one("127.0.0.1"),
        "media2.example.com": one(net.origin2.host),
        "trusted-canary.example.com": one("127.0.0.1"),
        "portpinned.example.com": one("127.0.0.1"),
        "evil.example.com": one("127.0.0.1"),
        "evil2.example.com": one("127.0.0.2"),
        "evil6.example.com": one("::1"),
        "gcp-alias.example.com": one("169.254.169.254"),
        "aws6.example.com": one("fd00:ec2::254"),
        "ali.example.com": one("100.100.100.200"),
        "mixed.example.com": one(PUBLIC4, "127.0.0.1"),
        "mixed-rev.example.com": one("127.0.0.1", PUBLIC4),
        "mixed6.example.com": one(PUBLIC6, "::1"),
        "rebind.example.com": [["127.0.0.1"], [PUBLIC4]],
        "ten.example.com": one("10.1.2.3"),
        "p172.example.com": one("172.16.5.4"),
        "p192.example.com": one("192.168.0.1"),
        "cgnat.example.com": one("100.64.0.1"),
        "zero.example.com": one("0.0.0.0"),
        "mcast.example.com": one("224.0.0.251"),
        "mapped.example.com": one("::ffff:127.0.0.1"),
        "ula.example.com": one("fd12:3456::1"),
        "nat64.example.com": one("64:ff9b::a9fe:a9fe"),
        "garbage.example.com": one("not-an-ip"),
    }


def make_fetcher(net: Net, root: Path | None = None, /, **overrides: object) -> tuple[Fetcher, FakeResolver]:
    fmt = net.fmt
    settings: dict[str, object] = {
        "local_roots": (root,) if root else (),
        "allowed_hosts": frozenset(
            {
                "media.example.com",
                "media2.example.com",
                "trusted-canary.example.com",
                f"portpinned.example.com:{fmt['po']}",
            }
        ),
        # Canary ports pass the port rule, so the address checks are the ones that must stop them.
        "extra_ports": frozenset({fmt["p1"], fmt["p2"], fmt["p6"]}),
        "connect_timeout_s": 0.5,
        "read_timeout_s": 1.0,
        "total_timeout_s": 5.0,
    }
    settings.update(overrides)
    resolver = FakeResolver(table(net))
    return Fetcher(FetchPolicy(**settings), resolver=resolver), resolver  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fetch-local")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "inside.txt").write_bytes(b"local bytes")
    (root / "link-in.txt").symlink_to(root / "inside.txt")
    (outside / "secret.txt").write_bytes(b"secret")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escdir").symlink_to(outside)
    os.mkfifo(root / "fifo")
    return root


# --- the battery: every one refused with URL_NOT_ALLOWED, no canary hit ----------------------------------------------

REDIRECTS = {
    "loopback": "http://127.0.0.1:{p1}/",
    "evil": "http://evil.example.com:{p1}/",
    "evil2": "http://evil2.example.com:{p2}/",
    "v6": "http://[::1]:{p6}/",
    "mapped": "http://[::ffff:127.0.0.1]:{p1}/",
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "decimal": "http://2130706433:{p1}/",
    "schemeless": "//127.0.0.1:{p1}/x",
    "localhost": "http://localhost:{p1}/",
    "file": "file:///etc/passwd",
    "gopher": "gopher://127.0.0.1:{p1}/_GET",
    "data": "data:text/plain,hello",
    "s3": "s3://bucket/key",
    "userinfo": "http://u:p@media.example.com:{po}/ok.bin",
}
ADDR, NAME, PORT, SCHEME, CREDS, MALFORMED = (
    "non-public address",
    "host name not allowed",
    "is not allowed",
    "only https",
    "credentials",
    "malformed",
)
OUTSIDE = "outside the allowed local roots"
BATTERY: list[tuple[str, str]] = [
    # numeric spellings, resolved by the real getaddrinfo
    ("http://2852039166/", ADDR),
    ("http://0xa9fea9fe/", ADDR),
    ("http://0251.0376.0251.0376/", MALFORMED),  # httpx refuses it; getaddrinfo would give 169.254.169.254
    ("http://169.254.43518/", ADDR),
    ("http://0xA9.0xFE.0xA9.0xFE/", ADDR),
    ("http://169.254.169.254/latest/meta-data/", ADDR),
    ("http://169.254.170.2/v2/credentials", ADDR),
    ("http://100.100.100.200/latest/meta-data/", ADDR),
    ("http://127.1:{p1}/", ADDR),
    ("http://127.0.0.1:{p1}/", ADDR),
    ("http://2130706433:{p1}/", ADDR),
    ("http://0x7f000001:{p1}/", ADDR),
    ("http://017700000001:{p1}/", ADDR),
    ("http://0177.0.0.1:{p1}/", MALFORMED),
    ("http://127.000.000.001:{p1}/", MALFORMED),
    ("http://0:{p1}/", ADDR),
    ("http://0.0.0.0:{p1}/", ADDR),
    ("http://127.0.0.2:{p2}/", ADDR),
    ("HTTP://127.0.0.1:{p1}/", ADDR),
    # IPv6 and IPv4-in-IPv6
    ("http://[::1]:{p6}/", ADDR),
    ("http://[::]:{p6}/", ADDR),
    ("http://[::ffff:127.0.0.1]:{p1}/", ADDR),
    ("http://[0:0:0:0:0:ffff:7f00:1]:{p1}/", ADDR),
    ("http://[::ffff:169.254.169.254]/", ADDR),
    ("http://[::127.0.0.1]:{p1}/", ADDR),
    ("http://[2002:7f00:1::1]/", ADDR),
    ("http://[2002:a9fe:a9fe::1]/", ADDR),
    ("http://[64:ff9b::7f00:1]:{p1}/", ADDR),
    ("http://[64:ff9b::a9fe:a9fe]/", ADDR),
    ("http://[64:ff9b:1::a00:1]/", ADDR),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", ADDR),  # Teredo, client 127.0.0.1
    ("http://[fd00:ec2::254]/latest/meta-data/", ADDR),
    ("http://[fe80::1]/", ADDR),
    ("http://[fe80::1%25eth0]/", MALFORMED),
    ("http://[fc00::1]/", ADDR),
    ("http://[ff02::1]/", ADDR),
    ("http://[2001:db8::1]/", ADDR),
    # private, shared, multicast, reserved ranges
    ("http://10.0.0.1/", ADDR),
    ("http://10.255.255.255/", ADDR),
    ("http://172.16.0.1/", ADDR),
    ("http://172.31.255.254/", ADDR),
    ("http://192.168.1.1/", ADDR),
    ("http://100.64.0.1/", ADDR),
    ("http://100.127.255.254/", ADDR),
    ("http://224.0.0.1/", ADDR),
    ("http://239.255.255.250/", ADDR),
    ("http://255.255.255.255/", ADDR),
    ("http://240.0.0.1/", ADDR),
    ("http://198.18.0.1/", ADDR),
    ("http://192.0.2.1/", ADDR),
    # names
    ("http://localhost:{p1}/", NAME),
    ("http://LOCALHOST:{p1}/", NAME),
    ("http://localhost.:{p1}/", NAME),
    ("http://api.localhost:{p1}/", NAME),
    ("http://metadata.google.internal/computeMetadata/v1/", NAME),
    ("http://metadata/", NAME),
    ("http://gcp-alias.example.com/", ADDR),
    ("http://aws6.example.com/", ADDR),
    ("http://ali.example.com/", ADDR),
    ("http://evil.example.com:{p1}/", ADDR),
    ("http://evil2.example.com:{p2}/", ADDR),
    ("http://evil6.example.com:{p6}/", ADDR),
    ("https://evil.example.com:{p1}/", ADDR),
    ("http://ten.example.com/", ADDR),
    ("http://p172.example.com/", ADDR),
    ("http://p192.example.com/", ADDR),
    ("http://cgnat.example.com/", ADDR),
    ("http://zero.example.com/", ADDR),
    ("http://mcast.example.com/", ADDR),
    ("http://mapped.example.com/", ADDR),
    ("http://ula.example.com/", ADDR),
    ("http://nat64.example.com/", ADDR),
    ("http://garbage.example.com/", "not an address"),
    ("http://portpinned.example.com:{p1}/", ADDR),  # allow-listed for another port only
    # mixed records and rebinding
    ("http://mixed.example.com:{p1}/", ADDR),
    ("http://mixed-rev.example.com:{p1}/", ADDR),
    ("http://mixed6.example.com:{p6}/", ADDR),
    ("http://rebind.example.com:{p1}/", ADDR),
    # ports
    ("http://evil.example.com:22/", PORT),
    ("http://evil.example.com:6379/", PORT),
    ("http://evil.example.com:8080/", PORT),
    ("http://evil.example.com:443/", PORT),
    ("https://evil.example.com:80/", PORT),
    ("http://evil.example.com:0/", PORT),
    ("http://evil.example.com:65536/", PORT),
    # userinfo
    ("http://user:pass@media.example.com:{po}/ok.bin", CREDS),
    ("http://user@evil.example.com:{p1}/", CREDS),
    ("http://media.example.com@127.0.0.1:{p1}/", CREDS),
    ("http://:@127.0.0.1:{p1}/", CREDS),
    ("http://media.example.com%40x@127.0.0.1:{p1}/", CREDS),
    ("http://media.example.com\\@127.0.0.1:{p1}/", CREDS),
    # schemes and malformed URLs
    ("gopher://127.0.0.1:{p1}/_GET%20/", SCHEME),
    ("ftp://evil.example.com/x", SCHEME),
    ("data:text/plain,hello", SCHEME),
    ("javascript:alert(1)", SCHEME),
    ("dict://127.0.0.1:{p1}/info", SCHEME),
    ("ldap://127.0.0.1:{p1}/", SCHEME),
    ("ws://127.0.0.1:{p1}/", SCHEME),
    ("//127.0.0.1:{p1}/", SCHEME),
    ("127.0.0.1:{p1}/x", SCHEME),
    ("/etc/passwd", SCHEME),
    ("", SCHEME),
    ("http:///path", MALFORMED),
    ("http://", MALFORMED),
    ("s3://not-allowed/key", "bucket not allowed"),
    # file:
    ("file:///etc/passwd", OUTSIDE),
    ("file://localhost/etc/passwd", OUTSIDE),
    ("file://{root}/../outside/secret.txt", OUTSIDE),
    ("file://{root}/%2e%2e/outside/secret.txt", OUTSIDE),
    ("file://{root}/escape.txt", OUTSIDE),
    ("file://{root}/escdir/secret.txt", OUTSIDE),
    ("file://{root}/nothing/../../outside/missing.txt", OUTSIDE),
    ("file://remote.example.com{root}/inside.txt", "must not name a host"),
    ("file://{root}/inside%00.txt", MALFORMED),
    ("file:inside.txt", "absolute path"),
    # redirects from an allow-listed host to somewhere refused
    *((f"http://media.example.com:{{po}}/r/{name}", "") for name in REDIRECTS),
    ("http://media.example.com:{po}/chain/4", "more than 3 redirects"),  # 5 redirects, then the canary
]


def test_the_battery_is_large_enough() -> None:
    assert len(BATTERY) >= 60


@pytest.mark.parametrize(("template", "reason"), BATTERY, ids=[f"{i:03d}" for i in range(len(BATTERY))])
def test_refused(template: str, reason: str, net: Net, local_root: Path, tmp_path: Path) -> None:
    fetcher, resolver = make_fetcher(net, local_root)
    url = template.format(**net.fmt, root=local_root)

    with pytest.raises(PreannotateError) as err:
        fetcher.fetch(url, tmp_path)

    assert err.value.code is ErrorCode.URL_NOT_ALLOWED, err.value
    assert reason in err.value.message
    assert net.canary_hits() == []
    assert list(tmp_path.iterdir()) == []
    assert len(resolver.calls) <= 1 + url.count("/r/") + url.count("/chain/") * 3  # once per hop


def test_file_urls_refused_without_roots(net: Net, local_root: Path, tmp_path: Path) -> None:
    fetcher, _ = make_fetcher(net)
    with pytest.raises(PreannotateError) as err:
        fetcher.fetch(f"file://{local_root}/inside.txt", tmp_path)
    assert err.value.code is ErrorCode.URL_NOT_ALLOWED


# --- what is allowed works -----------------------------------------------------------------------------------------


def test_fetches_an_allowlisted_host(net: Net, tmp_path: Path) -> None:
    fetcher, resolver = make_fetcher(net)
    po = net.fmt["po"]

    got = fetcher.fetch(f"http://media.example.com:{po}/ok.bin?X-Amz-Signature={CANARY}", tmp_path)

    assert got.path.read_bytes() == b"hello bytes"
    assert (got.size_bytes, got.content_type, got.temporary) == (11, "image/png", True)
    assert got.path.parent == tmp_path
    assert got.path.name.startswith("fetch-")
    assert got.path.suffix == ".bin"
    assert resolver.calls == ["media.example.com"]
    hit = net.origin.hits[-1]
    assert hit == fs.Hit(f"/ok.bin?X-Amz-Signature={CANARY}", f"media.example.com:{po}")  # query kept, Host set


def test_follows_three_redirects_resolving_once_per_hop(net: Net, tmp_path: Path) -> None:
    fetcher, resolver = make_fetcher(net)

    got = fetcher.fetch(f"http://media.example.com:{net.fmt['po']}/hop/1", tmp_path)

    assert got.path.read_bytes() == b"hello bytes"
    assert resolver.calls == ["media.example.com", "media2.example.com", "media2.example.com", "media.example.com"]
    assert net.origin2.hits[-1].host == f"media2.example.com:{net.origin2.port}"


def test_rebinding_cannot_move_the_connection(net: Net, tmp_path: Path) -> None:
    """Given a name that answers 127.0.0.1, then 127.0.0.2: the request goes to the first, checked answer."""
    if net.twin is None:
        pytest.skip("127.0.0.2 cannot be bound on the origin's port")
    po = net.fmt["po"]
    fetcher, resolver = make_fetcher(net, allowed_hosts=frozenset({"rebind.example.com"}))
    resolver.table["rebind.example.com"] = [["127.0.0.1"], ["127.0.0.2"]]

    got = fetcher.fetch(f"http://rebind.example.com:{po}/ok.bin", tmp_path)

    assert got.path.read_bytes() == b"hello bytes"
    assert resolver.calls == ["rebind.example.com"]
    assert net.twin.hits == []


@pytest.mark.parametrize(("public", "netloc"), [(PUBLIC4, PUBLIC4), (PUBLIC6, f"[{PUBLIC6}]")])
def test_connects_to_the_validated_address_with_host_and_sni(
    public: str, netloc: str, net: Net, tmp_path: Path
) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"ok", headers={"Content-Type": "image/jpeg"})

    resolver = FakeResolver({"cdn.example.com": [[public], ["127.0.0.1"]]})  # public, then rebinds to loopback
    fetcher = Fetcher(FetchPolicy(), resolver=resolver, transport=httpx.MockTransport(answer))

    got = fetcher.fetch("https://cdn.example.com/a/b.jpg?sig=1", tmp_path)

    assert got.path.read_bytes() == b"ok"
    assert resolver.calls == ["cdn.example.com"]
    (request,) = seen
    assert str(request.url) == f"https://{netloc}/a/b.jpg?sig=1"
    assert request.headers["host"] == "cdn.example.com"
    assert request.extensions["sni_hostname"] == "cdn.example.com"
    assert net.canary_hits() == []


def test_reads_file_urls_under_a_root_in_place(net: Net, local_root: Path, tmp_path: Path) -> None:
    fetcher, _ = make_fetcher(net, local_root)

    direct = fetcher.fetch(f"file://{local_root}/inside.txt", tmp_path)
    linked = fetcher.fetch(f"file://{local_root}/link-in.txt", tmp_path)

    assert direct.path == linked.path == (local_root / "inside.txt").resolve()
    assert (direct.size_bytes, direct.content_type, direct.temporary) == (11, None, False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "code"),
    [("missing.txt", ErrorCode.INPUT_NOT_FOUND), ("fifo", ErrorCode.INPUT_NOT_FOUND), ("", ErrorCode.INPUT_NOT_FOUND)],
)
def test_file_url_errors(name: str, code: ErrorCode, net: Net, local_root: Path, tmp_path: Path) -> None:
    fetcher, _ = make_fetcher(net, local_root)
    with pytest.raises(PreannotateError) as err:
        fetcher.fetch(f"file://{local_root}/{name}", tmp_path)
    assert err.value.code is code


def test_file_url_too_large(net: Net, local_root: Path, tmp_path: Path) -> None:
    fetcher, _ = make_fetcher(net, local_root, max_bytes=5)
    with pytest.raises(PreannotateError) as err:
        fetcher.fetch(f"file://{local_root}/inside.txt", tmp_path)
    assert err.value.code is ErrorCode.FILE_TOO_LARGE


@pytest.mark.parametrize(
    ("path", "suffix"),
    [
        ("/a/clip.MP4", ".mp4"),
        ("/a/noext", ""),
        ("/a/x.toolongext", ""),
        ("/a/x.tar.gz", ".gz"),
        ("/a/x.j-g", ""),
        ("/..%2F..%2Fetc%2Fpasswd", ""),
        ("/a/%2e%2e%2f%2e%2e%2fx.png", ".png"),
        ("/a/b.sh%00.png", ".png"),
    ],
)
def test_temp_name_comes_from_a_hash_not_the_path(path: str, suffix: str, net: Net, tmp_path: Path) -> None:
    fetcher, _ = make_fetcher(net)
    got = fetcher.fetch(f"http://media.example.com:{net.fmt['po']}{path}", tmp_path)
    assert got.path.parent == tmp_path
    assert re.fullmatch(r"fetch-[0-9a-f]{12}-\w+" + re.escape(suffix), got.path.name)


def test_chunked_body_within_the_limit(net: Net, tmp_path: Path) -> None:
    fetcher, _ = make_fetcher(net, max_bytes=6)
    got = fetcher.fetch(f"http://media.example.com:{net.fmt['po']}/small-chunked", tmp_path)
    assert (got.path.read_bytes(), got.size_bytes) == (b"ababab", 6)


def test_concurrent_fetches_from_threads(net: Net, tmp_path: Path) -> None:
    fetcher, _ = make_fetcher(net)
    url = f"http://media.example.com:{net.fmt['po']}/ok.bin"
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: fetcher.fetch(url, tmp_path), range(16)))
    assert len({g.path for g in got}) == 16
    assert all(g.path.read_bytes() == b"hello bytes" for g in got)


# --- limits and upstream failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "overrides", "code"),
    [
        ("/big-declared", {"max_bytes": 1000}, ErrorCode.FILE_TOO_LARGE),  # refused before reading: the body stalls
        ("/big-chunked", {"max_bytes": 1000}, ErrorCode.FILE_TOO_LARGE),
        ("/stall", {"read_timeout_s": 0.2}, ErrorCode.FETCH_TIMEOUT),
        ("/drip", {"total_timeout_s": 0.3}, ErrorCode.FETCH_TIMEOUT),
        ("/no-location", {}, ErrorCode.FETCH_FAILED),
        ("/status/404", {}, ErrorCode.INPUT_NOT_FOUND),
        ("/status/410", {}, ErrorCode.INPUT_NOT_FOUND),
        ("/status/401", {}, ErrorCode.FETCH_DENIED),  # an expired presigned URL: retrying will not help
        ("/status/403", {}, ErrorCode.FETCH_DENIED),
        ("/status/429", {}, ErrorCode.FETCH_FAILED),
        ("/status/500", {}, ErrorCode.FETCH_FAILED),
        ("/status/503", {}, ErrorCode.FETCH_FAILED),
    ],
)
def test_limits_and_upstream_errors(
    path: str, overrides: dict[str, object], code: ErrorCode, net: Net, tmp_path: Path
) -> None:
    fetcher, _ = make_fetcher(net, **overrides)
    started = time.monotonic()

    with pytest.raises(PreannotateError) as err:
        fetcher.fetch(f"http://media.example.com:{net.fmt['po']}{path}", tmp_path)

    assert err.value.code is code
    assert time.monotonic() - started < 1.5
    assert list(tmp_path.iterdir()) == []  # the partial temp file is gone


def test_access_denied_has_its_own_message(net: Net, tmp_path: Path) -> None:
    fetcher, _ = make_fetcher(net)
    with pytest.raises(PreannotateError, match="access denied"):
        fetcher.fetch(f"http://media.example.com:{net.fmt['po']}/status/403", tmp_path)


def test_connection_refused_and_unknown_name(net: Net, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    fetcher, _ = make_fetcher(net)
    for url in (f"http://media.example.com:{closed}/", "https://nxdomain.example.com/"):
        with pytest.raises(PreannotateError) as err:
            fetcher.fetch(url, tmp_path)
        assert err.value.code is ErrorCode.FETCH_FAILED


def test_s3_without_boto3_names_the_extra(net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail even where it is installed
    fetcher, _ = make_fetcher(net, allowed_buckets=frozenset({"bucket"}))
    with pytest.raises(PreannotateError) as err:
        fetcher.fetch("s3://bucket/a/b.jpg", tmp_path)
    assert err.value.code is ErrorCode.MISSING_DEPENDENCY
    assert "pip install 'preannotate[s3]'" in err.value.message


# --- TLS: SNI and certificate checks use the name while the socket goes to the pinned IP ---------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> fs.Certs:
    made = fs.make_certs(tmp_path_factory.mktemp("certs"), "media.example.com")
    if made is None:
        pytest.skip("no openssl CLI")
    return made


def tls_fetcher(net: Net, certs: fs.Certs, **overrides: object) -> Fetcher:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    settings: dict[str, object] = {
        "allowed_hosts": frozenset({"media.example.com", "other.example.com", "media2.example.com"}),
        "extra_ports": frozenset({net.fmt["p1"]}),
        "connect_timeout_s": 0.5,
        "read_timeout_s": 1.0,
    }
    settings.update(overrides)
    resolver = FakeResolver(table(net) | {"other.example.com": one("127.0.0.1")})
    return Fetcher(FetchPolicy(**settings), resolver=resolver, verify=ctx)  # type: ignore[arg-type]


def test_tls_pins_the_ip_and_verifies_the_name(net: Net, certs: fs.Certs, tmp_path: Path) -> None:
    sni: list[str | None] = []
    with fs.tls_server(certs, sni) as server:
        server.routes["/ok.bin"] = fs.body(b"tls bytes")
        fetcher = tls_fetcher(net, certs)

        got = fetcher.fetch(f"https://media.example.com:{server.port}/ok.bin", tmp_path)
        with pytest.raises(PreannotateError) as wrong_name:
            fetcher.fetch(f"https://other.example.com:{server.port}/ok.bin", tmp_path)
        with pytest.raises(PreannotateError) as unknown_ca:
            Fetcher(
                FetchPolicy(allowed_hosts=frozenset({"media.example.com"})), resolver=FakeResolver(table(net))
            ).fetch(f"https://media.example.com:{server.port}/ok.bin", tmp_path)

    assert got.path.read_bytes() == b"tls bytes"
    assert sni[0] == "media.example.com"
    assert server.hits[0] == fs.Hit("/ok.bin", f"media.example.com:{server.port}")
    assert wrong_name.value.code is unknown_ca.value.code is ErrorCode.FETCH_FAILED
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_name.value.message
    assert len(server.hits) == 1  # neither failed handshake sent a request


def test_https_to_http_downgrade(net: Net, certs: fs.Certs, tmp_path: Path) -> None:
    sni: list[str | None] = []
    p1, po = net.fmt["p1"], net.fmt["po"]
    with fs.tls_server(certs, sni) as server:
        server.routes["/down-evil"] = fs.redirect(f"http://evil.example.com:{p1}/")
        server.routes["/down-ok"] = fs.redirect(f"http://media.example.com:{po}/ok.bin")
        fetcher = tls_fetcher(net, certs)

        with pytest.raises(PreannotateError) as err:
            fetcher.fetch(f"https://media.example.com:{server.port}/down-evil", tmp_path)
        got = fetcher.fetch(f"https://media.example.com:{server.port}/down-ok", tmp_path)

    assert err.value.code is ErrorCode.URL_NOT_ALLOWED
    assert "downgrade" in err.value.message
    assert got.path.read_bytes() == b"hello bytes"  # allow-listed target
    assert net.canary_hits() == []


# --- secrets never reach logs or messages -------------------------------------------------------------------------


def test_canary_secret_reaches_no_log_and_no_message(
    net: Net, local_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fetcher, _ = make_fetcher(net, local_root, read_timeout_s=0.2)
    po, p1 = net.fmt["po"], net.fmt["p1"]
    q = f"X-Amz-Credential={CANARY}&X-Amz-Signature={CANARY}"
    urls = [
        f"http://media.example.com:{po}/ok.bin?{q}",
        f"http://media.example.com:{po}/hop/1?{q}",
        f"http://media.example.com:{po}/status/404?{q}",
        f"http://media.example.com:{po}/status/403?{q}",
        f"http://media.example.com:{po}/stall?{q}",
        f"http://media.example.com:{po}/secret-redirect?{q}",
        f"http://media.example.com:{po}/chain/4?{q}",
        f"http://u:{CANARY}@media.example.com:{po}/ok.bin",
        f"http://media.example.com:{po}/ok.bin#{CANARY}",
        f"http://2130706433:{p1}/?{q}",
        f"http://evil.example.com:22/?{q}",
        f"gopher://x/?{q}",
        f"data:text/plain,{CANARY}",
        f"file://{local_root}/inside.txt?{q}",
        f"file:///etc/passwd?{q}",
    ]
    texts: list[str] = []
    for url in urls:
        try:
            fetcher.fetch(url, tmp_path)
        except PreannotateError as exc:
            texts += [str(exc), exc.message, "".join(traceback.format_exception(exc))]

    assert len(texts) == 3 * 11  # four of the fifteen succeed
    assert caplog.records
    assert CANARY not in caplog.text
    assert all(CANARY not in r.getMessage() for r in caplog.records)
    assert all(CANARY not in text for text in texts)
    assert redact_url(urls[0]) in caplog.text


# --- redact_url and the resolver -----------------------------------------------------------------------------------


def test_redact_url_keeps_only_scheme_host_port_path() -> None:
    url = "https://user:pw@Media.Example.com:8443/a/b.mp4?X-Amz-Signature=abc#frag"
    red = redact_url(url)
    assert re.fullmatch(r"https://media\.example\.com:8443/a/b\.mp4#[0-9a-f]{12}", red)
    assert red != redact_url(url.replace("abc", "abd"))  # the hash tells them apart
    assert red == redact_url(url)


@pytest.mark.parametrize("url", ["data:text/plain,SECRET", "http://[::1/SECRET", "javascript:SECRET", "SECRET"])
def test_redact_url_never_shows_opaque_payloads(url: str) -> None:
    assert "SECRET" not in redact_url(url)


def test_redact_url_escapes_control_characters() -> None:
    assert not re.search(r"[\x00-\x20]", redact_url("http://h/a\x00b c\rd"))


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2852039166", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("127.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
    ],
)
def test_system_resolver_turns_numeric_spellings_into_addresses(host: str, address: str) -> None:
    assert system_resolver(host, 80) == [address]
