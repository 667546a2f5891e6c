"""The evaluation entry points for the CLI and HTTP: specs or documents in, an Evaluation (and files) out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from service.convert.label_studio import MAX_CONFIG_CHARS
from service.evaluate.evaluation import Evaluation, Thresholds, evaluate
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.types import Dataset

MAX_CANDIDATES = 16
SELECT_PATTERN = r"^(annotations|predictions(=.+)?)$"
_SELECT_HELP = "Label Studio only: annotations, predictions or predictions=MODEL_VERSION"
_CONFIG_HELP = (
    "Label Studio only: the project's labeling config (XML), for the frame rate its <Video> counts frames at "
    "(exports do not carry it; without it a task's data.fps is used, else LS frame N is source frame N-1)"
)


class ThresholdsIn(BaseModel):
    """Minimums for pass/fail (all in [0, 1]); omitted ones are not checked. Strict numbers: ``false`` is not 0."""

    min_f1: float | None = Field(None, strict=True, ge=0, le=1)
    min_precision: float | None = Field(None, strict=True, ge=0, le=1)
    min_recall: float | None = Field(None, strict=True, ge=0, le=1)
    min_mean_iou: float | None = Field(None, strict=True, ge=0, le=1)
    min_map: float | None = Field(None, strict=True, ge=0, le=1)
    min_map50: float | None = Field(None, strict=True, ge=0, le=1)
    min_tag_accuracy: float | None = Field(None, strict=True, ge=0, le=1)

    model_config = ConfigDict(extra="forbid")


class CandidateIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="shown in the leaderboard, e.g. an annotator")
    data: dict[str, Any] | list[Any] = Field(description="the export itself: COCO, COCO results, Darwin, LS, Encord")
    select: str | None = Field(None, pattern=SELECT_PATTERN, description=_SELECT_HELP)
    label_config: str | None = Field(None, max_length=MAX_CONFIG_CHARS, description=_CONFIG_HELP)

    model_config = ConfigDict(extra="forbid")


class EvaluateRequest(BaseModel):
    """Benchmark and candidates inline, in any supported format (a list of Darwin files or label rows works)."""

    benchmark: dict[str, Any] | list[Any] = Field(description="the gold labels, in any supported format")
    benchmark_select: str | None = Field(None, pattern=SELECT_PATTERN, description=_SELECT_HELP)
    benchmark_label_config: str | None = Field(None, max_length=MAX_CONFIG_CHARS, description=_CONFIG_HELP)
    candidates: list[CandidateIn] = Field(min_length=1, max_length=MAX_CANDIDATES)
    iou: float = Field(0.5, strict=True, gt=0, le=1, description="IoU a pair needs to match")
    thresholds: ThresholdsIn = Field(default_factory=ThresholdsIn)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "benchmark": {
                        "images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}],
                        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 80]}],
                        "categories": [{"id": 1, "name": "car"}],
                    },
                    "candidates": [
                        {
                            "name": "model-v2",
                            "data": [{"image_id": 1, "category_id": 1, "bbox": [12, 9, 98, 80], "score": 0.9}],
                        }
                    ],
                    "iou": 0.5,
                    "thresholds": {"min_f1": 0.8},
                }
            ]
        },
    )


def request_to_evaluation(request: EvaluateRequest) -> Evaluation:
    """Evaluate an HTTP request's inline documents (sources are named ``body:benchmark``, ``body:NAME``)."""
    benchmark = documents_to_datasets(
        [("body:benchmark", request.benchmark)],
        name=BENCHMARK,
        role=BENCHMARK,
        selector=request.benchmark_select,
        label_config=request.benchmark_label_config,
    )[0]
    candidates: list[Dataset] = []
    for c in request.candidates:
        candidates += documents_to_datasets(
            [(f"body:{c.name}", c.data)],
            name=c.name,
            role=CANDIDATE,
            selector=c.select,
            benchmark=benchmark,
            label_config=c.label_config,
        )
    thresholds = Thresholds(**request.thresholds.model_dump())
    return evaluate(benchmark, candidates, iou_threshold=request.iou, thresholds=thresholds)


def uploads_to_evaluation(
    benchmark: tuple[str, JsonValue],
    candidates: list[tuple[str, str, JsonValue]],
    *,
    iou: float,
    thresholds: Thresholds,
    benchmark_select: str | None = None,
    candidate_select: str | None = None,
    benchmark_label_config: str | None = None,
    candidate_label_config: str | None = None,
) -> Evaluation:
    """Evaluate parsed uploads: ``(source, doc)`` for the benchmark, ``(name, source, doc)`` per candidate;
    the label configs are Label Studio projects' (see ``documents_to_datasets``)."""
    bench = documents_to_datasets(
        [benchmark], name=BENCHMARK, role=BENCHMARK, selector=benchmark_select, label_config=benchmark_label_config
    )[0]
    datasets: list[Dataset] = []
    for name, source, doc in candidates:
        datasets += documents_to_datasets(
            [(source, doc)],
            name=name,
            role=CANDIDATE,
            selector=candidate_select,
            benchmark=bench,
            label_config=candidate_label_config,
        )
    return evaluate(bench, datasets, iou_threshold=iou, thresholds=thresholds)
