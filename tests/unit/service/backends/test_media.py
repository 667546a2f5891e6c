"""Slot URLs fetched through Label Studio or V7: the tool's key goes to the tool's origin only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from service.backends.media import BackendMediaFetcher, split_via, via
from service.backends.origin_auth import OriginAuthTransport, origin_of
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.jobs.submit import ALLOWED_SCHEMES
from tests.unit.service.backends.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio, MediaHost, serving

PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 32
V7_KEY = "CANARY-v7-key-" + "q" * 16


def test_markers() -> None:
    assert via("label-studio", "https://ls/x") == "label-studio+https://ls/x"
    assert split_via("label-studio+https://ls/x") == ("label-studio", "https://ls/x")
    assert split_via("v7+http://v7/x") == ("v7", "http://v7/x")
    for plain in ("https://a/b+c", "s3://b/k", "other+https://x", "v7+ftp://x", "label-studio+file:///etc/passwd"):
        assert split_via(plain) == (None, plain)
    assert not {"label-studio+https", "v7+https"} & ALLOWED_SCHEMES  # clients can never name them


def test_the_origin_transport_adds_the_key_only_for_its_origin() -> None:
    seen: list[tuple[str, str | None]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["host"], request.headers.get("authorization")))
        return httpx.Response(200)

    transport = OriginAuthTransport(
        ("https", "darwin.v7labs.com", 443), lambda: "ApiKey k", inner=httpx.MockTransport(record)
    )
    with httpx.Client(transport=transport) as client:
        client.get("https://darwin.v7labs.com/api/x")
        client.get("https://darwin.v7labs.com:8443/api/x")
        client.get("http://darwin.v7labs.com/api/x")
        client.get("https://s3.example.com/x", headers={"Authorization": "ApiKey smuggled"})
        client.get("https://1.2.3.4/api/x", headers={"Host": "darwin.v7labs.com"})  # pinned IP, named host
    assert seen == [
        ("darwin.v7labs.com", "ApiKey k"),
        ("darwin.v7labs.com:8443", None),
        ("darwin.v7labs.com", None),
        ("s3.example.com", None),
        ("darwin.v7labs.com", "ApiKey k"),
    ]


def test_label_studio_media_goes_through_the_ls_client(tmp_path: Path) -> None:
    fake = FakeLabelStudio()
    fake.media["/data/upload/1/a.png"] = PNG
    with serving(fake) as url:
        fetcher = BackendMediaFetcher(Settings(label_studio_url=url, label_studio_api_key=SecretStr(LEGACY_TOKEN)))
        got = fetcher.fetch(f"label-studio+{url}/data/upload/1/a.png", tmp_path)
        assert got.path.read_bytes() == PNG
        assert fake.requests[-1].authorization == f"Token {LEGACY_TOKEN}"
        with pytest.raises(PreannotateError) as caught:  # a marker on another host: refused
            fetcher.fetch("label-studio+https://elsewhere.example.com/data/upload/1/a.png", tmp_path)
        assert caught.value.code is ErrorCode.URL_NOT_ALLOWED
        fetcher.close()


def test_without_label_studio_settings_marked_urls_fail(tmp_path: Path) -> None:
    with pytest.raises(PreannotateError) as caught:
        BackendMediaFetcher(Settings()).fetch("label-studio+https://ls/data/upload/1/a.png", tmp_path)
    assert caught.value.code is ErrorCode.BACKEND_NOT_CONFIGURED


def test_v7_media_gets_the_api_key_and_nothing_else_does(tmp_path: Path) -> None:
    v7_host, other = MediaHost(PNG), MediaHost(PNG)
    with serving(v7_host) as v7_url, serving(other) as other_url:
        settings = Settings(
            v7_api_key=SecretStr(V7_KEY), v7_base_url=f"{v7_url}/api", fetch_allowed_hosts=[origin_host(other_url)]
        )
        fetcher = BackendMediaFetcher(settings)
        assert fetcher.fetch(f"v7+{v7_url}/api/v2/teams/acme/uploads/1", tmp_path).path.read_bytes() == PNG
        assert v7_host.authorizations == [f"ApiKey {V7_KEY}"]
        fetcher.fetch(f"{other_url}/a.png", tmp_path)  # a plain URL: the base Fetcher, no key
        assert other.authorizations == [None]
        with pytest.raises(PreannotateError) as caught:
            fetcher.fetch(f"v7+{other_url}/a.png", tmp_path)
        assert caught.value.code is ErrorCode.URL_NOT_ALLOWED
        assert other.authorizations == [None]


def test_the_plain_fetcher_refuses_marked_urls(tmp_path: Path) -> None:
    from service.pipeline.fetch import Fetcher

    with pytest.raises(PreannotateError) as caught:
        Fetcher(Settings().fetch_policy()).fetch("label-studio+https://ls/data/upload/1/a.png", tmp_path)
    assert caught.value.code is ErrorCode.URL_NOT_ALLOWED


def origin_host(url: str) -> str:
    origin = origin_of(url)
    assert origin is not None
    return f"{origin[1]}:{origin[2]}"
