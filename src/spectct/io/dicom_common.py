"""Helpers shared by the DICOM readers and writers: safe reading, tag access with clear errors.

Every failure to read or interpret a file becomes an :class:`~spectct.errors.InputError` whose message
names the file and, where one is to blame, the tag as ``(gggg,eeee) Keyword``. Nothing here ever
parses a file that lacks the DICOM preamble and ``DICM`` prefix: a file without them is refused,
so a random binary with a ``.dcm`` name is never mistaken for an image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from spectct.errors import InputError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

# identifiers copied from a source object into every derived object we write
PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
)
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


def tag_name(keyword: str) -> str:
    """``"(0020,0032) ImagePositionPatient"`` for a keyword, as used in every error message."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}"


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file starts with the 128-byte preamble and ``DICM`` (PS3.10 section 7.1)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dataset(path: str | os.PathLike, stop_before_pixels: bool = False) -> Dataset:
    """Read one DICOM Part-10 file, refusing anything that is not one.

    Parameters
    ----------
    path : the file.
    stop_before_pixels : read the header only (fast scans of folders).

    Raises
    ------
    InputError
        Missing file, no ``DICM`` prefix (not DICOM, whatever its name), or a header pydicom cannot parse
        (truncated or corrupt file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if not is_dicom_file(path):
        raise InputError(f"{path}: not a DICOM file (no 'DICM' prefix after the 128-byte preamble)")
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise InputError(f"{path}: not a valid DICOM file ({exc})") from None
    except Exception as exc:  # pydicom raises many types for truncated/corrupt files
        raise InputError(
            f"{path}: unreadable DICOM header, file truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from None
    return ds


def require(ds: Dataset, keyword: str, path: str | os.PathLike | None = None, what: str = "") -> Any:
    """The value of ``keyword`` in ``ds``; InputError naming the file and tag when absent or empty."""
    value = ds.get(keyword, None)
    empty = hasattr(value, "__len__") and not isinstance(value, Dataset) and len(value) == 0
    if value is None or empty:
        where = f"{path}: " if path is not None else ""
        extra = f" ({what})" if what else ""
        raise InputError(f"{where}missing mandatory tag {tag_name(keyword)}{extra}")
    return value


def require_float(ds: Dataset, keyword: str, path: str | os.PathLike | None = None, n: int | None = None):
    """A numeric tag as float (or tuple of ``n`` floats); InputError when missing or malformed."""
    value = require(ds, keyword, path)
    where = f"{path}: " if path is not None else ""
    try:
        if n is None:
            out = float(value)
            if not np.isfinite(out):
                raise ValueError
            return out
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{where}tag {tag_name(keyword)} has a non-numeric value {value!r}") from None
    if len(vals) != n or not all(np.isfinite(vals)):
        raise InputError(f"{where}tag {tag_name(keyword)} must hold {n} finite numbers, got {value!r}")
    return vals


def optional_float(ds: Dataset, keyword: str, default: float | None = None) -> float | None:
    """A numeric tag as float, or ``default`` when absent, empty or not a number."""
    value = ds.get(keyword, None)
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def pixel_array(ds: Dataset, path: str | os.PathLike | None = None) -> np.ndarray:
    """Decoded pixel data; InputError when missing, truncated or in an unsupported compression."""
    where = f"{path}: " if path is not None else ""
    if "PixelData" not in ds:
        raise InputError(f"{where}missing mandatory tag {tag_name('PixelData')}")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InputError(
            f"{where}cannot decode {tag_name('PixelData')} ({type(exc).__name__}: {exc})"
        ) from None
    return np.asarray(arr)


def identifiers(ds: Dataset | None) -> dict[str, Any]:
    """Patient and study identifiers of ``ds`` (keywords present and non-empty), to carry into outputs."""
    out: dict[str, Any] = {}
    if ds is None:
        return out
    for kw in PATIENT_KEYWORDS + STUDY_KEYWORDS + ("FrameOfReferenceUID",):
        value = ds.get(kw, None)
        if value not in (None, ""):
            out[kw] = value
    return out


def dicom_files(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Recursive file list of ``folder``: (Part-10 DICOM files, other files), each sorted by path.

    A file whose name ends in ``.dcm`` but that is not DICOM is refused (InputError), since it was
    meant to be one; other non-DICOM files (READMEs, DICOMDIR-less junk) are returned as "other".
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    dicom, other = [], []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        if is_dicom_file(p):
            dicom.append(p)
        elif p.suffix.lower() in (".dcm", ".dicom", ".ima"):
            raise InputError(f"{p}: not a DICOM file (no 'DICM' prefix after the 128-byte preamble)")
        else:
            other.append(p)
    return dicom, other
