"""``preannotate frames``: write one input's sampled frames as images plus ``index.json``.

Loads no model and no model runtime: it is as fast as the sampler itself.
"""

from __future__ import annotations

import argparse
import sys

import cv2

from service.commands.common import (
    Progress,
    check_output_dir,
    exit_code_for,
    load_settings,
    sampling_from_args,
    write_bytes_atomic,
    write_json_atomic,
)
from service.convert.coco import frame_file_name
from service.errors import ErrorCode, PreannotateError
from service.pipeline.media import item_from_path
from service.pipeline.run import iter_frames

_ENCODE_PARAMS = {"jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], "png": [cv2.IMWRITE_PNG_COMPRESSION, 1]}


def frames_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    sampling = sampling_from_args(args, settings)
    item = item_from_path(args.input)
    out_dir = args.out
    check_output_dir(out_dir)

    progress = Progress(quiet=args.quiet)
    index: list[dict[str, object]] = []
    try:
        for frame in iter_frames(
            [item], sampling, settings.media_limits(), on_slot=progress.on_slot, on_error=progress.on_error
        ):
            name = frame_file_name(frame.info.frame_index, args.image_format)
            bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
            encoded, data = cv2.imencode(f".{args.image_format}", bgr, _ENCODE_PARAMS[args.image_format])
            if not encoded:
                raise PreannotateError(ErrorCode.OUTPUT_FAILED, f"{out_dir / name}: cannot encode")
            write_bytes_atomic(out_dir / name, data.tobytes())
            index.append(
                {
                    "file_name": name,
                    "frame_index": frame.info.frame_index,
                    "timestamp_s": frame.info.timestamp_s,
                    "width": frame.info.width,
                    "height": frame.info.height,
                    "slot": frame.info.slot,
                }
            )
            progress.advance()
    finally:
        progress.close()
    write_json_atomic(out_dir / "index.json", index)
    print(f"wrote {len(index)} frames and index.json to {out_dir}", file=sys.stderr)
    return exit_code_for(progress.failures)
