"""The CT topogram (scout): a digitally reconstructed radiograph of the whole field.

Geometry: as on a CT scanner — the tube stands still and the table moves — the topogram is a *fan*
beam across the patient (the scanner's own fan: source–isocentre ``R``, equiangular channels) and
*parallel* along z (one detector row per table position, i.e. per slice of the material map).  So
x-magnification varies with depth as on a real scout, and there is no magnification along z.  The
detector signal is the polyenergetic, energy-integrated transmission of the same spectrum as the CT
(:class:`spectct.ct.simulate.Beam`), noise-free; the image shows ``−ln T`` so bone and metal are bright.
The channels are resampled to a uniform grid in the isocentre plane, so columns are mm at the
isocentre.

Views: ``"AP"`` (tube anterior, detector posterior; displayed as a radiograph viewed from the front,
patient right on the image left) and ``"LAT"`` (tube at the patient's right, detector at the left;
displayed with anterior on the image left).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from spectct.atomic import atomic_path
from spectct.ct.geometry import CtGeometry
from spectct.ct.projector import FanBeamProjector, work_elements
from spectct.ct.simulate import Beam, ct_grid
from spectct.device import resolve_device
from spectct.errors import InputError
from spectct.physics.materials import get_material
from spectct.progress import SILENT, Reporter
from spectct.volume import Volume

VIEWS = {"AP": 0.0, "LAT": -math.pi / 2}
_WORK_ELEMENTS = 24_000_000


def topogram(material_index: Volume, material_names: list[str], kvp: float = 110.0, *,
             geometry: CtGeometry | None = None, view: str = "AP", pixel_mm: float | None = None,
             device: str | torch.device = "cpu", reporter: Reporter | None = None) -> np.ndarray:
    """Polyenergetic attenuation image ``−ln T`` of a topogram.

    Parameters
    ----------
    material_index, material_names : the material map (uint8 labels) and its material names.
    kvp : tube voltage (70–150 kV).
    geometry : scanner geometry (default :class:`CtGeometry` at ``kvp``); only its fan is used.
    view : ``"AP"`` or ``"LAT"``.
    pixel_mm : column spacing at the isocentre (default: the map's in-plane pixel size).
    device, reporter : torch device and progress.

    Returns
    -------
    np.ndarray ``[rows, columns]`` float32: row 0 is the most superior slice (head up), columns run
    from the patient's right to left (AP) or from anterior to posterior (LAT); rows are the map's
    slices (``dz`` apart), columns ``pixel_mm`` apart, centred on the rotation axis.
    """
    if view not in VIEWS:
        raise InputError(f"unknown topogram view {view!r}; choose one of {', '.join(VIEWS)}")
    rep = reporter or SILENT
    dev = resolve_device(device)
    geom = geometry or CtGeometry(kvp=float(kvp))
    geom = geom.scaled(n_views=8, kvp=float(kvp), start_angle_rad=VIEWS[view])
    names = list(material_names)
    mats = [get_material(n) for n in names]
    data = np.asarray(material_index.data)
    if data.size and int(data.max()) >= len(names):
        raise InputError(f"material map holds label {int(data.max())} but only {len(names)} "
                         "material names given")
    grid = ct_grid(material_index, geom)
    if not material_index.same_grid(grid):
        labels = material_index.with_data(data.astype(np.float32), unit="1").resample_to(
            grid, order="nearest", fill=0.0, device=dev).data.astype(np.uint8)
    else:
        labels = data.astype(np.uint8, copy=False)
    nz, n, h = grid.shape[0], grid.shape[1], grid.spacing[1]
    beam = Beam.from_spectrum(geom.kvp)
    table = [[0.0 if m.name == "air" else float(m.mu(e)) for m in mats] for e in beam.energies_kev]
    mu = torch.as_tensor(table, dtype=torch.float32, device=dev)
    projector = FanBeamProjector(geom, n, h, device=dev)
    ids = [i for i, nm in enumerate(names) if nm != "air"]
    att = np.zeros((nz, geom.n_channels), dtype=np.float32)
    chunk = max(1, work_elements(dev, _WORK_ELEMENTS) // max(1, len(ids) * n * n))
    for z0 in rep.track(range(0, nz, chunk), "topogram", total=math.ceil(nz / chunk)):
        z1 = min(nz, z0 + chunk)
        lab = torch.as_tensor(labels[z0:z1], device=dev)
        if not ids:
            continue
        masks = torch.stack([(lab == i).float() for i in ids]).reshape(-1, n, n)
        paths = projector.forward(masks, views=[0]).reshape(len(ids), z1 - z0, -1).clamp_min(0.0)
        t = torch.zeros(paths.shape[1:], dtype=torch.float32, device=dev)
        for e in range(len(beam.energies_kev)):
            t += float(beam.weights[e]) * torch.exp(-torch.tensordot(mu[e, ids], paths, dims=1))
        att[z0:z1] = (-torch.log(t)).cpu().numpy()
    # channel γ crosses the isocentre plane at lateral offset −R tan γ (along −x for AP, along −y…
    # for LAT the same formula gives the offset toward anterior); resample to a uniform grid
    offset = -geom.sid_mm * np.tan(geom.fan_angles_rad())
    out_h = float(pixel_mm or h)
    half = geom.scan_field_radius_mm
    cols = np.arange(-half + out_h / 2, half, out_h)
    order = np.argsort(offset)
    image = np.stack([np.interp(cols, offset[order], row[order], left=0.0, right=0.0) for row in att])
    return image[::-1].astype(np.float32)  # head up


def topogram_png(image: np.ndarray, path: str | os.PathLike, row_mm: float = 1.0, col_mm: float = 1.0,
                 window: tuple[float, float] | None = None, title: str | None = None) -> Path:
    """Write a topogram as a radiograph PNG (attenuation bright, square pixels), atomically.

    ``window`` is the display range of ``−ln T`` (default: 0 to the 99.7th percentile, so bone is
    light grey and metal white).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        raise InputError(f"topogram must be a 2-D image, got shape {img.shape}")
    lo, hi = window or (0.0, float(np.percentile(img, 99.7)) or 1.0)
    height_mm, width_mm = img.shape[0] * row_mm, img.shape[1] * col_mm
    scale = 2.0 / max(height_mm, width_mm) * 4.0  # inches per mm (longest side 8 in)
    band = 0.4 if title else 0.0
    fig = plt.figure(figsize=(width_mm * scale, height_mm * scale + band), facecolor="black")
    ax = fig.add_axes((0, 0, 1, height_mm * scale / (height_mm * scale + band)))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=(0, width_mm, height_mm, 0), interpolation="lanczos")
    ax.set_axis_off()
    from spectct.render.annotate import decorate

    # an AP radiograph is seen from the front: patient right on the image left, head up
    decorate(ax, {"left": "R", "right": "L", "top": "H", "bottom": "F"})
    if title:
        fig.text(0.5, 0.99, title, color="white", ha="center", va="top", fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, facecolor="black", format="png")
    plt.close(fig)
    return path


def ct_figures(ct: Volume, folder: str | os.PathLike, stem: str = "ct", title: str = "CT",
               window: tuple[float, float] = (-400.0, 1000.0), metal_hu: float = 2500.0) -> list[Path]:
    """Quick-look PNGs of a CT in HU: the axial slice with the most metal and a coronal reformat.

    The axial slice is the one with the most voxels above ``metal_hu`` (through screws, where the
    streaks are worst); the coronal plane is the row (fixed y) with the most metal.  Written as
    ``{stem}_axial.png`` and ``{stem}_coronal.png`` in ``folder`` (radiological display: patient right
    on the image left, anterior up / head up).  Returns the paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not np.allclose(ct.direction, np.eye(3), atol=1e-6):
        raise InputError("ct_figures needs an axis-aligned LPS CT")
    data = np.asarray(ct.data, dtype=np.float32)
    metal = data > metal_hu
    k = int(np.argmax(metal.sum(axis=(1, 2)))) if metal.any() else data.shape[0] // 2
    j = int(np.argmax(metal.sum(axis=(0, 2)))) if metal.any() else data.shape[1] // 2
    dz, dy, dx = ct.spacing
    zs, ys, _ = ct.axis_coordinates()
    folder = Path(folder)
    written = []
    width = data.shape[2] * dx
    for kind, img, extent, label in (
        ("axial", data[k], (0, width, data.shape[1] * dy, 0), f"z = {zs[k]:.1f} mm"),
        ("coronal", data[:, j, :][::-1], (0, width, data.shape[0] * dz, 0), f"y = {ys[j]:.1f} mm"),
    ):
        h_mm, w_mm = extent[2], extent[1]
        scale = 8.0 / max(h_mm, w_mm)
        fig = plt.figure(figsize=(w_mm * scale, h_mm * scale + 0.4), facecolor="black")
        ax = fig.add_axes((0, 0, 1, h_mm * scale / (h_mm * scale + 0.4)))
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], extent=extent, interpolation="nearest")
        ax.set_axis_off()
        fig.text(0.5, 0.99, f"{title}: {kind}, {label}, W {window[1] - window[0]:g} L {sum(window) / 2:g}",
                 color="white", ha="center", va="top", fontsize=9)
        path = folder / f"{stem}_{kind}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, facecolor="black", format="png")
        plt.close(fig)
        written.append(path)
    return written
