"""Command-line inputs as items: a file is one item; a folder or ``@list.txt`` is one item per file.

A folder's files (hidden ones aside; subfolders are not searched) and a list's lines are each opened by
their content kind. Three kinds of files are grouped instead of standing alone:

- DICOM files, when there are two or more: one DICOM series item (the folder's or the list's name);
- images, when asked for (``sequence=True``, the CLI's ``--sequence``) or when they look like the frames
  of one clip (``looks_like_frames``): one image-sequence item of the same name (``<name>/images`` when
  there is a DICOM series too, e.g. PNG exports beside the slices);
- with ``sequence=False`` (``--no-sequence``), images always stand alone.

Files that cannot be used (unreadable, empty, not an image, video, DICOM or PDF file, a subfolder, a list
line naming nothing) are returned as ``Skipped``, each on its own: the others are still items. A folder's
files that are not media (``Skipped.fails_run`` False) are only named; a folder with nothing to run fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath

from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import MediaKind
from service.pipeline.media import DEFAULT_SLOT, ItemSpec, SlotSpec, list_lines, looks_like_video, sniff

# A frame's file stem: a prefix (any text, possibly empty) then the frame number at the very end.
_NUMBERED_STEM = re.compile(r"(?P<prefix>.*?)(?P<number>\d+)")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file (or list line) that is no item, and why; ``line()`` is what the CLI prints for it."""

    where: str
    code: ErrorCode
    reason: str
    # False for a file a folder holds beside its media (Thumbs.db, labels.json, a subfolder): named, but
    # the run does not fail for it. What the user named (a file, a list line, the folder) always counts.
    fails_run: bool = True

    def line(self) -> str:
        return f"skipped: {self.where}: {self.code.code} ({self.reason})"


@dataclass(frozen=True, slots=True)
class Expanded:
    """An item, and a longer name for it (the path as given) for when two inputs give items of one name."""

    item: ItemSpec
    qualified: str


@dataclass(slots=True)
class Expansion:
    items: list[Expanded] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def extend(self, other: Expansion) -> None:
        self.items += other.items
        self.skipped += other.skipped


@dataclass(frozen=True, slots=True)
class Entry:
    """One usable file of a folder or list: its item name, path and media kind."""

    name: str
    path: Path
    kind: MediaKind


@dataclass(frozen=True, slots=True)
class ImageHeader:
    width: int
    height: int
    from_camera: bool  # EXIF Make or Model: a photo, whatever its name


HeaderReader = Callable[[Path], ImageHeader | None]


def expand_inputs(inputs: Sequence[Path], *, sequence: bool | None = None) -> Expansion:
    """Every positional input's items, in order, and the files skipped along the way."""
    expansion = Expansion()
    for path in inputs:
        expansion.extend(expand_input(path, sequence=sequence))
    return expansion


def expand_input(path: Path, *, sequence: bool | None = None) -> Expansion:
    """One input: a file (one item, checked when opened), a folder, or ``@list.txt``."""
    text = str(path)
    if text.startswith("@"):
        return _expand_list(Path(text[1:]), sequence)
    if path.is_dir():
        return _expand_folder(path, prefix="", group=path.name or path.resolve().name, sequence=sequence)
    return Expansion(items=[_single(path.name or text, path)])


def numbered_names(names: Sequence[str]) -> bool:
    """At least two names, each one shared prefix + a frame number + one shared extension, numbers distinct.

    ``frame_0001.png, frame_0002.png`` and ``0.jpg, 7.jpg`` are; ``a.png, b.png``, ``f1.png, g2.png``,
    ``f1.png, f2.jpg`` and ``f1.png, f01.png`` (one number twice) are not. Case is ignored.
    """
    if len(names) < 2:
        return False
    shapes: set[tuple[str, str]] = set()
    numbers: set[int] = set()
    for name in names:
        pure = PurePath(name)
        match = _NUMBERED_STEM.fullmatch(pure.stem)
        if match is None:
            return False
        shapes.add((match["prefix"].casefold(), pure.suffix.casefold()))
        numbers.add(int(match["number"]))
    return len(shapes) == 1 and len(numbers) == len(names)


def looks_like_frames(entries: Sequence[Entry], header_of: HeaderReader) -> bool:
    """Images that are the frames of one clip: numbered names (``numbered_names``), one size, and no camera
    tags (phones name photos ``IMG_0001.JPG``, ``IMG_0002.JPG``, ... at one size: those stay photos)."""
    if not numbered_names([e.path.name for e in entries]):
        return False
    headers = [header_of(e.path) for e in entries]
    sizes = {(h.width, h.height) for h in headers if h is not None}
    return len(sizes) == 1 and all(h is not None and not h.from_camera for h in headers)


def plan_items(
    entries: Sequence[Entry],
    *,
    group: str,
    qualified_group: str,
    sequence: bool | None,
    folder: bool,
    header_of: HeaderReader,
) -> list[Expanded]:
    """A folder's or list's usable files as items, in their order; grouped files take their first one's place.

    Args:
        entries: the files, in the folder's natural order or the list's order.
        group: the name of a series or sequence item (the folder's or list's name); where both are
            present the series has it and the sequence is ``<group>/images``.
        qualified_group: its longer name (the folder or list as given), with ``/images`` alike.
        sequence: True: the images are one sequence; False: never; None: when ``looks_like_frames``.
        folder: the entries are a folder's (a series then leaves out DICOM objects without an image).
        header_of: reads an image's header (None when it cannot be read).
    """
    dicom = [e for e in entries if e.kind is MediaKind.DICOM]
    images = [e for e in entries if e.kind is MediaKind.IMAGE]
    grouped: dict[MediaKind, list[Entry]] = {}
    if len(dicom) >= 2:
        grouped[MediaKind.DICOM] = dicom
    if len(images) >= 2 and (looks_like_frames(images, header_of) if sequence is None else sequence):
        grouped[MediaKind.IMAGE] = images
    # a series and a sequence side by side: the series keeps the group's name, the images are "<group>/images"
    sequence_suffix = "/images" if len(grouped) == 2 else ""
    items: list[Expanded] = []
    for entry in entries:
        members = grouped.get(entry.kind)
        if members is None:
            items.append(Expanded(_single(entry.name, entry.path).item, str(entry.path)))
        elif entry is members[0]:
            slot = SlotSpec(DEFAULT_SLOT, tuple(m.path for m in members), folder_series=folder)
            suffix = sequence_suffix if entry.kind is MediaKind.IMAGE else ""
            items.append(Expanded(ItemSpec(name=group + suffix, slots=(slot,)), qualified_group + suffix))
    return items


def read_header(path: Path) -> ImageHeader | None:
    """``ImageHeader`` from the file's header, or None where it cannot be read (the reader says why later)."""
    from service.pipeline.images import from_camera, image_size

    try:
        width, height = image_size(path)
        return ImageHeader(width, height, from_camera(path))
    except PreannotateError:
        return None


def classify(path: Path, where: str) -> MediaKind | Skipped:
    """The media kind of a folder's or list's file, told from its first bytes; ``Skipped`` when unusable."""
    try:
        kind = sniff(path)
    except PreannotateError as exc:
        return Skipped(where, exc.code, _without_path(exc.message, path))
    if kind is MediaKind.VIDEO and not looks_like_video(path):  # sniff's fallback: nothing else matched
        return Skipped(where, ErrorCode.UNSUPPORTED_MEDIA, "not an image, video, DICOM or PDF file")
    return kind


def _single(name: str, path: Path) -> Expanded:
    return Expanded(ItemSpec(name=name, slots=(SlotSpec(DEFAULT_SLOT, (path,)),)), str(path))


def _expand_folder(folder: Path, *, prefix: str, group: str, sequence: bool | None) -> Expansion:
    """A folder's files, named ``prefix + file name``; its series or sequence is ``group``."""
    from service.pipeline.images import natural_sort_key

    expansion = Expansion()
    try:
        children = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_sort_key)
    except OSError as exc:
        expansion.skipped.append(Skipped(str(folder), ErrorCode.INPUT_NOT_FOUND, f"cannot list ({exc.strerror})"))
        return expansion
    entries: list[Entry] = []
    for child in children:
        if child.is_dir():
            reason = "a subfolder: not searched (give it as its own INPUT)"
            expansion.skipped.append(Skipped(str(child), ErrorCode.UNSUPPORTED_MEDIA, reason, fails_run=False))
        elif not child.is_file():  # a FIFO or device would hang the reader
            expansion.skipped.append(
                Skipped(str(child), ErrorCode.UNSUPPORTED_MEDIA, "not a regular file", fails_run=False)
            )
        else:
            kind = classify(child, str(child))
            if isinstance(kind, Skipped):  # not media: only named; damaged or unreadable media still fails
                expansion.skipped.append(replace(kind, fails_run=kind.code is not ErrorCode.UNSUPPORTED_MEDIA))
            else:
                entries.append(Entry(prefix + child.name, child, kind))
    if not entries and not any(s.fails_run for s in expansion.skipped):  # a folder with nothing to run
        reason = "no image, video, DICOM or PDF file in it" if expansion.skipped else "the folder is empty"
        expansion.skipped.append(Skipped(str(folder), ErrorCode.INPUT_NOT_FOUND, reason))
    expansion.items = plan_items(
        entries, group=group, qualified_group=str(folder), sequence=sequence, folder=True, header_of=read_header
    )
    return expansion


def _expand_list(list_file: Path, sequence: bool | None) -> Expansion:
    """``@list.txt``: one input per line (relative to the list's folder; blank lines and ``#`` comments
    ignored, see ``list_lines``). Each file is named by ``_list_name`` (its path within the list's folder,
    else its base name); a folder line is expanded like a folder, its files named ``name/file``. A line
    naming nothing usable is skipped alone."""
    expansion = Expansion()
    try:
        lines = list_lines(list_file.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a text file"
        expansion.skipped.append(Skipped(f"@{list_file}", ErrorCode.INPUT_NOT_FOUND, f"cannot read the list ({why})"))
        return expansion
    entries: list[Entry] = []
    folders: list[tuple[int, list[Expanded]]] = []  # a folder line's items, after the files listed before it
    seen: set[Path] = set()
    for number, line in lines:
        path = list_file.parent / line
        name = _list_name(list_file.parent, path)
        where = f"{path} ({list_file} line {number})"
        key = Path(os.path.normpath(os.path.abspath(path)))
        if key in seen:
            expansion.skipped.append(Skipped(where, ErrorCode.INVALID_ARGUMENT, "listed twice"))
            continue
        seen.add(key)
        if path.is_dir():
            folder = _expand_folder(path, prefix=f"{name}/", group=name, sequence=sequence)
            folders.append((len(entries), folder.items))
            expansion.skipped += folder.skipped
        elif not path.exists():
            expansion.skipped.append(Skipped(where, ErrorCode.INPUT_NOT_FOUND, "no such file"))
        elif not path.is_file():  # a FIFO or device would hang the reader
            expansion.skipped.append(Skipped(where, ErrorCode.UNSUPPORTED_MEDIA, "not a regular file"))
        else:
            kind = classify(path, where)
            if isinstance(kind, Skipped):
                expansion.skipped.append(kind)
            else:
                entries.append(Entry(name, path, kind))
    if not seen:
        expansion.skipped.append(Skipped(f"@{list_file}", ErrorCode.INVALID_ARGUMENT, "the list is empty"))
    planned = plan_items(
        entries,
        group=list_file.stem,
        qualified_group=f"@{list_file}",
        sequence=sequence,
        folder=False,
        header_of=read_header,
    )
    position = {entry.path: n for n, entry in enumerate(entries)}
    keyed = [((position[e.item.slots[0].paths[0]], 1), [e]) for e in planned] + [((n, 0), f) for n, f in folders]
    expansion.items = [e for _, items in sorted(keyed, key=lambda pair: pair[0]) for e in items]
    return expansion


def _list_name(list_folder: Path, path: Path) -> str:
    """A list line's item name: its path relative to the list's folder where it lies inside it, else its
    base name, so never an absolute path or ``..`` (``unique_names`` settles names that clash)."""
    mine, folder = (Path(os.path.normpath(os.path.abspath(p))) for p in (path, list_folder))
    if mine.is_relative_to(folder) and mine != folder:
        return mine.relative_to(folder).as_posix()
    return mine.name or mine.as_posix()


def _without_path(message: str, path: Path) -> str:
    return message.removeprefix(f"{path}: ")
