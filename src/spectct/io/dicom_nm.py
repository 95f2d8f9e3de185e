"""DICOM NM tomographic acquisitions (NM Image Storage, Image Type ``...\\TOMO``) → projections.

What is read (PS3.3 C.8.4, NM Image / NM Multi-frame / NM Detector / NM TOMO Acquisition modules)
-------------------------------------------------------------------------------------------------
- Frame placement: FrameIncrementPointer names the vectors (EnergyWindowVector, DetectorVector,
  RotationVector, AngularViewVector ...) that give each frame its window, head, rotation and view,
  all 1-based. Frames are *placed by those vectors*, not by assuming an order, so GE files
  (window-major) and Siemens files (the same pointers, other orders) both land in
  ``counts[window, view, row, col]`` where view = head-major (all stops of head 1, then head 2).
- Energy windows: Energy Window Information Sequence, one item per window: name and the (first)
  range's lower/upper limits in keV. Scatter windows are simply further windows.
- Angles (DICOM convention, degrees): per head, its start angle is Detector Information Sequence
  item StartAngle when present (Siemens writes both heads' angles there), else Rotation Information
  Sequence StartAngle (GE) plus ``head × 360 / heads`` for further heads. View ``v`` of a head is at
  ``start ± v × AngularStep``, ``+`` for RotationDirection ``CC`` (increasing angle), ``−`` for ``CW``.
- Radii (mm): per head, Detector Information Sequence RadialPosition (one per view on non-circular
  orbits; Siemens) else Rotation Information Sequence RadialPosition (one value or one per view; GE).
- Pixel spacing (row, col) from PixelSpacing; time per view from ActualFrameDuration (ms).
- Timing: acquisition start from AcquisitionDate/Time (else SeriesDate/Time); injection from
  Radiopharmaceutical Information Sequence RadiopharmaceuticalStartDateTime (else StartTime on the
  acquisition date); injected activity RadionuclideTotalDose, which the NM IOD gives in **MBq**
  (the PET IOD uses Bq).
- Radionuclide: Radionuclide Code Sequence CodeMeaning, else the energy-window names (GE writes
  e.g. ``Lu177_EM``), else None.

The result is an :class:`NmAcquisition` (plain NumPy, no dependency on the SPECT package);
:func:`read_nm_projections` turns it into the SPECT package's ``Projections``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from spectct.errors import InputError
from spectct.io.dicom_common import (
    NM_IMAGE_STORAGE,
    identifiers,
    optional_float,
    pixel_array,
    read_dataset,
    require,
    require_float,
    tag_name,
)
from spectct.volume import Volume


@dataclass
class EnergyWindowInfo:
    """One acquisition energy window: name and limits in keV."""

    name: str
    lower_kev: float
    upper_kev: float


@dataclass
class NmAcquisition:
    """A SPECT acquisition as read from (or to be written to) DICOM NM or Interfile.

    ``counts`` is ``[window, view, row, col]``; views are head-major. Angles follow the DICOM
    convention (see module docstring); ``direction`` is ``"CW"`` or ``"CCW"``.
    """

    counts: np.ndarray
    windows: list[EnergyWindowInfo]
    angles_deg: np.ndarray
    radii_mm: np.ndarray
    pixel_mm: tuple[float, float]
    time_per_view_s: float
    heads: int = 1
    direction: str = "CCW"
    start_angle_deg: float = 0.0
    angular_step_deg: float = 0.0
    radionuclide: str | None = None
    acquisition_start: dt.datetime | None = None
    injection_time: dt.datetime | None = None
    injected_activity_bq: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stops_per_head(self) -> int:
        return self.counts.shape[1] // self.heads

    @property
    def start_time_after_injection_s(self) -> float | None:
        if self.acquisition_start is None or self.injection_time is None:
            return None
        return (self.acquisition_start - self.injection_time).total_seconds()


# ----------------------------------------------------------------------------- date/time helpers
def parse_da_tm(date: str | None, time: str | None) -> dt.datetime | None:
    """A DICOM DA + TM pair as a naive datetime, or None when either is empty or malformed."""
    date, time = str(date or "").strip(), str(time or "").strip()
    if not date or not time:
        return None
    m = re.match(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", time.replace(":", ""))
    try:
        day = dt.datetime.strptime(date.replace(".", "")[:8], "%Y%m%d")
    except ValueError:
        return None
    if not m:
        return None
    hh, mm, ss, frac = m.group(1), m.group(2) or "0", m.group(3) or "0", m.group(4) or "0"
    return day.replace(hour=int(hh), minute=int(mm), second=int(ss), microsecond=int(frac.ljust(6, "0")))


def parse_dt(value: str | None) -> dt.datetime | None:
    """A DICOM DT value (YYYYMMDDHHMMSS.FFFFFF, optional UTC offset dropped) as a naive datetime."""
    text = str(value or "").strip()
    if len(text) < 8:
        return None
    text = re.split(r"[+-]", text, maxsplit=1)[0]
    return parse_da_tm(text[:8], text[8:] or "000000")


# ----------------------------------------------------------------------------- reader
def _sequence(ds: Dataset, keyword: str, path: Path, n: int | None = None) -> list[Dataset]:
    seq = require(ds, keyword, path)
    if n is not None and len(seq) < n:
        raise InputError(f"{path}: {tag_name(keyword)} has {len(seq)} items, expected {n}")
    return list(seq)


def _vector(ds: Dataset, keyword: str, n_frames: int, path: Path) -> np.ndarray:
    value = ds.get(keyword, None)
    if value is None:
        raise InputError(
            f"{path}: {tag_name('FrameIncrementPointer')} names {tag_name(keyword)}, which is missing"
        )
    vec = np.atleast_1d(np.asarray(value, dtype=np.int64))
    if vec.size != n_frames:
        raise InputError(
            f"{path}: {tag_name(keyword)} has {vec.size} values but {tag_name('NumberOfFrames')} is "
            f"{n_frames} (inconsistent frame counts)"
        )
    return vec


def _radionuclide(ds: Dataset, windows: list[EnergyWindowInfo]) -> str | None:
    from spectct.physics.radionuclide import get_radionuclide

    candidates: list[str] = []
    for item in ds.get("RadiopharmaceuticalInformationSequence", []) or []:
        candidates.append(str(item.get("Radiopharmaceutical", "") or "").split(" ")[0])
        for code in item.get("RadionuclideCodeSequence", []) or []:
            candidates.append(str(code.get("CodeMeaning", "")))
    candidates += [w.name.split("_")[0] for w in windows]
    for text in candidates:
        cleaned = re.sub(r"[\^\s]", "", text).lower()
        cleaned = cleaned.replace("technetium", "tc").replace("lutetium", "lu")
        for guess in (cleaned, re.sub(r"^(\d+m?)([a-z]+)$", r"\2\1", cleaned)):
            try:
                return get_radionuclide(guess).name
            except Exception:
                continue
    return None


def read_nm_acquisition(path: str | os.PathLike) -> NmAcquisition:
    """Read a DICOM NM TOMO acquisition file into an :class:`NmAcquisition` (see module docstring).

    Raises
    ------
    InputError
        Not DICOM, not an NM TOMO acquisition (e.g. a reconstruction), missing mandatory tags,
        vectors whose length differs from NumberOfFrames, frames left empty or filled twice.
    """
    path = Path(path)
    ds = read_dataset(path)
    sop = str(ds.get("SOPClassUID", ""))
    if sop != NM_IMAGE_STORAGE:
        raise InputError(f"{path}: {tag_name('SOPClassUID')} is {sop or 'missing'}, not NM Image Storage")
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if len(image_type) < 3 or image_type[2] not in ("TOMO", "GATED TOMO"):
        shown = "\\".join(image_type) or "(missing)"
        raise InputError(
            f"{path}: {tag_name('ImageType')} {shown} is not a "
            "tomographic acquisition (third value must be TOMO)"
        )
    if len(image_type) > 3 and "RECON" in image_type[2:]:
        raise InputError(f"{path}: this NM object is a reconstruction, not projections")
    n_frames = int(require(ds, "NumberOfFrames", path))
    rows, cols = int(require(ds, "Rows", path)), int(require(ds, "Columns", path))
    pixel = require_float(ds, "PixelSpacing", path, n=2)

    pointers = ds.get("FrameIncrementPointer")
    if pointers is None:
        raise InputError(f"{path}: missing mandatory tag {tag_name('FrameIncrementPointer')}")
    pointers = (
        [pointers]
        if not isinstance(pointers, (list, tuple)) and not hasattr(pointers, "__iter__")
        else list(pointers)
    )
    from pydicom.datadict import keyword_for_tag

    pointer_kw = [keyword_for_tag(int(p)) for p in pointers]
    vectors = {kw: _vector(ds, kw, n_frames, path) for kw in pointer_kw}

    win_items = _sequence(ds, "EnergyWindowInformationSequence", path)
    n_windows = int(ds.get("NumberOfEnergyWindows", len(win_items)) or len(win_items))
    if len(win_items) != n_windows:
        raise InputError(
            f"{path}: {tag_name('NumberOfEnergyWindows')} is {n_windows} but "
            f"{tag_name('EnergyWindowInformationSequence')} has {len(win_items)} items"
        )
    windows = []
    for i, item in enumerate(win_items):
        ranges = item.get("EnergyWindowRangeSequence") or []
        if not ranges:
            raise InputError(f"{path}: energy window {i + 1} has no {tag_name('EnergyWindowRangeSequence')}")
        lo = require_float(ranges[0], "EnergyWindowLowerLimit", path)
        hi = require_float(ranges[0], "EnergyWindowUpperLimit", path)
        windows.append(EnergyWindowInfo(str(item.get("EnergyWindowName", "") or f"window{i + 1}"), lo, hi))

    det_items = _sequence(ds, "DetectorInformationSequence", path)
    n_heads = int(ds.get("NumberOfDetectors", len(det_items)) or len(det_items))
    if len(det_items) != n_heads:
        raise InputError(
            f"{path}: {tag_name('NumberOfDetectors')} is {n_heads} but "
            f"{tag_name('DetectorInformationSequence')} has {len(det_items)} items"
        )
    rot_items = _sequence(ds, "RotationInformationSequence", path)
    if len(rot_items) != 1:
        raise InputError(
            f"{path}: {len(rot_items)} rotations in {tag_name('RotationInformationSequence')}; "
            "only single-rotation acquisitions are supported"
        )
    rot = rot_items[0]
    stops = int(require(rot, "NumberOfFramesInRotation", path))
    step = require_float(rot, "AngularStep", path)
    direction_code = str(require(rot, "RotationDirection", path)).upper()
    if direction_code not in ("CW", "CC", "CCW"):
        raise InputError(f"{path}: {tag_name('RotationDirection')} must be CW or CC, got {direction_code!r}")
    direction = "CW" if direction_code == "CW" else "CCW"
    sign = -1.0 if direction == "CW" else 1.0
    frame_ms = require_float(rot, "ActualFrameDuration", path)
    rot_start = optional_float(rot, "StartAngle")

    angles, radii = [], []
    for h, det in enumerate(det_items):
        start = optional_float(det, "StartAngle")
        if start is None:
            if rot_start is None:
                raise InputError(
                    f"{path}: missing mandatory tag {tag_name('StartAngle')} (rotation and detector)"
                )
            start = rot_start + h * 360.0 / n_heads
        angles.append((start + sign * step * np.arange(stops)) % 360.0)
        r = det.get("RadialPosition", None)
        if r is None or r == "":
            r = rot.get("RadialPosition", None)
        if r is None or r == "":
            raise InputError(f"{path}: missing {tag_name('RadialPosition')} for detector {h + 1}")
        r = np.atleast_1d(np.asarray(r, dtype=np.float64))
        if r.size == 1:
            r = np.full(stops, r[0])
        if r.size != stops:
            raise InputError(
                f"{path}: {tag_name('RadialPosition')} of detector {h + 1} has {r.size} values for "
                f"{stops} views"
            )
        radii.append(r)

    expected = n_windows * n_heads * stops
    if n_frames != expected:
        raise InputError(
            f"{path}: {tag_name('NumberOfFrames')} is {n_frames}, but {n_windows} windows × {n_heads} "
            f"detectors × {stops} views = {expected} (inconsistent frame counts)"
        )
    pixels = pixel_array(ds, path)
    if n_frames == 1:
        pixels = pixels[None]
    if pixels.shape != (n_frames, rows, cols):
        raise InputError(
            f"{path}: pixel data shape {pixels.shape} does not match {n_frames} frames of {rows}×{cols}"
        )
    one = np.ones(n_frames, dtype=np.int64)
    win_idx = vectors.get("EnergyWindowVector", one) - 1
    det_idx = vectors.get("DetectorVector", one) - 1
    view_idx = vectors.get("AngularViewVector", one) - 1
    if "RotationVector" in vectors and np.any(vectors["RotationVector"] != 1):
        raise InputError(f"{path}: {tag_name('RotationVector')} refers to more than one rotation")
    for kw, idx, n in (
        ("EnergyWindowVector", win_idx, n_windows),
        ("DetectorVector", det_idx, n_heads),
        ("AngularViewVector", view_idx, stops),
    ):
        if np.any(idx < 0) or np.any(idx >= n):
            raise InputError(f"{path}: {tag_name(kw)} has values outside 1..{n}")
    slot = (win_idx * n_heads + det_idx) * stops + view_idx
    if np.unique(slot).size != n_frames:
        raise InputError(
            f"{path}: frame vectors place two frames in the same window/detector/view "
            f"({', '.join(tag_name(k) for k in pointer_kw)})"
        )
    counts = np.empty((n_windows * n_heads * stops, rows, cols), dtype=np.float32)
    counts[slot] = pixels.astype(np.float32)
    slope = optional_float(ds, "RescaleSlope", 1.0)
    intercept = optional_float(ds, "RescaleIntercept", 0.0)
    if slope != 1.0 or intercept != 0.0:
        counts = counts * np.float32(slope) + np.float32(intercept)
    counts = counts.reshape(n_windows, n_heads * stops, rows, cols)

    acq_start = parse_da_tm(
        ds.get("AcquisitionDate") or ds.get("SeriesDate") or ds.get("StudyDate"),
        ds.get("AcquisitionTime") or ds.get("SeriesTime") or ds.get("StudyTime"),
    )
    injection, activity = None, None
    pharm = (ds.get("RadiopharmaceuticalInformationSequence") or [None])[0]
    if pharm is not None:
        injection = parse_dt(pharm.get("RadiopharmaceuticalStartDateTime")) or parse_da_tm(
            ds.get("AcquisitionDate") or ds.get("StudyDate"), pharm.get("RadiopharmaceuticalStartTime")
        )
        dose_mbq = optional_float(pharm, "RadionuclideTotalDose")
        activity = dose_mbq * 1e6 if dose_mbq else None

    det0 = det_items[0]
    extra = {
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "model": str(ds.get("ManufacturerModelName", "") or ""),
        "collimator": str(det0.get("CollimatorGridName", "") or ""),
        "collimator_type": str(det0.get("CollimatorType", "") or ""),
        "scan_arc_deg": optional_float(rot, "ScanArc"),
        "detector_motion": str(ds.get("TypeOfDetectorMotion", "") or ""),
        "table_height_mm": optional_float(rot, "TableHeight"),
        "table_traverse_mm": optional_float(rot, "TableTraverse"),
        "center_of_rotation_offset_mm": [optional_float(d, "CenterOfRotationOffset", 0.0) for d in det_items],
        "detector_image_position": [
            list(map(float, d.ImagePositionPatient)) if "ImagePositionPatient" in d else None
            for d in det_items
        ],
        "detector_image_orientation": [
            list(map(float, d.ImageOrientationPatient)) if "ImageOrientationPatient" in d else None
            for d in det_items
        ],
        "zoom_factor": [list(map(float, d.get("ZoomFactor") or [1.0, 1.0])) for d in det_items],
        "identifiers": identifiers(ds),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "frame_of_reference": str(ds.get("FrameOfReferenceUID", "")) or None,
        "source": str(path),
    }
    return NmAcquisition(
        counts=counts,
        windows=windows,
        angles_deg=np.concatenate(angles),
        radii_mm=np.concatenate(radii),
        pixel_mm=(pixel[0], pixel[1]),
        time_per_view_s=frame_ms / 1000.0,
        heads=n_heads,
        direction=direction,
        start_angle_deg=float(angles[0][0]),
        angular_step_deg=step,
        radionuclide=_radionuclide(ds, windows),
        acquisition_start=acq_start,
        injection_time=injection,
        injected_activity_bq=activity,
        extra=extra,
    )


# ----------------------------------------------------------------------------- → Projections
def axial_center_from_detector(acq: NmAcquisition) -> float:
    """LPS z of the detector's central row from Detector Information Sequence ImagePositionPatient/
    ImageOrientationPatient (first head), or 0 when the file does not give them."""
    ipp = (acq.extra.get("detector_image_position") or [None])[0]
    iop = (acq.extra.get("detector_image_orientation") or [None])[0]
    if ipp is None or iop is None:
        return 0.0
    n_rows = acq.counts.shape[2]
    return float(ipp[2] + iop[5] * (n_rows - 1) / 2.0 * acq.pixel_mm[0])


def detector_angle_offset(acq: NmAcquisition, head: int) -> float:
    """0° or 180°: what to add to the DICOM start angle of ``head`` to get spectct's internal angle.

    The Detector Information Sequence ImageOrientationPatient gives the direction of the first row of
    the head's image at the start of the rotation. In spectct's convention
    (:mod:`spectct.spect.geometry`) columns run along ``e_u(θ) = (cos θ, −sin θ, 0)``, so that row
    direction fixes the internal start angle up to nothing but its sign of travel; the offset (0° or
    180°) that brings StartAngle closest to it is returned. Without a transaxial row direction: 0°.

    GE Discovery files need 180° (the row direction of bed1_projections.dcm is (0.999996, −0.002793, 0)
    at StartAngle 180.16°, i.e. an internal 0.16°); a reconstruction of that study then puts 75 % of the
    activity inside the CT body outline, against 35 % without the offset.
    """
    iops = acq.extra.get("detector_image_orientation") or []
    iop = iops[head] if head < len(iops) and iops[head] is not None else (iops[0] if iops else None)
    if iop is None:
        return 0.0
    rx, ry = float(iop[0]), float(iop[1])
    if np.hypot(rx, ry) < 0.9:
        return 0.0
    theta = np.degrees(np.arctan2(-ry, rx))
    start = float(acq.angles_deg.reshape(acq.heads, -1)[head, 0])
    diff = (theta - start + 180.0) % 360.0 - 180.0
    return 180.0 if abs(diff) > 90.0 else 0.0


def acquisition_to_projections(acq: NmAcquisition, vendor_flip: bool = False):
    """Convert an :class:`NmAcquisition` (DICOM angles, head-major views) to ``Projections``.

    Each head's DICOM start angle is first corrected by :func:`detector_angle_offset` (0° or 180°,
    from the detector image orientation), then the angles go through
    :meth:`SpectGeometry.from_dicom_angles` (``vendor_flip`` mirrors the orbit for data whose angle sense
    is the opposite one); views are reordered to the SPECT package's stop-major order. The offsets used
    are stored in ``acq.extra["angle_offset_deg"]``.
    """
    from spectct.spect.geometry import EnergyWindow, Projections, SpectGeometry

    heads, stops = acq.heads, acq.stops_per_head
    n_w, n_v, rows, cols = acq.counts.shape
    offsets = [detector_angle_offset(acq, h) for h in range(heads)]
    acq.extra["angle_offset_deg"] = offsets
    starts = np.mod(acq.angles_deg.reshape(heads, stops)[:, 0] + np.asarray(offsets), 360.0)
    windows = []
    seen: dict[str, int] = {}
    for w in acq.windows:  # names must be unique in SpectGeometry; GE repeats e.g. "Lu177_EM"
        name = w.name
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        windows.append(EnergyWindow(name, w.lower_kev, w.upper_kev))
    geom = SpectGeometry.from_dicom_angles(
        start_angles_deg=starts,
        angular_step_deg=acq.angular_step_deg,
        rotation_direction="CW" if acq.direction == "CW" else "CC",
        stops_per_head=stops,
        radial_positions_mm=acq.radii_mm.reshape(heads, stops),
        n_rows=rows,
        n_cols=cols,
        pixel_mm=acq.pixel_mm,
        time_per_view_s=acq.time_per_view_s,
        windows=tuple(windows),
        vendor_flip=vendor_flip,
        axial_center_mm=axial_center_from_detector(acq),
    )
    counts = (
        acq.counts.reshape(n_w, heads, stops, rows, cols)
        .transpose(0, 2, 1, 3, 4)
        .reshape(n_w, n_v, rows, cols)
    )
    kwargs = {}
    if acq.radionuclide:
        kwargs["radionuclide"] = acq.radionuclide
    if acq.start_time_after_injection_s is not None:
        kwargs["start_time_after_injection_s"] = acq.start_time_after_injection_s
    return Projections(
        counts=np.ascontiguousarray(counts),
        geometry=geom,
        injected_activity_bq=acq.injected_activity_bq,
        **kwargs,
    )


def read_nm_projections(path: str | os.PathLike, vendor_flip: bool = False):
    """Read a DICOM NM TOMO acquisition (GE or Siemens) into ``spectct.spect.geometry.Projections``.

    Parameters
    ----------
    path : the NM multi-frame file, or a folder holding exactly one NM TOMO acquisition.
    vendor_flip : mirror the orbit (see :func:`acquisition_to_projections`).

    Notes
    -----
    Everything the Projections type has no field for (manufacturer, collimator, table position, detector
    image position, identifiers) is available from :func:`read_nm_acquisition` in ``extra``.
    """
    return acquisition_to_projections(read_nm_acquisition(find_nm_file(path)), vendor_flip=vendor_flip)


def find_nm_file(path: str | os.PathLike) -> Path:
    """``path`` itself for a file; for a folder, its single NM TOMO acquisition (InputError for 0 or >1)."""
    from spectct.io.dicom_common import dicom_files

    path = Path(path)
    if not path.is_dir():
        return path
    files, _ = dicom_files(path)
    found = []
    for f in files:
        ds = read_dataset(f, stop_before_pixels=True)
        types = [str(v).upper() for v in (ds.get("ImageType") or [])]
        if (
            str(ds.get("SOPClassUID", "")) == NM_IMAGE_STORAGE
            and len(types) > 2
            and "TOMO" in types[2]
            and "RECON" not in types[2:]
        ):
            found.append(f)
    if len(found) != 1:
        raise InputError(
            f"{path}: expected one NM TOMO acquisition file, found {len(found)}"
            + (f" ({', '.join(p.name for p in found[:5])})" if found else "")
        )
    return found[0]


# ----------------------------------------------------------------------------- reconstructed NM volumes
def read_nm_volume(path: str | os.PathLike) -> Volume:
    """Read an NM RECON TOMO object (a reconstructed SPECT, one frame per slice) into a Volume.

    Geometry: Detector Information Sequence ImagePositionPatient (first slice) and
    ImageOrientationPatient, PixelSpacing, SpacingBetweenSlices (else SliceThickness); slices are
    taken to advance along ``row × column`` (the convention our writer and GDCM use). Values are
    stored × RescaleSlope + RescaleIntercept; the unit is Bq/mL when RescaleType or Units says BQML,
    else counts.
    """
    path = Path(path)
    ds = read_dataset(path)
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if (
        str(ds.get("SOPClassUID", "")) != NM_IMAGE_STORAGE
        or len(image_type) < 3
        or image_type[2] != "RECON TOMO"
    ):
        raise InputError(
            f"{path}: not an NM RECON TOMO image ({tag_name('ImageType')} "
            f"{'/'.join(image_type) or 'missing'})"
        )
    det = _sequence(ds, "DetectorInformationSequence", path, 1)[0]
    ipp = require_float(det, "ImagePositionPatient", path, n=3)
    iop = np.array(require_float(det, "ImageOrientationPatient", path, n=6))
    dy, dx = require_float(ds, "PixelSpacing", path, n=2)
    dz = optional_float(ds, "SpacingBetweenSlices") or optional_float(ds, "SliceThickness")
    if dz is None:
        raise InputError(
            f"{path}: missing {tag_name('SpacingBetweenSlices')} and {tag_name('SliceThickness')}"
        )
    n_frames = int(require(ds, "NumberOfFrames", path))
    arr = pixel_array(ds, path)
    if n_frames == 1:
        arr = arr[None]
    if arr.shape[0] != n_frames:
        raise InputError(
            f"{path}: pixel data has {arr.shape[0]} frames, {tag_name('NumberOfFrames')} is {n_frames}"
        )
    data = arr.astype(np.float32) * np.float32(optional_float(ds, "RescaleSlope", 1.0)) + np.float32(
        optional_float(ds, "RescaleIntercept", 0.0)
    )
    row, col = iop[:3], iop[3:]
    direction = np.column_stack([row, col, np.cross(row, col)])
    unit = (
        "Bq/mL"
        if "BQML" in (str(ds.get("RescaleType", "")).upper(), str(ds.get("Units", "")).upper())
        else "counts"
    )
    frame = str(ds.get("FrameOfReferenceUID", "")) or None
    return Volume(
        data, spacing=(abs(dz), dy, dx), origin=ipp, direction=direction, unit=unit, frame_of_reference=frame
    )
