"""An open-vocabulary model's prompts from the labeling project predictions go to, when nobody gave any.

Label Studio: the labels of the controls that receive the predictions (``service.convert.ls_prompts``). V7: the
dataset's bounding-box classes (and polygon ones for a run that makes masks). Encord: the ontology's bounding-box
objects (and polygon and bitmask ones for masks), from ``encord_ontology_file``, the file pushes read. Every class is
written under the project's own name; an alias map (``encord_class_aliases``, Label Studio's ``--alias``) makes the
model classes sent to a name its prompts, and a prompt map (label -> prompts) wins over everything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from models.prompts import PromptSet
from service.backends.base import require_configured
from service.backends.label_studio import LabelStudioClient, config_from_settings
from service.backends.retry import BackendError, backend_error_to_preannotate
from service.backends.v7 import PROMPTED_MAIN_TYPES, V7Backend, v7_config_from
from service.config import Settings
from service.convert.encord_ontology import BOUNDING_BOX, EncordOntology
from service.convert.encord_shapes import MASK_SHAPES
from service.convert.ls_prompts import PromptMap, ls_config_to_prompts
from service.errors import ErrorCode, PreannotateError
from service.spec.requests import Destination


def project_prompts(
    destinations: Sequence[Destination],
    settings: Settings,
    *,
    masks: bool = False,
    overrides: PromptMap | None = None,
) -> PromptSet | None:
    """The prompts of the first destination's project (its classes are what the job's predictions are written
    under; a second destination matches them by name as it would a fixed model's); None without a destination.

    Raises:
        PreannotateError: ``BACKEND_NOT_CONFIGURED``, the backend errors of a failed read (``BACKEND_UNAVAILABLE``
            after the retry policy, ``BACKEND_AUTH_FAILED``, ``BACKEND_REJECTED``), ``INVALID_PROMPTS`` for a
            project with no class to prompt for.
    """
    if not destinations:
        return None
    destination = destinations[0]
    read = _READERS[destination.backend]
    try:
        return read(destination, settings, masks, overrides)
    except BackendError as exc:
        raise backend_error_to_preannotate(exc) from None


def _label_studio(destination: Destination, settings: Settings, masks: bool, overrides: PromptMap | None) -> PromptSet:
    config = config_from_settings(settings)
    require_configured(config is not None, "label_studio")
    assert config is not None
    if destination.project is None:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a label_studio destination needs its project id")
    with LabelStudioClient(config, fetch_policy=settings.fetch_policy()) as client:
        xml = client.get_label_config(destination.project)
    # the push converts without aliases, so none rename classes here either
    return ls_config_to_prompts(xml, overrides=overrides, masks=masks)


def _v7(destination: Destination, settings: Settings, masks: bool, overrides: PromptMap | None) -> PromptSet:
    key = settings.v7_api_key.get_secret_value()
    require_configured(bool(key and settings.v7_team_slug and settings.v7_dataset_id), "v7")
    try:
        config = v7_config_from(settings)
    except ValueError as exc:
        raise PreannotateError(ErrorCode.BACKEND_NOT_CONFIGURED, f"v7: {exc}") from None
    types = PROMPTED_MAIN_TYPES if masks else ("bounding_box",)
    with V7Backend(config, key) as backend:
        names = backend.dataset_class_names(types)
    if not names:
        raise PreannotateError(
            ErrorCode.INVALID_PROMPTS,
            f"V7 dataset {config.dataset_slug!r} has no {' or '.join(types)} class to prompt an open-vocabulary "
            "model with: add its classes in V7, or give the job prompts",
        )
    return _prompt_set(names, {}, overrides, where=f"V7 dataset {config.dataset_slug!r}")


def _encord(destination: Destination, settings: Settings, masks: bool, overrides: PromptMap | None) -> PromptSet:
    path = settings.encord_ontology_file
    require_configured(bool(settings.encord_project_hash) and path is not None, "encord")
    assert path is not None
    try:
        ontology = EncordOntology.from_json(json.loads(path.read_text()), aliases=settings.encord_class_aliases)
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PreannotateError(
            ErrorCode.BACKEND_NOT_CONFIGURED, f"{path}: not a usable Encord ontology: {exc}"
        ) from None
    return encord_prompts(ontology, masks=masks, overrides=overrides, where=str(path))


def encord_prompts(
    ontology: EncordOntology, *, masks: bool = False, overrides: PromptMap | None = None, where: str = "ontology"
) -> PromptSet:
    """The ontology's object names the run's rows can go to (``EncordOntology.resolve_row``): bounding-box objects,
    and polygon and bitmask ones when it makes masks; the model classes ``ontology.aliases`` send to an object are
    its prompts.

    Raises:
        PreannotateError: ``INVALID_PROMPTS`` when no such object exists or a prompt is unusable.
    """
    shapes = (BOUNDING_BOX, *MASK_SHAPES) if masks else (BOUNDING_BOX,)
    names: dict[str, str] = {}
    for obj in ontology.objects:
        if obj.shape in shapes:
            names.setdefault(obj.name.strip().lower(), obj.name)
    if not names:
        raise PreannotateError(
            ErrorCode.INVALID_PROMPTS,
            f"{where}: no {' or '.join(shapes)} object to prompt an open-vocabulary model with",
        )
    aliased: dict[str, list[str]] = {}
    for class_name in ontology.aliases:
        target = ontology.resolve(class_name, shapes)
        named = names.get(class_name.strip().lower())
        if target is not None and named in (None, target.name):  # another object's name prompts for it only
            aliased.setdefault(target.name.strip().lower(), []).append(class_name)
    return _prompt_set(list(names.values()), aliased, overrides, where=where)


def _prompt_set(
    names: Sequence[str], aliased: Mapping[str, Sequence[str]], overrides: PromptMap | None, *, where: str
) -> PromptSet:
    lowered = {name.strip().lower() for name in names}
    unknown = [name for name in overrides or {} if name.strip().lower() not in lowered]
    if unknown:
        raise PreannotateError(
            ErrorCode.INVALID_PROMPTS, f"{where}: the prompt map names no class: {', '.join(unknown)}"
        )
    chosen: dict[str, str | Sequence[str]] = dict(aliased)
    chosen |= {name.strip().lower(): prompts for name, prompts in (overrides or {}).items()}
    try:
        return PromptSet.from_names(names, chosen)
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_PROMPTS, f"{where}: {exc}") from None


_READERS: dict[str, Callable[[Destination, Settings, bool, PromptMap | None], PromptSet]] = {
    "label_studio": _label_studio,
    "v7": _v7,
    "encord": _encord,
}
