"""Prompts for an open-vocabulary detector from a Label Studio labeling config (pure, no I/O but ``read_prompt_map``).

The classes are the label values of the controls that will receive the predictions, exactly those
``item_to_ls_result`` fills (``LabelConfig.for_run``): box controls, plus brush and polygon ones for a run that
makes masks. A class is always written under its label; what the model is asked for is, first match wins:

1. the prompt map (``--prompt-map FILE``, ``{"LABEL": "prompt" | ["p1", "p2"]}``);
2. the label's ``prompt`` attribute, ``|`` between several (``<Label value="PED" prompt="pedestrian|person
   walking"/>``): Label Studio 1.23.2 keeps custom attributes in the saved config and shows nothing for them
   (``hint`` would be shown to annotators as a tooltip);
3. the model classes an alias map (``--alias CLASS=LABEL``, ``extra_params.aliases``) or the label's
   ``predicted_values`` send to it: those class names;
4. the label itself.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from models.prompts import MAX_PROMPT_CLASSES, PromptSet
from service.convert.label_studio import LabelConfig, parse_label_config
from service.errors import ErrorCode, PreannotateError

PROMPT_ATTRIBUTE = "prompt"
"""The ``<Label>`` attribute holding a label's prompts (``|``-separated)."""
"""A prompt map file larger than this is refused before parsing (one line per class is a few KB)."""

PromptMap = Mapping[str, str | Sequence[str]]
"""Label -> its prompt or prompts (a prompt map file's content)."""


def ls_config_to_prompts(
    label_config_xml: str,
    *,
    aliases: Mapping[str, str] | None = None,
    overrides: PromptMap | None = None,
    masks: bool = False,
) -> PromptSet:
    """The prompt set of a project: one class per label of a receiving control, in config order.

    Args:
        label_config_xml: the project's labeling config.
        aliases: model class -> label (case-insensitive), as the converter reads it.
        overrides: label -> prompt(s) (case-insensitive): the prompt map file.
        masks: the run makes masks, so brush and polygon controls receive predictions too.

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` for a config that does not parse; ``INVALID_PROMPTS`` when no
            receiving control has a label, an override names no such label, or a prompt is unusable.
    """
    config = parse_label_config(label_config_xml).for_run(masks=masks)
    labels = receiving_labels(config)
    if not labels:
        raise PreannotateError(
            ErrorCode.INVALID_PROMPTS,
            "the labeling config has no labels on a control predictions go to (RectangleLabels on an Image, "
            "Labels with a VideoRectangle on a Video, or BrushLabels/PolygonLabels for masks)",
        )
    by_lower = {label.lower(): label for label in labels}
    unknown = [name for name in overrides or {} if name.strip().lower() not in by_lower]
    if unknown:
        raise PreannotateError(
            ErrorCode.INVALID_PROMPTS,
            f"the prompt map names labels the config's receiving controls do not have: {', '.join(unknown)} "
            f"(labels: {', '.join(labels)})",
        )
    chosen = {label.lower(): prompts for label, prompts in _alias_prompts(config, aliases or {}, by_lower).items()}
    chosen |= {label.lower(): prompts for label, prompts in _attribute_prompts(label_config_xml).items()}
    chosen |= {name.strip().lower(): _as_list(prompts) for name, prompts in (overrides or {}).items()}
    try:
        return PromptSet.from_names(labels, chosen)
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_PROMPTS, f"labeling config: {exc}") from None


def labels_only(config: LabelConfig) -> LabelConfig:
    """The config a run prompted from it converts with: its class names are the labels already, so no
    ``predicted_values`` may send one to another label (``<Label value="vehicle" predicted_values="car"/>`` would
    take the boxes of a label ``car``)."""
    return replace(config, controls=tuple(replace(c, predicted_values={}) for c in config.controls))


def describe(prompts: PromptSet) -> str:
    """A prompt set as ``--prompts`` would take it (``PED=pedestrian|person walking, hard hat``), for a log line."""
    return ", ".join(c.name if c.prompts == (c.name,) else f"{c.name}={'|'.join(c.prompts)}" for c in prompts.classes)


def receiving_labels(config: LabelConfig) -> list[str]:
    """The label values of ``config``'s controls (already ``for_run``), in config order, once each ignoring case
    (the converter matches labels ignoring case, so ``Car`` and ``car`` are one class)."""
    seen: dict[str, str] = {}
    for control in config.controls:
        for label in control.labels:
            seen.setdefault(label.strip().lower(), label)
    return list(seen.values())[: MAX_PROMPT_CLASSES + 1]  # one over: PromptSet then names the limit


def _alias_prompts(
    config: LabelConfig, aliases: Mapping[str, str], by_lower: Mapping[str, str]
) -> dict[str, list[str]]:
    """Label -> the model classes sent to it: the alias map, then ``predicted_values`` (as ``label_for`` ranks
    them); a class the alias map sends elsewhere is not taken from ``predicted_values``, nor one that is another
    receiving label's name (that label prompts for it: ``<Label value="Vehicle" predicted_values="car,truck"/>``
    beside ``<Label value="Car"/>`` asks for ``truck`` under ``Vehicle``; a prompt names one class)."""
    prompts: dict[str, list[str]] = {}
    aliased = {name.strip().lower() for name in aliases}
    pairs = [(name.strip(), label) for name, label in aliases.items()]
    for control in config.controls:
        pairs += [(name, label) for name, label in control.predicted_values.items() if name not in aliased]
    for name, label in pairs:
        target = by_lower.get(label.strip().lower())
        other_label = by_lower.get(name.lower(), target) != target
        if target is not None and name and not other_label and name not in prompts.get(target, []):
            prompts.setdefault(target, []).append(name)
    return prompts


def _attribute_prompts(label_config_xml: str) -> dict[str, list[str]]:
    """Label -> its ``prompt`` attribute's prompts, for every ``<Label>`` that has one (the first one wins)."""
    found: dict[str, list[str]] = {}
    for element in ET.fromstring(label_config_xml).iter():  # parsed once already: well-formed and bounded
        if not isinstance(element.tag, str) or element.tag.lower() != "label":
            continue
        value = element.get("value")
        raw = next((v for k, v in element.attrib.items() if k.lower() == PROMPT_ATTRIBUTE), None)
        if value and raw is not None and value not in found:
            found[value] = [p.strip() for p in raw.split("|")]  # a blank one is refused by PromptedClass
    return found


def _as_list(prompts: str | Sequence[str]) -> list[str]:
    return [prompts] if isinstance(prompts, str) else list(prompts)


def read_prompt_map(path: Path, *, max_bytes: int) -> dict[str, str | list[str]]:
    """A ``--prompt-map`` file of at most ``max_bytes`` (``PREANNOTATE_MAX_PROMPT_MAP_BYTES``): a JSON object of
    label -> prompt or list of prompts.

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` naming the file when it cannot be read or is not such an object.
    """
    try:
        if path.stat().st_size > max_bytes:
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"{path}: over {max_bytes} bytes (PREANNOTATE_MAX_PROMPT_MAP_BYTES)"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{path}: cannot read the prompt map: {exc}") from None
    except json.JSONDecodeError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{path}: not JSON: {exc}") from None
    return prompt_map_from_json(data, where=str(path))


def prompt_map_from_json(data: object, *, where: str) -> dict[str, str | list[str]]:
    """A prompt map from parsed JSON (a file's, or the ML backend's ``extra_params.prompt_map``).

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` naming ``where`` when it is not ``{"LABEL": str | [str, ...]}``.
    """
    if not isinstance(data, dict):
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f'{where}: expected a JSON object {{"LABEL": "prompt" | ["p1", "p2"]}}'
        )
    result: dict[str, str | list[str]] = {}
    for label, prompts in data.items():
        if isinstance(prompts, str):
            result[str(label)] = prompts
        elif isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts):
            result[str(label)] = [str(p) for p in prompts]
        else:
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"{where}: label {label!r} needs a prompt or a non-empty list of prompts"
            )
    return result
