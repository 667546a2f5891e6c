"""Small pure parts of the job runner and worker."""

from __future__ import annotations

import pytest

from service.jobs.runner import display_source
from service.jobs.worker import retry_delay_s


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://b.s3.amazonaws.com/v/a.mp4?X-Amz-Signature=abc&X-Amz-Credential=k",
            "https://b.s3.amazonaws.com/v/a.mp4",
        ),
        ("https://user:pw@host:8443/a.png#frag", "https://host:8443/a.png"),
        ("file:///data/a.png", "file:///data/a.png"),
        ("s3://bucket/key/a.dcm", "s3://bucket/key/a.dcm"),
    ],
)
def test_display_source_drops_credentials(url: str, expected: str) -> None:
    assert display_source(url) == expected


@pytest.mark.parametrize(("attempt", "cap"), [(1, 2.0), (2, 4.0), (3, 8.0), (20, 300.0)])
def test_retry_delay_is_jittered_and_capped(attempt: int, cap: float) -> None:
    delays = [retry_delay_s(attempt) for _ in range(200)]
    assert all(0 <= d <= cap for d in delays)
    assert len(set(delays)) > 100  # full jitter, not a fixed schedule
