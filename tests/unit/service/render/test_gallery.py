"""The static gallery: every file shown by kind, links relative, names escaped, nothing outside the folder."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from service.render.gallery import write_gallery


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_gallery_shows_images_and_videos_with_relative_escaped_links(tmp_path: Path) -> None:
    files = [tmp_path / "a<b>.png.jpg", tmp_path / "clips" / "pan.mp4.mp4", tmp_path / "clips" / "pan.mp4.sheet.jpg"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    page = write_gallery(tmp_path, files)
    assert page == tmp_path / "index.html"
    text = page.read_text()
    assert "<b>" not in text
    parser = Tags()
    parser.feed(text)
    sources = [(tag, attrs.get("src")) for tag, attrs in parser.tags if tag in ("img", "video")]
    assert sources == [("img", "a%3Cb%3E.png.jpg"), ("video", "clips/pan.mp4.mp4"), ("img", "clips/pan.mp4.sheet.jpg")]
    assert "a<b>.png.jpg" in "".join(parser.text)
    links = [attrs["href"] for tag, attrs in parser.tags if tag == "a"]
    assert links == [src for _, src in sources]


def test_gallery_refuses_a_file_outside_its_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not under"):
        write_gallery(tmp_path / "out", [tmp_path / "elsewhere.jpg"])
