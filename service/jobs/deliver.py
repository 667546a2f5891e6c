"""Delivering a finished item to the labeling tools its job names: each destination's backend pushes it.

Pushes are idempotent (see :mod:`service.backends.base`), so a retried item re-sends safely. What each tool
does (conversion, registration, bundling) lives in its backend; this layer only walks the destinations.
"""

from __future__ import annotations

from service.backends.base import PushJson
from service.backends.registry import Backends
from service.pipeline.predictions import ItemPredictions
from service.spec.job import JobSpec
from service.spec.requests import ItemIn


def deliver(backends: Backends, item: ItemIn, predictions: ItemPredictions, spec: JobSpec) -> list[PushJson]:
    """Push the item to every destination of its job, in order; returns the records its result shows.

    Raises:
        PreannotateError: the first push that failed (the item is retried or failed as its code says).
    """
    return [
        backends.for_destination(destination).push(destination, item, predictions, spec).to_json()
        for destination in spec.destinations
    ]
