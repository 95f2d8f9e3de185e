"""Format sniffing: one entry point for volumes and one for projections, whatever the file format.

- :func:`load_volume`: NIfTI (``.nii``/``.nii.gz``), Interfile image header (``.hv`` or any file
  starting ``!INTERFILE``), a DICOM folder holding a CT series, a DICOM NM RECON TOMO file or a DICOM
  CT file (its whole series, from the file's folder).
- :func:`load_projections`: a DICOM NM TOMO file, an Interfile projection header (``.hs``), or a folder
  holding either (a study folder's ``spect/projections`` is looked up too).
- :func:`describe`: one line saying what a path is, for ``spectct info``.
"""

from __future__ import annotations

import os
from pathlib import Path

from spectct.errors import InputError
from spectct.io.dicom_common import (
    CT_IMAGE_STORAGE,
    NM_IMAGE_STORAGE,
    dicom_files,
    is_dicom_file,
    read_dataset,
)
from spectct.progress import Reporter
from spectct.volume import Volume


def _is_interfile(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip().upper().startswith(b"!INTERFILE")
    except OSError:
        return False


def load_volume(
    path: str | os.PathLike,
    series_uid: str | None = None,
    unit: str | None = None,
    reporter: Reporter | None = None,
) -> Volume:
    """Read a volume from NIfTI, Interfile, a DICOM CT series (folder or one of its files) or an NM recon.

    Parameters
    ----------
    path : file or folder.
    series_uid : which CT series when a folder holds several.
    unit : override the unit for formats that do not carry one (NIfTI/Interfile without spectct metadata).
    """
    from spectct.io import dicom_ct, dicom_nm, interfile
    from spectct.io.nifti import read_nifti

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files, _ = dicom_files(path)
        if not files:
            raise InputError(f"{path}: folder holds no DICOM files")
        found = dicom_ct.find_ct_series(path)
        if found:
            return dicom_ct.read_ct_series(path, series_uid=series_uid, reporter=reporter)
        recon = [f for f in files if _nm_kind(f) == "recon"]
        if len(recon) == 1:
            return dicom_nm.read_nm_volume(recon[0])
        raise InputError(
            f"{path}: no CT series and {len(recon)} NM reconstructions found; nothing to load as a volume"
        )
    name = path.name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return read_nifti(path, unit=unit)
    if _is_interfile(path):
        return interfile.read_image_interfile(path, unit=unit)
    if is_dicom_file(path):
        ds = read_dataset(path, stop_before_pixels=True)
        sop = str(ds.get("SOPClassUID", ""))
        if sop == CT_IMAGE_STORAGE:
            return dicom_ct.read_ct_series(
                path.parent, series_uid=str(ds.SeriesInstanceUID), reporter=reporter
            )
        if sop == NM_IMAGE_STORAGE:
            return dicom_nm.read_nm_volume(path)
        raise InputError(
            f"{path}: DICOM object of SOP class {sop} is not a volume spectct reads (CT or NM recon)"
        )
    if name.endswith((".dcm", ".dicom", ".ima")):
        raise InputError(f"{path}: not a DICOM file (no 'DICM' prefix after the 128-byte preamble)")
    raise InputError(f"{path}: unknown volume format (expected .nii/.nii.gz, Interfile .hv, DICOM)")


def _nm_kind(path: Path) -> str | None:
    """ "tomo", "recon" or None (not NM / other NM) for a DICOM file."""
    ds = read_dataset(path, stop_before_pixels=True)
    if str(ds.get("SOPClassUID", "")) != NM_IMAGE_STORAGE:
        return None
    types = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if len(types) > 2 and types[2] == "RECON TOMO":
        return "recon"
    if len(types) > 2 and types[2] in ("TOMO", "GATED TOMO"):
        return "tomo"
    return None


def load_projections(path: str | os.PathLike, vendor_flip: bool = False):
    """Read SPECT projections from DICOM NM, Interfile (``.hs`` or a folder of them), or a study folder."""
    from spectct.io import dicom_nm, interfile

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        for candidate in (path / "spect" / "projections", path / "projections"):
            if candidate.is_dir():
                path = candidate
                break
        if list(path.glob("*.hs")):
            return interfile.read_projections_interfile(path)
        return dicom_nm.read_nm_projections(path, vendor_flip=vendor_flip)
    if _is_interfile(path):
        return interfile.read_projections_interfile(path)
    return dicom_nm.read_nm_projections(path, vendor_flip=vendor_flip)


def describe(path: str | os.PathLike) -> str:
    """A short human description of what ``path`` is (format, size, geometry) — never raises on bad input
    except :class:`InputError` with the reason."""
    from spectct.io import dicom_ct

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        series = dicom_ct.list_series(path)
        if not series and list(path.glob("*.hs")):
            p = load_projections(path)
            return _describe_projections(path, p)
        if not series:
            raise InputError(f"{path}: folder holds no DICOM files or Interfile projections")
        lines = [f"{path}: DICOM folder, {len(series)} series"]
        for uid, s in sorted(series.items()):
            lines.append(f"  {s['modality'] or '?':3s} {s['files']:5d} file(s)  {uid}  {s['description']}")
        return "\n".join(lines)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")) or (_is_interfile(path) and name.endswith(".hv")):
        return _describe_volume(path, load_volume(path))
    if _is_interfile(path):
        return _describe_projections(path, load_projections(path))
    if is_dicom_file(path):
        ds = read_dataset(path, stop_before_pixels=True)
        sop = str(ds.get("SOPClassUID", ""))
        kind = _nm_kind(path) if sop == NM_IMAGE_STORAGE else None
        if kind == "tomo":
            return _describe_projections(path, load_projections(path))
        if kind == "recon":
            return _describe_volume(path, load_volume(path))
        return (
            f"{path}: DICOM {getattr(ds.SOPClassUID, 'name', sop)}, modality {ds.get('Modality', '?')}, "
            f"series {ds.get('SeriesInstanceUID', '?')}"
        )
    raise InputError(f"{path}: unknown format (not NIfTI, Interfile or DICOM)")


def _describe_volume(path: Path, v: Volume) -> str:
    return (
        f"{path}: volume {v.shape[2]}×{v.shape[1]}×{v.shape[0]} (x×y×z), voxel "
        f"{v.spacing[2]:.4g}×{v.spacing[1]:.4g}×{v.spacing[0]:.4g} mm, unit {v.unit}, origin (LPS) "
        f"({v.origin[0]:.2f}, {v.origin[1]:.2f}, {v.origin[2]:.2f}) mm, range {float(v.data.min()):.4g}.."
        f"{float(v.data.max()):.4g}, frame of reference {v.frame_of_reference or '-'}"
    )


def _describe_projections(path: Path, p) -> str:
    g = p.geometry
    wins = ", ".join(f"{w.name} {w.lower_kev:.4g}-{w.upper_kev:.4g} keV" for w in g.windows)
    return (
        f"{path}: SPECT projections, {len(g.windows)} window(s) × {g.n_views} views ({g.heads} head(s) × "
        f"{g.stops_per_head} stops, {g.direction}, start {g.start_angle_deg:.2f}°) of {g.n_rows}×{g.n_cols}, "
        f"pixel {g.pixel_mm[0]:.4g}×{g.pixel_mm[1]:.4g} mm, {g.time_per_view_s:g} s/view, radius "
        f"{g.radii_mm.min():.1f}..{g.radii_mm.max():.1f} mm, {p.radionuclide}, "
        f"total {float(p.counts.sum()):.0f} "
        f"counts; windows: {wins}"
    )
