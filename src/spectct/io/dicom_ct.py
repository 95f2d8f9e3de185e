"""CT series reader: a folder of single-frame CT images → a :class:`~spectct.volume.Volume` in HU.

Geometry comes from the Image Plane module (PS3.3 C.7.6.2): ImageOrientationPatient gives the row
and column direction cosines, PixelSpacing the (row, column) spacing, ImagePositionPatient the LPS
centre of the first transmitted pixel. Slices are sorted by their position along the slice normal
``n = row_dir × col_dir`` — never by InstanceNumber, which scanners number in either direction.

Refused (InputError naming the file and tag): missing geometry tags, mixed orientations or matrix
sizes, gantry tilt (slice offsets not along the normal), duplicate positions, and gaps (missing
slices), which are reported with the positions on both sides.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from spectct.errors import InputError
from spectct.io.dicom_common import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    dicom_files,
    optional_float,
    pixel_array,
    read_dataset,
    require,
    require_float,
    tag_name,
)
from spectct.progress import SILENT, Reporter
from spectct.volume import Volume

SPACING_RTOL = 0.01
"""Relative tolerance on slice-to-slice spacing before a series counts as non-uniform."""
ORIENTATION_ATOL = 1e-4
TILT_ATOL_MM = 0.01
"""Largest in-plane drift (mm per slice) of ImagePositionPatient accepted as "no gantry tilt"."""


@dataclass
class CtSeries:
    """A CT series found in a folder: its sorted slice files and headers (pixels not yet read)."""

    series_uid: str
    files: list[Path] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)

    @property
    def description(self) -> str:
        h = self.headers[0] if self.headers else {}
        return str(h.get("SeriesDescription", "") or "")


def find_ct_series(
    folder: str | os.PathLike, reporter: Reporter | None = None, with_pixels: bool = False
) -> dict[str, CtSeries]:
    """Scan ``folder`` recursively and group the single-frame CT images by SeriesInstanceUID.

    Non-CT DICOM objects (NM, SR, SEG ...) and non-DICOM files without a DICOM name are skipped.
    ``with_pixels`` keeps the pixel data in the headers (each file is then read only once).
    """
    reporter = reporter or SILENT
    files, _ = dicom_files(folder)
    series: dict[str, CtSeries] = {}
    enhanced = []
    for path in reporter.track(files, "reading DICOM files"):
        ds = read_dataset(path, stop_before_pixels=not with_pixels)
        sop = str(ds.get("SOPClassUID", ""))
        if sop == ENHANCED_CT_IMAGE_STORAGE:
            enhanced.append(path)
            continue
        if sop != CT_IMAGE_STORAGE and not (ds.get("Modality") == "CT" and "PixelData" in ds):
            continue
        uid = str(require(ds, "SeriesInstanceUID", path))
        entry = series.setdefault(uid, CtSeries(uid))
        entry.files.append(path)
        entry.headers.append(ds)
    if not series and enhanced:
        raise InputError(
            f"{enhanced[0]}: Enhanced CT (multi-frame) images are not supported; "
            "export the series as single-frame CT Image Storage"
        )
    return series


def select_ct_series(
    folder: str | os.PathLike,
    series_uid: str | None = None,
    reporter: Reporter | None = None,
    with_pixels: bool = False,
) -> CtSeries:
    """The one CT series of ``folder`` (or the one named by ``series_uid``), its slices sorted."""
    found = find_ct_series(folder, reporter, with_pixels=with_pixels)
    if not found:
        raise InputError(f"{folder}: no CT images (SOP class CT Image Storage) found")
    if series_uid is not None:
        if series_uid not in found:
            raise InputError(
                f"{folder}: no CT series with {tag_name('SeriesInstanceUID')} {series_uid}; "
                f"found {', '.join(sorted(found))}"
            )
        chosen = found[series_uid]
    elif len(found) > 1:
        listing = "; ".join(
            f"{uid} ({len(s.files)} images, '{s.description}')" for uid, s in sorted(found.items())
        )
        raise InputError(
            f"{folder}: {len(found)} CT series found, name one by {tag_name('SeriesInstanceUID')}: {listing}"
        )
    else:
        chosen = next(iter(found.values()))
    _sort_and_check(chosen)
    return chosen


def _sort_and_check(series: CtSeries) -> tuple[np.ndarray, np.ndarray, float]:
    """Sort ``series`` along the slice normal in place; return (row/col cosines [2,3], positions, spacing)."""
    cosines, positions = [], []
    shape = None
    for path, ds in zip(series.files, series.headers, strict=True):
        iop = np.array(require_float(ds, "ImageOrientationPatient", path, n=6))
        ipp = np.array(require_float(ds, "ImagePositionPatient", path, n=3))
        require_float(ds, "PixelSpacing", path, n=2)
        this_shape = (int(require(ds, "Rows", path)), int(require(ds, "Columns", path)))
        if shape is None:
            shape = this_shape
        elif this_shape != shape:
            raise InputError(
                f"{path}: matrix {this_shape} differs from the series' {shape} "
                f"({tag_name('Rows')}/{tag_name('Columns')})"
            )
        cosines.append(iop)
        positions.append(ipp)
    cos = np.array(cosines)
    if np.max(np.abs(cos - cos[0])) > ORIENTATION_ATOL:
        bad = int(np.argmax(np.max(np.abs(cos - cos[0]), axis=1)))
        raise InputError(
            f"{series.files[bad]}: {tag_name('ImageOrientationPatient')} differs from the rest of the series"
        )
    row_dir, col_dir = cos[0, :3], cos[0, 3:]
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir / np.linalg.norm(col_dir)
    if abs(row_dir @ col_dir) > 1e-3:
        raise InputError(
            f"{series.files[0]}: {tag_name('ImageOrientationPatient')} row and column directions "
            "are not orthogonal"
        )
    normal = np.cross(row_dir, col_dir)
    pos = np.array(positions)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    series.files = [series.files[i] for i in order]
    series.headers = [series.headers[i] for i in order]
    pos, dist = pos[order], dist[order]
    if len(dist) < 2:
        thick = optional_float(series.headers[0], "SpacingBetweenSlices") or optional_float(
            series.headers[0], "SliceThickness"
        )
        if thick is None or thick <= 0:
            raise InputError(
                f"{series.files[0]}: a single slice needs {tag_name('SliceThickness')} for its depth"
            )
        return np.stack([row_dir, col_dir]), dist, thick
    steps = np.diff(dist)
    dup = np.nonzero(steps < 1e-3)[0]
    if dup.size:
        i = int(dup[0])
        raise InputError(
            f"{series.files[i + 1]}: same {tag_name('ImagePositionPatient')} as {series.files[i].name} "
            f"(slice at {dist[i]:.3f} mm along the normal appears twice)"
        )
    spacing = float(np.median(steps))
    bad = np.nonzero(np.abs(steps - spacing) > SPACING_RTOL * spacing)[0]
    if bad.size:
        i = int(bad[0])
        kind = "gap (missing slices?)" if steps[i] > spacing else "uneven slice spacing"
        raise InputError(
            f"{series.files[i + 1]}: {kind} in {tag_name('ImagePositionPatient')}: "
            f"{steps[i]:.3f} mm between {dist[i]:.3f} and {dist[i + 1]:.3f} mm along the slice normal, "
            f"series spacing is {spacing:.3f} mm"
        )
    # gantry tilt: successive positions drift in-plane instead of moving along the normal
    offsets = pos - pos[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    shift = np.linalg.norm(in_plane, axis=1)
    drift = shift[1:] / np.abs(offsets[1:] @ normal)
    if np.max(shift) > TILT_ATOL_MM and np.max(drift) > 1e-3:
        tilt = np.degrees(np.arctan(np.max(drift)))
        raise InputError(
            f"{series.files[-1]}: gantry tilt of about {tilt:.2f}° (slice positions drift off the "
            f"normal of {tag_name('ImageOrientationPatient')}); resample the series without tilt first"
        )
    return np.stack([row_dir, col_dir]), dist, spacing


def read_ct_series(
    folder: str | os.PathLike, series_uid: str | None = None, reporter: Reporter | None = None
) -> Volume:
    """Read a CT series from ``folder`` (searched recursively) into a Volume in HU.

    Parameters
    ----------
    folder : folder holding the series; other series and non-CT objects may be present.
    series_uid : SeriesInstanceUID to read when the folder holds more than one CT series.
    reporter : progress reporting (silent by default).

    Returns
    -------
    Volume
        ``data`` float32 HU ``[slice, row, column]``, slices ascending along ``row_dir × col_dir``;
        direction columns (row_dir, col_dir, normal); origin = ImagePositionPatient of the first slice;
        ``frame_of_reference`` = FrameOfReferenceUID.

    Notes
    -----
    HU = stored value × RescaleSlope + RescaleIntercept (PS3.3 C.11.1.1.2); pixel padding values
    are kept as stored (they are far below air and harmless for display; MAR masks them itself).
    """
    reporter = reporter or SILENT
    series = select_ct_series(folder, series_uid, reporter, with_pixels=True)
    cosines, dist, dz = _sort_and_check(series)
    first = series.headers[0]
    rows, cols = int(first.Rows), int(first.Columns)
    dy, dx = require_float(first, "PixelSpacing", series.files[0], n=2)
    data = np.empty((len(series.files), rows, cols), dtype=np.float32)
    frames = {str(h.get("FrameOfReferenceUID", "")) for h in series.headers}
    if len(frames) > 1:
        raise InputError(
            f"{folder}: slices of series {series.series_uid} carry different "
            f"{tag_name('FrameOfReferenceUID')}s"
        )
    for k, (path, ds) in enumerate(zip(series.files, series.headers, strict=True)):
        arr = pixel_array(ds, path)
        if arr.shape != (rows, cols):
            raise InputError(
                f"{path}: pixel data shape {arr.shape} does not match Rows×Columns {(rows, cols)}"
            )
        slope = optional_float(ds, "RescaleSlope", 1.0)
        intercept = optional_float(ds, "RescaleIntercept", 0.0)
        data[k] = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        del ds.PixelData  # free the raw bytes as we go
    direction = np.column_stack([cosines[0], cosines[1], np.cross(cosines[0], cosines[1])])
    origin = require_float(first, "ImagePositionPatient", series.files[0], n=3)
    frame = frames.pop() or None
    return Volume(
        data, spacing=(dz, dy, dx), origin=origin, direction=direction, unit="HU", frame_of_reference=frame
    )


def ct_series_headers(folder: str | os.PathLike, series_uid: str | None = None) -> list[Dataset]:
    """Headers (no pixels) of the CT series in ``folder``, sorted like :func:`read_ct_series` slices."""
    return select_ct_series(folder, series_uid).headers


def list_series(folder: str | os.PathLike) -> dict[str, dict]:
    """Every series in ``folder``: UID → modality, SOP class, description and number of files."""
    files, _ = dicom_files(folder)
    out: dict[str, dict] = defaultdict(lambda: {"files": 0})
    for path in files:
        ds = read_dataset(path, stop_before_pixels=True)
        entry = out[str(ds.get("SeriesInstanceUID", "?"))]
        entry["files"] += 1
        entry["modality"] = str(ds.get("Modality", ""))
        entry["sop_class"] = str(ds.get("SOPClassUID", ""))
        entry["description"] = str(ds.get("SeriesDescription", "") or "")
    return dict(out)
