"""A job that makes masks (a segmenter, or a model that makes them itself) is served in the ``labelstudio`` and
``encord`` formats with a default config / ontology that has a mask shape, so its masks are written as masks
and not as boxes; a job without masks keeps the boxes-only defaults, byte for byte."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.masks import Masks
from models.types import Detections, RGBImage
from service.config import Settings
from service.convert.encord_ontology import default_ontology
from service.convert.label_studio import default_label_config_xml
from service.evaluate.geometry import ls_brush_rle_to_mask
from service.queue.store import JobStore
from service.spec.job import JobSpec
from tests.fakes.segmenter import EllipseSegmenter, ellipse_in
from tests.unit.service.api.test_jobs_segmenter import AUTH, TENANT, BigBox, jobs_app, photo, run_jobs

HEIGHT_PX, WIDTH_PX = 96, 128
BOX = (32, 24, 96, 72)  # BigBox's box on a 96 x 128 frame


class MaskingBigBox(BigBox):
    """BigBox that makes masks itself (a ``-seg`` export's part): the ellipse in each box."""

    def __init__(self) -> None:
        super().__init__()
        self.info = dataclasses.replace(self.info, makes_masks=True)

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        out = []
        for image, found in zip(images, super()._detect_batch(images, threshold), strict=True):
            h, w = image.shape[:2]
            masks = Masks.from_full(np.stack([ellipse_in(box, h, w) for box in found.xyxy.tolist()]))
            out.append(found.with_masks(masks))
        return out


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every Encord object entry (a dict with ``featureHash`` and ``shape``) anywhere in a label row."""
    if isinstance(node, dict):
        if "featureHash" in node and "shape" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _results(tmp_path: Path, *, segmenter: bool, detector: BigBox) -> tuple[dict[str, Any], dict[str, Any], JobSpec]:
    """One photo through a job; its ``labelstudio`` and ``encord`` results, and the job's stored spec."""
    loaded = EllipseSegmenter() if segmenter else None
    with jobs_app(tmp_path, loaded=loaded, detector=detector) as (client, store, registry):
        body = {"items": [{"name": "a", "slots": [{"url": photo(tmp_path)}]}], "outputs": ["labelstudio", "encord"]}
        response = client.post("/v1/jobs", json=body, headers=AUTH)
        assert response.status_code in (200, 201, 202), response.text
        job_id = response.json()["job_id"]
        run_jobs(store, registry, tmp_path, Settings(local_roots=[tmp_path]))
        fetched = {}
        for fmt in ("labelstudio", "encord"):
            answer = client.get(f"/v1/jobs/{job_id}/result", params={"format": fmt}, headers=AUTH)
            assert answer.status_code == 200, answer.text
            fetched[fmt] = answer.json()
        spec = stored_spec(store, job_id)
    return fetched["labelstudio"], fetched["encord"], spec


def stored_spec(store: JobStore, job_id: str) -> JobSpec:
    record = store.get_job(tenant=TENANT, job_id=job_id)
    assert record is not None
    return record.spec


@pytest.mark.parametrize("by", ["segmenter", "model"])
def test_a_job_that_makes_masks_gets_mask_shapes_in_its_default_config_and_ontology(tmp_path: Path, by: str) -> None:
    detector = MaskingBigBox() if by == "model" else BigBox()
    ls, encord, spec = _results(tmp_path, segmenter=by == "segmenter", detector=detector)

    assert "<BrushLabels" in ls["label_configs"]["image"]
    (task,) = ls["tasks"]
    (region,) = task["predictions"][0]["result"]
    assert region["type"] == "brushlabels"
    mask = ls_brush_rle_to_mask(region["value"]["rle"], WIDTH_PX, HEIGHT_PX)
    np.testing.assert_array_equal(mask, ellipse_in(BOX, HEIGHT_PX, WIDTH_PX))

    polygons = {o["featureNodeHash"] for o in encord["ontology"]["objects"] if o["shape"] == "polygon"}
    (row,) = encord["label_rows"]
    (obj,) = _objects(row)
    assert obj["shape"] == "polygon"
    assert obj["featureHash"] in polygons
    assert spec.makes_masks


def test_a_job_without_masks_keeps_the_boxes_only_defaults(tmp_path: Path) -> None:
    ls, encord, spec = _results(tmp_path, segmenter=False, detector=BigBox())

    assert ls["label_configs"] == {kind: default_label_config_xml(("face",), kind) for kind in ("image", "video")}
    assert encord["ontology"] == default_ontology(("face",)).to_json()
    (row,) = encord["label_rows"]
    assert [o["shape"] for o in _objects(row)] == ["bounding_box"]
    assert not spec.makes_masks
    assert "model_makes_masks" not in spec.to_stored()
