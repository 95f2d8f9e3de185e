"""Save and load :class:`~spectct.ct.simulate.CtRaw` as ``.npz`` with JSON metadata (never pickle).

Layout of the archive: ``sinogram`` (float32 ``[nz, views, channels]``), ``reference`` (same, absent
for imported data), ``metal_trace`` (bit-packed bool along the channel axis), ``z_mm`` (float64) and
``meta`` (a unicode string holding JSON: format version, geometry, μ_water, grid, isocentre).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from spectct.atomic import atomic_path
from spectct.ct.geometry import CtGeometry
from spectct.ct.simulate import CtRaw
from spectct.errors import InputError, SpectCTError

FORMAT = "spectct-ct-raw"
VERSION = 1


def save_raw(raw: CtRaw, path: str | os.PathLike) -> Path:
    """Write ``raw`` to ``path`` (``.npz``) atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"{path}: CT raw data files end in .npz")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "geometry": raw.geometry.to_dict(),
        "mu_water": float(raw.mu_water),
        "isocenter_xy_mm": list(raw.isocenter_xy_mm),
        "n_pixels": int(raw.n_pixels),
        "pixel_mm": float(raw.pixel_mm),
        "effective_energy_kev": float(raw.effective_energy_kev),
        "frame_of_reference": raw.frame_of_reference,
        "shape": list(raw.sinogram.shape),
    }
    arrays = {
        "sinogram": np.ascontiguousarray(raw.sinogram, dtype=np.float32),
        "metal_trace": np.packbits(raw.metal_trace, axis=-1),
        "z_mm": np.asarray(raw.z_mm, dtype=np.float64),
        "meta": np.array(json.dumps(meta)),
    }
    if raw.reference is not None:
        arrays["reference"] = np.ascontiguousarray(raw.reference, dtype=np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_raw(path: str | os.PathLike, reference: bool = True) -> CtRaw:
    """Read a file written by :func:`save_raw`; malformed files raise :class:`InputError`.

    ``reference=False`` leaves the metal-free reference sinogram on disk (``CtRaw.reference`` is None;
    :func:`load_reference` reads it when needed), halving the memory a 1-mm scan takes.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if meta.get("format") != FORMAT:
                raise InputError(f"{path}: not a spectct CT raw-data file")
            if int(meta.get("version", 0)) > VERSION:
                raise InputError(f"{path}: format version {meta['version']} is newer than this spectct reads")
            geometry = CtGeometry.from_dict(meta["geometry"])
            sino = z["sinogram"]
            geometry.check_sinogram(sino.shape, name=f"{path}: sinogram")
            trace = np.unpackbits(z["metal_trace"], axis=-1, count=sino.shape[-1]).view(bool)  # 0/1 bytes
            reference = z["reference"] if reference and "reference" in z.files else None
            return CtRaw(sinogram=sino, reference=reference, metal_trace=trace, geometry=geometry,
                         z_mm=z["z_mm"], mu_water=float(meta["mu_water"]),
                         isocenter_xy_mm=tuple(meta["isocenter_xy_mm"]), n_pixels=int(meta["n_pixels"]),
                         pixel_mm=float(meta["pixel_mm"]),
                         effective_energy_kev=float(meta.get("effective_energy_kev", float("nan"))),
                         frame_of_reference=meta.get("frame_of_reference"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except SpectCTError as exc:
        msg = str(exc)
        raise InputError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, TypeError) as exc:
        raise InputError(f"{path}: not a readable CT raw-data file ({exc})") from None


def load_reference(path: str | os.PathLike, slices=None) -> np.ndarray | None:
    """The metal-free reference sinogram of a file written by :func:`save_raw` (``slices``: those only),
    or None when the file has none."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "reference" not in z.files:
                return None
            ref = z["reference"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable CT raw-data file ({exc})") from None
    return ref if slices is None else np.ascontiguousarray(ref[slices])
