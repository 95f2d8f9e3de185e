"""Save and load :class:`~spectct.ct.simulate.CtRaw` as ``.npz`` with JSON metadata (never pickle).

Layout of the archive: ``sinogram`` (float32 ``[nz, views, channels]``), ``reference`` (same, absent
for imported data), ``metal_trace`` (bit-packed bool along the channel axis), ``z_mm`` (float64) and
``meta`` (a unicode string holding JSON: format version, geometry, μ_water, grid, isocentre).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from spectct.atomic import atomic_path
from spectct.ct.geometry import CtGeometry
from spectct.ct.simulate import CtRaw
from spectct.errors import InputError, SpectCTError
from spectct.io.stored_array import StoredArray, open_member

FORMAT = "spectct-ct-raw"
VERSION = 1


def save_raw(raw: CtRaw, path: str | os.PathLike) -> Path:
    """Write ``raw`` to ``path`` (``.npz``) atomically."""
    with raw_writer(path, raw.sinogram.shape, geometry=raw.geometry, z_mm=raw.z_mm, mu_water=raw.mu_water,
                    isocenter_xy_mm=raw.isocenter_xy_mm, n_pixels=raw.n_pixels, pixel_mm=raw.pixel_mm,
                    effective_energy_kev=raw.effective_energy_kev, frame_of_reference=raw.frame_of_reference,
                    reference=raw.reference is not None) as write:
        rows = max(1, (64 << 20) // max(1, int(np.prod(raw.sinogram.shape[1:])) * 4))
        for z0 in range(0, raw.sinogram.shape[0], rows):
            part = slice(z0, z0 + rows)
            write(raw.sinogram[part], None if raw.reference is None else raw.reference[part], raw.metal_trace[part])
    return Path(path)


@contextlib.contextmanager
def raw_writer(path: str | os.PathLike, shape: tuple[int, int, int], *, geometry: CtGeometry, z_mm,
               mu_water: float, isocenter_xy_mm=(0.0, 0.0), n_pixels: int = 512, pixel_mm: float = 500.0 / 512,
               effective_energy_kev: float = float("nan"), frame_of_reference: str | None = None,
               reference: bool = True) -> Iterator[Callable]:
    """Write a CT raw-data file block of slices by block, without holding the scan in memory.

    Yields ``write(sinogram, reference, trace, z0=None)``, called with consecutive blocks
    ``[k, views, channels]`` (``z0``, when given, must be the next slice; ``reference`` None when
    ``reference=False``).  The sinogram streams straight into the archive, the
    reference into a scratch file beside it that is copied in at the end; the file appears under ``path``
    only when every slice was written (atomically, as :func:`save_raw`), and nothing is left otherwise.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"{path}: CT raw data files end in .npz")
    shape = tuple(int(s) for s in shape)
    geometry.check_sinogram(shape)
    meta = {"format": FORMAT, "version": VERSION, "geometry": geometry.to_dict(), "mu_water": float(mu_water),
            "isocenter_xy_mm": [float(v) for v in isocenter_xy_mm], "n_pixels": int(n_pixels),
            "pixel_mm": float(pixel_mm), "effective_energy_kev": float(effective_energy_kev),
            "frame_of_reference": frame_of_reference, "shape": list(shape)}
    packed = np.zeros(shape[:2] + ((shape[2] + 7) // 8,), dtype=np.uint8)
    done = 0
    with atomic_path(path) as tmp:
        scratch = tmp.with_name(tmp.name + ".reference")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf, \
                    open(scratch, "w+b") as ref_fh:
                with zf.open("sinogram.npy", "w", force_zip64=True) as sino_fh:
                    _npy_header(sino_fh, shape)
                    _npy_header(ref_fh, shape)

                    def write(sino, ref, trace, z0: int | None = None) -> None:
                        nonlocal done
                        sino = np.ascontiguousarray(sino, dtype=np.float32)
                        k = sino.shape[0]
                        if sino.shape[1:] != shape[1:] or done + k > shape[0] or z0 not in (None, done):
                            raise InputError(f"{path}: block {sino.shape} does not continue a scan of shape {shape}")
                        sino_fh.write(memoryview(sino).cast("B"))
                        if reference:
                            ref_fh.write(memoryview(np.ascontiguousarray(ref, dtype=np.float32)).cast("B"))
                        packed[done:done + k] = np.packbits(np.asarray(trace, dtype=bool), axis=-1)
                        done += k

                    yield write
                if done != shape[0]:
                    raise InputError(f"{path}: {done} of {shape[0]} slices written")
                if reference:
                    ref_fh.seek(0)
                    with zf.open("reference.npy", "w", force_zip64=True) as member:
                        shutil.copyfileobj(ref_fh, member, 64 << 20)
                for name, arr in (("metal_trace", packed), ("z_mm", np.asarray(z_mm, dtype=np.float64)),
                                  ("meta", np.array(json.dumps(meta)))):
                    with zf.open(name + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)
        finally:
            scratch.unlink(missing_ok=True)


def _npy_header(fh, shape: tuple[int, ...]) -> None:
    """``.npy`` header of a C-ordered float32 array of ``shape``."""
    np.lib.format.write_array_header_2_0(
        fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape})


def load_raw(path: str | os.PathLike, reference: bool = True) -> CtRaw:
    """Read a file written by :func:`save_raw`; malformed files raise :class:`InputError`.

    The sinogram (and the reference) stay in the file as :class:`~spectct.io.stored_array.StoredArray`
    and are read slice by slice where they are used: a 1-mm scan's sinogram is 1.5 GB.  The file is
    still checked in full here (shape, geometry, and every value finite, read in blocks).
    ``reference=False`` leaves the metal-free reference out (``CtRaw.reference`` is None;
    :func:`load_reference` reads the slices that are needed).
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
            names = z.files
            z_mm = z["z_mm"]
            packed = z["metal_trace"]
        sino = open_member(path, "sinogram")
        geometry.check_sinogram(sino.shape, name=f"{path}: sinogram")
        _check_finite(sino, path, "sinogram")
        trace = np.unpackbits(packed, axis=-1, count=sino.shape[-1]).view(bool)  # 0/1 bytes
        ref = open_member(path, "reference") if reference and "reference" in names else None
        return CtRaw(sinogram=sino, reference=ref, metal_trace=trace, geometry=geometry,
                     z_mm=z_mm, mu_water=float(meta["mu_water"]),
                     isocenter_xy_mm=tuple(meta["isocenter_xy_mm"]), n_pixels=int(meta["n_pixels"]),
                     pixel_mm=float(meta["pixel_mm"]),
                     effective_energy_kev=float(meta.get("effective_energy_kev", float("nan"))),
                     frame_of_reference=meta.get("frame_of_reference"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except SpectCTError as exc:
        msg = str(exc)
        raise InputError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile, TypeError) as exc:
        raise InputError(f"{path}: not a readable CT raw-data file ({exc})") from None


def _check_finite(data, path: Path, what: str, block_bytes: int = 64 << 20) -> None:
    """Raise :class:`InputError` when ``data`` (array or StoredArray) holds NaN or infinite values."""
    per_slice = max(1, int(np.prod(data.shape[1:])) * 4)
    for z0, block in _blocks(data, max(1, block_bytes // per_slice)):
        if not np.all(np.isfinite(block)):
            bad = z0 + int(np.flatnonzero(~np.isfinite(block).reshape(block.shape[0], -1).all(1))[0])
            raise InputError(f"{path}: {what} has NaN or infinite values (slice {bad})")


def _blocks(data, rows: int):
    if isinstance(data, StoredArray):
        yield from data.chunks(rows)
    else:
        for z0 in range(0, data.shape[0], rows):
            yield z0, data[z0:z0 + rows]


def load_reference(path: str | os.PathLike, slices=None) -> np.ndarray | None:
    """The metal-free reference sinogram of a file written by :func:`save_raw` (``slices``: those only,
    read without loading the rest), or None when the file has none."""
    path = Path(path)
    try:
        ref = open_member(path, "reference")
    except KeyError:
        return None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable CT raw-data file ({exc})") from None
    if slices is None:
        return np.asarray(ref)
    return np.ascontiguousarray(ref[np.asarray(slices)])
