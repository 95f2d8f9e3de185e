"""`Volume`: a 3-D image on a grid placed in DICOM patient coordinates (LPS, mm).

Conventions
-----------
- ``data`` is indexed ``[z, y, x]`` = ``[k, j, i]``.
- ``spacing`` is ``(dz, dy, dx)`` in mm, matching the array axes.
- ``origin`` is the LPS position ``(x, y, z)`` in mm of the centre of voxel ``[0, 0, 0]``.
- ``direction`` is a 3×3 matrix whose *columns* are the LPS unit vectors along the index axes
  ``i`` (x, columns), ``j`` (y, rows) and ``k`` (z, slices) — the ITK/DICOM convention. The identity
  means: i runs to patient Left, j to Posterior, k to Superior (head).

The affine that maps ``(i, j, k, 1)`` to ``(x, y, z, 1)`` is
``A = [[direction @ diag(dx, dy, dz), origin], [0, 0, 0, 1]]``. Patient right is −x.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError

UNITS = ("HU", "1/mm", "Bq/mL", "counts", "label", "relative", "1")


@dataclass
class Volume:
    """A 3-D image with its geometry in patient coordinates (see module docstring)."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    unit: str = "1"
    frame_of_reference: str | None = None

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        if self.data.ndim != 3:
            raise GeometryError(f"Volume data must be 3-D [z, y, x], got shape {self.data.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if len(self.spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise GeometryError(f"Volume spacing must be three positive finite mm values, got {self.spacing}")
        if not np.allclose(self.direction.T @ self.direction, np.eye(3), atol=1e-4):
            raise GeometryError("Volume direction must be orthonormal (no shear, no scaling)")
        if self.unit not in UNITS:
            raise InputError(f"unknown unit {self.unit!r}; expected one of {', '.join(UNITS)}")

    # ----------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """4×4 matrix from index ``(i, j, k, 1)`` to LPS ``(x, y, z, 1)`` in mm."""
        dz, dy, dx = self.spacing
        a = np.eye(4)
        a[:3, :3] = self.direction @ np.diag([dx, dy, dz])
        a[:3, 3] = self.origin
        return a

    def index_to_world(self, index_zyx: np.ndarray) -> np.ndarray:
        """Map array indices ``[..., (k, j, i)]`` to LPS positions ``[..., (x, y, z)]`` in mm."""
        idx = np.asarray(index_zyx, dtype=np.float64)[..., ::-1]
        a = self.affine
        return idx @ a[:3, :3].T + a[:3, 3]

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map LPS positions ``[..., (x, y, z)]`` to continuous indices ``[..., (k, j, i)]``."""
        a_inv = np.linalg.inv(self.affine)
        ijk = np.asarray(xyz, dtype=np.float64) @ a_inv[:3, :3].T + a_inv[:3, 3]
        return ijk[..., ::-1]

    @property
    def extent_world(self) -> np.ndarray:
        """LPS corners of the grid's bounding box (voxel edges), shape (2, 3): min and max."""
        n = np.array(self.shape, dtype=float)
        corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in n], indexing="ij")).reshape(3, -1).T
        w = self.index_to_world(corners)
        return np.stack([w.min(0), w.max(0)])

    @property
    def center_world(self) -> np.ndarray:
        return self.index_to_world((np.array(self.shape) - 1) / 2.0)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def axis_coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinate of each slice/row/column along its own axis, for axis-aligned grids.

        Returns (z of each k, y of each j, x of each i); raises for oblique grids.
        """
        if not np.allclose(np.abs(self.direction), np.eye(3), atol=1e-6):
            raise GeometryError("axis_coordinates needs an axis-aligned grid")
        out = []
        for axis, n in zip((2, 1, 0), self.shape, strict=True):
            sign = self.direction[axis, axis]
            step = self.spacing[2 - axis]
            out.append(self.origin[axis] + sign * step * np.arange(n))
        return tuple(out)  # type: ignore[return-value]

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol_mm)

    def overlaps(self, other: Volume) -> bool:
        a, b = self.extent_world, other.extent_world
        return bool(np.all(a[0] < b[1]) and np.all(b[0] < a[1]))

    # ----------------------------------------------------------------- copies
    def with_data(self, data: np.ndarray, unit: str | None = None) -> Volume:
        """The same grid holding other data (shape must match)."""
        data = np.asarray(data)
        if data.shape != self.data.shape:
            raise GeometryError(f"data shape {data.shape} does not match grid {self.data.shape}")
        return replace(self, data=data, unit=unit or self.unit, direction=self.direction.copy())

    @classmethod
    def from_bounds(
        cls,
        lower_xyz: tuple[float, float, float],
        upper_xyz: tuple[float, float, float],
        voxel_mm: float | tuple[float, float, float],
        unit: str = "1",
        dtype=np.float32,
        frame_of_reference: str | None = None,
    ) -> Volume:
        """An axis-aligned zero volume covering the LPS box ``lower..upper`` (voxel edges)."""
        vox = np.broadcast_to(np.asarray(voxel_mm, dtype=float), (3,))  # (dx, dy, dz) when a tuple
        lo, hi = np.asarray(lower_xyz, float), np.asarray(upper_xyz, float)
        if np.any(hi <= lo):
            raise GeometryError(f"empty bounds {lower_xyz} .. {upper_xyz}")
        n_xyz = np.maximum(1, np.round((hi - lo) / vox).astype(int))
        origin = lo + vox / 2
        shape = (int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0]))
        return cls(np.zeros(shape, dtype=dtype), spacing=(vox[2], vox[1], vox[0]), origin=tuple(origin),
                   unit=unit, frame_of_reference=frame_of_reference)

    # ----------------------------------------------------------------- resampling
    def resample_to(self, reference: Volume, order: str = "linear", fill: float = 0.0,
                    device: str | torch.device | None = "cpu", chunk_voxels: int = 8_000_000) -> Volume:
        """Resample this volume onto ``reference``'s grid in patient coordinates.

        Parameters
        ----------
        reference : grid to sample on (its data is not used).
        order : ``"linear"`` (trilinear) or ``"nearest"`` (labels).
        fill : value outside this volume's field of view.
        device : torch device for the interpolation.
        chunk_voxels : output voxels processed at once (bounds memory for 1-mm CT grids).
        """
        return resample(self, reference, order=order, fill=fill, device=device, chunk_voxels=chunk_voxels)


def resample(source: Volume, reference: Volume, order: str = "linear", fill: float = 0.0,
             device: str | torch.device | None = "cpu", chunk_voxels: int = 8_000_000) -> Volume:
    """Sample ``source`` on ``reference``'s grid (see :meth:`Volume.resample_to`)."""
    if order not in ("linear", "nearest"):
        raise InputError(f"resampling order must be 'linear' or 'nearest', got {order!r}")
    dev = resolve_device(device)
    # continuous source index (i, j, k) of each reference index (i, j, k)
    m = np.linalg.inv(source.affine) @ reference.affine
    nz, ny, nx = reference.shape
    sz, sy, sx = source.shape
    src_dtype = source.data.dtype
    work_dtype = torch.float64 if src_dtype == np.float64 else torch.float32
    src = torch.as_tensor(np.ascontiguousarray(source.data), device=dev).to(work_dtype)[None, None]
    size_ijk = torch.tensor([sx, sy, sz], dtype=torch.float64, device=dev)
    denom = torch.clamp(size_ijk - 1, min=1)
    mt = torch.as_tensor(m, dtype=torch.float64, device=dev)
    out = np.empty(reference.shape, dtype=src_dtype if order == "nearest" else np.result_type(src_dtype, np.float32))
    slab = max(1, chunk_voxels // max(1, ny * nx))
    jj, ii = torch.meshgrid(torch.arange(ny, device=dev, dtype=torch.float64),
                            torch.arange(nx, device=dev, dtype=torch.float64), indexing="ij")
    mode = "bilinear" if order == "linear" else "nearest"
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        kk = torch.arange(z0, z1, device=dev, dtype=torch.float64)[:, None, None].expand(-1, ny, nx)
        ref_idx = torch.stack([ii.expand_as(kk), jj.expand_as(kk), kk], dim=-1)
        src_idx = ref_idx @ mt[:3, :3].T + mt[:3, 3]
        outside = ((src_idx < -0.5) | (src_idx > size_ijk - 0.5)).any(dim=-1)
        norm = torch.where(size_ijk > 1, 2 * src_idx / denom - 1, torch.zeros_like(src_idx))
        grid = norm.to(work_dtype)[None]
        vals = F.grid_sample(src, grid, mode=mode, padding_mode="border", align_corners=True)[0, 0]
        vals = torch.where(outside, torch.as_tensor(fill, dtype=work_dtype, device=dev), vals)
        out[z0:z1] = vals.cpu().numpy().astype(out.dtype, copy=False)
    return Volume(out, spacing=reference.spacing, origin=reference.origin, direction=reference.direction.copy(),
                  unit=source.unit, frame_of_reference=reference.frame_of_reference or source.frame_of_reference)
