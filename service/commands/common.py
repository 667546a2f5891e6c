"""What the commands share: flags over settings, progress, failure lines, atomic writes."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from models.base import Detector, PromptableDetector
from models.prompts import PromptSet
from service.config import Settings, get_settings
from service.errors import ErrorCode, PreannotateError
from service.files import write_atomic
from service.pipeline.decoders import use_gpu_decoder
from service.pipeline.frames import SlotMeta
from service.pipeline.inputs import Skipped
from service.pipeline.options import DecoderChoice, SamplingMode, SamplingOptions
from service.pipeline.run import SlotFailure
from service.remote_models import prompts_refused_message, prompts_required_message
from service.spec.thresholds import ThresholdsFile


def sampling_from_args(args: argparse.Namespace, settings: Settings) -> SamplingOptions:
    """Sampling flags over the settings' defaults; bad values are INVALID_ARGUMENT.

    ``--decoder nvdec`` where torchcodec or CUDA is missing fails here (MISSING_DEPENDENCY,
    DEVICE_UNAVAILABLE), before any input is opened; ``auto`` decides here, logged once.
    """
    decoder = getattr(args, "decoder", None)  # absent from parsers without the flag
    try:
        sampling = SamplingOptions(
            fps=settings.fps if args.fps is None else args.fps,
            mode=settings.sampling if args.sampling is None else SamplingMode(args.sampling),
            start_s=args.start,
            end_s=args.end,
            max_frames=args.max_frames,
            decoder=settings.decoder if decoder is None else DecoderChoice(decoder),
        )
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
    use_gpu_decoder(sampling)
    return sampling


def prompted_detector(detector: Detector, prompts: PromptSet | None) -> Detector:
    """What a command runs: an open-vocabulary model's view for ``prompts`` (``--prompts``), else the model. The
    caller still closes ``detector``: a view shares its weights.

    Raises:
        PreannotateError: INVALID_PROMPTS (exit 2): prompts for a model with classes of its own, or none for an
            open-vocabulary model.
    """
    spec = detector.info.spec
    if prompts is None:
        if detector.info.open_vocabulary:
            raise PreannotateError(ErrorCode.INVALID_PROMPTS, prompts_required_message(spec) + " with --prompts")
        return detector
    if not isinstance(detector, PromptableDetector):
        raise PreannotateError(ErrorCode.INVALID_PROMPTS, prompts_refused_message(spec, detector.info.class_names))
    return detector.prompted(prompts)


def thresholds_from_args(path: Path | None) -> dict[str, float] | None:
    """``--thresholds FILE``'s calibrated classes (``calibrate --out``); None without the flag. A file that does
    not read or parse is INVALID_ARGUMENT naming it (exit 2)."""
    if path is None:
        return None
    try:
        return ThresholdsFile.read(path).class_thresholds()
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None


def load_settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError names the variable and the problem
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"bad PREANNOTATE_* setting: {exc}") from None


class Progress:
    """A frame progress bar on a terminal (never in pipes or with --quiet); totals grow as slots open."""

    def __init__(self, *, quiet: bool) -> None:
        self._bar = tqdm(total=0, unit="frame", disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)
        self.failures: list[SlotFailure] = []

    def on_slot(self, meta: SlotMeta) -> None:
        self._bar.total = (self._bar.total or 0) + meta.planned_frames
        self._bar.set_postfix_str(f"{meta.item}/{meta.slot}", refresh=True)

    def on_error(self, failure: SlotFailure) -> None:
        self.failures.append(failure)
        self._bar.write(f"error: {failure.error}", file=sys.stderr)

    def advance(self, frames: int = 1) -> None:
        self._bar.update(frames)

    def close(self) -> None:
        self._bar.close()


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON next to ``path`` and rename it into place: readers never see half a file."""
    write_bytes_atomic(path, json.dumps(payload, indent=1))


def write_bytes_atomic(path: Path, data: bytes | str) -> None:
    """``write_atomic`` with a failure as OUTPUT_FAILED naming the file."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise PreannotateError(ErrorCode.OUTPUT_FAILED, f"{path}: cannot write ({exc.strerror})") from None


def check_output_file(path: Path) -> None:
    """Refuse, before any work, an ``--out`` that cannot become a file: a directory, or a parent that is
    a file or where nothing can be written. Missing parent directories are fine: the write creates them."""
    if path.is_dir():
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"--out {path}: is a directory; name the file to write, e.g. {path / 'preds.json'}",
        )
    _check_writable_ancestor(path)


def check_output_dir(path: Path, *, flag: str = "--out") -> None:
    """Refuse, before any work, an ``--out`` (or ``flag``) that cannot become a directory: an existing file, or a
    place where nothing can be written. A missing directory (and its parents) is created by the write."""
    if path.exists() and not path.is_dir():
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{flag} {path}: exists and is not a directory")
    _check_writable_ancestor(path, flag)


def _check_writable_ancestor(path: Path, flag: str = "--out") -> None:
    """The nearest existing directory above (or at, for a directory) ``path`` must take a new file.

    Probed by creating a temporary file there: permission bits alone say nothing for root or on a
    read-only file system.
    """
    ancestor = path if path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{flag} {path}: {ancestor} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=ancestor, prefix=".preannotate-probe-"):
            pass
    except OSError as exc:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"{flag} {path}: cannot write in {ancestor} ({exc.strerror})"
        ) from None


def exit_code_for(failures: list[SlotFailure], skipped: Sequence[Skipped] = ()) -> int:
    """0 when every slot worked and no input was skipped; otherwise the worst one's exit code (2 for bad input).
    A folder's files that are not media (``Skipped.fails_run`` False) are named but do not count."""
    codes = [f.error.code.exit_code for f in failures] + [s.code.exit_code for s in skipped if s.fails_run]
    return min(codes, default=0)
