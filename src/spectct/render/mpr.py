"""Multiplanar reformation: axial, coronal and sagittal planes through any LPS point.

Planes are sampled in patient coordinates (trilinear interpolation at world positions), so what is
shown and how it is labelled follow the grid's direction matrix, never array order. Display
conventions (radiological):

- axial: seen from the feet — patient right on image left, anterior up;
- coronal: seen from the front — patient right on image left, head up;
- sagittal: seen from the patient's left — anterior on image left, head up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError
from spectct.render.annotate import edge_letters
from spectct.volume import Volume

# (direction of image right, direction of image up) in LPS for each standard plane
PLANE_AXES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}


@dataclass
class Slice2D:
    """A 2-D image placed in patient space, ready to display.

    Attributes
    ----------
    data : [rows, cols] float array; row 0 is the top of the displayed image, column 0 its left.
    extent : ``(left, right, bottom, top)`` in mm of display coordinates (matplotlib ``imshow`` extent).
    letters : orientation letter for each edge: keys ``left``, ``right``, ``top``, ``bottom``.
    right_lps, up_lps : LPS unit vectors of the image's right and up directions.
    anchor_lps : the LPS point at display coordinates (0, 0) (the MPR point, or the MIP's centre).
    plane : ``"axial"``, ``"coronal"``, ``"sagittal"`` or a MIP description.
    unit : unit of ``data`` (the source volume's).
    """

    data: np.ndarray
    extent: tuple[float, float, float, float]
    letters: dict[str, str]
    right_lps: np.ndarray
    up_lps: np.ndarray
    anchor_lps: np.ndarray
    plane: str
    unit: str = "1"
    normal_lps: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.normal_lps is None:
            self.normal_lps = np.cross(self.right_lps, self.up_lps)

    def to_display(self, point_lps) -> tuple[float, float]:
        """Display coordinates (mm; x to the right, y up) of an LPS point projected on the image."""
        d = np.asarray(point_lps, dtype=float) - self.anchor_lps
        return float(d @ self.right_lps), float(d @ self.up_lps)

    def distance_to_plane(self, point_lps) -> float:
        """Distance (mm) of an LPS point from the image plane (through the anchor)."""
        return float(abs((np.asarray(point_lps, float) - self.anchor_lps) @ self.normal_lps))

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """Pixel size (rows, cols) in mm."""
        left, right, bottom, top = self.extent
        rows, cols = self.data.shape[:2]
        return abs(top - bottom) / rows, abs(right - left) / cols


# ------------------------------------------------------------------------------------ sampling
def _as_point(point_lps) -> np.ndarray:
    p = np.asarray(point_lps, dtype=float).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"an LPS point needs three finite mm values, got {point_lps!r}")
    return p


def default_fill(volume: Volume) -> float:
    """Value shown outside a volume's field of view: air for CT, zero otherwise."""
    return -1024.0 if volume.unit == "HU" else 0.0


def sample_world(volume: Volume, points_lps: torch.Tensor, fill: float | None = None,
                 order: str = "linear", device: str | torch.device | None = "cpu") -> torch.Tensor:
    """Interpolate ``volume`` at LPS points.

    Only the part of the volume the points touch is moved to the device, so planes and slabs through a
    large CT stay cheap.

    Parameters
    ----------
    volume : the image.
    points_lps : tensor ``[..., 3]`` of LPS positions in mm.
    fill : value outside the field of view (default: :func:`default_fill`).
    order : ``"linear"`` (trilinear) or ``"nearest"``.
    device : torch device for the interpolation.

    Returns
    -------
    torch.Tensor
        float32 values with the points' leading shape, on ``device``.
    """
    if order not in ("linear", "nearest"):
        raise InputError(f"interpolation order must be 'linear' or 'nearest', got {order!r}")
    dev = resolve_device(device)
    fill = default_fill(volume) if fill is None else float(fill)
    pts = torch.as_tensor(points_lps, dtype=torch.float64, device=dev)
    lead = pts.shape[:-1]
    pts = pts.reshape(-1, 3)
    a_inv = torch.as_tensor(np.linalg.inv(volume.affine), dtype=torch.float64, device=dev)
    ijk = pts @ a_inv[:3, :3].T + a_inv[:3, 3]  # continuous (i, j, k)
    size = torch.tensor(volume.shape[::-1], dtype=torch.float64, device=dev)  # (nx, ny, nz)
    inside = ((ijk >= -0.5) & (ijk <= size - 0.5)).all(dim=-1)
    out = torch.full((pts.shape[0],), fill, dtype=torch.float32, device=dev)
    if bool(inside.any()):
        sel = ijk[inside]
        lo = torch.clamp(torch.floor(sel.min(0).values) - 1, min=0).long()
        hi = torch.minimum(torch.ceil(sel.max(0).values) + 2, size).long()
        (i0, j0, k0), (i1, j1, k1) = lo.tolist(), hi.tolist()
        crop = np.ascontiguousarray(volume.data[k0:k1, j0:j1, i0:i1], dtype=np.float32)
        src = torch.as_tensor(crop, device=dev)[None, None]
        local = sel - lo.to(torch.float64)
        extent = torch.tensor([i1 - i0, j1 - j0, k1 - k0], dtype=torch.float64, device=dev)
        scaled = 2 * local / torch.clamp(extent - 1, min=1) - 1
        norm = torch.where(extent > 1, scaled, torch.zeros_like(local))
        grid = norm.to(torch.float32).reshape(1, 1, 1, -1, 3)
        mode = "bilinear" if order == "linear" else "nearest"
        vals = F.grid_sample(src, grid, mode=mode, padding_mode="border", align_corners=True).reshape(-1)
        out[inside] = vals
    return out.reshape(lead)


def _projected_range(volume: Volume, anchor: np.ndarray, axis: np.ndarray) -> tuple[float, float]:
    """Range (mm) of the volume's bounding box corners along ``axis`` relative to ``anchor``."""
    lo, hi = volume.extent_world
    corners = np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T
    proj = (corners - anchor) @ axis
    return float(proj.min()), float(proj.max())


def plane_slice(volume: Volume, point_lps, plane: str, step_mm: float | None = None,
                extent_from: Volume | None = None, fill: float | None = None,
                device: str | torch.device | None = "cpu") -> Slice2D:
    """One standard plane through ``point_lps`` (see module docstring for orientation).

    Parameters
    ----------
    volume : image to sample.
    point_lps : LPS point (mm) the plane passes through; it sits at display coordinates (0, 0).
    plane : ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    step_mm : pixel size; default the volume's finest spacing.
    extent_from : volume whose bounding box sets the field of view (default ``volume``), so that a
        SPECT plane can be sampled on exactly the CT plane's pixels.
    fill : value outside the field of view.
    device : torch device.
    """
    if plane not in PLANE_AXES:
        raise InputError(f"unknown plane {plane!r}; use one of {', '.join(PLANE_AXES)}")
    p = _as_point(point_lps)
    right, up = (np.asarray(v, float) for v in PLANE_AXES[plane])
    return oriented_slice(volume, p, right, up, plane, step_mm=step_mm, extent_from=extent_from, fill=fill,
                          device=device)


def oriented_slice(volume: Volume, anchor_lps, right_lps, up_lps, name: str, step_mm: float | None = None,
                   extent_from: Volume | None = None, fill: float | None = None,
                   device: str | torch.device | None = "cpu") -> Slice2D:
    """A plane through ``anchor_lps`` spanned by two orthonormal LPS vectors (right, up)."""
    anchor = _as_point(anchor_lps)
    right = np.asarray(right_lps, float) / np.linalg.norm(right_lps)
    up = np.asarray(up_lps, float) / np.linalg.norm(up_lps)
    if abs(right @ up) > 1e-6:
        raise GeometryError("image right and up directions must be orthogonal")
    ref = extent_from if extent_from is not None else volume
    step = float(step_mm) if step_mm is not None else float(min(volume.spacing))
    if not step > 0:
        raise InputError(f"pixel size must be positive, got {step_mm}")
    u0, u1 = _projected_range(ref, anchor, right)
    v0, v1 = _projected_range(ref, anchor, up)
    nu, nv = max(1, int(round((u1 - u0) / step))), max(1, int(round((v1 - v0) / step)))
    if nu * nv > 16_000_000:
        raise InputError(f"plane of {nv}×{nu} pixels is too large; choose a larger step_mm")
    u = u0 + (np.arange(nu) + 0.5) * (u1 - u0) / nu
    v = v1 - (np.arange(nv) + 0.5) * (v1 - v0) / nv  # row 0 at the top
    dev = resolve_device(device)
    uu = torch.as_tensor(u, dtype=torch.float64, device=dev)[None, :, None]
    vv = torch.as_tensor(v, dtype=torch.float64, device=dev)[:, None, None]
    pts = (torch.as_tensor(anchor, dtype=torch.float64, device=dev)
           + uu * torch.as_tensor(right, device=dev) + vv * torch.as_tensor(up, device=dev))
    data = sample_world(volume, pts, fill=fill, device=dev).cpu().numpy()
    return Slice2D(data=data, extent=(u0, u1, v0, v1), letters=edge_letters(right, up), right_lps=right,
                   up_lps=up, anchor_lps=anchor, plane=name, unit=volume.unit)


def mpr_slices(volume: Volume, point_lps, planes: Sequence[str] = ("axial", "coronal", "sagittal"),
               step_mm: float | None = None, device: str | torch.device | None = "cpu") -> dict[str, Slice2D]:
    """Axial, coronal and/or sagittal planes of ``volume`` through ``point_lps``.

    Raises :class:`GeometryError` when the point lies outside the volume.
    """
    p = _as_point(point_lps)
    lo, hi = volume.extent_world
    if np.any(p < lo - 1e-6) or np.any(p > hi + 1e-6):
        raise GeometryError(f"point {tuple(np.round(p, 1))} mm (LPS) lies outside the volume "
                            f"({tuple(np.round(lo, 1))} .. {tuple(np.round(hi, 1))})")
    return {pl: plane_slice(volume, p, pl, step_mm=step_mm, device=device) for pl in planes}
