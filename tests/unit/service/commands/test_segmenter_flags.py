"""``--segmenter`` on ``run`` and ``sync`` (and ``PREANNOTATE_SEGMENTER``): parsed, loaded once, handed to the flow;
a spec that names no segmenter is exit 2 with one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from models.base import DetectorOptions, Segmenter
from service import cli
from service.config import get_settings
from tests.fakes.segmenter import EllipseSegmenter


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.full((48, 64, 3), 127, np.uint8))
    return path


def test_run_and_sync_take_a_segmenter_spec() -> None:
    run = cli.build_parser().parse_args(["run", "a.jpg", "--out", "o.json", "--segmenter", "hf:/m/sam"])
    sync = cli.build_parser().parse_args(["sync", "label-studio", "--project", "1", "--segmenter", "hf:/m/sam"])
    plain = cli.build_parser().parse_args(["run", "a.jpg", "--out", "o.json"])
    assert (run.segmenter, sync.segmenter, plain.segmenter) == ("hf:/m/sam", "hf:/m/sam", None)


@pytest.mark.parametrize("how", ["flag", "setting"])
def test_run_with_a_spec_that_names_no_segmenter_exits_2_with_one_line(
    how: str, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["run", str(photo), "--out", str(tmp_path / "out.json"), "--quiet"]
    if how == "flag":
        args += ["--segmenter", "onnx:/models/sam.onnx"]
    else:
        monkeypatch.setenv("PREANNOTATE_SEGMENTER", "onnx:/models/sam.onnx")

    code = cli.main(args)

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "invalid segmenter spec 'onnx:/models/sam.onnx'" in err
    assert not (tmp_path / "out.json").exists()


def test_sync_with_a_spec_that_names_no_segmenter_exits_2_before_label_studio_is_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Nothing listens on port 9: reaching Label Studio would be another error (and a wait)
    args = ["sync", "label-studio", "--url", "http://127.0.0.1:9", "--api-key", "k", "--project", "1"]
    code = cli.main([*args, "--segmenter", "builtin:centerface", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "invalid segmenter spec 'builtin:centerface'" in err


def test_run_hands_the_loaded_segmenter_to_the_flow_on_frames_decoded_for_it(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loader is the registry's (re/sam's work); what is under test is that run loads the spec it was given,
    # once, and the flow runs it on the frames the detector saw.
    loaded: list[tuple[str, DetectorOptions]] = []
    segmenter = EllipseSegmenter(input_size_px=None)

    def load(spec: str, options: DetectorOptions | None = None) -> Segmenter:
        loaded.append((spec, options or DetectorOptions()))
        return segmenter

    monkeypatch.setattr("service.pipeline.masking.load_segmenter", load)
    monkeypatch.setenv("PREANNOTATE_SEGMENTER", "hf:/from/the/setting")
    astronaut = tmp_path / "astronaut.png"
    cv2.imwrite(str(astronaut), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out.json"

    code = cli.main(["run", str(astronaut), "--out", str(out), "--segmenter", "hf:/m/sam", "--input-size", "256", "-q"])

    assert code == 0
    assert [spec for spec, _ in loaded] == ["hf:/m/sam"]  # the flag over the setting
    assert loaded[0][1].input_size_px is None  # --input-size is the detector's, not the segmenter's
    assert segmenter.calls == [1]  # one call for the photo's boxes, not one per box
    ((height, width, boxes),) = segmenter.seen
    assert (height, width) == (512, 512)  # full frames, not 256 px ones: this segmenter takes any size
    assert boxes == len(json.loads(out.read_text())["annotations"]) >= 1
