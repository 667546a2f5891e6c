"""Text prompts for an open-vocabulary detector: each class's name (what outputs are written under: the labeling
project's own label) and the text queries that describe it to the model.

numpy-free and torch-free: the service builds these from CLI flags, job bodies and labeling projects' ontologies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# A prompt set bounds the text encoder's batch; a class name or prompt longer than this is no label anyone types.
MAX_PROMPT_CLASSES = 1000
MAX_PROMPT_CHARS = 200
MAX_PROMPTS_PER_CLASS = 16


@dataclass(frozen=True, slots=True)
class PromptedClass:
    """One class of a prompt set.

    Attributes:
        name: the class name detections are written under (a Label Studio label, a V7 class, an Encord object).
        prompts: the text queries that describe it to the model, at least one; a detection of any of them is
            this class (the best-scoring query wins).
    """

    name: str
    prompts: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a prompted class needs a name")
        if len(self.name) > MAX_PROMPT_CHARS:
            raise ValueError(f"class name {self.name[:40]!r}... is longer than {MAX_PROMPT_CHARS} characters")
        if not self.prompts:
            raise ValueError(f"class {self.name!r} has no prompt")
        if len(self.prompts) > MAX_PROMPTS_PER_CLASS:
            raise ValueError(f"class {self.name!r} has {len(self.prompts)} prompts; at most {MAX_PROMPTS_PER_CLASS}")
        for prompt in self.prompts:
            if not prompt.strip():
                raise ValueError(f"class {self.name!r} has a blank prompt")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise ValueError(f"prompt {prompt[:40]!r}... is longer than {MAX_PROMPT_CHARS} characters")


@dataclass(frozen=True, slots=True)
class PromptSet:
    """The classes an open-vocabulary detector is asked to find, in class-id order.

    Class names are unique ignoring case (two labels differing only in case would be one class to every tool), and
    so is each prompt across classes: a detector gives a tie to the first class, so a prompt shared with a later
    class would never predict that one.
    """

    classes: tuple[PromptedClass, ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("a prompt set needs at least one class")
        if len(self.classes) > MAX_PROMPT_CLASSES:
            raise ValueError(f"{len(self.classes)} prompted classes; at most {MAX_PROMPT_CLASSES}")
        seen: set[str] = set()
        owner: dict[str, str] = {}  # casefolded prompt -> the class that asks for it first
        for cls in self.classes:
            key = cls.name.strip().lower()
            if key in seen:
                raise ValueError(f"class {cls.name!r} is given twice")
            seen.add(key)
            for prompt in cls.prompts:
                first = owner.setdefault(prompt.strip().casefold(), cls.name)
                if first != cls.name:
                    raise ValueError(
                        f"prompt {prompt.strip()!r} is given for both {first!r} and {cls.name!r}: "
                        "each prompt may describe one class only"
                    )

    @classmethod
    def parse(cls, text: str) -> PromptSet:
        """``"person, red car, PED=pedestrian|person walking"``: comma-separated classes; ``NAME=PROMPT`` names a
        class its prompt does not (the project's label), ``|`` separates several prompts for one class.

        Raises:
            ValueError: nothing given, a blank entry's neighbours, a duplicate class, a prompt given for two
                classes, or a limit passed.
        """
        entries = [entry.strip() for entry in text.split(",")]
        classes: list[PromptedClass] = []
        for entry in entries:
            if not entry:
                continue
            name, sep, prompts = entry.partition("=")
            alternatives = [p.strip() for p in (prompts if sep else name).split("|")]
            name = name.strip() if sep else alternatives[0]
            classes.append(PromptedClass(name, tuple(p for p in alternatives if p) or ("",)))
        return cls(tuple(classes))

    @classmethod
    def from_mapping(cls, prompts_by_name: Mapping[str, str | Sequence[str]]) -> PromptSet:
        """``{"PED": "pedestrian", "car": ["car", "automobile"]}`` in the mapping's order."""
        return cls(
            tuple(
                PromptedClass(name, (texts,) if isinstance(texts, str) else tuple(texts))
                for name, texts in prompts_by_name.items()
            )
        )

    @classmethod
    def from_names(cls, names: Iterable[str], overrides: Mapping[str, str | Sequence[str]] | None = None) -> PromptSet:
        """Each name prompts for itself, unless ``overrides`` (matched ignoring case) gives its prompts."""
        lower = {k.strip().lower(): v for k, v in (overrides or {}).items()}
        classes = []
        for name in names:
            texts = lower.get(name.strip().lower(), name)
            classes.append(PromptedClass(name, (texts,) if isinstance(texts, str) else tuple(texts)))
        return cls(tuple(classes))

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names, indexed by ``Detections.class_id``."""
        return tuple(c.name for c in self.classes)

    @property
    def texts(self) -> tuple[str, ...]:
        """Every prompt, flat, class by class: what the text encoder sees."""
        return tuple(p for c in self.classes for p in c.prompts)

    @property
    def text_class_ids(self) -> tuple[int, ...]:
        """The class id of each of ``texts``."""
        return tuple(i for i, c in enumerate(self.classes) for _ in c.prompts)

    @property
    def key(self) -> str:
        """A short stable hash of the names and prompts: cache keys, and the prompted model's version."""
        canonical = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_json(self) -> list[dict[str, object]]:
        """``[{"name": ..., "prompts": [...]}, ...]``, the stored form."""
        return [{"name": c.name, "prompts": list(c.prompts)} for c in self.classes]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, object]]) -> PromptSet:
        """The inverse of ``to_json``; ValueError on anything else."""
        classes = []
        for entry in data:
            name, prompts = entry.get("name"), entry.get("prompts")
            texts = prompts if isinstance(prompts, list) else None
            if not isinstance(name, str) or texts is None or not all(isinstance(p, str) for p in texts):
                raise ValueError(f"a prompt entry needs a name and a list of prompts, got {entry!r}")
            classes.append(PromptedClass(name, tuple(str(p) for p in texts)))
        return cls(tuple(classes))
