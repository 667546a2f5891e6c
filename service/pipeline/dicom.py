"""DICOM slots: header checks up front, then frames streamed one at a time and windowed to 8-bit RGB."""

from __future__ import annotations

import math
import struct
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.pixels.utils import get_expected_length, iter_pixels
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from models.types import RGBImage
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import Frame, FrameInfo, MediaKind, SlotMeta
from service.pipeline.images import grey_to_rgb, stretch_to_uint8
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.sampling import check_start, select_frames

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel Data, Float and Double Float Pixel Data
_UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data
_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
# Colour as pydicom hands it over: YBR_FULL(_422) converted to RGB by iter_pixels, YBR_ICT/RCT by the
# JPEG 2000 decoders.
_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
_PALETTE = "PALETTE COLOR"
_VOI_FUNCTIONS = frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"})
_INSTALL_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"
# What ordering a series needs from each file's header (specific_tags skips the other values).
_SERIES_TAGS = ["SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber", "Rows"]
_PARALLEL = 1.0 - 1e-4  # |cos| between two slices' normals above which they count as one orientation


class DicomReader:
    """A DICOM file: one frame, or a multi-frame object streamed frame by frame (media DICOM).

    Frames with a clock (Frame Time, Frame Time Vector, Cine Rate or Recommended Display Frame Rate) are
    sampled like video: timestamps are seconds from the first frame and ``select_frames`` keeps the frame
    displayed at each target time (every frame is a key frame, so key-frame mode samples the same way).
    Multi-frame objects without a clock, such as enhanced CT/MR volumes, are stacks of slices: every slice
    is kept, up to ``sampling.max_frames``, with ``timestamp_s`` None and no fps.

    Grey frames go modality LUT (rescale) -> the first VOI window, else the VOI LUT Sequence, else the
    frame's own min..max -> 0..255 (8-bit data with no rescale is shown as stored) -> MONOCHROME1
    inverted -> stacked to RGB. Rescale and window come from the per-frame or shared functional groups
    when the object has them. Colour arrives as RGB (pydicom converts YBR) and is scaled from its stored
    bit depth; palette colour goes through its LUT.

    The constructor reads the header only (dimensions, transfer syntax, decoder availability, pixel data
    length, frame plan); iterating decodes the planned frames with ``pydicom.pixels.iter_pixels``, one at
    a time from the file.
    """

    def __init__(
        self,
        item: str,
        slot: str,
        path: Path,
        sampling: SamplingOptions,
        limits: MediaLimits,
    ) -> None:
        self._path = path
        self._stream: Iterator[NDArray[Any]] | None = None
        self._ds, self._syntax = _read_header(path, limits)
        rows, cols = int(self._ds.Rows), int(self._ds.Columns)  # validated by _read_header
        self._photometric = str(self._ds.PhotometricInterpretation).strip().upper()
        if self._photometric not in _GREY | _COLOUR | {_PALETTE}:
            raise PreannotateError(
                ErrorCode.UNSUPPORTED_ENCODING, f"{path}: photometric interpretation {self._photometric} not supported"
            )
        try:
            self._voi_range = _voi_lut_range(self._ds) if self._ds.get("VOILUTSequence") else None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: invalid VOI LUT Sequence: {exc}") from exc
        count = _frame_count(self._ds)
        clock = frame_times_s(self._ds, count) if count > 1 else None
        fps: float | None = None
        if clock is None:
            self._times: NDArray[np.float64] | None = None
            cap = count if sampling.max_frames is None else min(count, sampling.max_frames)
            self._indices = np.arange(cap, dtype=np.intp)
        else:
            self._times, fps = clock
            check_start(self._times, sampling, str(path))
            self._indices = select_frames(self._times, sampling)
        limits.check_frames(len(self._indices), str(path))
        self.meta = SlotMeta(
            item=item,
            slot=slot,
            media=MediaKind.DICOM,
            source_files=(str(path),),
            width=cols,
            height=rows,
            fps=fps,
            frame_count=count,
            planned_frames=len(self._indices),
            duration_s=None if fps is None else count / fps,
        )

    def __iter__(self) -> Iterator[Frame]:
        indices = [int(i) for i in self._indices]
        if not indices:
            return
        stream = self._open_stream(indices)
        self._stream = stream
        try:
            for index in indices:
                yield self._decode_next(stream, index)
        finally:
            self.close()

    def close(self) -> None:
        """Release the file when iteration stopped early."""
        if isinstance(self._stream, Generator):  # iter_pixels is a generator holding the open file
            self._stream.close()
        self._stream = None

    def _open_stream(self, indices: list[int]) -> Iterator[NDArray[Any]]:
        if self._syntax != DeflatedExplicitVRLittleEndian:
            return iter_pixels(self._path, indices=indices)  # reads one frame at a time from the file
        # iter_pixels cannot inflate a file it streams, so a deflated object (rare) is read whole.
        try:
            return iter_pixels(dcmread(self._path), indices=indices)
        except Exception as exc:  # as in _read_header
            raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{self._path}: unreadable DICOM: {exc}") from exc

    def _decode_next(self, stream: Iterator[NDArray[Any]], index: int) -> Frame:
        try:
            raw = next(stream)
        except StopIteration:
            raise PreannotateError(
                ErrorCode.CORRUPT_MEDIA, f"{self._path}: pixel data ends before frame {index}"
            ) from None
        except Exception as exc:  # pydicom and its plugins raise many types for bad data
            raise _decode_error(self._path, self._syntax, index, exc) from exc
        try:
            image = _to_rgb(raw, self._ds, index, self._photometric, self._voi_range)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise PreannotateError(
                ErrorCode.CORRUPT_MEDIA, f"{self._path}: cannot convert frame {index} to RGB: {exc}"
            ) from exc
        info = FrameInfo(
            item=self.meta.item,
            slot=self.meta.slot,
            source=str(self._path),
            media=MediaKind.DICOM,
            frame_index=index,
            timestamp_s=None if self._times is None else float(self._times[index]),
            width=image.shape[1],
            height=image.shape[0],
        )
        return Frame(info=info, image=image)


def order_series(paths: Sequence[Path], where: str, *, images_only: bool = False) -> list[Path]:
    """The files of one DICOM series in anatomical order, read from their headers (pixel data untouched).

    Slices are sorted by their position along the slice normal (Image Position (Patient) projected on
    the cross product of the Image Orientation (Patient) row and column directions, ascending, as ITK and
    dcm2niix do) when every slice has a position and all share one orientation; otherwise by Instance
    Number when every slice has one; otherwise, and between equals, they keep the order of ``paths``
    (a directory lists them by name; an explicit list or a job's URLs are the caller's order).

    Args:
        paths: the files, in the fallback order.
        where: what the files came from, for messages (the folder, or the item and slot).
        images_only: drop objects without an image (a DICOMDIR, dose reports, presentation states), as a
            folder export often holds them; an explicit list keeps them and fails on them when read.

    Raises:
        PreannotateError: UNSUPPORTED_MEDIA or CORRUPT_MEDIA (naming the file) for a header that cannot be
            read; INVALID_ARGUMENT when the files belong to more than one series (Series Instance UID);
            UNSUPPORTED_MEDIA when ``images_only`` leaves nothing.
    """
    slices = [_series_slice(path) for path in paths]
    if images_only:
        slices = [s for s in slices if s.is_image]
        if not slices:
            raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{where}: DICOM files, but none holds an image")
    _check_one_series(slices, where)
    normal = _common_normal(slices)
    by_position = normal is not None and all(s.position is not None for s in slices)
    by_instance = all(s.instance is not None for s in slices)
    keys = [
        (
            float(np.dot(s.position, normal)) if by_position and s.position is not None and normal is not None else 0.0,
            s.instance if by_instance and s.instance is not None else 0.0,
        )
        for s in slices
    ]
    order = sorted(range(len(slices)), key=keys.__getitem__)  # stable: equals keep the order of ``paths``
    return [slices[n].path for n in order]


class _Slice:
    """The ordering facts of one file of a series."""

    __slots__ = ("instance", "is_image", "normal", "path", "position", "series")

    def __init__(self, path: Path, ds: Dataset) -> None:
        self.path = path
        self.series = str(ds.get("SeriesInstanceUID") or "").strip() or None
        self.is_image = "Rows" in ds
        position = _floats(ds.get("ImagePositionPatient"))
        self.position = position if len(position) == 3 and np.all(np.isfinite(position)) else None
        orientation = _floats(ds.get("ImageOrientationPatient"))
        self.normal: NDArray[np.float64] | None = None
        if len(orientation) == 6 and np.all(np.isfinite(orientation)):
            normal = np.cross(orientation[:3], orientation[3:])
            length = float(np.linalg.norm(normal))
            self.normal = normal / length if length > 1e-6 else None  # parallel row and column: no plane
        instance = _first(ds.get("InstanceNumber"))
        self.instance = instance if instance is not None and math.isfinite(instance) else None


def _series_slice(path: Path) -> _Slice:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=_SERIES_TAGS)
    except FileNotFoundError as exc:
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{path}: no such file") from exc
    except InvalidDicomError as exc:
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: not a DICOM file ({exc})") from exc
    except Exception as exc:  # as in _read_header: a damaged header makes pydicom raise almost anything
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: unreadable DICOM header: {exc}") from exc
    return _Slice(path, ds)


def _check_one_series(slices: Sequence[_Slice], where: str) -> None:
    # Two series in one folder (a localizer and the axial stack, two reconstructions) are two volumes:
    # interleaving them would give a meaningless "volume", so the caller has to pick one.
    members: dict[str, list[Path]] = {}
    for s in slices:
        if s.series is not None:  # a file without the UID joins whichever series is there
            members.setdefault(s.series, []).append(s.path)
    if len(members) < 2:
        return
    listed = "; ".join(
        f"{uid}: {len(files)} file{'s' if len(files) > 1 else ''}, e.g. {files[0].name}"
        for uid, files in sorted(members.items(), key=lambda kv: -len(kv[1]))[:3]
    )
    more = f"; and {len(members) - 3} more" if len(members) > 3 else ""
    raise PreannotateError(
        ErrorCode.INVALID_ARGUMENT,
        f"{where}: the DICOM files belong to {len(members)} series (Series Instance UID {listed}{more}); "
        "give one series per folder or @list",
    )


def _common_normal(slices: Sequence[_Slice]) -> NDArray[np.float64] | None:
    """The slice normal when every slice has one and all are parallel (else projections mean nothing)."""
    first = slices[0].normal
    if first is None:
        return None
    for s in slices[1:]:
        if s.normal is None or abs(float(np.dot(first, s.normal))) < _PARALLEL:
            return None  # e.g. a localizer with three planes in one series
    return first


def frame_times_s(ds: Dataset, count: int) -> tuple[NDArray[np.float64], float] | None:
    """The frames' times in seconds from the first frame, and the average fps; None without a clock.

    Sources, first usable wins: Frame Time (ms per frame), Frame Time Vector (ms since the previous frame,
    the first entry 0), Cine Rate, Recommended Display Frame Rate (frames per second).
    """
    frame_time_ms = _positive(ds.get("FrameTime"))
    if frame_time_ms is not None:
        return np.arange(count, dtype=np.float64) * (frame_time_ms / 1000.0), 1000.0 / frame_time_ms
    vector = _floats(ds.get("FrameTimeVector"))
    if len(vector) == count and np.all(np.isfinite(vector)) and np.all(vector[1:] > 0):
        times = np.cumsum(vector[1:]) / 1000.0
        times = np.concatenate([[0.0], times])
        return times, (count - 1) / float(times[-1])
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _positive(ds.get(keyword))
        if rate is not None:
            return np.arange(count, dtype=np.float64) / rate, rate
    return None


def _read_header(path: Path, limits: MediaLimits) -> tuple[Dataset, UID]:
    """The dataset up to the pixel data, after checking size, format, decoder and pixel data length."""
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{path}: no such file") from exc
    if size > limits.max_file_bytes:
        raise PreannotateError(
            ErrorCode.FILE_TOO_LARGE, f"{path}: {size} bytes, more than the limit of {limits.max_file_bytes}"
        )
    try:
        with path.open("rb") as f:
            ds = dcmread(f, stop_before_pixels=True)
            # dcmread stops with the file at the pixel data element (or at the end when there is none).
            element = f.read(12)
            value_start = f.tell()
    except InvalidDicomError as exc:
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: not a DICOM file ({exc})") from exc
    except Exception as exc:  # a damaged header makes pydicom raise almost anything
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: unreadable DICOM header: {exc}") from exc
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: no Transfer Syntax UID in the file meta")
    syntax = UID(syntax)
    deflated = syntax == DeflatedExplicitVRLittleEndian  # read whole and inflated: the file offset means nothing
    if not deflated and not _is_pixel_element(element, syntax):
        # pydicom reads a truncated file without complaint: an image header with no pixel data after it
        # is a cut-off image, not a non-image object (report, structure set).
        if "Rows" in ds or "Columns" in ds:
            raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: image header but no pixel data (truncated?)")
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: DICOM file without pixel data (not an image)")
    missing = [k for k in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation") if k not in ds]
    if missing:
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: image pixel module lacks {', '.join(missing)}")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        expected = int(get_expected_length(ds, "bytes"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: invalid image pixel module value: {exc}") from exc
    if rows * cols > limits.max_pixels:
        raise PreannotateError(
            ErrorCode.DIMENSIONS_TOO_LARGE,
            f"{path}: {cols}x{rows} = {rows * cols} pixels, more than the limit of {limits.max_pixels}",
        )
    _check_decoder(path, syntax)
    if not deflated and not syntax.is_encapsulated:
        _check_native_length(path, element, syntax, expected, size - value_start)
    return ds, syntax


def _is_pixel_element(element: bytes, syntax: UID) -> bool:
    if len(element) < 8:
        return False
    group, elem = struct.unpack("<HH" if syntax.is_little_endian else ">HH", element[:4])
    return (group << 16 | elem) in _PIXEL_TAGS


def _check_decoder(path: Path, syntax: UID) -> None:
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise PreannotateError(
            ErrorCode.UNSUPPORTED_ENCODING, f"{path}: transfer syntax {syntax.name} ({syntax}) is not supported"
        ) from exc
    if not decoder.is_available:
        raise PreannotateError(
            ErrorCode.UNSUPPORTED_ENCODING,
            f"{path}: pixel data is {syntax.name} ({syntax}) and no installed decoder reads it; install one of: "
            f"{'; '.join(decoder.missing_dependencies)} (e.g. {_INSTALL_HINT})",
        )


def _check_native_length(path: Path, element: bytes, syntax: UID, expected: int, left_in_file: int) -> None:
    # Explicit VR: tag, VR, 2 reserved bytes, 4-byte length; implicit VR: tag, 4-byte length.
    endian = "<" if syntax.is_little_endian else ">"
    if syntax.is_implicit_VR:
        (length,) = struct.unpack(endian + "L", element[4:8])
        left_in_file += 4  # we read 12 bytes, 4 of them value
    else:
        (length,) = struct.unpack(endian + "L", element[8:12])
    available = min(length, left_in_file)
    if length == _UNDEFINED_LENGTH or available < expected:
        raise PreannotateError(
            ErrorCode.CORRUPT_MEDIA,
            f"{path}: pixel data holds {available} bytes where the header implies {expected} (truncated file?)",
        )


def _decode_error(path: Path, syntax: UID, index: int, exc: Exception) -> PreannotateError:
    text = str(exc)
    # pydicom's plugins say "does not support" for valid data they cannot handle (12-bit JPEG in Pillow).
    if isinstance(exc, NotImplementedError) or "missing dependencies" in text or "not support" in text:
        return PreannotateError(
            ErrorCode.UNSUPPORTED_ENCODING,
            f"{path}: cannot decode {syntax.name} ({syntax}) pixel data: {text}; try {_INSTALL_HINT}",
        )
    return PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: cannot decode frame {index}: {text}")


def _to_rgb(
    raw: NDArray[Any], ds: Dataset, index: int, photometric: str, voi_range: tuple[float, float] | None
) -> RGBImage:
    """(rows, cols[, samples]) decoded frame -> (rows, cols, 3) uint8 RGB."""
    if photometric in _GREY:
        grey = _grey_to_uint8(raw, ds, index, voi_range)
        return grey_to_rgb(255 - grey if photometric == "MONOCHROME1" else grey)
    if photometric == _PALETTE:
        colour = apply_color_lut(raw, ds)[..., :3]  # an alpha LUT, if any, is dropped
        return _colour_to_uint8(colour, 8 * colour.dtype.itemsize)
    return _colour_to_uint8(raw, int(ds.get("BitsStored", 8 * raw.dtype.itemsize)))


def _colour_to_uint8(colour: NDArray[Any], bits: int) -> RGBImage:
    if colour.dtype == np.uint8:
        return np.ascontiguousarray(colour)
    return stretch_to_uint8(colour, 0.0, float(2**bits - 1))


def _grey_to_uint8(
    raw: NDArray[Any], ds: Dataset, index: int, voi_range: tuple[float, float] | None
) -> NDArray[np.uint8]:
    slope = _frame_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _frame_value(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    modality = Dataset()
    modality.file_meta = ds.file_meta  # LUT Data endianness
    if ds.get("ModalityLUTSequence"):
        modality.ModalityLUTSequence = ds.ModalityLUTSequence
    elif slope is not None and intercept is not None:
        modality.RescaleSlope, modality.RescaleIntercept = float(slope), float(intercept)
    values = apply_modality_lut(raw, modality)

    center = _first(_frame_value(ds, index, "FrameVOILUTSequence", "WindowCenter"))
    width = _first(_frame_value(ds, index, "FrameVOILUTSequence", "WindowWidth"))
    function = str(_frame_value(ds, index, "FrameVOILUTSequence", "VOILUTFunction") or "").strip().upper()
    function = function if function in _VOI_FUNCTIONS else "LINEAR"
    # An unusable window (LINEAR needs width >= 1, the others width > 0) is ignored rather than fatal.
    if center is not None and width is not None and (width >= 1 if function == "LINEAR" else width > 0):
        windowed: NDArray[np.float64] = apply_windowing(values, _eight_bit_window(center, width, function))
        return np.rint(np.clip(windowed, 0.0, 255.0)).astype(np.uint8)
    if voi_range is not None:  # the VOI LUT Sequence
        return stretch_to_uint8(apply_voi(np.rint(values).astype(np.int64), ds), *voi_range)
    if values is raw and raw.dtype == np.uint8 and int(ds.get("BitsStored", 8)) == 8:
        return raw.astype(np.uint8, copy=False)  # 8-bit with no transform displays as stored
    return stretch_to_uint8(values)


def _eight_bit_window(center: float, width: float, function: str) -> Dataset:
    # apply_windowing maps the window onto the output range implied by Bits Stored and Pixel Representation;
    # describing an unsigned 8-bit image (the modality LUT is already applied) makes that range 0..255.
    view = Dataset()
    view.PhotometricInterpretation = "MONOCHROME2"
    view.BitsStored, view.PixelRepresentation = 8, 0
    view.WindowCenter, view.WindowWidth, view.VOILUTFunction = center, width, function
    return view


def _voi_lut_range(ds: Dataset) -> tuple[float, float]:
    # Output is normalised by the LUT's own range, not its declared depth: some files declare 16-bit
    # entries but use 12.
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries = int(descriptor[0]) or 2**16
    table = apply_voi(np.arange(int(descriptor[1]), int(descriptor[1]) + entries, dtype=np.int64), ds)
    return float(table.min()), float(table.max())


def _frame_value(ds: Dataset, index: int, group: str, keyword: str) -> Any:
    """``keyword`` from this frame's functional group, else the shared one, else the top level."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for groups in (per_frame[index] if per_frame and index < len(per_frame) else None, shared[0] if shared else None):
        if groups is not None and groups.get(group):
            value = groups.get(group)[0].get(keyword)
            if value is not None:
                return value
    return ds.get(keyword)


def _frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _first(value: Any) -> float | None:
    values = _floats(value)
    return float(values[0]) if len(values) else None


def _floats(value: Any) -> NDArray[np.float64]:
    if value is None or value == "":
        return np.zeros((0,), np.float64)
    # Multi-valued elements come as MultiValue (a Sequence), single values as DSfloat/IS/str.
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str | bytes) else [value]
    try:
        return np.asarray([float(v) for v in items], np.float64)
    except (TypeError, ValueError):
        return np.zeros((0,), np.float64)


def _positive(value: Any) -> float | None:
    number = _first(value)
    return number if number is not None and math.isfinite(number) and number > 0 else None
