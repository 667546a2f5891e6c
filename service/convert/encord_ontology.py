"""An Encord ontology's objects, and which one a model class (and a row's shape: box or mask) goes to."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service.convert.encord_shapes import MASK_SHAPES, POLYGON
from service.convert.encord_types import EncordOntologyJson

BOUNDING_BOX = "bounding_box"
_WRITABLE = (BOUNDING_BOX, *MASK_SHAPES)
"""Shapes we write objects of."""
# Colours Encord's editor hands out, in order.
_PALETTE = ("#D33115", "#E27300", "#16406C", "#FE9200", "#FCDC00", "#DBDF00", "#A4DD00", "#68BC00", "#006400")


@dataclass(frozen=True, slots=True)
class OntologyObject:
    """One object class of an Encord ontology (``featureNodeHash`` is its id)."""

    name: str
    feature_hash: str
    shape: str
    color: str

    @property
    def value(self) -> str:
        """Encord's snake-case title (``_lower_snake_case`` in the SDK)."""
        return self.name.lower().replace(" ", "_")


@dataclass(frozen=True, slots=True)
class EncordOntology:
    """The project ontology's objects, and how model class names map onto them.

    Attributes:
        objects: Every object of the ontology (any shape).
        aliases: Model class name -> ontology object name or ``featureNodeHash``.
    """

    objects: tuple[OntologyObject, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for class_name, target in self.aliases.items():
            if all(self._by_alias_target(target, (shape,)) is None for shape in _WRITABLE):
                raise ValueError(
                    f"alias {class_name!r} -> {target!r}: no bounding_box object (nor polygon or bitmask one) has that "
                    "name or hash"
                )

    @classmethod
    def from_json(cls, data: Mapping[str, object], *, aliases: Mapping[str, str] | None = None) -> EncordOntology:
        """Parse an ontology structure (``{"objects": [...], "classifications": [...]}``).

        Also accepts it wrapped as ``structure`` (SDK ``Ontology``) or ``editor_ontology`` (project record).

        Raises:
            ValueError: A malformed object entry, or an alias naming no bounding-box object.
        """
        for wrapper in ("structure", "editor_ontology"):
            inner = data.get(wrapper)
            if isinstance(inner, Mapping):
                data = inner
        raw = data.get("objects")
        if not isinstance(raw, list):
            raise ValueError("ontology: 'objects' must be a list")
        objects = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, Mapping):
                raise ValueError(f"ontology objects[{i}]: must be an object")
            name, feature_hash, shape = entry.get("name"), entry.get("featureNodeHash"), entry.get("shape")
            if not all(isinstance(v, str) and v for v in (name, feature_hash, shape)):
                raise ValueError(f"ontology objects[{i}]: needs non-empty name, featureNodeHash and shape")
            color = entry.get("color") if isinstance(entry.get("color"), str) else _PALETTE[i % len(_PALETTE)]
            objects.append(OntologyObject(str(name), str(feature_hash), str(shape), str(color)))
        return cls(tuple(objects), dict(aliases or {}))

    def to_json(self) -> EncordOntologyJson:
        """The ontology structure, as Encord's editor and SDK (``OntologyStructure.from_dict``) read it."""
        return {
            "objects": [
                {"id": str(i), "name": o.name, "color": o.color, "shape": o.shape, "featureNodeHash": o.feature_hash}
                for i, o in enumerate(self.objects, start=1)
            ],
            "classifications": [],
        }

    def resolve(self, class_name: str, shapes: Sequence[str] = (BOUNDING_BOX,)) -> OntologyObject | None:
        """The object of one of ``shapes`` for a model class: alias, then exact name, then case-insensitive name
        or snake-case value. None when nothing matches, or several objects do (titles are not unique)."""
        if class_name in self.aliases:
            return self._by_alias_target(self.aliases[class_name], shapes)
        boxes = [o for o in self.objects if o.shape in shapes]
        for matches in (
            [o for o in boxes if o.name == class_name],
            [o for o in boxes if class_name.casefold() in (o.name.casefold(), o.value.casefold())],
        ):
            if len(matches) == 1:
                return matches[0]
            if matches:
                return None
        return None

    def resolve_row(self, class_name: str, masked: bool) -> OntologyObject | None:
        """The object a row goes to: a box to a bounding-box object; a mask to a polygon or bitmask object, else
        to a bounding-box one (as its box)."""
        if masked:
            return self.resolve(class_name, MASK_SHAPES) or self.resolve(class_name)
        return self.resolve(class_name)

    def _by_alias_target(self, target: str, shapes: Sequence[str]) -> OntologyObject | None:
        boxes = [o for o in self.objects if o.shape in shapes]
        by_hash = [o for o in boxes if o.feature_hash == target]
        by_name = [o for o in boxes if o.name == target]
        found = by_hash or by_name
        return found[0] if len(found) == 1 else None


def default_ontology(class_names: Sequence[str], *, masks: bool = False) -> EncordOntology:
    """One bounding-box object per model class, with stable 8-character feature hashes (for a new project);
    with ``masks`` (a run that makes masks) also one polygon object per class, which masked rows go to."""
    objects = [
        OntologyObject(name, b64_hash(f"preannotate-feature:{name}".encode()), BOUNDING_BOX, _PALETTE[i % 9])
        for i, name in enumerate(class_names)
    ]
    if masks:
        objects += [
            OntologyObject(name, b64_hash(f"preannotate-feature:{name}:polygon".encode()), POLYGON, o.color)
            for name, o in zip(class_names, objects, strict=True)
        ]
    return EncordOntology(tuple(objects))


def b64_hash(data: bytes) -> str:
    """8 characters of standard base64 of SHA-256 (6 bytes), like the SDK's short hashes."""
    return base64.b64encode(hashlib.sha256(data).digest()[:6]).decode("ascii")
