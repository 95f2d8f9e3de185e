"""Inputs of a SPECT reconstruction from files: projections with their scanner extras, a CT with its kVp,
the collimator. Shared by ``spectct recon-spect`` and ``spectct run``."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from spectct.errors import InputError
from spectct.progress import Reporter

COLLIMATORS = ("lehr", "megp")


def load_projections_with_info(path: Path, angle_offset_deg: float = 0.0, vendor_flip: bool = False):
    """Projections from a DICOM NM file, an Interfile header, or a folder holding one NM file
    (a study folder's ``spect/projections``), with a dict: rotation axis (x, y), collimator name, frame of reference."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        for candidate in (path / "spect" / "projections", path / "projections"):
            if candidate.is_dir():
                path = candidate
                break
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        headers = [p for p in files if p.suffix.lower() in (".hs", ".h33")]
        dicoms = [p for p in files if p.suffix.lower() in (".dcm", "") or p.suffix.lower().startswith(".ima")]
        if headers and not dicoms:
            return _read_interfile(path)
        if len(dicoms) != 1:
            raise InputError(f"{path}: expected one DICOM NM projection file, found {len(dicoms)}")
        path = dicoms[0]
    if path.suffix.lower() in (".hs", ".h33"):
        return _read_interfile(path)
    read_acq = _optional("spectct.io.dicom_nm", "read_nm_acquisition")
    to_proj = _optional("spectct.io.dicom_nm", "acquisition_to_projections")
    if read_acq is None or to_proj is None:
        raise InputError(f"{path}: the DICOM NM reader (spectct.io.dicom_nm) is not available")
    acq = read_acq(path)
    proj = to_proj(acq, vendor_flip=vendor_flip)
    if angle_offset_deg:
        proj.geometry.angles_deg = np.mod(proj.geometry.angles_deg + float(angle_offset_deg), 360.0)
    info = {
        "axis_xy": _rotation_axis_xy(acq.extra, proj.geometry),
        "collimator": str(acq.extra.get("collimator", "") or ""),
        "frame_of_reference": acq.extra.get("frame_of_reference") or None,
    }
    return proj, info


def _rotation_axis_xy(extra: dict, geometry) -> tuple[float, float]:
    """LPS (x, y) of the rotation axis from the NM header: Detector Information ImagePositionPatient is
    the centre of the first pixel of the reconstruction grid's first row (GE, Siemens; the same reading as
    PyTomography's DICOM affine); (0, 0) when absent."""
    ipp = (extra.get("detector_image_position") or [None])[0]
    if ipp is None or len(ipp) < 2:
        return (0.0, 0.0)
    half = (geometry.n_cols - 1) / 2.0 * geometry.pixel_mm[1]
    return (float(ipp[0]) + half, float(ipp[1]) + half)


def _read_interfile(path: Path):
    """Interfile projections: a folder of ``.hs`` headers (one per energy window) or one header; a single
    header whose folder holds the other windows of the same acquisition (``<stem>_<window>.hs``) reads them
    all, so that scatter windows are found."""
    reader = _optional("spectct.io.interfile", "read_projections_interfile")
    if reader is None:
        raise InputError(f"{path}: no Interfile projection reader is available in spectct.io.interfile")
    if path.is_file():
        stem = path.stem.rsplit("_", 1)[0]
        siblings = sorted(path.parent.glob("*.hs"))
        if len(siblings) > 1 and all(p.stem.rsplit("_", 1)[0] == stem for p in siblings):
            path = path.parent
    return reader(path), {"axis_xy": (0.0, 0.0), "collimator": "", "frame_of_reference": None}


def _optional(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def load_ct(path: Path, reporter: Reporter):
    """CT in HU and its tube voltage (None when unknown) from a DICOM folder or a NIfTI file."""
    if not path.exists():
        raise InputError(f"{path}: no such CT file or folder")
    if path.is_dir():
        from spectct.io.dicom_ct import ct_series_headers, read_ct_series

        ct = read_ct_series(path, reporter=reporter)
        kvp = ct_series_headers(path)[0].get("KVP", None)
        return ct, (float(kvp) if kvp not in (None, "") else None)
    from spectct.io.nifti import read_nifti

    ct = read_nifti(path)
    if ct.unit not in ("HU", "1"):
        raise InputError(f"{path}: CT must be in HU, file says {ct.unit!r}")
    return ct, None


def collimator_for(name: str | None, projections, energy_kev: float, collimator_in_file: str = ""):
    from spectct.physics.collimator import Collimator

    if name is None:
        name = collimator_in_file or ("megp" if energy_kev > 170 else "lehr")
    key = name.strip().lower()
    for known in COLLIMATORS:
        if known in key.replace("-", "").replace(" ", ""):
            return getattr(Collimator, known)(energy_kev)
    if key in ("me", "meap"):
        return Collimator.megp(energy_kev)
    raise InputError(f"unknown collimator {name!r}; known: {', '.join(COLLIMATORS)}")
