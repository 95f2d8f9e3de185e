"""NIfTI-1 read/write through nibabel with the LPS↔RAS conversion done once, here.

NIfTI's affine maps (i, j, k) to RAS+ world coordinates; ours maps to DICOM LPS. The two differ by
``diag(-1, -1, 1)``. nibabel stores the affine in float32, so spectct also keeps the exact float64
geometry, the unit and the frame of reference in a JSON header extension and uses it on reading when it
agrees with the stored affine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from spectct.atomic import atomic_path
from spectct.errors import InputError
from spectct.volume import UNITS, Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_EXT_CODE = 6  # "comment" extension
_TAG = "spectct-geometry"


def write_nifti(volume: Volume, path: str | os.PathLike) -> Path:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``) atomically."""
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise InputError(f"{path}: NIfTI file names end in .nii or .nii.gz")
    data = np.ascontiguousarray(volume.data.transpose(2, 1, 0))
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    affine_ras = LPS_TO_RAS @ volume.affine
    img = nib.Nifti1Image(data, affine_ras)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine_ras, code=1)
    img.set_qform(affine_ras, code=1)
    meta = {
        "tag": _TAG,
        "unit": volume.unit,
        "frame_of_reference": volume.frame_of_reference,
        "spacing_zyx": list(volume.spacing),
        "origin_lps": list(volume.origin),
        "direction": volume.direction.tolist(),
    }
    img.header.extensions.append(nib.nifti1.Nifti1Extension(_EXT_CODE, json.dumps(meta).encode()))
    img.header["descrip"] = f"spectct unit={volume.unit}"[:79].encode()
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def read_nifti(path: str | os.PathLike, unit: str | None = None) -> Volume:
    """Read a NIfTI file into a :class:`Volume` in LPS.

    Raises :class:`InputError` for unreadable files, 4-D data with more than one frame, a sheared
    affine, or non-finite values.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{path}: not a readable NIfTI file ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3-D image, got shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise InputError(f"{path}: image contains NaN or infinite values")
    affine_lps = LPS_TO_RAS @ img.affine
    m = affine_lps[:3, :3]
    spacing_xyz = np.linalg.norm(m, axis=0)
    if np.any(spacing_xyz <= 0):
        raise InputError(f"{path}: affine has a zero voxel size")
    direction = m / spacing_xyz
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(f"{path}: affine has a shear; spectct needs orthogonal voxel axes")
    meta = _read_meta(img)
    spacing = (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0])
    origin = affine_lps[:3, 3]
    frame = None
    if meta is not None:
        exact = Volume(np.zeros((1, 1, 1)), spacing=meta["spacing_zyx"], origin=meta["origin_lps"],
                       direction=np.array(meta["direction"]))
        if np.allclose(exact.affine, affine_lps, atol=1e-3):
            spacing, origin, direction = exact.spacing, exact.origin, exact.direction
        frame = meta.get("frame_of_reference")
        unit = unit or meta.get("unit")
    unit = unit or _unit_from_descrip(img) or "1"
    if unit not in UNITS:
        raise InputError(f"{path}: unknown unit {unit!r}")
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), spacing=spacing, origin=tuple(origin),
                  direction=direction, unit=unit, frame_of_reference=frame)


def _read_meta(img) -> dict | None:
    for ext in img.header.extensions:
        if ext.get_code() != _EXT_CODE:
            continue
        try:
            meta = json.loads(ext.get_content())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(meta, dict) and meta.get("tag") == _TAG:
            return meta
    return None


def _unit_from_descrip(img) -> str | None:
    text = bytes(img.header["descrip"]).split(b"\0")[0].decode(errors="ignore")
    if "unit=" in text:
        value = text.split("unit=", 1)[1].split()[0]
        return value if value in UNITS else None
    return None
