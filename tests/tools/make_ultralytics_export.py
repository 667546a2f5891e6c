"""Build real Ultralytics YOLOv8 ONNX exports plus Ultralytics' own predictions on them.

Reference data for ``tests/integration/test_ultralytics_export.py``, which checks the project's
ONNX YOLO decoder against Ultralytics itself.

Run it in a SEPARATE virtual environment with Ultralytics installed, never in the project's venv:

    python3 -m venv /work/scratch/ultra-venv
    /work/scratch/ultra-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/scratch/ultra-venv/bin/pip install ultralytics onnx onnxslim onnxruntime scikit-image
    /work/scratch/ultra-venv/bin/python tests/tools/make_ultralytics_export.py --out /work/scratch/ultra

Then:

    PREANNOTATE_TEST_YOLO_DIR=/work/scratch/ultra .venv/bin/python -m pytest \
        tests/integration/test_ultralytics_export.py

Ultralytics is AGPL-3.0. This script only imports it; everything it writes (the .pt, the .onnx
files, the predictions) is derived from Ultralytics and must NOT be committed: keep ``--out``
outside the repository. No weights are downloaded: the model is built from ``yolov8n.yaml`` with
random weights (fixed seed), and the classification biases are randomised so that a few dozen
boxes pass conf 0.25 with distinct scores. It runs fully offline (YOLO_OFFLINE=1; any outbound
connection attempt raises and is reported).

Output layout (``--out``):
    images/<image_id>.png          RGB source images (PNG)
    <export_id>.onnx               the exports (see EXPORTS)
    yolov8n_random.pt              the model the exports came from
    expected.json                  {"ultralytics_version", "exports": [{"id", "onnx", "imgsz", "dynamic",
                                    "images": [{"id", "png", "shape_hw", "ultra_input_hw",
                                                "xyxy", "conf", "cls"}]}]}
    raw/<export_id>__<image_id>.npz  Ultralytics' preprocessed input and raw network output (diagnosis only)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import socket
import sys
from pathlib import Path

# Offline before Ultralytics is imported: no update checks, no settings sync, no font downloads.
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_VERBOSE", "False")

NETWORK_ATTEMPTS: list[str] = []


def _is_local(host: object) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


def _guard_network() -> None:
    """Make any non-loopback connection or DNS lookup fail loudly (and record it)."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if not _is_local(host) and self.family in (socket.AF_INET, socket.AF_INET6):
            NETWORK_ATTEMPTS.append(f"connect {address}")
            raise OSError(f"network disabled by make_ultralytics_export.py: connect {address}")
        real_connect(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not _is_local(host):
            NETWORK_ATTEMPTS.append(f"getaddrinfo {host}")
            raise socket.gaierror(f"network disabled by make_ultralytics_export.py: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


# (export id, imgsz, dynamic)
EXPORTS = [
    ("yolov8n_640_static", 640, False),
    ("yolov8n_320_dynamic", 320, True),
]


def test_images() -> dict[str, object]:
    """RGB uint8 images: square, landscape, wide crop, tall crop."""
    from skimage import data

    astronaut = data.astronaut()
    return {
        "astronaut": astronaut,  # 512x512
        "coffee": data.coffee(),  # 400x600
        "chelsea": data.chelsea(),  # 300x451 (odd width)
        "astronaut_wide": astronaut[:300].copy(),  # 300x512
        "astronaut_tall": astronaut[:, 100:300].copy(),  # 512x200
    }


def calibration_images() -> list[object]:
    from skimage import data

    return [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.immunohistochemistry(),
        data.hubble_deep_field(),
    ]


def _letterboxed_tensor(rgb: object, imgsz: int) -> object:
    import numpy as np
    import torch
    from ultralytics.data.augment import LetterBox

    padded = LetterBox(imgsz)(image=np.ascontiguousarray(rgb[:, :, ::-1]))  # Ultralytics works in BGR
    chw = np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1))  # its model takes RGB
    return torch.from_numpy(chw)[None].float() / 255


def _class_logits(net: object, batch: object) -> list[object]:
    """The Detect head's classification logits (conv output, bias included) per stride level, from a forward pass."""
    head = net.model[-1]
    logits: dict[int, object] = {}
    hooks = [
        branch[-1].register_forward_hook(lambda _m, _i, y, k=k: logits.__setitem__(k, y))
        for k, branch in enumerate(head.cv3)
    ]
    try:
        net(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return [logits[k] for k in range(len(head.cv3))]


def _equalise_logit_spread(net: object, steps: int) -> None:
    import torch

    images = test_images() | {f"cal{i}": rgb for i, rgb in enumerate(calibration_images())}
    batches = [torch.cat([_letterboxed_tensor(rgb, size) for rgb in images.values()]) for size in (320,)]
    net.eval()  # BN uses the calibrated running statistics and does not update them
    for p in net.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    grey = torch.full((1, 3, 320, 320), 114 / 255)  # what letterbox padding looks like
    for step in range(steps):
        loss = torch.zeros(())
        for batch in batches:
            for y, y_grey in zip(_class_logits(net, batch), _class_logits(net, grey), strict=True):
                spread = y.flatten(2).std(dim=2)  # (images, classes) within-image spread
                loss = loss + (spread.clamp_min(1e-4).log() ** 2).mean()
                # Padding must not fire: grey sits >= 3 (pooled) std below each class's mean on photos.
                z = (y_grey.flatten(2) - y.mean(dim=(0, 2, 3))[None, :, None]) / y.std(dim=(0, 2, 3))[None, :, None]
                loss = loss + torch.relu(z + 3).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"equalise step {step}: loss {loss.item():.4f}")
    for p in net.parameters():
        p.requires_grad_(False)


def build_model(out: Path, seed: int, logit_mean: float, logit_std: float, logit_class_std: float, steps: int) -> Path:
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import ROOT, YAML

    torch.manual_seed(seed)
    model = YOLO("yolov8n.yaml")  # built from the bundled config, random init, nothing downloaded
    names = YAML.load(ROOT / "cfg/datasets/coco.yaml")["names"]
    net = model.model
    net.names = {int(k): str(v) for k, v in names.items()}

    # Random init makes activations vanish with depth (the head's outputs are constant to 1e-6), so
    # calibrate every BatchNorm on a batch of real photos: each layer then sees unit-scale features.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: running stats = this batch's stats
    net.train()
    with torch.no_grad():
        net(torch.cat([_letterboxed_tensor(rgb, 640) for rgb in calibration_images()]))
    net.eval()

    # Contrast-poor photos (chelsea) still give near-constant head outputs while busy ones (astronaut)
    # vary a lot, so no single threshold suits all. A few Adam steps (BN statistics frozen) equalise
    # the within-image spread of the class logits across the photos (optimised at 320 px, for speed),
    # and push the logits of letterbox padding (plain grey 114) far down: otherwise a random net fires
    # all over the padding and Ultralytics returns dozens of zero-area boxes clipped to the image edge.
    _equalise_logit_spread(net, steps)

    # Distinct, image-dependent class scores: standardise each class logit over the calibration photos
    # (per stride level), then give it spread ``logit_std`` around a random per-class mean, so only the
    # tail passes conf 0.25 and scores stay well below saturation (no ties at 1.0).
    head = net.model[-1]
    batch = torch.cat([_letterboxed_tensor(rgb, 640) for rgb in [*test_images().values(), *calibration_images()]])
    with torch.no_grad():
        logits = _class_logits(net, batch)
    gen = torch.Generator().manual_seed(seed + 1)
    class_mean = torch.randn(head.nc, generator=gen) * logit_class_std + logit_mean
    with torch.no_grad():
        for k, branch in enumerate(head.cv3):
            conv = branch[-1]
            y = logits[k]
            mean, std = y.mean(dim=(0, 2, 3)), y.std(dim=(0, 2, 3)).clamp_min(1e-6)
            gain = logit_std / std
            conv.weight.mul_(gain[:, None, None, None])
            conv.bias.copy_((conv.bias - mean) * gain + class_mean)
    pt = out / "yolov8n_random.pt"
    model.save(pt)
    return pt


def export(pt: Path, out: Path) -> list[tuple[str, Path, int, bool]]:
    from ultralytics import YOLO

    done = []
    for export_id, imgsz, dynamic in EXPORTS:
        model = YOLO(str(pt))
        path = Path(model.export(format="onnx", imgsz=imgsz, dynamic=dynamic, half=False, simplify=True))
        target = out / f"{export_id}.onnx"
        shutil.move(path, target)
        done.append((export_id, target, imgsz, dynamic))
    return done


def check_onnx(path: Path) -> dict[str, str]:
    import onnx

    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    for key in ("names", "imgsz", "stride"):
        if key not in meta:
            raise SystemExit(f"{path}: metadata lacks {key!r}: {sorted(meta)}")
    (out,) = m.graph.output
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    if len(dims) != 3 or dims[1] != 84:
        raise SystemExit(f"{path}: output {out.name} has shape {dims}, expected [B, 84, N]")
    print(
        f"{path.name}: output {out.name} {dims}, input "
        f"{[d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]}, "
        f"opset {m.opset_import[0].version}, imgsz {meta['imgsz']}, stride {meta['stride']}"
    )
    return meta


def predict(out: Path, exports: list[tuple[str, Path, int, bool]], conf: float, iou: float) -> dict[str, object]:
    import cv2
    import numpy as np
    import ultralytics
    from ultralytics import YOLO
    from ultralytics.data.augment import LetterBox

    images = test_images()
    (out / "images").mkdir(exist_ok=True)
    (out / "raw").mkdir(exist_ok=True)
    for image_id, rgb in images.items():
        cv2.imwrite(str(out / "images" / f"{image_id}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))

    result: dict[str, object] = {
        "ultralytics_version": ultralytics.__version__,
        "conf": conf,
        "iou": iou,
        "note": "Predictions by Ultralytics itself on the ONNX file (AutoBackend + onnxruntime, CPU). "
        "xyxy in original pixels. Derived from AGPL software: do not commit.",
        "exports": [],
    }
    runs = [(export_id, path, imgsz, dynamic, True) for export_id, path, imgsz, dynamic in exports]
    # Diagnostic variant: the dynamic export fed square letterboxes (predict(rect=False)), to tell a
    # letterbox-shape difference from a decode difference when the default comparison fails.
    runs += [(f"{e}_square", p, s, d, False) for e, p, s, d in exports if d]
    for export_id, path, imgsz, dynamic, rect in runs:
        model = YOLO(str(path), task="detect")
        # Ultralytics' predictor letterboxes to the minimum stride-multiple rectangle (auto=True) only
        # for dynamic models (and rect=True, the default); static ones always get the full square.
        auto = dynamic and rect
        entry: dict[str, object] = {
            "id": export_id,
            "onnx": path.name,
            "imgsz": imgsz,
            "dynamic": dynamic,
            "letterbox": "min-rect" if auto else "square",
            "diagnostic_only": not rect,
            "images": [],
        }
        for image_id, rgb in images.items():
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            (res,) = model.predict(source=bgr, conf=conf, iou=iou, imgsz=imgsz, rect=rect, verbose=False, device="cpu")
            boxes = res.boxes
            order = np.argsort(-boxes.conf.numpy(), kind="stable")
            lb_hw = LetterBox(imgsz, auto=auto, stride=32)(image=bgr).shape[:2]
            entry["images"].append(
                {
                    "id": image_id,
                    "png": f"images/{image_id}.png",
                    "shape_hw": list(rgb.shape[:2]),
                    "ultra_input_hw": [int(v) for v in lb_hw],
                    "xyxy": boxes.xyxy.numpy()[order].astype(float).tolist(),
                    "conf": boxes.conf.numpy()[order].astype(float).tolist(),
                    "cls": boxes.cls.numpy()[order].astype(int).tolist(),
                }
            )
            raw_input_hw = _save_raw(out / "raw" / f"{export_id}__{image_id}.npz", model, bgr)
            if raw_input_hw != tuple(lb_hw):
                raise SystemExit(f"{export_id} {image_id}: predictor input {raw_input_hw} != expected {lb_hw}")
            scores = boxes.conf.numpy() if len(order) else np.zeros(1)
            print(
                f"{export_id} {image_id} {rgb.shape[:2]} -> input {lb_hw}: {len(order)} boxes, "
                f"conf {scores.max():.3f}..{scores.min():.3f}, "
                f"{len(set(boxes.cls.numpy().astype(int).tolist()))} classes"
            )
        result["exports"].append(entry)
    return result


def _save_raw(path: Path, model: object, bgr: object) -> tuple[int, int]:
    """Ultralytics' own preprocessed tensor and the raw (1, 84, N) output, for diagnosing a mismatch."""
    import numpy as np

    predictor = model.predictor  # type: ignore[attr-defined]
    im = predictor.preprocess([bgr])
    raw = predictor.inference(im)
    raw = raw[0] if isinstance(raw, list | tuple) else raw
    np.savez_compressed(path, input=im.numpy(), output=np.asarray(raw))
    return tuple(im.shape[2:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a directory outside the repository")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logit-mean", type=float, default=-5.0, help="mean class logit (before sigmoid)")
    parser.add_argument("--logit-std", type=float, default=1.0, help="spread of one class logit over anchors/photos")
    parser.add_argument("--logit-class-std", type=float, default=0.5, help="spread of the per-class means")
    parser.add_argument("--steps", type=int, default=60, help="Adam steps equalising the logit spread")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    args = parser.parse_args()

    out: Path = args.out.resolve()
    if (Path(__file__).resolve().parents[2] / ".git").exists() and Path(__file__).resolve().parents[2] in out.parents:
        raise SystemExit(f"--out {out} is inside the repository: these files are AGPL-derived, keep them out")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(out / ".ultralytics-config"))
    _guard_network()

    from ultralytics.utils import SETTINGS

    SETTINGS.update({"sync": False})

    pt = build_model(out, args.seed, args.logit_mean, args.logit_std, args.logit_class_std, args.steps)
    exports = export(pt, out)
    for _, path, _, _ in exports:
        check_onnx(path)
    result = predict(out, exports, args.conf, args.iou)
    result["generator"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["network_attempts"] = NETWORK_ATTEMPTS
    (out / "expected.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'expected.json'}; blocked network attempts: {NETWORK_ATTEMPTS or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
