"""The Label Studio JSON ``item_to_ls_result`` builds: a prediction and its regions (TypedDicts: typed, and the
JSON is unchanged).

Shapes of docs ``label_studio.md``: boxes and polygon points in percent (0-100) of the image, top-left origin;
masks in LS's brush RLE; a video region's ``sequence`` holds one keyframe per LS frame (1-based) the track was
seen on.
"""

from __future__ import annotations

from typing import Literal, TypedDict


class LsBoxPct(TypedDict):
    """A box in percent of the image: top-left corner and size."""

    x: float
    y: float
    width: float
    height: float


class LsRectangleValue(TypedDict):
    x: float
    y: float
    width: float
    height: float
    rotation: float
    rectanglelabels: list[str]


class LsRectangleRegion(TypedDict):
    """An image box (``rectanglelabels``); ``original_*`` in pixels."""

    id: str
    from_name: str
    to_name: str
    type: Literal["rectanglelabels"]
    original_width: int
    original_height: int
    image_rotation: float
    value: LsRectangleValue
    score: float


class LsVideoKeyframe(TypedDict):
    """A track's box on one LS frame; ``enabled`` false ends the span LS interpolates over."""

    frame: int
    enabled: bool
    rotation: float
    x: float
    y: float
    width: float
    height: float
    time: float


class LsVideoValue(TypedDict):
    framesCount: int
    duration: float
    sequence: list[LsVideoKeyframe]
    labels: list[str]


class LsVideoRegion(TypedDict):
    """A video track (``videorectangle``)."""

    id: str
    from_name: str
    to_name: str
    type: Literal["videorectangle"]
    value: LsVideoValue
    score: float


class LsBrushValue(TypedDict):
    format: Literal["rle"]
    rle: list[int]
    brushlabels: list[str]


class LsBrushRegion(TypedDict):
    """An image mask (``brushlabels``): ``rle`` is LS's own RLE of the RGBA pixels on the
    ``original_width`` x ``original_height`` image (``service.convert.ls_brush``)."""

    id: str
    from_name: str
    to_name: str
    type: Literal["brushlabels"]
    original_width: int
    original_height: int
    image_rotation: float
    value: LsBrushValue
    score: float


class LsPolygonValue(TypedDict):
    points: list[list[float]]
    closed: bool
    polygonlabels: list[str]


class LsPolygonRegion(TypedDict):
    """An image polygon (``polygonlabels``): ``points`` ``[x, y]`` in percent of the image, one ring, no holes."""

    id: str
    from_name: str
    to_name: str
    type: Literal["polygonlabels"]
    original_width: int
    original_height: int
    image_rotation: float
    value: LsPolygonValue
    score: float


LsImageRegion = LsRectangleRegion | LsBrushRegion | LsPolygonRegion
LsRegion = LsRectangleRegion | LsBrushRegion | LsPolygonRegion | LsVideoRegion


class LsPredictionJson(TypedDict):
    """The body LS takes for one task's prediction."""

    result: list[LsRegion]
    score: float
    model_version: str


class LsTask(TypedDict):
    """A task to import with its prediction: ``data`` holds the media URL under the config's ``$key``, the item
    and slot names, and (video) the frame rate the config's ``framerate="$key"`` reads."""

    data: dict[str, str | float]
    predictions: list[LsPredictionJson]
