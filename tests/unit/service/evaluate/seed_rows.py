"""The hand-built benchmark / training label rows the seed-CSV test runs Encord's script semantics on.

All coordinates are dyadic fractions, so every IoU below is one exact rational rounded once:
- video clip-01.mp4, frame 0: benchmark car A (.125,.125,.25,.25) and person B (.5,.5,.125,.25);
  benchmark car C only on frame 5 and a polygon on frame 0 (both invisible to the script).
- training rows, in this order (the CSV follows the training project's order):
  img-02.jpg (image): Q sits between benchmark car K and person L, IoU 1/3 with each: the first (car) wins the
  tie (the script's ``>``), and Q says person -> class 0.0. R overlaps nothing -> IoU 0.0, class 0.0.
  clip-01.mp4 (video): frames stored as "7" before "0", so G (on frames 7 and 0) is the SDK's first instance;
  G and D duplicate car A (both IoU 1.0, class 1.0: the script's many-to-one), E is A shifted by .125
  (IoU 1/3), F sits on person B but says car (IoU 1.0, class 0.0), H exists only on frame 7 (no row).
  other.jpg: not in the benchmark (no rows). Person B's miss and car C produce no row.
"""

from __future__ import annotations

from typing import Any

from tests.unit.service.evaluate.fixtures import CAR, PERSON, encord_box, encord_polygon, encord_row


def benchmark_rows() -> list[dict[str, Any]]:
    expert = "expert@example.com"
    return [
        encord_row(
            data_hash="dh-clip",
            title="clip-01.mp4",
            label_hash="lh-bench-clip",
            frames={
                "0": [
                    encord_box("A0000000", CAR, (0.125, 0.125, 0.25, 0.25), by=expert),
                    encord_box("B0000000", PERSON, (0.5, 0.5, 0.125, 0.25), by=expert),
                    encord_polygon("P0000000", [(0.75, 0.75), (0.875, 0.75), (0.875, 0.875)], by=expert),
                ],
                "5": [encord_box("C0000000", CAR, (0.75, 0.125, 0.125, 0.125), by=expert)],
            },
        ),
        encord_row(
            data_hash="dh-img",
            title="img-02.jpg",
            label_hash="lh-bench-img",
            objects=[
                encord_box("K0000000", CAR, (0.125, 0.125, 0.25, 0.25), by=expert),
                encord_box("L0000000", PERSON, (0.375, 0.125, 0.25, 0.25), by=expert),
            ],
        ),
    ]


def training_rows() -> list[dict[str, Any]]:
    return [
        encord_row(
            data_hash="dh-img",
            title="img-02.jpg",
            label_hash="lh-alice-img",
            objects=[
                encord_box("Q0000000", PERSON, (0.25, 0.125, 0.25, 0.25)),
                encord_box("R0000000", CAR, (0.875, 0.875, 0.0625, 0.0625), by="bob@example.com"),
            ],
        ),
        encord_row(
            data_hash="dh-clip",
            title="clip-01.mp4",
            label_hash="lh-alice-clip",
            frames={
                "7": [
                    encord_box("G0000000", CAR, (0.125, 0.125, 0.25, 0.25)),
                    encord_box("H0000000", CAR, (0.5, 0.125, 0.125, 0.125)),
                ],
                "0": [
                    encord_box("D0000000", CAR, (0.125, 0.125, 0.25, 0.25)),
                    encord_box("E0000000", CAR, (0.25, 0.125, 0.25, 0.25)),
                    encord_box("F0000000", CAR, (0.5, 0.5, 0.125, 0.25)),
                    encord_box("G0000000", CAR, (0.125, 0.125, 0.25, 0.25)),
                ],
            },
        ),
        encord_row(
            data_hash="dh-other",
            title="other.jpg",
            label_hash="lh-alice-other",
            objects=[encord_box("Z0000000", CAR, (0.125, 0.125, 0.25, 0.25))],
        ),
    ]


# What Encord's script writes for these rows. Produced by running the script's comparison loop, verbatim, on
# LabelRowV2 objects parsed from these dicts (encord 0.1.211, offline) and ``DataFrame.to_csv`` (pandas 3.1.1);
# the values agree with the hand analysis in the module docstring.
EXPECTED_CSV = (
    "training_email,data_unit_name,label_id,iou_score,class_score\n"
    "alice@example.com,img-02.jpg,lh-alice-img,0.3333333333333333,0.0\n"
    "bob@example.com,img-02.jpg,lh-alice-img,0.0,0.0\n"
    "alice@example.com,clip-01.mp4,lh-alice-clip,1.0,1.0\n"
    "alice@example.com,clip-01.mp4,lh-alice-clip,1.0,1.0\n"
    "alice@example.com,clip-01.mp4,lh-alice-clip,0.3333333333333333,1.0\n"
    "alice@example.com,clip-01.mp4,lh-alice-clip,1.0,0.0\n"
)
