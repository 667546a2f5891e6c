"""Encord cloud-registration JSON -> job items: mapping, order, duplicates and Encord's limits."""

from __future__ import annotations

from typing import Any

import pytest

from service.backends.encord_registration import encord_registration_to_items, is_encord_registration
from service.errors import ErrorCode, PreannotateError

U = "https://bucket.s3.eu-west-2.amazonaws.com"


def _slots(body: dict[str, Any]) -> list[tuple[str, list[tuple[str, list[str], str | None]]]]:
    return [
        (item.name, [(slot.name, slot.all_urls(), slot.type) for slot in item.slots])
        for item in encord_registration_to_items(body, max_items=1000)
    ]


def test_every_supported_kind_maps_to_items() -> None:
    body = {
        "videos": [
            {
                "objectUrl": f"{U}/videos/cam2.mp4",
                "title": "cam2.mp4",
                "clientMetadata": {"site": "A"},
                "videoMetadata": {"fps": 25.0},
            }
        ],
        "images": [{"objectUrl": f"{U}/images/0001.jpg?X-Amz-Signature=abc"}],
        "image_groups": [
            {"title": "seq", "createVideo": True, "objectUrl_10": f"{U}/s/10.jpg", "objectUrl_2": f"{U}/s/2.jpg"},
            {"title": "group", "createVideo": False, "objectUrl_0": f"{U}/g/a.jpg", "objectUrl_1": f"{U}/g/b.jpg"},
        ],
        "dicom_series": [{"title": "CT", "objectUrl_0": f"{U}/d/1.dcm", "objectUrl_1": f"{U}/d/2.dcm"}],
        "pdfs": [{"objectUrl": f"{U}/docs/report.pdf"}],
    }
    assert _slots(body) == [
        ("0001.jpg", [("0", [f"{U}/images/0001.jpg?X-Amz-Signature=abc"], "image")]),
        ("cam2.mp4", [("0", [f"{U}/videos/cam2.mp4"], "video")]),
        ("seq", [("0", [f"{U}/s/2.jpg", f"{U}/s/10.jpg"], "image")]),  # numeric, not lexical, order
        ("group", [("0", [f"{U}/g/a.jpg"], "image"), ("1", [f"{U}/g/b.jpg"], "image")]),
        ("CT", [("0", [f"{U}/d/1.dcm", f"{U}/d/2.dcm"], "dicom")]),
        ("report.pdf", [("0", [f"{U}/docs/report.pdf"], "pdf")]),
    ]


def test_skip_duplicate_urls_drops_repeats_only_when_asked() -> None:
    images = [{"objectUrl": f"{U}/a.jpg"}, {"objectUrl": f"{U}/a.jpg"}, {"objectUrl": f"{U}/b.jpg"}]
    assert len(encord_registration_to_items({"images": images}, max_items=10)) == 3
    kept = encord_registration_to_items({"images": images, "skip_duplicate_urls": True}, max_items=10)
    assert [item.slots[0].url for item in kept] == [f"{U}/a.jpg", f"{U}/b.jpg"]


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"images": [{"objectUrl": U + "/" + "a" * 16_400}]}, ErrorCode.INVALID_ARGUMENT, "over Encord's limit"),
        ({"images": [{"objectUrl": f"{U}/a.jpg", "title": "t" * 301}]}, ErrorCode.INVALID_ARGUMENT, "title"),
        ({"images": [{"title": "x"}]}, ErrorCode.INVALID_ARGUMENT, "objectUrl"),
        ({"image_groups": [{"title": "g"}]}, ErrorCode.INVALID_ARGUMENT, "objectUrl_0"),
        ({"nifti": [{"objectUrl": f"{U}/b.nii"}]}, ErrorCode.INVALID_ARGUMENT, "nifti cannot be preannotated"),
        ({"images": [], "colour": 1}, ErrorCode.INVALID_ARGUMENT, "unknown keys colour"),
        ({"images": "nope"}, ErrorCode.INVALID_ARGUMENT, "must be a list"),
        ({"images": []}, ErrorCode.INVALID_ARGUMENT, "no images"),
        ({"images": [{"objectUrl": f"{U}/{i}.jpg"} for i in range(4)]}, ErrorCode.TOO_MANY_ITEMS, "more than 3"),
        ({"images": [], "skip_duplicate_urls": "yes"}, ErrorCode.INVALID_ARGUMENT, "true or false"),
    ],
)
def test_limits_and_malformed_entries(body: dict[str, Any], code: ErrorCode, message: str) -> None:
    with pytest.raises(PreannotateError) as exc:
        encord_registration_to_items(body, max_items=3)
    assert exc.value.code is code
    assert message in exc.value.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [({"images": []}, True), ({"dicom_series": []}, True), ({"items": [], "images": []}, False), ({}, False)],
)
def test_is_encord_registration(body: dict[str, Any], expected: bool) -> None:
    assert is_encord_registration(body) is expected
