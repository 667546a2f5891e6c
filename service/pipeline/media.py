"""Items and slots, what kind of media a file is, and the reader that opens it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import Frame, MediaKind, SlotMeta
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.readers import SlotReader

DEFAULT_SLOT = "0"  # V7's name for the only slot of a single-file item


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """One named slot: a file or directory, or a list of image files (a sequence) or DICOM files (a series)."""

    name: str
    paths: tuple[Path, ...]
    # The DICOM files of a folder: objects without an image (DICOMDIR, reports) are left out of the series;
    # an explicit list keeps them, and fails on them.
    folder_series: bool = False


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """A unit of work: one or more named slots shown together to an annotator."""

    name: str
    slots: tuple[SlotSpec, ...]


_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"GIF8",
)
_VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".3gp", ".mkv", ".webm", ".avi", ".ogv"}  # MP4/MOV, Matroska, AVI, Ogg
    | {".mpg", ".mpeg", ".vob", ".ts", ".mts", ".m2ts", ".flv", ".wmv"}  # MPEG-PS/TS, FLV, ASF
)


_DICOM_SUFFIXES = (".dcm", ".dicom")


def _is_dicom_head(path: Path, head: bytes) -> bool:
    # Part 10 files carry "DICM" after a 128-byte preamble; exported slices often have no extension at all.
    return head[128:132] == b"DICM" or path.suffix.lower() in _DICOM_SUFFIXES


def sniff(path: Path) -> MediaKind:
    """Tell the media kind from the first bytes (extensions lie), falling back to video."""
    if path.is_dir():
        return MediaKind.SEQUENCE
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except FileNotFoundError:
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{path}: no such file") from None
    except OSError as exc:
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{path}: cannot be read ({exc.strerror})") from None
    if not head:
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: the file is empty")
    if _is_dicom_head(path, head):
        return MediaKind.DICOM
    if head.startswith(b"%PDF"):
        return MediaKind.PDF
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return MediaKind.IMAGE
    return MediaKind.VIDEO


_VIDEO_MAGIC = (
    b"\x1aE\xdf\xa3",  # Matroska, WebM
    b"\x00\x00\x01\xba",  # MPEG program stream
    b"FLV",
    b"OggS",
    b"0&\xb2u\x8ef\xcf\x11",  # ASF, WMV
)


def not_media_error(path: Path, wanted: str = "image, video, DICOM or PDF file") -> PreannotateError:
    """The answer for a file of no kind ``sniff`` knows (text, random bytes, an archive): ``sniff`` calls it
    video for want of a better guess, so saying "video" back would mislead."""
    return PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: not a supported {wanted}")


def looks_like_video(path: Path) -> bool:
    """Whether a file that failed to open as video was meant to be one (corrupt vs unsupported)."""
    with path.open("rb") as fh:
        head = fh.read(189)
    return (
        head[4:8] == b"ftyp"
        or head.startswith(_VIDEO_MAGIC)
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or (len(head) == 189 and head[0] == head[188] == 0x47)  # MPEG-TS: a sync byte every 188 bytes
        or path.suffix.lower() in _VIDEO_SUFFIXES
    )


class PdfReader:
    """PDF slots are passed through: listed with the item, never decoded."""

    def __init__(self, item: str, slot: str, path: Path) -> None:
        self.meta = SlotMeta(
            item=item,
            slot=slot,
            media=MediaKind.PDF,
            source_files=(str(path),),
            width=0,
            height=0,
            fps=None,
            frame_count=0,
            planned_frames=0,
        )

    def __iter__(self) -> Iterator[Frame]:
        return iter(())

    def close(self) -> None:
        pass


def open_slot(item: str, slot: SlotSpec, sampling: SamplingOptions, limits: MediaLimits) -> SlotReader:
    """Open and plan one slot; raises PreannotateError (naming the file) for bad input."""
    # Readers import their decoders lazily: a run over images never loads PyAV or pydicom.
    if len(slot.paths) > 1:
        if sniff(slot.paths[0]) is MediaKind.DICOM:
            where = f"DICOM series {item}/{slot.name}"
            return _open_series(item, slot.name, slot.paths, where, sampling, limits, images_only=slot.folder_series)
        from service.pipeline.images import SequenceReader

        return SequenceReader(item, slot.name, slot.paths, sampling, limits)
    path = slot.paths[0]
    kind = sniff(path)
    if kind is MediaKind.SEQUENCE:
        kind, paths = list_media_dir(path)
        if kind is MediaKind.DICOM:
            return _open_series(item, slot.name, paths, str(path), sampling, limits, images_only=True)
        from service.pipeline.images import SequenceReader

        return SequenceReader(item, slot.name, paths, sampling, limits)
    if kind is MediaKind.DICOM:
        from service.pipeline.dicom import DicomReader

        return DicomReader(item, slot.name, path, sampling, limits)
    if kind is MediaKind.PDF:
        return PdfReader(item, slot.name, path)
    if kind is MediaKind.IMAGE:
        from service.pipeline.images import ImageReader

        return ImageReader(item, slot.name, path, limits)
    from service.pipeline.video import VideoReader

    try:
        return VideoReader(item, slot.name, path, sampling, limits)
    except PreannotateError as exc:
        if exc.code in (ErrorCode.CORRUPT_MEDIA, ErrorCode.UNSUPPORTED_MEDIA) and not looks_like_video(path):
            raise not_media_error(path) from None
        raise


def list_media_dir(directory: Path) -> tuple[MediaKind, list[Path]]:
    """A directory's frames: its DICOM files (one series: ``MediaKind.DICOM``) or its images (``SEQUENCE``).

    Files are listed by name in natural order, hidden files and subdirectories skipped. DICOM files are
    told by the DICM magic at byte 128 or a .dcm/.dicom name (slices are often exported without an
    extension); other files without an image extension are ignored.

    Raises:
        PreannotateError: INPUT_NOT_FOUND when ``directory`` is not a directory; UNSUPPORTED_MEDIA when it
            holds neither images nor DICOM files, or both.
    """
    from service.pipeline.images import IMAGE_EXTENSIONS, natural_sort_key

    if not directory.is_dir():
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{directory}: not a directory")
    files = sorted((p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file()), key=natural_sort_key)
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    # Image files are taken by name: opening each to look for DICM would slow long sequences for nothing.
    dicom = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS and _is_dicom_file(p)]
    if dicom and images:
        raise PreannotateError(
            ErrorCode.UNSUPPORTED_MEDIA,
            f"{directory}: holds both DICOM files ({dicom[0].name}, ...) and images ({images[0].name}, ...); "
            "put each in its own folder",
        )
    if dicom:
        return MediaKind.DICOM, dicom
    if images:
        return MediaKind.SEQUENCE, images
    raise PreannotateError(
        ErrorCode.UNSUPPORTED_MEDIA,
        f"{directory}: no image or DICOM files to use as a sequence or series (looked for "
        f"{', '.join(sorted(IMAGE_EXTENSIONS))}, and DICOM by content; subfolders are not searched)",
    )


def _is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return path.suffix.lower() in _DICOM_SUFFIXES  # the reader reports why it cannot be read
    return _is_dicom_head(path, head)


def _open_series(
    item: str,
    slot: str,
    paths: Sequence[Path],
    where: str,
    sampling: SamplingOptions,
    limits: MediaLimits,
    *,
    images_only: bool,
) -> SlotReader:
    """Several DICOM files as one slot, in anatomical order (see ``order_series``)."""
    from service.pipeline.dicom import DicomReader, order_series

    ordered = order_series(paths, where, images_only=images_only)
    if len(ordered) == 1:
        return DicomReader(item, slot, ordered[0], sampling, limits)  # a lone multi-frame file keeps its clock
    from service.pipeline.series import DicomSeriesReader

    return DicomSeriesReader(item, slot, ordered, sampling, limits)


def list_lines(text: str) -> list[tuple[int, str]]:
    """An ``@list.txt``'s inputs: (line number from 1, the line without surrounding blanks); blank lines and
    ``#`` comments (indented ones too) are left out. Relative lines are read from the list's folder."""
    lines = ((number, raw.strip()) for number, raw in enumerate(text.splitlines(), start=1))
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def item_from_path(path: Path) -> ItemSpec:
    """A command-line input: a file, a directory (an image sequence or DICOM series) or ``@list.txt``.

    A list's images are frames in the list's order; a list of DICOM files is a series, ordered by
    ``order_series`` (the list's order only where the headers do not tell).
    """
    text = str(path)
    if text.startswith("@"):
        list_file = Path(text[1:])
        try:
            lines = list_lines(list_file.read_text())
        except (OSError, UnicodeDecodeError):
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{list_file}: cannot read the list file") from None
        paths = tuple(list_file.parent / line for _, line in lines)
        if not paths:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{list_file}: the list is empty")
        return ItemSpec(name=list_file.stem, slots=(SlotSpec(DEFAULT_SLOT, paths),))
    return ItemSpec(name=path.name or str(path), slots=(SlotSpec(DEFAULT_SLOT, (path,)),))


def parse_slot_arg(text: str) -> SlotSpec:
    """``SLOT=PATH`` (PATH may be a directory or ``@list.txt``) from ``--slot``."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--slot expects SLOT=PATH, got {text!r}")
    return SlotSpec(name=name, paths=item_from_path(Path(value)).slots[0].paths)
