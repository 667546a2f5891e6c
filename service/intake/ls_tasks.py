"""One Label Studio task through the flow: the objects its labeling config boxes, fetched, decoded and detected.

Shared by ``preannotate sync label-studio``, the Label Studio sweep and the ML backend's ``/predict``. Nothing here
prints: warnings come back with the result, and each caller says them its own way (stderr, or the log).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory

from service.convert.label_studio import LabelConfig, LsObject
from service.errors import ErrorCode, PreannotateError
from service.pipeline.flow import FlowOptions, detector_sampling, run_flow
from service.pipeline.frames import Frame, FrameResult, MediaKind, SlotMeta
from service.pipeline.media import ItemSpec, SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.predictions import ItemPredictions
from service.pipeline.readers import SlotReader
from service.pipeline.run import FrameDetector

_KINDS = {"image": MediaKind.IMAGE, "video": MediaKind.VIDEO}

Downloader = Callable[[str, Path], Path]
"""``(task data value, scratch dir) -> local file``."""


@dataclass(frozen=True, slots=True)
class TaskPredictions:
    """A task's predictions, and the objects that decoded only in part (their frames are kept)."""

    item: ItemPredictions
    warnings: tuple[PreannotateError, ...] = ()


def has_prediction(task: Mapping[str, object], model_version: str) -> bool:
    """Whether a task listed with ``fields=all`` carries a prediction of ``model_version``."""
    predictions = task.get("predictions")
    if not isinstance(predictions, list):
        return False
    return any(isinstance(p, Mapping) and p.get("model_version") == model_version for p in predictions)


def preannotate_task(
    task: Mapping[str, object],
    config: LabelConfig,
    *,
    download: Downloader,
    detector: FrameDetector,
    sampling: SamplingOptions,
    limits: MediaLimits,
    options: FlowOptions,
    work_dir: Path | None,
    on_slot: Callable[[SlotMeta], None] | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> TaskPredictions:
    """Fetch, decode and detect every object of one task that a box control points at.

    Each object becomes a slot named after it, which is how ``item_to_ls_result`` matches them. Files are
    fetched first, in order (a download's ``BackendError`` leaves unchanged: ``sync`` counts outages by it);
    then the objects are decoded in parallel and detected together.

    Raises:
        PreannotateError: the task has none of the data keys, a file failed to fetch or decode, or a
            file is not the kind its object shows (a video in an ``<Image>``).
    """
    name = f"task-{task.get('id')}"
    data = task.get("data")
    data = data if isinstance(data, dict) else {}
    targets: list[tuple[LsObject, str]] = []
    for obj in config.targets():
        value = data.get(obj.value_key) if obj.value_key else None
        if isinstance(value, str) and value.strip():
            targets.append((obj, value))
    if not targets:
        keys = ", ".join(f"${o.value_key}" for o in config.targets() if o.value_key) or "none"
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{name}: no media in the task data (looked for {keys})")
    objects = {obj.name: obj for obj, _ in targets}
    detected = detector_sampling(sampling, detector.info)  # only the detector sees these frames

    def open_object(item: str, slot: SlotSpec) -> SlotReader:
        return _ObjectReader(item, objects[slot.name], open_slot(item, slot, detected, limits))

    with TemporaryDirectory(dir=work_dir, prefix="preannotate-ls-") as scratch:
        slots = tuple(SlotSpec(obj.name, (download(value, Path(scratch)),)) for obj, value in targets)
        (output,) = run_flow(
            [ItemSpec(name, slots)], detector, options, open_slot=open_object, on_slot=on_slot, on_frame=on_frame
        )
    item = ItemPredictions(name=name, slots=output.slots, frames=output.frames)
    return TaskPredictions(item=item, warnings=output.warnings)


class _ObjectReader:
    """A reader for one LS object: refuses a file of the wrong kind; frames name the object, not the scratch file
    (which means nothing in Label Studio: the task id names the item)."""

    def __init__(self, item: str, obj: LsObject, reader: SlotReader) -> None:
        if reader.meta.media is not _KINDS[obj.kind]:
            reader.close()
            raise PreannotateError(
                ErrorCode.UNSUPPORTED_MEDIA,
                f"{item}: <{obj.kind.title()} name={obj.name!r}> got a {reader.meta.media.value} file",
            )
        self.meta = reader.meta
        self._reader = reader
        self._name = obj.name

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._reader:
            yield replace(frame, info=replace(frame.info, source=self._name))

    def close(self) -> None:
        self._reader.close()
