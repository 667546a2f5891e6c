"""``preannotate demo``: make sample media (nothing downloaded) and preannotate it with the default model."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from models.types import RGBImage
from service.commands.common import check_output_dir, exit_code_for, load_settings
from service.commands.run import RunRequest, execute_run, preview_options
from service.pipeline.media import item_from_path
from service.pipeline.options import SamplingOptions
from service.samples import write_pan_video


def write_samples(out_dir: Path) -> list[Path]:
    """Photos shipped with scikit-image (public domain / CC0) and a video panning across one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    astronaut, coffee = _photo("astronaut"), _photo("coffee")
    camera = np.repeat(_photo("camera")[:, :, None], 3, axis=2)
    paths = []
    for name, image in (("astronaut.png", astronaut), ("camera.png", camera), ("coffee.png", coffee)):
        path = out_dir / name
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    video = out_dir / "astronaut-pan.mp4"
    write_pan_video(astronaut, video, duration_s=6.0)
    paths.append(video)
    return paths


def _photo(name: str) -> RGBImage:
    return np.asarray(getattr(skimage.data, name)(), np.uint8)


def demo_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_output_dir(args.out)
    media_dir = args.out / "media"
    print(f"writing sample media to {media_dir}")
    inputs = write_samples(media_dir)
    out = args.out / "preannotations.coco.json"
    previews = args.out / "previews"
    request = RunRequest(
        items=[item_from_path(path) for path in inputs],
        model_spec=settings.model,
        detector_options=settings.detector_options(),
        sampling=SamplingOptions(fps=2.0),
        threshold=settings.threshold,
        classes=None,
        out=out,
        quiet=args.quiet,
        preview=previews,  # drawn in the same pass: no frame decoded twice
        preview_options=preview_options(settings),
    )
    print(f"preannotating {len(inputs)} files with {settings.model} (videos sampled at 2 fps)")
    output, failures = execute_run(request, settings)
    coco = output.coco
    assert coco is not None  # the demo writes COCO
    per_item = Counter(
        image["item"] for image in coco["images"] for ann in coco["annotations"] if ann["image_id"] == image["id"]
    )
    frames = Counter(image["item"] for image in coco["images"])
    for item in frames:
        print(f"  {item}: {frames[item]} frame(s), {per_item[item]} detection(s)")
    first = next(iter(coco["annotations"]), None)
    if first is not None:
        print(f"  e.g. {json.dumps(first)}")
    print(f"COCO preannotations: {out.resolve()}")
    print(f"previews (open these to see the boxes): {previews.resolve()}")
    for path in output.previews:
        print(f"  {path.relative_to(previews)}")
    if output.gallery is not None:
        print(f"all of them on one page: {output.gallery.resolve()}")
    return exit_code_for(failures)
