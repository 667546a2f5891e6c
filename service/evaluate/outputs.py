"""Write an evaluation into a directory: summary.json, leaderboard.csv, iou_results.csv, report.html."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import ErrorCode, PreannotateError
from service.evaluate.evaluation import CandidateFigures, Evaluation, candidate_figures, evaluation_to_summary
from service.evaluate.seed_csv import seed_rows_to_csv
from service.files import write_atomic

if TYPE_CHECKING:  # thumbnails load OpenCV and the decoders: only when a report shows them
    from service.evaluate.thumbnails import Gallery

LEADERBOARD_COLUMNS = (
    "rank",
    "candidate",
    "passed",
    "f1",
    "precision",
    "recall",
    "mean_iou",
    "map",
    "map50",
    "tp",
    "fp",
    "fn",
    "tag_accuracy",
    "units_scored",
    "units_missing",
    "failed_checks",
    "source",
)
OUTPUT_FILES = ("summary.json", "leaderboard.csv", "iou_results.csv", "report.html")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "pass" if value else "fail"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


class _LeaderboardRow(CandidateFigures):
    passed: bool
    units_scored: int
    units_missing: int
    failed_checks: str
    source: str


def evaluation_to_leaderboard_csv(evaluation: Evaluation) -> str:
    """One row per candidate, best first (F1, then mAP50), with pass/fail against the thresholds."""
    rows: list[_LeaderboardRow] = []
    for result in evaluation.candidates:
        pairs = result.pairing.pairs
        rows.append(
            {
                **candidate_figures(result),
                "passed": result.passed,
                "units_scored": sum(1 for _, c in pairs if c is not None),
                "units_missing": sum(1 for _, c in pairs if c is None),
                "failed_checks": "; ".join(result.failed),
                "source": result.dataset.source,
            }
        )
    rows.sort(key=lambda r: (-r["f1"], -(r["map50"] if r["map50"] is not None else -1.0), r["candidate"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LEADERBOARD_COLUMNS)
    for rank, row in enumerate(rows, start=1):
        cells: Mapping[str, object] = row
        writer.writerow([rank, *(_cell(cells[c]) for c in LEADERBOARD_COLUMNS[1:])])
    return out.getvalue()


def evaluation_to_seed_csv(evaluation: Evaluation) -> str:
    """Every candidate's seed rows in one file (the script writes one file per training project)."""
    return seed_rows_to_csv([row for c in evaluation.candidates for row in c.seed_rows])


def write_outputs(evaluation: Evaluation, out_dir: Path, gallery: Gallery | None = None) -> dict[str, Path]:
    """Write the four files into ``out_dir`` (created if needed; ``gallery``: the report's thumbnails of the
    worst errors); returns name -> path."""
    from service.evaluate.report import evaluation_to_html  # matplotlib: only loaded when writing a report

    texts = {
        "summary.json": json.dumps(evaluation_to_summary(evaluation), indent=1, allow_nan=False) + "\n",
        "leaderboard.csv": evaluation_to_leaderboard_csv(evaluation),
        "iou_results.csv": evaluation_to_seed_csv(evaluation),
        "report.html": evaluation_to_html(evaluation, gallery),
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            write_atomic(out_dir / name, text)
    except OSError as exc:
        raise PreannotateError(ErrorCode.OUTPUT_FAILED, f"{out_dir}: cannot write ({exc.strerror})") from None
    return {name: out_dir / name for name in OUTPUT_FILES}
