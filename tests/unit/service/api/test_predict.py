"""What ``/v1/predict`` error messages call an uploaded file (never the server's scratch path)."""

from __future__ import annotations

import pytest

from service.api.routes.predict import _upload_name


@pytest.mark.parametrize(
    ("filename", "shown"),
    [
        (None, "upload"),
        ("", "upload"),
        ("photo.png", "photo.png"),
        ("../../etc/photo.png", "photo.png"),
        ("C:\\Users\\me\\photo.png", "photo.png"),
        ("holiday\nphoto\x1b.png", "holidayphoto.png"),
        ("dir/", "upload"),
        ("x" * 300, "x" * 100),
    ],
)
def test_an_upload_is_named_by_the_clients_file_name(filename: str | None, shown: str) -> None:
    assert _upload_name(filename) == shown
