"""The TF.js reference runner is real: a tiny graph of NanoDet's ops, run by tfjs, equals numpy by hand."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.reference.tfjs_runner import TfjsRunError, ensure_tfjs, package_key, require_tfjs, run_tfjs_graph

IN_SHAPE = (1, 3, 7, 9)  # NCHW, H != W so that a swapped layout cannot pass
OUT_CHANNELS = 4
STRIDE = 2
ALPHA = 0.1


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _node(name: str, op: str, inputs: list[str] | None = None, **attr: Any) -> dict[str, Any]:
    return {"name": name, "op": op, "input": inputs or [], "attr": attr}


def _const(name: str, dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    tensor = {"dtype": dtype, "tensorShape": {"dim": [{"size": str(d)} for d in shape]}}
    return _node(name, "Const", dtype={"type": dtype}, value={"tensor": tensor})


def _topology() -> dict[str, Any]:
    """NCHW input -> Transpose -> Conv2D (NHWC, VALID, stride 2) -> Add bias -> LeakyRelu -> Transpose -> NCHW."""
    conv_attr = {
        "T": {"type": "DT_FLOAT"},
        "padding": {"s": _b64("VALID")},
        "data_format": {"s": _b64("NHWC")},
        "strides": {"list": {"i": ["1", str(STRIDE), str(STRIDE), "1"]}},
        "dilations": {"list": {"i": ["1", "1", "1", "1"]}},
        "explicit_paddings": {"list": {}},
    }
    shape = {"dim": [{"size": str(d)} for d in IN_SHAPE]}
    nodes = [
        _node("x", "Placeholder", shape={"shape": shape}, dtype={"type": "DT_FLOAT"}),
        _const("w", "DT_FLOAT", (3, 3, IN_SHAPE[1], OUT_CHANNELS)),
        _const("b", "DT_FLOAT", (OUT_CHANNELS,)),
        _const("to_nhwc/perm", "DT_INT32", (4,)),
        _const("to_nchw/perm", "DT_INT32", (4,)),
        _node("to_nhwc", "Transpose", ["x", "to_nhwc/perm"], T={"type": "DT_FLOAT"}, Tperm={"type": "DT_INT32"}),
        _node("conv", "Conv2D", ["to_nhwc", "w"], **conv_attr),
        _node("add", "Add", ["conv", "b"], T={"type": "DT_FLOAT"}),
        _node("act", "LeakyRelu", ["add"], T={"type": "DT_FLOAT"}, alpha={"f": ALPHA}),
        _node("to_nchw", "Transpose", ["act", "to_nchw/perm"], T={"type": "DT_FLOAT"}, Tperm={"type": "DT_INT32"}),
        _node("Identity", "Identity", ["to_nchw"], T={"type": "DT_FLOAT"}),
        _node("Identity_1", "Identity", ["add"], T={"type": "DT_FLOAT"}),
    ]
    return {"node": nodes, "library": {}, "versions": {}}


def _signature(out_shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    def spec(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"name": name, "dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": str(d)} for d in shape]}}

    return {"inputs": {"x:0": spec("x:0", IN_SHAPE)}, "outputs": {k: spec(k, s) for k, s in out_shapes.items()}}


def _write_model(root: Path, weight: np.ndarray, bias: np.ndarray) -> tuple[Path, Path]:
    """model.json + group1-shard1of1.bin: the conv weight stored as float16, like NanoDet's float weights."""
    h, w = _out_hw()
    specs = [
        {"name": "w", "shape": list(weight.shape), "dtype": "float32",
         "quantization": {"dtype": "float16", "original_dtype": "float32"}},
        {"name": "b", "shape": [OUT_CHANNELS], "dtype": "float32"},
        {"name": "to_nhwc/perm", "shape": [4], "dtype": "int32"},
        {"name": "to_nchw/perm", "shape": [4], "dtype": "int32"},
    ]  # fmt: skip
    data = b"".join(
        [
            weight.astype("<f2").tobytes(),
            bias.astype("<f4").tobytes(),
            np.array([0, 2, 3, 1], "<i4").tobytes(),
            np.array([0, 3, 1, 2], "<i4").tobytes(),
        ]
    )
    model = {
        "format": "graph-model",
        "generatedBy": "preannotate tests",
        "convertedBy": "preannotate tests",
        "signature": _signature({"Identity:0": (1, OUT_CHANNELS, h, w), "Identity_1:0": (1, h, w, OUT_CHANNELS)}),
        "modelTopology": _topology(),
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": specs}],
    }
    model_json, weights_bin = root / "model.json", root / "group1-shard1of1.bin"
    model_json.write_text(json.dumps(model))
    weights_bin.write_bytes(data)
    return model_json, weights_bin


def _out_hw() -> tuple[int, int]:
    return (IN_SHAPE[2] - 3) // STRIDE + 1, (IN_SHAPE[3] - 3) // STRIDE + 1


def _reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph in numpy, in float64: (NCHW activation, NHWC pre-activation)."""
    nhwc = x.astype(np.float64).transpose(0, 2, 3, 1)
    windows = np.lib.stride_tricks.sliding_window_view(nhwc, (3, 3), axis=(1, 2))[:, ::STRIDE, ::STRIDE]
    conv = np.einsum("nhwckl,klco->nhwo", windows, weight.astype(np.float64))
    pre = conv + bias
    act = np.where(pre > 0, pre, ALPHA * pre)
    return act.transpose(0, 3, 1, 2), pre


@pytest.fixture(scope="module")
def runner() -> Path:
    return require_tfjs()


def test_tiny_graph_equals_numpy(runner: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    weight = rng.standard_normal((3, 3, IN_SHAPE[1], OUT_CHANNELS)).astype(np.float32)
    bias = rng.standard_normal(OUT_CHANNELS).astype(np.float32)
    model_json, weights_bin = _write_model(tmp_path, weight, bias)
    inputs = {f"case{i}": rng.standard_normal(IN_SHAPE).astype(np.float32) for i in range(2)}

    got = run_tfjs_graph(model_json, weights_bin, inputs, feed="x")

    assert list(got) == list(inputs)
    stored = weight.astype(np.float16).astype(np.float32)  # what the .bin holds
    for name, x in inputs.items():
        act, pre = _reference(x, stored, bias)
        assert set(got[name]) == {"Identity:0", "Identity_1:0"}
        assert got[name]["Identity:0"].dtype == np.float32
        np.testing.assert_allclose(got[name]["Identity:0"], act, atol=1e-5)
        np.testing.assert_allclose(got[name]["Identity_1:0"], pre, atol=1e-5)
        # The comparison can see a float16 rounding of the weights (so it can see 1e-3 at NanoDet's scale).
        assert np.abs(got[name]["Identity:0"] - _reference(x, weight, bias)[0]).max() > 1e-4


def test_weights_dir_and_signature_feed_name(runner: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((3, 3, IN_SHAPE[1], OUT_CHANNELS)).astype(np.float32)
    bias = np.zeros(OUT_CHANNELS, np.float32)
    model_json, _ = _write_model(tmp_path, weight, bias)
    x = rng.standard_normal(IN_SHAPE).astype(np.float32)

    by_dir = run_tfjs_graph(model_json, tmp_path, {"a": x}, feed="x:0")["a"]
    act, _ = _reference(x, weight.astype(np.float16).astype(np.float32), bias)
    np.testing.assert_allclose(by_dir["Identity:0"], act, atol=1e-5)


def test_short_weights_fail_with_the_sizes(runner: Path, tmp_path: Path) -> None:
    weight = np.ones((3, 3, IN_SHAPE[1], OUT_CHANNELS), np.float32)
    model_json, weights_bin = _write_model(tmp_path, weight, np.zeros(OUT_CHANNELS, np.float32))
    weights_bin.write_bytes(weights_bin.read_bytes()[:-4])

    with pytest.raises(TfjsRunError, match=r"hold 260 bytes, the manifest of .*model\.json needs 264"):
        run_tfjs_graph(model_json, weights_bin, {"c": np.zeros(IN_SHAPE, np.float32)}, feed="x")


def test_unknown_feed_fails_loudly(runner: Path, tmp_path: Path) -> None:
    model_json, weights_bin = _write_model(
        tmp_path, np.ones((3, 3, IN_SHAPE[1], OUT_CHANNELS), np.float32), np.zeros(OUT_CHANNELS, np.float32)
    )
    with pytest.raises(TfjsRunError, match="not part of graph"):
        run_tfjs_graph(model_json, weights_bin, {"c": np.zeros(IN_SHAPE, np.float32)}, feed="input_1")


@pytest.mark.parametrize(("required", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_without_node_skips_unless_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm
    monkeypatch.setenv("PREANNOTATE_REQUIRE_NODE", required)

    with pytest.raises(outcome, match="node and npm not found on PATH"):
        require_tfjs()


def test_install_is_reused(runner: Path) -> None:
    marker = runner / ".complete"
    before = marker.stat().st_mtime_ns

    assert ensure_tfjs() == runner
    assert marker.stat().st_mtime_ns == before
    assert (runner / "node_modules" / "@tensorflow" / "tfjs" / "package.json").is_file()


@pytest.mark.slow
def test_install_for_another_lock_is_replaced(runner: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "tfjs"
    target.mkdir()
    (target / ".complete").write_text("an-older-lock")
    (target / "leftover").write_text("")
    monkeypatch.setenv("PREANNOTATE_TFJS_DIR", str(target))

    assert ensure_tfjs() == target

    assert (target / ".complete").read_text() == package_key()
    assert not (target / "leftover").exists()
    assert (target / "node_modules" / "@tensorflow" / "tfjs-backend-cpu").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tfjs"]  # no staging or stale dir left behind
