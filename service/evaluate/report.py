"""``report.html``: one self-contained page (inline CSS, charts as data URIs, no external URL) to send around."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from service.evaluate.evaluation import (
    CandidateResult,
    ClassThresholdJson,
    Evaluation,
    candidate_figures,
    candidate_to_json,
)
from service.evaluate.plots import class_bars_to_png, pr_curves_to_png
from service.evaluate.thumbnails import BENCHMARK_RGB, CANDIDATE_RGB, Gallery, Thumbnail
from service.evaluate.worst import ErrorKind

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}h3{margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.pass{color:#176f2c;font-weight:600}
.fail{color:#b00020;font-weight:600}.note{color:#555;font-size:.92em}img{max-width:100%}
.thumbs{display:flex;flex-wrap:wrap;gap:.6rem;margin:.3rem 0 .8rem}.thumbs figure{margin:0;max-width:260px}
figcaption{font-size:.85em;color:#444;overflow-wrap:anywhere}.key{display:inline-block;width:.9em;height:.9em;
border:3px solid;vertical-align:middle;margin:0 .3em 0 .8em}
"""

_KIND_TITLES = {
    ErrorKind.FALSE_POSITIVE: "False positives (unmatched candidate shapes, highest score first)",
    ErrorKind.FALSE_NEGATIVE: "Misses (unmatched benchmark objects, least overlapped first, then largest)",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return '<span class="pass">pass</span>' if value else '<span class="fail">fail</span>'
    if isinstance(value, float):
        return f"{value:.3f}"
    return escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _leaderboard(evaluation: Evaluation) -> str:
    rows: list[list[Any]] = []
    for result in evaluation.candidates:
        f = candidate_figures(result)
        rows.append([f["candidate"], result.passed, f["f1"], f["precision"], f["recall"], f["mean_iou"], f["map"]])
        rows[-1] += [f["map50"], f["tp"], f["fp"], f["fn"], f["tag_accuracy"]]
    rows.sort(key=lambda r: -r[2])
    headers = ["candidate", "gate", "F1", "precision", "recall", "mean IoU", "mAP", "mAP50", "TP", "FP", "FN", "tags"]
    return _table(headers, rows)


def _confusion(confusion: dict[str, dict[str, int]]) -> str:
    predicted = sorted({p for row in confusion.values() for p in row})
    rows = [[g, *(confusion[g].get(p, 0) for p in predicted)] for g in sorted(confusion)]
    return _table(["benchmark \\ candidate", *predicted], rows)


def _class_thresholds(rows: Mapping[str, ClassThresholdJson]) -> str:
    """``--thresholds``: each class's F1 at the global threshold vs at its calibrated one."""
    table = _table(
        ["class", "threshold", "calibrated", "F1 at global", "F1 calibrated", "change", "precision", "recall"],
        [
            [
                label,
                r["threshold"],
                "yes" if r["calibrated"] else "no",
                r["f1_global"],
                r["f1_calibrated"],
                f"{r['f1_calibrated'] - r['f1_global']:+.3f}",
                r["precision_calibrated"],
                r["recall_calibrated"],
            ]
            for label, r in rows.items()
        ],
    )
    note = (
        '<p class="note">Candidates cut at each class\'s calibrated threshold before matching (uncalibrated '
        "classes keep the global one), against the same candidates cut at the global threshold.</p>"
    )
    return "<h3>Per-class thresholds</h3>" + note + table


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _thumbnail(thumb: Thumbnail) -> str:
    case = thumb.case
    where = case.item if case.slot == "0" else f"{case.item} / {case.slot}"
    score = "-" if case.score is None else f"{case.score:.2f}"
    caption = f"{where} · frame {case.frame} · score {score} · IoU {case.iou:.2f}"
    src = "data:image/jpeg;base64," + base64.b64encode(thumb.jpeg).decode("ascii")
    return f'<figure><img alt="{escape(case.kind)}" src="{src}"><figcaption>{escape(caption)}</figcaption></figure>'


def _worst_errors(classes: Mapping[str, Mapping[ErrorKind, Sequence[Thumbnail]]]) -> str:
    """``evaluate --media``: per class, thumbnails of the worst false positives and misses."""
    legend = (
        f'<p class="note">Boxes:<span class="key" style="border-color:{_hex(BENCHMARK_RGB)}"></span>benchmark'
        f'<span class="key" style="border-color:{_hex(CANDIDATE_RGB)}"></span>candidate. A miss shows the '
        "candidate box nearest it, a false positive the nearest benchmark box, when one overlaps; the score is "
        "the candidate box's, the IoU the best either reached.</p>"
    )
    parts = ["<h3>Worst errors</h3>", legend]
    for label, kinds in classes.items():
        parts.append(f"<h4>{escape(label)}</h4>")
        for kind, thumbs in kinds.items():
            figures = "".join(_thumbnail(t) for t in thumbs)
            parts.append(f'<p class="note">{escape(_KIND_TITLES[kind])}</p><div class="thumbs">{figures}</div>')
    return "\n".join(parts)


def _gallery_note(gallery: Gallery) -> str:
    """How many errors got no thumbnail, and why (media not found, not decodable, or boxes off the picture)."""
    if not gallery.errors_without_media:
        return ""
    shown = ", ".join(gallery.missing[:5]) + (
        f" and {len(gallery.missing) - 5} more" if len(gallery.missing) > 5 else ""
    )
    missing = f" Media not found for {len(gallery.missing)} items ({shown})." if gallery.missing else ""
    unreadable = f" Not decodable: {'; '.join(gallery.unreadable[:5])}." if gallery.unreadable else ""
    off_frame = f" Outside the frame: {'; '.join(gallery.off_frame[:5])}." if gallery.off_frame else ""
    return (
        f'<p class="note">{gallery.errors_without_media} of the worst errors have no thumbnail.'
        f"{escape(missing + unreadable + off_frame)}</p>"
    )


def _candidate_section(result: CandidateResult, iou: float, gallery: Gallery | None = None) -> str:
    data = candidate_to_json(result)
    name = escape(result.dataset.name)
    parts = [
        f"<h2>{name}</h2>",
        f'<p class="note">{escape(result.dataset.format)}: {escape(result.dataset.source)}</p>',
    ]
    gate = _fmt(result.passed) + (" — " + escape("; ".join(result.failed)) if result.failed else "")
    parts.append(f"<p>Gate: {gate}</p>")
    headline = ["TP", "FP", "FN", "precision", "recall", "F1", "mean IoU", "mAP", "mAP50", "tag accuracy"]
    keys = ["tp", "fp", "fn", "precision", "recall", "f1", "mean_iou", "map", "map50", "tag_accuracy"]
    fields: Mapping[str, object] = data
    parts.append(_table(headline, [[fields[k] for k in keys]]))
    if data["map_note"]:
        parts.append(f'<p class="note">{escape(data["map_note"])}</p>')
    items = data["items"]
    parts.append(
        f'<p class="note">{items["scored_units"]} of {items["benchmark_units"]} benchmark units found in the '
        f"candidate, {items['frames']} frames scored, {items['candidate_only_units']} candidate-only units "
        f"not scored, {data['ignored_in_crowd_regions']} detections ignored in crowd regions.</p>"
    )
    per_class = data["per_class"]
    if per_class:
        parts.append("<h3>Per class</h3>")
        cols = ["tp", "fp", "fn", "precision", "recall", "f1", "mean_iou", "ap", "ap50"]
        parts.append(_table(["class", *cols], [[k, *(v.get(c) for c in cols)] for k, v in per_class.items()]))
        parts.append(f'<img alt="per-class precision, recall and F1" src="{class_bars_to_png(per_class)}">')
    if data["class_thresholds"] is not None:
        parts.append(_class_thresholds(data["class_thresholds"]))
    if data["confusion"]:
        parts.append("<h3>Class confusion</h3>")
        parts.append(
            f'<p class="note">Class-agnostic one-to-one matching at IoU {iou:g}; "(none)" is a miss or a '
            "detection on background.</p>"
        )
        parts.append(_confusion(data["confusion"]))
    if data["worst_items"]:
        parts.append("<h3>Worst items</h3>")
        cols = ["item", "slot", "in_candidate", "frames", "tp", "fp", "fn", "f1"]
        worst: list[Mapping[str, object]] = list(data["worst_items"])
        parts.append(_table(cols, [[w[c] for c in cols] for w in worst]))
    if gallery is not None and gallery.of(result.dataset.name):
        parts.append(_worst_errors(gallery.of(result.dataset.name)))
    if data["skipped_shapes"]:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(data["skipped_shapes"].items()))
        parts.append(f'<p class="note">Shapes not scored: {escape(skipped)}.</p>')
    return "\n".join(parts)


def evaluation_to_html(evaluation: Evaluation, gallery: Gallery | None = None) -> str:
    """The whole report as one HTML string with nothing to fetch; ``gallery``: thumbnails of the worst errors
    (``evaluate --media``), embedded as data URIs."""
    bench = evaluation.benchmark
    curves = {c.dataset.name: c.map.pr_curve for c in evaluation.candidates if c.map is not None and c.map.pr_curve}
    gates = ", ".join(f"{k} {v:g}" for k, v in evaluation.thresholds.to_json().items()) or "none"
    body = [
        "<h1>Evaluation against the benchmark</h1>",
        f"<p>Benchmark: {escape(bench.format)} {escape(bench.source)} ({len(bench.units)} units). "
        f"IoU threshold {evaluation.iou_threshold:g}. Thresholds: {escape(gates)}.</p>",
        '<p class="note">One-to-one matching per frame (Hungarian on IoU, class-aware): a duplicate is an FP, '
        "a miss an FN, a wrong class an FP plus an FN. Polygons and masks are scored by mask IoU when both sides "
        "have one. iou_results.csv reproduces Encord's greedy script for compatibility only.</p>",
        "<h2>Leaderboard</h2>",
        _leaderboard(evaluation),
    ]
    if curves:
        body.append(f'<img alt="precision-recall curves" src="{pr_curves_to_png(curves, iou=0.5)}">')
    if gallery is not None:
        body.append(_gallery_note(gallery))
    body += [_candidate_section(c, evaluation.iou_threshold, gallery) for c in evaluation.candidates]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Evaluation report</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
