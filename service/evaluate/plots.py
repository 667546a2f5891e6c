"""Report charts as base64 PNG data URIs (matplotlib, Agg canvas: no display, no global pyplot state)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from service.errors import ErrorCode, PreannotateError
from service.evaluate.metrics import CountsJson

_MAX_CLASSES = 30  # more bars than this are unreadable; the table has them all


def _figure(width_in: float, height_in: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PreannotateError(
            ErrorCode.MISSING_DEPENDENCY, "report.html needs matplotlib: pip install 'preannotate[eval]'"
        ) from None
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)  # attaches itself to the figure
    return fig


def _to_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def class_bars_to_png(per_class: Mapping[str, CountsJson]) -> str:
    """Grouped precision / recall / F1 bars per class (the most frequent benchmark classes first)."""
    labels = sorted(per_class, key=lambda k: -(per_class[k]["tp"] + per_class[k]["fn"]))[:_MAX_CLASSES]
    fig = _figure(max(5.0, 0.6 * len(labels) + 2.0), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.27
    bars: tuple[tuple[float, Literal["precision", "recall", "f1"]], ...] = (
        (-width, "precision"),
        (0.0, "recall"),
        (width, "f1"),
    )
    for offset, metric in bars:
        ax.bar([i + offset for i in range(len(labels))], [per_class[k][metric] for k in labels], width, label=metric)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _to_data_uri(fig)


def pr_curves_to_png(curves: Mapping[str, Sequence[tuple[float, float]]], *, iou: float = 0.5) -> str:
    """Precision-recall curves (COCO's 101 recall points at IoU 0.5), one line per candidate."""
    fig = _figure(5.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        ax.plot([r for r, _ in curve], [p for _, p in curve], label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"PR curve at IoU {iou:g} (mean over classes)")
    ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    return _to_data_uri(fig)
