"""Which video decoder a slot gets: PyAV, or torchcodec on CUDA (NVDEC) for ``nvdec`` and ``auto``.

Kept apart from ``video`` so that the command line can check ``--decoder nvdec`` before opening
anything, without loading PyAV. Nothing here imports torch: ``models.video_decode`` does, and only
when asked (``pyav`` never asks).
"""

from __future__ import annotations

import logging
import threading

from models.errors import ModelError
from models.video_decode import check_decoder
from service.errors import PreannotateError, from_model_error
from service.pipeline.options import DecoderChoice, SamplingMode, SamplingOptions

log = logging.getLogger(__name__)

GPU_DEVICE = "cuda"

_logged: set[str] = set()
_logged_lock = threading.Lock()


def log_once(message: str, *args: object) -> None:
    """Log at info once per process and message: ``auto`` decides the same way for every slot."""
    text = message % args if args else message
    with _logged_lock:
        if text in _logged:
            return
        _logged.add(text)
    log.info("%s", text)


def use_gpu_decoder(sampling: SamplingOptions) -> bool:
    """Whether a video sampled with these options decodes with torchcodec on CUDA.

    ``pyav`` and key-frame sampling: never (key-frame mode decodes a handful of frames, each on its
    own: PyAV is the right tool). ``nvdec``: always, or PreannotateError MISSING_DEPENDENCY /
    DEVICE_UNAVAILABLE when torchcodec or a CUDA device is missing. ``auto``: when both are
    present; otherwise PyAV, logged once at info.
    """
    if sampling.decoder == DecoderChoice.PYAV:
        return False
    if sampling.mode is SamplingMode.KEYFRAMES:
        log_once("key-frame sampling decodes with PyAV; --decoder %s applies to exact sampling only", sampling.decoder)
        return False
    try:
        check_decoder(GPU_DEVICE)
    except ModelError as exc:
        if sampling.decoder == DecoderChoice.NVDEC:
            raise PreannotateError(from_model_error(exc).code, f"decoder nvdec: {exc}") from None
        log_once("decoding videos with PyAV: %s", exc)
        return False
    return True
