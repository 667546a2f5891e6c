"""Synthetic tracking clips of real face photos, with per-source-frame ground truth (``bench_tracks``).

Faces ship with scikit-image (no download): the astronaut (``astronaut.png``), the cameraman (``camera.png``)
and LFW faces (``lfw_subset.npy``, 25x25 grey, upscaled). Each is a ``PATCH_PX`` square pasted on
``service.samples.textured_background``; its ground-truth box is the default detector's box on the still
patch (found once per face, clipped to the patch) moved with the patch. Patches move in straight lines and
bounce off the edges of their bounds (a triangle wave per axis), so each position is a pure function of time.

Visibility: a face's box is covered by opaque bars (occluders) and by the patches drawn after it (paths
crossing); it is in the ground truth when at least ``MIN_VISIBLE`` of it shows inside the frame, clipped to the
frame. Everything is deterministic: the background and the crowd's directions come from seeds.

    clip = clip_spec("medium")
    video, truth = ensure_clip(clip)      # encoded once into benchmarks/.cache/
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np

from benchmarks.common import CACHE_DIR
from models.base import Detector
from models.types import RGBImage

WIDTH_PX, HEIGHT_PX, SOURCE_FPS = 640, 360, 25
PATCH_PX = 96
"""Face patch size: the default detector finds every face used below at this size (scores 0.74-0.9)."""
MIN_VISIBLE = 0.5
"""Least visible fraction of a face's box (inside the frame, not covered) for it to be in the ground truth."""
OCCLUDER_RGB = (90, 90, 90)
DURATION_S = 25.0
CLIPS = ("slow", "medium", "fast", "mixed", "crowd", "held-out-a", "held-out-b")
"""The last two are seeded random crowds the tracker's constants were never tuned on: a check on over-fitting."""
FACES = (
    "astronaut",
    "camera",
    *(f"lfw{i}" for i in (0, 3, 10, 12, 15, 17, 18, 20, 24, 26, 33, 36, 37, 38)),
)
"""Distinct people whose patch the default detector finds at ``PATCH_PX`` with a score >= 0.74."""
_CAMERA_FACE_YX = (60, 170, 220, 330)
_ASTRONAUT_FACE_YX = (60, 150, 200, 290)  # around the known face box x1,y1,x2,y2 = 173,82,274,180

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Mover:
    """One face moving in a straight line at ``speed_bw_s`` of its box width per second, bouncing off ``bounds_px``.

    Attributes:
        face: one of ``FACES``.
        start_xy_px: the patch's top-left corner at t = 0.
        speed_bw_s: speed in widths of the face's ground-truth box per second.
        direction_deg: 0 = right, 90 = down.
        bounds_px: x1, y1, x2, y2 the whole patch stays within (may reach outside the frame: a face leaving it).
    """

    face: str
    start_xy_px: tuple[float, float]
    speed_bw_s: float
    direction_deg: float
    bounds_px: Box = (0.0, 0.0, float(WIDTH_PX), float(HEIGHT_PX))


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """A clip: its movers (drawn in order: later ones cover earlier ones), opaque bars drawn over all, its length."""

    name: str
    movers: tuple[Mover, ...]
    occluders_px: tuple[Box, ...] = ()
    duration_s: float = DURATION_S
    seed: int = 0


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Per source frame, the visible faces: ``frames[n]`` is a list of (object id, x1, y1, x2, y2)."""

    fps: int
    objects: int
    frames: list[list[tuple[int, float, float, float, float]]]

    def at_time(self, t_s: float) -> list[tuple[int, float, float, float, float]]:
        """The ground truth of the source frame shown at ``t_s`` (a sampled frame's timestamp)."""
        return self.frames[min(len(self.frames) - 1, round(t_s * self.fps))]


def clip_spec(name: str, duration_s: float = DURATION_S) -> ClipSpec:
    """The named clip (``CLIPS``), optionally shortened (``--quick``)."""
    builders = {
        "slow": _slow,
        "medium": _medium,
        "fast": _fast,
        "mixed": _mixed,
        "crowd": _crowd,
        "held-out-a": lambda: _random_crowd("held-out-a", 6, seed=11),
        "held-out-b": lambda: _random_crowd("held-out-b", 7, seed=12),
    }
    if name not in builders:
        raise ValueError(f"unknown clip {name!r}: one of {', '.join(CLIPS)}")
    return replace(builders[name](), duration_s=duration_s)


def _slow() -> ClipSpec:
    return ClipSpec(
        "slow",
        (
            Mover("astronaut", (40, 30), 0.2, 20),
            Mover("lfw3", (480, 60), 0.2, 160),
            Mover("lfw15", (260, 240), 0.2, -60),
        ),
        seed=1,
    )


def _medium() -> ClipSpec:
    """Two pairs whose paths cross head-on (same lane, opposite ways) and two on crossing diagonals."""
    return ClipSpec(
        "medium",
        (
            Mover("lfw0", (0, 20), 0.6, 0, (0, 0, WIDTH_PX, 130)),
            Mover("lfw10", (540, 20), 0.6, 180, (0, 0, WIDTH_PX, 130)),
            Mover("camera", (30, 250), 0.6, -35),
            Mover("lfw17", (520, 250), 0.6, -145),
        ),
        seed=2,
    )


def _fast() -> ClipSpec:
    return ClipSpec(
        "fast",
        (
            Mover("lfw12", (20, 20), 1.2, 30),
            Mover("astronaut", (500, 40), 1.2, 140),
            Mover("lfw20", (300, 250), 1.2, -100),
        ),
        seed=3,
    )


def _mixed() -> ClipSpec:
    """Speeds 0.2-1.2; the top lane's face passes behind a bar once (1.5 s hidden); the bottom lane's face
    leaves the frame on the right for about 5 s and comes back."""
    lane_face_speed = 0.4
    hidden_s, out_s = 1.5, 5.0
    bar_px = _bar_width_px("lfw24", lane_face_speed, hidden_s)
    leaving = Mover("lfw33", (300, HEIGHT_PX - PATCH_PX), 0.9, 0, (0, 0, WIDTH_PX, HEIGHT_PX))
    return ClipSpec(
        "mixed",
        (
            Mover("lfw24", (0, 0), lane_face_speed, 0, (0, 0, WIDTH_PX, PATCH_PX)),
            Mover("lfw26", (60, 110), 0.2, 15, (0, 100, WIDTH_PX, HEIGHT_PX)),
            Mover("lfw36", (500, 120), 0.6, 170, (0, 100, WIDTH_PX, HEIGHT_PX)),
            Mover("lfw37", (250, 200), 1.2, -20, (0, 100, WIDTH_PX, HEIGHT_PX)),
            replace(leaving, bounds_px=(0, 0, WIDTH_PX + _beyond_edge_px(leaving, out_s), HEIGHT_PX)),
        ),
        occluders_px=((280, 0, 280 + bar_px, PATCH_PX + 8),),
        seed=4,
    )


def _crowd() -> ClipSpec:
    """Eight faces at 0.6 box widths per second in seeded directions over the whole frame: many crossings."""
    rng = np.random.default_rng(5)
    faces = ("astronaut", "camera", "lfw0", "lfw3", "lfw10", "lfw15", "lfw18", "lfw38")
    movers = tuple(
        Mover(
            face,
            (float(rng.uniform(0, WIDTH_PX - PATCH_PX)), float(rng.uniform(0, HEIGHT_PX - PATCH_PX))),
            0.6,
            float(rng.uniform(0, 360)),
        )
        for face in faces
    )
    return ClipSpec("crowd", movers, seed=5)


def _random_crowd(name: str, faces: int, *, seed: int) -> ClipSpec:
    """``faces`` faces drawn at random from ``FACES``, each at a random speed of 0.2-1.2 box widths per second in a
    random direction from a random place; nothing about it is chosen by hand."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(FACES), size=faces, replace=False)
    movers = tuple(
        Mover(
            FACES[int(i)],
            (float(rng.uniform(0, WIDTH_PX - PATCH_PX)), float(rng.uniform(0, HEIGHT_PX - PATCH_PX))),
            float(rng.uniform(0.2, 1.2)),
            float(rng.uniform(0, 360)),
        )
        for i in chosen
    )
    return ClipSpec(name, movers, seed=seed)


def _bar_width_px(face: str, speed_bw_s: float, hidden_s: float) -> float:
    """A bar a face crossing it at that speed is more than half covered by for ``hidden_s`` (wider than half the
    box: the time is the bar's width over the speed)."""
    return round(hidden_s * speed_bw_s * box_width_px(face))


def _beyond_edge_px(mover: Mover, out_s: float) -> float:
    """How far past the right edge a horizontal mover's bounds must reach for it to be out of the frame (less than
    half of its box showing) for ``out_s``: it travels there and back from when its box's centre leaves."""
    x1, _, x2, _ = face_box_in_patch(mover.face)
    speed = mover.speed_bw_s * (x2 - x1)
    centre_to_patch_right = PATCH_PX - (x1 + x2) / 2
    return round(speed * out_s / 2 + centre_to_patch_right)


# --- face patches -----------------------------------------------------------------------------------------------


def _skimage_data_dir() -> Path:
    import skimage

    return Path(os.path.dirname(skimage.__file__)) / "data"


@cache
def face_patch(face: str) -> RGBImage:
    """The ``PATCH_PX`` RGB square of one face (real photos that ship with scikit-image)."""
    if face == "astronaut":
        y1, x1, y2, x2 = _ASTRONAUT_FACE_YX
        image = cv2.cvtColor(cv2.imread(str(_skimage_data_dir() / "astronaut.png")), cv2.COLOR_BGR2RGB)
        crop = image[y1:y2, x1:x2]
    elif face == "camera":
        y1, x1, y2, x2 = _CAMERA_FACE_YX
        grey = cv2.imread(str(_skimage_data_dir() / "camera.png"), cv2.IMREAD_GRAYSCALE)
        crop = cv2.cvtColor(grey[y1:y2, x1:x2], cv2.COLOR_GRAY2RGB)
    elif face.startswith("lfw"):
        faces = np.load(_skimage_data_dir() / "lfw_subset.npy")  # (200, 25, 25) floats in [0, 1]; faces first
        grey = np.clip(faces[int(face[3:])] * 255, 0, 255).astype(np.uint8)
        crop = cv2.cvtColor(cv2.resize(grey, (PATCH_PX, PATCH_PX), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
    else:
        raise ValueError(f"unknown face {face!r}")
    return np.ascontiguousarray(cv2.resize(crop, (PATCH_PX, PATCH_PX), interpolation=cv2.INTER_AREA), np.uint8)


@cache
def face_box_in_patch(face: str) -> Box:
    """The default detector's box on the still patch (pasted on the clips' background), clipped to the patch."""
    from service.samples import textured_background

    at_x, at_y = 200, 100
    image = textured_background(HEIGHT_PX, WIDTH_PX, seed=0).copy()
    image[at_y : at_y + PATCH_PX, at_x : at_x + PATCH_PX] = face_patch(face)
    [found] = _default_detector().detect([image], threshold=0.5)
    if len(found) != 1:
        raise RuntimeError(f"the default detector finds {len(found)} faces on the {face} patch, not 1")
    x1, y1, x2, y2 = (float(v) for v in found.xyxy[0])
    clip = lambda v: float(np.clip(v, 0, PATCH_PX))  # noqa: E731
    return clip(x1 - at_x), clip(y1 - at_y), clip(x2 - at_x), clip(y2 - at_y)


@cache
def _default_detector() -> Detector:
    from models.registry import FACE_MODEL_SPEC, load_detector

    detector = load_detector(FACE_MODEL_SPEC)
    detector.warmup()
    return detector


def box_width_px(face: str) -> float:
    x1, _, x2, _ = face_box_in_patch(face)
    return x2 - x1


# --- motion and ground truth -------------------------------------------------------------------------------------


def _bounce(start: float, velocity: float, t_s: float, low: float, high: float) -> float:
    """Position at ``t_s`` of a point moving at ``velocity`` from ``start``, reflected at ``low`` and ``high``."""
    span = high - low
    if span <= 0:
        return low
    u = (start - low + velocity * t_s) % (2 * span)
    return low + (u if u <= span else 2 * span - u)


def patch_xy_at(mover: Mover, t_s: float) -> tuple[float, float]:
    """The patch's top-left corner at ``t_s``."""
    speed = mover.speed_bw_s * box_width_px(mover.face)
    angle = math.radians(mover.direction_deg)
    bx1, by1, bx2, by2 = mover.bounds_px
    x = _bounce(mover.start_xy_px[0], speed * math.cos(angle), t_s, bx1, bx2 - PATCH_PX)
    y = _bounce(mover.start_xy_px[1], speed * math.sin(angle), t_s, by1, by2 - PATCH_PX)
    return x, y


def _placed(mover: Mover, t_s: float) -> tuple[int, int]:
    x, y = patch_xy_at(mover, t_s)
    return round(x), round(y)  # patches land on whole pixels: the box moves with the pixels drawn


def face_box_at(mover: Mover, t_s: float) -> Box:
    """The face's full (unclipped) box at ``t_s``, in frame pixels."""
    x, y = _placed(mover, t_s)
    fx1, fy1, fx2, fy2 = face_box_in_patch(mover.face)
    return x + fx1, y + fy1, x + fx2, y + fy2


def visible_fraction(box: Box, covers: list[Box]) -> float:
    """Fraction of ``box`` inside the frame and under none of ``covers`` (rasterised on the box's pixels)."""
    x1, y1, x2, y2 = (round(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    mask = np.zeros((y2 - y1, x2 - x1), bool)
    mask[max(0, -y1) : max(0, HEIGHT_PX - y1), max(0, -x1) : max(0, WIDTH_PX - x1)] = True
    for cx1, cy1, cx2, cy2 in covers:
        mask[max(0, round(cy1) - y1) : max(0, round(cy2) - y1), max(0, round(cx1) - x1) : max(0, round(cx2) - x1)] = (
            False
        )
    return float(mask.mean())


def truth_at(clip: ClipSpec, t_s: float) -> list[tuple[int, float, float, float, float]]:
    """The faces at least ``MIN_VISIBLE`` visible at ``t_s``: (object id = mover index, clipped x1, y1, x2, y2)."""
    patches = [_placed(m, t_s) for m in clip.movers]
    rows = []
    for n, mover in enumerate(clip.movers):
        box = face_box_at(mover, t_s)
        later = [(float(x), float(y), float(x + PATCH_PX), float(y + PATCH_PX)) for x, y in patches[n + 1 :]]
        if visible_fraction(box, [*clip.occluders_px, *later]) < MIN_VISIBLE:
            continue
        x1, y1, x2, y2 = box
        rows.append((n, max(0.0, x1), max(0.0, y1), min(float(WIDTH_PX), x2), min(float(HEIGHT_PX), y2)))
    return rows


def frame_count(clip: ClipSpec) -> int:
    return round(clip.duration_s * SOURCE_FPS)


def ground_truth(clip: ClipSpec) -> GroundTruth:
    frames = [truth_at(clip, n / SOURCE_FPS) for n in range(frame_count(clip))]
    return GroundTruth(fps=SOURCE_FPS, objects=len(clip.movers), frames=frames)


def render(clip: ClipSpec, background: RGBImage, t_s: float) -> RGBImage:
    """The frame at ``t_s``: patches in order (later ones on top), then the opaque bars."""
    frame = background.copy()
    for mover in clip.movers:
        x, y = _placed(mover, t_s)
        sx1, sy1 = max(0, -x), max(0, -y)
        dx1, dy1 = max(0, x), max(0, y)
        dx2, dy2 = min(WIDTH_PX, x + PATCH_PX), min(HEIGHT_PX, y + PATCH_PX)
        if dx2 > dx1 and dy2 > dy1:
            frame[dy1:dy2, dx1:dx2] = face_patch(mover.face)[sy1 : sy1 + dy2 - dy1, sx1 : sx1 + dx2 - dx1]
    for x1, y1, x2, y2 in clip.occluders_px:
        frame[round(y1) : round(y2), round(x1) : round(x2)] = OCCLUDER_RGB
    return frame


# --- the one writer ----------------------------------------------------------------------------------------------


def write_clip(clip: ClipSpec, path: Path) -> GroundTruth:
    """Encode the clip (H.264, 25 fps, key frame every 2 s; one encoder thread: the same bytes every time) and
    write its ground truth next to it (``<path>.truth.json``)."""
    from service.samples import textured_background

    background = textured_background(HEIGHT_PX, WIDTH_PX, clip.seed)
    time_base = Fraction(1, SOURCE_FPS)
    options = {"g": "50", "keyint_min": "50", "preset": "veryfast", "crf": "23", "bf": "2", "x264-params": "scenecut=0"}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=SOURCE_FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH_PX, HEIGHT_PX, "yuv420p"  # type: ignore[union-attr]
        stream.codec_context.time_base = time_base
        stream.codec_context.thread_count = 1
        for n in range(frame_count(clip)):
            frame = av.VideoFrame.from_ndarray(render(clip, background, n / SOURCE_FPS), format="rgb24")
            frame.pts, frame.time_base = n, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    truth = ground_truth(clip)
    _truth_path(path).write_text(json.dumps(asdict(truth)))
    return truth


def ensure_clip(clip: ClipSpec, cache_dir: Path = CACHE_DIR) -> tuple[Path, GroundTruth]:
    """The clip's video and ground truth, encoded once into ``cache_dir`` (named by a hash of the spec)."""
    key = hashlib.sha256(repr((clip, [face_box_in_patch(m.face) for m in clip.movers])).encode()).hexdigest()[:10]
    path = cache_dir / f"tracks-{clip.name}-{clip.duration_s:g}s-{key}.mp4"
    if path.exists() and _truth_path(path).exists():
        raw = json.loads(_truth_path(path).read_text())
        frames = [[(int(r[0]), *(float(v) for v in r[1:])) for r in rows] for rows in raw["frames"]]
        return path, GroundTruth(fps=raw["fps"], objects=raw["objects"], frames=frames)  # type: ignore[misc]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    truth = write_clip(clip, tmp)
    tmp.rename(path)
    _truth_path(tmp).rename(_truth_path(path))
    return path, truth


def _truth_path(video: Path) -> Path:
    return video.with_name(video.name + ".truth.json")
