"""Small DICOM files for tests, written with pydicom at test time (no binary fixtures)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def write_dicom(
    path: Path,
    pixels: NDArray[np.generic],
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **elements: Any,
) -> Path:
    """Write ``pixels`` natively (Explicit VR Little Endian) with extra top-level ``elements`` by keyword.

    ``pixels`` is (rows, cols), (frames, rows, cols), (rows, cols, 3) or (frames, rows, cols, 3); its dtype
    (uint8/uint16/int16) sets Bits Allocated and Pixel Representation.
    """
    ds = _base_dataset(ExplicitVRLittleEndian)
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def mono16_windowed(
    path: Path, values: Sequence[int], *, center: float | list[float], width: float | list[float], **elements: Any
) -> Path:
    """16-bit unsigned MONOCHROME2, one row holding ``values``, with a window (or several)."""
    pixels = np.asarray([values], np.uint16)
    return write_dicom(path, pixels, WindowCenter=center, WindowWidth=width, **elements)


def mono1_windowed(path: Path, values: Sequence[int], *, center: float, width: float) -> Path:
    """As ``mono16_windowed`` but MONOCHROME1 (high values display dark)."""
    pixels = np.asarray([values], np.uint16)
    return write_dicom(path, pixels, photometric="MONOCHROME1", WindowCenter=center, WindowWidth=width)


def signed_rescaled(
    path: Path, values: Sequence[int], *, slope: float, intercept: float, center: float, width: float
) -> Path:
    """16-bit signed MONOCHROME2 (CT-like) with Rescale Slope/Intercept and a window in rescaled units."""
    pixels = np.asarray([values], np.int16)
    return write_dicom(
        path,
        pixels,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        RescaleType="HU",
        WindowCenter=center,
        WindowWidth=width,
    )


def rgb(path: Path, pixels: NDArray[np.uint8]) -> Path:
    """8-bit RGB, (rows, cols, 3)."""
    return write_dicom(path, pixels, photometric="RGB")


def marked_frames(count: int, *, rows: int = 4, cols: int = 6) -> NDArray[np.uint8]:
    """(count, rows, cols) uint8 frames whose pixels all equal ``10 * index`` (8-bit grey displays as is)."""
    return np.stack([np.full((rows, cols), 10 * i, np.uint8) for i in range(count)])


def multiframe(path: Path, count: int, **timing: Any) -> Path:
    """8-bit MONOCHROME2 multi-frame; frame ``i`` is all ``10 * i``.

    ``timing`` is any of FrameTime (ms), FrameTimeVector (ms increments), CineRate,
    RecommendedDisplayFrameRate; none gives an untimed stack of slices.
    """
    return write_dicom(path, marked_frames(count), **timing)


def voi_lut(path: Path, values: Sequence[int], *, first_mapped: int, lut: Sequence[int], bits: int = 16) -> Path:
    """16-bit MONOCHROME2, one row holding ``values``, with a VOI LUT Sequence (and no window)."""
    item = Dataset()
    item.add_new(0x00283002, "US", [len(lut), first_mapped, bits])  # LUT Descriptor
    item.add_new(0x00283006, "US", list(lut))  # LUT Data
    return write_dicom(path, np.asarray([values], np.uint16), VOILUTSequence=[item])


def palette(path: Path, indices: NDArray[np.uint8], colours: Sequence[tuple[int, int, int]]) -> Path:
    """PALETTE COLOR: 8-bit ``indices`` into ``colours`` (8-bit RGB, stored as 16-bit LUT entries)."""
    elements: dict[str, Any] = {}
    table = np.asarray(colours, np.uint16) * 257  # 8 -> 16 bits
    for channel, name in enumerate(("Red", "Green", "Blue")):
        elements[f"{name}PaletteColorLookupTableDescriptor"] = [len(colours), 0, 16]
        elements[f"{name}PaletteColorLookupTableData"] = table[:, channel].astype("<u2").tobytes()
    return write_dicom(path, indices, photometric="PALETTE COLOR", **elements)


def per_frame_windows(path: Path, values: Sequence[int], windows: Sequence[tuple[float, float]]) -> Path:
    """16-bit multi-frame, every frame holding ``values``, each with its own (center, width) in the
    per-frame functional groups (as enhanced CT/MR objects store them); no top-level window, no clock."""
    frames = np.asarray([list(values)] * len(windows), np.uint16)[:, np.newaxis, :]
    per_frame = []
    for center, width in windows:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        group = Dataset()
        group.FrameVOILUTSequence = [voi]
        per_frame.append(group)
    return write_dicom(path, frames, PerFrameFunctionalGroupsSequence=per_frame)


def series_slice(
    path: Path,
    value: int,
    *,
    series_uid: str,
    position: Sequence[float] | None = None,
    orientation: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    instance: int | None = None,
) -> Path:
    """One 4x6 8-bit slice of a CT-like series, every pixel ``value`` (displayed as stored).

    ``position`` is Image Position (Patient) in mm, ``orientation`` Image Orientation (Patient) (axial by
    default), ``instance`` Instance Number; None leaves the element out.
    """
    elements: dict[str, Any] = {"SeriesInstanceUID": series_uid, "Modality": "CT"}
    if position is not None:
        elements["ImagePositionPatient"] = [float(v) for v in position]
    if orientation is not None:
        elements["ImageOrientationPatient"] = [float(v) for v in orientation]
    if instance is not None:
        elements["InstanceNumber"] = instance
    return write_dicom(path, np.full((4, 6), value, np.uint8), **elements)


def jpeg_baseline(path: Path, pixels: NDArray[np.uint8]) -> Path:
    """A real JPEG Baseline (encapsulated) 8-bit grey image, encoded with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100)
    return _encapsulated(path, JPEGBaseline8Bit, [buffer.getvalue()], pixels.shape)


def compressed_dummy(path: Path, transfer_syntax: UID = JPEGLosslessSV1, *, rows: int = 4, cols: int = 4) -> Path:
    """Encapsulated pixel data that is not a valid codestream, under ``transfer_syntax``.

    With JPEG Lossless (no decoder in a plain install) this provokes the missing-decoder path; with
    JPEG Baseline (Pillow decodes it) it provokes a decode failure.
    """
    return _encapsulated(path, transfer_syntax, [b"\xff\xd8\xff\xe0 not a real codestream \xff\xd9"], (rows, cols))


def no_pixels(path: Path, **elements: Any) -> Path:
    """A valid DICOM file without Pixel Data (like a structured report), with extra ``elements``."""
    ds = _base_dataset(ExplicitVRLittleEndian)
    ds.Modality = "SR"
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _encapsulated(path: Path, transfer_syntax: UID, frames: list[bytes], shape: tuple[int, ...]) -> Path:
    ds = _base_dataset(transfer_syntax)
    ds.Rows, ds.Columns = shape[0], shape[1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _base_dataset(transfer_syntax: UID) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Phantom"
    ds.Modality = "OT"
    return ds
