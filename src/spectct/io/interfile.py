"""Interfile 3.3 headers (``.hv`` images, ``.hs`` SPECT projections) as read by STIR and written by SIMIND.

An Interfile header is text: ``key := value`` lines, keys case- and space-insensitive, a leading ``!``
marking a required key, ``;`` starting a comment. The data sit in a raw binary file named by
``name of data file`` (relative to the header). References: Todd-Pokropek, Cradduck & Deconinck,
"A file format for the exchange of nuclear medicine image data: a specification of Interfile
version 3.3", Nucl. Med. Commun. 13 (1992) 673-699; STIR's sample header
``examples/samples/SPECT_Interfile_header.hs`` for the SPECT keys STIR reads.

Layout written here
-------------------
Images: voxels ``[z][y][x]`` (x fastest), little-endian float32; ``matrix size [1/2/3]`` = x/y/z.
Projections: one header per energy window, data ``[view][row][col]`` (col fastest), float32;
``matrix size [1]`` = columns (transverse), ``[2]`` = rows (axial), as in STIR.

spectct writes the exact float64 geometry (LPS origin, direction cosines, per-view angles) in
comment lines ``;spectct <key> := <value>``: STIR and SIMIND ignore comments, and our reader uses them
when present. A foreign header without them is read with the standard keys (see the readers).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from spectct.atomic import atomic_path, write_text
from spectct.errors import InputError
from spectct.volume import UNITS, Volume

_NUMBER_FORMATS = {
    ("float", 4): "f4",
    ("float", 8): "f8",
    ("short float", 4): "f4",
    ("long float", 8): "f8",
    ("unsigned integer", 1): "u1",
    ("unsigned integer", 2): "u2",
    ("unsigned integer", 4): "u4",
    ("signed integer", 1): "i1",
    ("signed integer", 2): "i2",
    ("signed integer", 4): "i4",
}


# --------------------------------------------------------------------------- header text
def _norm_key(key: str) -> str:
    return re.sub(r"\s+", " ", key.strip().lstrip("!").strip().lower()).replace(" [", "[")


def parse_header(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
    """Parse an Interfile header into (standard keys, ``;spectct`` comment keys), keys normalised.

    Keys lose their ``!``, are lower-cased and have runs of blanks collapsed, so
    ``!Matrix Size [1]`` and ``matrix size[1]`` are the same key. Repeated keys keep their last value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read Interfile header ({exc})") from None
    if not text.lstrip().upper().startswith("!INTERFILE"):
        raise InputError(f"{path}: not an Interfile header (first line must be '!INTERFILE :=')")
    std: dict[str, str] = {}
    ours: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.lower().startswith(";spectct "):
            body = line[len(";spectct ") :]
            if ":=" in body:
                k, v = body.split(":=", 1)
                ours[_norm_key(k)] = v.strip()
            continue
        line = line.split(";", 1)[0]
        if ":=" not in line:
            continue
        k, v = line.split(":=", 1)
        std[_norm_key(k)] = v.strip()
    return std, ours


def _get(keys: dict[str, str], key: str, path: Path, default: str | None = None) -> str:
    value = keys.get(_norm_key(key), default)
    if value is None or value == "":
        raise InputError(f"{path}: missing Interfile key '{key}'")
    return value


def _number(keys: dict[str, str], key: str, path: Path, default: float | None = None) -> float:
    raw = keys.get(_norm_key(key))
    if raw in (None, ""):
        if default is None:
            raise InputError(f"{path}: missing Interfile key '{key}'")
        return default
    try:
        return float(raw)
    except ValueError:
        raise InputError(f"{path}: Interfile key '{key}' is not a number: {raw!r}") from None


def _list(value: str, path: Path, key: str) -> np.ndarray:
    try:
        return np.array(
            [float(v) for v in value.strip().strip("{}").split(",") if v.strip()], dtype=np.float64
        )
    except ValueError:
        raise InputError(f"{path}: Interfile key '{key}' is not a list of numbers: {value[:60]!r}") from None


def _fmt_list(values) -> str:
    return "{" + ", ".join(repr(float(v)) for v in np.asarray(values).ravel()) + "}"


def _dtype(keys: dict[str, str], path: Path) -> np.dtype:
    fmt = _get(keys, "number format", path, "float").lower()
    nbytes = int(_number(keys, "number of bytes per pixel", path, 4))
    code = _NUMBER_FORMATS.get((fmt, nbytes))
    if code is None:
        raise InputError(f"{path}: unsupported Interfile number format '{fmt}' with {nbytes} bytes per pixel")
    order = keys.get("imagedata byte order", "LITTLEENDIAN").upper()
    return np.dtype(("<" if order.startswith("LITTLE") else ">") + code)


def _read_data(keys: dict[str, str], path: Path, count: int) -> np.ndarray:
    name = _get(keys, "name of data file", path)
    data_path = Path(name) if Path(name).is_absolute() else path.parent / name
    offset = int(_number(keys, "data offset in bytes", path, 0))
    dtype = _dtype(keys, path)
    if not data_path.is_file():
        raise InputError(f"{path}: data file {data_path} named by 'name of data file' does not exist")
    size = data_path.stat().st_size
    need = offset + count * dtype.itemsize
    if size < need:
        raise InputError(
            f"{data_path}: data file has {size} bytes, header {path.name} needs {need} (truncated?)"
        )
    arr = np.fromfile(data_path, dtype=dtype, count=count, offset=offset)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _write_raw(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        np.ascontiguousarray(array, dtype="<f4").tofile(tmp)


# --------------------------------------------------------------------------- images
def write_image_interfile(volume: Volume, path: str | os.PathLike) -> Path:
    """Write ``volume`` as an Interfile 3.3 image: header ``path`` (``.hv``), data beside it (``.v``).

    Data are float32 little-endian ``[z][y][x]``. The standard keys give matrix sizes, voxel sizes and
    ``first pixel offset (mm)``; ``;spectct`` comments carry the exact LPS origin, direction and unit.
    Both files are written atomically (data first).
    """
    path = Path(path)
    if path.suffix.lower() != ".hv":
        raise InputError(f"{path}: Interfile image headers end in .hv")
    data_path = path.with_suffix(".v")
    nz, ny, nx = volume.shape
    dz, dy, dx = volume.spacing
    lines = [
        "!INTERFILE :=",
        "!imaging modality := nucmed",
        "!version of keys := 3.3",
        "!originating system := spectct",
        "!GENERAL DATA :=",
        "!data offset in bytes := 0",
        f"!name of data file := {data_path.name}",
        "!GENERAL IMAGE DATA :=",
        "!type of data := Tomographic",
        "imagedata byte order := LITTLEENDIAN",
        "!SPECT STUDY (General) :=",
        "!process status := reconstructed",
        "!number format := float",
        "!number of bytes per pixel := 4",
        "number of dimensions := 3",
        "matrix axis label [1] := x",
        f"!matrix size [1] := {nx}",
        f"scaling factor (mm/pixel) [1] := {dx!r}",
        "matrix axis label [2] := y",
        f"!matrix size [2] := {ny}",
        f"scaling factor (mm/pixel) [2] := {dy!r}",
        "matrix axis label [3] := z",
        f"!matrix size [3] := {nz}",
        f"scaling factor (mm/pixel) [3] := {dz!r}",
        f"!number of slices := {nz}",
        f"slice thickness (pixels) := {1.0}",
        f"first pixel offset (mm) [1] := {volume.origin[0]!r}",
        f"first pixel offset (mm) [2] := {volume.origin[1]!r}",
        f"first pixel offset (mm) [3] := {volume.origin[2]!r}",
        f";spectct origin lps (mm) := {_fmt_list(volume.origin)}",
        f";spectct direction := {_fmt_list(volume.direction)}",
        f";spectct unit := {volume.unit}",
        f";spectct frame of reference := {volume.frame_of_reference or ''}",
        "!END OF INTERFILE :=",
        "",
    ]
    _write_raw(np.asarray(volume.data, dtype=np.float32), data_path)
    write_text(path, "\n".join(lines))
    return path


def read_image_interfile(header: str | os.PathLike, unit: str | None = None) -> Volume:
    """Read an Interfile 3.3 image (``.hv``, as written by STIR, SIMIND or spectct) into a Volume.

    Foreign headers: axes 1/2/3 are taken as x/y/z of LPS with identity direction, the origin from
    ``first pixel offset (mm) [i]`` when given, else the grid centred on (0, 0, 0). The unit is ``unit``,
    else the ``;spectct unit`` comment, else ``"1"``.
    """
    path = Path(header)
    keys, ours = parse_header(path)
    n_dims = int(_number(keys, "number of dimensions", path, 3))
    if n_dims != 3:
        raise InputError(f"{path}: expected a 3-D Interfile image, 'number of dimensions' is {n_dims}")
    sizes = [int(_number(keys, f"matrix size [{i}]", path)) for i in (1, 2, 3)]
    vox = [_number(keys, f"scaling factor (mm/pixel) [{i}]", path, 1.0) for i in (1, 2, 3)]
    if "slice thickness (pixels)" in keys and _norm_key("scaling factor (mm/pixel) [3]") not in keys:
        vox[2] = vox[0] * _number(keys, "slice thickness (pixels)", path)
    nx, ny, nz = sizes
    if min(sizes) < 1:
        raise InputError(f"{path}: matrix sizes {sizes} must be positive")
    data = _read_data(keys, path, nx * ny * nz).reshape(nz, ny, nx).astype(np.float32)
    direction = np.eye(3)
    if "origin lps (mm)" in ours:
        origin = tuple(_list(ours["origin lps (mm)"], path, "origin lps (mm)"))
        direction = _list(ours.get("direction", _fmt_list(np.eye(3))), path, "direction").reshape(3, 3)
    elif all(f"first pixel offset (mm)[{i}]" in keys for i in (1, 2, 3)):
        origin = tuple(_number(keys, f"first pixel offset (mm) [{i}]", path) for i in (1, 2, 3))
    else:
        origin = tuple(-(n - 1) / 2.0 * v for n, v in zip(sizes, vox, strict=True))
    unit = unit or ours.get("unit") or "1"
    if unit not in UNITS:
        raise InputError(f"{path}: unknown unit {unit!r}")
    frame = ours.get("frame of reference") or None
    return Volume(
        data,
        spacing=(vox[2], vox[1], vox[0]),
        origin=origin,
        direction=direction,
        unit=unit,
        frame_of_reference=frame,
    )


# --------------------------------------------------------------------------- projections
def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "window"


def _sequential_order(geometry) -> np.ndarray:
    """Views sorted by rotation angle travelled from the first view (in the rotation direction)."""
    sign = 1.0 if geometry.direction == "CCW" else -1.0
    travelled = np.mod(sign * (geometry.angles_deg - geometry.angles_deg[0]), 360.0)
    return np.argsort(travelled, kind="stable")


def write_projections_interfile(projections, folder: str | os.PathLike, stem: str = "projections") -> Path:
    """Write ``Projections`` as Interfile 3.3 SPECT projections, one ``.hs`` + ``.s`` per energy window.

    Parameters
    ----------
    projections : ``spectct.spect.geometry.Projections``.
    folder : output folder (created); files are ``<stem>_<window>.hs/.s``.

    Returns
    -------
    Path
        ``folder``.

    Notes
    -----
    Views are written in rotation order (``start angle`` then steps of ``extent / number of
    projections`` in ``direction of rotation``), which is what STIR and SIMIND expect; for a dual-head
    acquisition this interleaves the heads. Angles are spectct's internal convention (see
    ``spectct.spect.geometry``); STIR's own angle origin may differ (STIR discussion #1180), so check
    orientation when reconstructing these files with STIR. ``radius`` is one value for circular
    orbits, a ``{...}`` list per view otherwise. The exact angles, view order, head layout, timing and
    radionuclide are kept in ``;spectct`` comments.
    """
    g = projections.geometry
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    order = _sequential_order(g)
    angles = g.angles_deg[order]
    radii = g.radii_mm[order]
    n_views = g.n_views
    travelled = np.mod((1.0 if g.direction == "CCW" else -1.0) * (angles - angles[0]), 360.0)
    step = float(travelled[1] - travelled[0]) if n_views > 1 else 360.0
    extent = step * n_views
    circular = bool(np.allclose(radii, radii[0], rtol=0, atol=1e-9))
    for w_index, window in enumerate(g.windows):
        name = f"{stem}_{_safe_name(window.name)}"
        header, data_path = folder / f"{name}.hs", folder / f"{name}.s"
        counts = np.asarray(projections.counts[w_index], dtype=np.float32)[order]
        lines = [
            "!INTERFILE :=",
            "!imaging modality := nucmed",
            "!originating system := spectct",
            "!version of keys := 3.3",
            "!GENERAL DATA :=",
            "!data offset in bytes := 0",
            f"!name of data file := {data_path.name}",
            "!GENERAL IMAGE DATA :=",
            "!type of data := Tomographic",
            "imagedata byte order := LITTLEENDIAN",
            "!number format := float",
            "!number of bytes per pixel := 4",
            f"isotope name := {projections.radionuclide}",
            "number of energy windows := 1",
            f"energy window [1] := {window.name}",
            f"energy window lower level [1] := {window.lower_kev!r}",
            f"energy window upper level [1] := {window.upper_kev!r}",
            "!SPECT STUDY (General) :=",
            "number of dimensions := 2",
            "matrix axis label [1] := bin coordinate",
            f"!matrix size [1] := {g.n_cols}",
            f"!scaling factor (mm/pixel) [1] := {g.pixel_mm[1]!r}",
            "matrix axis label [2] := axial coordinate",
            f"!matrix size [2] := {g.n_rows}",
            f"!scaling factor (mm/pixel) [2] := {g.pixel_mm[0]!r}",
            f"!number of projections := {n_views}",
            f"!extent of rotation := {extent!r}",
            f"!time per projection (sec) := {g.time_per_view_s!r}",
            f"!number of detector heads := {g.heads}",
            "!process status := acquired",
            "!SPECT STUDY (acquired data) :=",
            f"!direction of rotation := {g.direction}",
            f"start angle := {float(angles[0])!r}",
            f"orbit := {'circular' if circular else 'non-circular'}",
            f"radius := {float(radii[0])!r}" if circular else f"radius := {_fmt_list(radii)}",
            f";spectct window name := {window.name}",
            f";spectct window index := {w_index}",
            f";spectct view order := {{{', '.join(str(int(i)) for i in order)}}}",
            f";spectct angles (deg) := {_fmt_list(angles)}",
            f";spectct heads := {g.heads}",
            f";spectct stops per head := {g.stops_per_head}",
            f";spectct start angle (deg) := {g.start_angle_deg!r}",
            f";spectct axial center (mm) := {g.axial_center_mm!r}",
            f";spectct step time (s) := {g.step_time_s!r}",
            f";spectct radionuclide := {projections.radionuclide}",
            f";spectct start time after injection (s) := {float(projections.start_time_after_injection_s)!r}",
            f";spectct injected activity (Bq) := {projections.injected_activity_bq!r}",
            "!END OF INTERFILE :=",
            "",
        ]
        _write_raw(counts, data_path)
        write_text(header, "\n".join(lines))
    return folder


def _read_one_window(path: Path):
    """(window, counts [view,row,col] in the original view order, geometry keyword dict, extras)."""
    from spectct.spect.geometry import EnergyWindow

    keys, ours = parse_header(path)
    n_cols = int(_number(keys, "matrix size [1]", path))
    n_rows = int(_number(keys, "matrix size [2]", path))
    n_views = int(_number(keys, "number of projections", path))
    if min(n_cols, n_rows, n_views) < 1:
        raise InputError(f"{path}: matrix sizes and number of projections must be positive")
    pix_col = _number(keys, "scaling factor (mm/pixel) [1]", path)
    pix_row = _number(keys, "scaling factor (mm/pixel) [2]", path, pix_col)
    counts = (
        _read_data(keys, path, n_views * n_rows * n_cols).reshape(n_views, n_rows, n_cols).astype(np.float32)
    )
    direction = keys.get("direction of rotation", "CCW").upper()
    if direction not in ("CW", "CCW"):
        raise InputError(f"{path}: 'direction of rotation' must be CW or CCW, got {direction!r}")
    if "angles (deg)" in ours:
        angles = _list(ours["angles (deg)"], path, "angles (deg)")
    else:
        start = _number(keys, "start angle", path, 0.0)
        extent = _number(keys, "extent of rotation", path, 360.0)
        sign = 1.0 if direction == "CCW" else -1.0
        angles = np.mod(start + sign * extent / n_views * np.arange(n_views), 360.0)
    raw_radius = keys.get("radius") or keys.get("radii")
    if raw_radius is None:
        raise InputError(f"{path}: missing Interfile key 'radius'")
    radii = _list(raw_radius, path, "radius")
    if radii.size == 1:
        radii = np.full(n_views, radii[0])
    if radii.size != n_views or angles.size != n_views:
        raise InputError(f"{path}: {radii.size} radii / {angles.size} angles for {n_views} projections")
    order = (
        _list(ours["view order"], path, "view order").astype(int)
        if "view order" in ours
        else np.arange(n_views)
    )
    if sorted(order.tolist()) != list(range(n_views)):
        raise InputError(f"{path}: ';spectct view order' is not a permutation of the {n_views} views")
    restored = np.empty_like(counts)
    restored[order] = counts
    ang = np.empty_like(angles)
    ang[order] = angles
    rad = np.empty_like(radii)
    rad[order] = radii
    lo = _number(keys, "energy window lower level[1]", path, 0.0)
    hi = _number(keys, "energy window upper level[1]", path, 0.0)
    name = ours.get("window name") or keys.get("energy window[1]") or path.stem
    if not 0 < lo < hi:
        raise InputError(
            f"{path}: energy window limits missing or invalid ('energy window lower/upper level [1]')"
        )
    geom = {
        "angles_deg": ang,
        "radii_mm": rad,
        "n_rows": n_rows,
        "n_cols": n_cols,
        "pixel_mm": (pix_row, pix_col),
        "time_per_view_s": _number(keys, "time per projection (sec)", path, 1.0),
        "heads": int(float(ours.get("heads", keys.get("number of detector heads", 1)))),
        "stops_per_head": int(float(ours["stops per head"])) if "stops per head" in ours else None,
        "direction": direction,
        "start_angle_deg": float(ours.get("start angle (deg)", ang[0])),
        "axial_center_mm": float(ours.get("axial center (mm)", 0.0)),
        "step_time_s": float(ours.get("step time (s)", 0.0)),
    }
    activity = ours.get("injected activity (bq)")
    extras = {
        "radionuclide": ours.get("radionuclide") or keys.get("isotope name") or None,
        "start_time_after_injection_s": float(ours.get("start time after injection (s)", 0.0)),
        "injected_activity_bq": float(activity) if activity not in (None, "", "None") else None,
        "window_index": int(ours.get("window index", 0)),
    }
    return EnergyWindow(name, lo, hi), restored, geom, extras


def read_projections_interfile(header: str | os.PathLike):
    """Read Interfile SPECT projections into ``Projections``.

    ``header`` is one ``.hs`` file (one energy window) or a folder: all its ``.hs`` files are read and
    stacked as energy windows (ordered by the ``;spectct window index`` when present, else by name);
    they must share the geometry. Foreign (STIR/SIMIND) headers use the standard keys: views evenly
    spaced from ``start angle`` over ``extent of rotation`` in ``direction of rotation``, ``radius``
    (one value or a list). The isotope name is matched against spectct's radionuclides, else Tc-99m.
    """
    from spectct.physics.radionuclide import get_radionuclide
    from spectct.spect.geometry import Projections, SpectGeometry

    path = Path(header)
    if path.is_dir():
        headers = sorted(path.glob("*.hs"))
        if not headers:
            raise InputError(f"{path}: no Interfile projection headers (*.hs) in the folder")
    else:
        headers = [path]
    parts = [_read_one_window(h) for h in headers]
    parts.sort(key=lambda p: (p[3]["window_index"], p[0].name))
    first = parts[0][2]
    for (_, _, geom, _), h in zip(parts[1:], headers[1:], strict=True):
        same = all(
            np.allclose(geom[k], first[k]) if isinstance(first[k], np.ndarray) else geom[k] == first[k]
            for k in ("angles_deg", "radii_mm", "n_rows", "n_cols", "pixel_mm", "direction")
        )
        if not same:
            raise InputError(
                f"{h}: geometry differs from {headers[0].name}; windows must share one acquisition"
            )
    geometry = SpectGeometry(windows=tuple(p[0] for p in parts), **first)
    extras = parts[0][3]
    nuclide = "Tc-99m"
    if extras["radionuclide"]:
        try:
            nuclide = get_radionuclide(
                extras["radionuclide"].replace("Technetium", "tc").replace("Lutetium", "lu")
            ).name
        except Exception:
            nuclide = "Tc-99m"
    return Projections(
        counts=np.stack([p[1] for p in parts]),
        geometry=geometry,
        radionuclide=nuclide,
        start_time_after_injection_s=extras["start_time_after_injection_s"],
        injected_activity_bq=extras["injected_activity_bq"],
    )
