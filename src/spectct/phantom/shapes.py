"""Analytic solid primitives and a supersampling rasteriser for labelled voxel models.

A primitive answers two questions: which of a set of points lie inside it (``inside``) and which
axis-aligned box holds it (``bounds``). A phantom is drawn with the painter's algorithm: a list of
:class:`Paint` steps, each a primitive and a label, applied in order so that later steps own the
points they cover (marrow painted after cortex hollows the bone; metal painted last).

Rasterisation (:func:`rasterize`) is coarse-to-fine and exact per grid: every voxel centre is
labelled first; voxels whose centre label differs from one of their six neighbours (the voxels a
surface passes through) are then resampled with ``s³`` points. Such a voxel takes the label most of
its points carry (so label volumes are unbiased), and its activity is the mean over its points (so
the activity image has the partial-volume effect of a real object on that grid). Nothing is ever
resampled from another grid, so the model can be drawn on a 2-mm SPECT grid and a 0.98 × 0.98 × 1 mm
CT slab alike, with identical geometry.

All lengths are in mm and all points in DICOM LPS patient coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError
from spectct.volume import Volume

Array3 = tuple[float, float, float]


def _vec(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"non-finite point or vector {v}")
    return a


def unit(v: Sequence[float]) -> np.ndarray:
    """``v`` scaled to length 1."""
    a = _vec(v)
    n = np.linalg.norm(a)
    if n == 0:
        raise GeometryError("zero-length direction")
    return a / n


def frame_from_axis(axis: Sequence[float], hint: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """An orthonormal 3×3 frame whose third column is ``axis`` and whose second lies near ``hint``.

    The columns are the local u, v, w axes expressed in LPS.
    """
    w = unit(axis)
    h = _vec(hint)
    if abs(np.dot(unit(h), w)) > 0.99:
        h = np.array([1.0, 0.0, 0.0]) if abs(w[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    v = h - np.dot(h, w) * w
    v /= np.linalg.norm(v)
    u = np.cross(v, w)
    return np.stack([u, v, w], axis=1)


def rotate(v: Sequence[float], axis: Sequence[float], angle_deg: float) -> np.ndarray:
    """Rotate vector ``v`` about ``axis`` by ``angle_deg`` (right-handed, Rodrigues' formula)."""
    k = unit(axis)
    v = _vec(v)
    a = math.radians(angle_deg)
    return v * math.cos(a) + np.cross(k, v) * math.sin(a) + k * np.dot(k, v) * (1 - math.cos(a))


class Shape:
    """Base class: a solid in LPS mm. Subclasses implement ``inside``, ``bounds`` and ``grown``."""

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the points ``p`` (shape [N, 3], LPS mm) that lie inside the solid."""
        raise NotImplementedError

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper LPS corners of an axis-aligned box that contains the solid."""
        raise NotImplementedError

    def inside_axes(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        """Mask [nz, ny, nx] of the lattice x × y × z (1-D coordinate tensors), or ``None``.

        A fast path for axis-aligned grids; shapes without a separable test return ``None`` and are
        evaluated point by point.
        """
        return None

    def grown(self, d: float) -> Shape:
        """The solid offset outwards by ``d`` mm (inwards for ``d < 0``); exact for spheres and tubes."""
        raise NotImplementedError

    @property
    def volume_mm3(self) -> float:
        """Analytic volume in mm³."""
        raise NotImplementedError


def _t(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class Ellipsoid(Shape):
    """Ellipsoid with semi-axes ``radii`` along the columns of ``axes`` (identity: x, y, z)."""

    center: Array3
    radii: Array3
    axes: np.ndarray | None = None

    def _frame(self) -> np.ndarray:
        return np.eye(3) if self.axes is None else np.asarray(self.axes, dtype=np.float64)

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        local = p - _t(_vec(self.center), p)
        if self.axes is not None:
            local = local @ _t(self._frame(), p)
        local = local * _t(1.0 / _vec(self.radii), p)
        return (local * local).sum(dim=1) <= 1.0

    def inside_axes(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        if self.axes is not None:
            return None
        c, r = _vec(self.center), _vec(self.radii)
        qx, qy, qz = (((w - float(c[a])) / float(r[a])) ** 2 for a, w in enumerate((x, y, z)))
        return qz[:, None, None] + qy[None, :, None] + qx[None, None, :] <= 1.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        # half-extent along each world axis of a rotated ellipsoid: sqrt(sum_j (R_ij r_j)^2)
        half = np.sqrt(((self._frame() * _vec(self.radii)[None, :]) ** 2).sum(axis=1))
        c = _vec(self.center)
        return c - half, c + half

    def grown(self, d: float) -> Ellipsoid:
        return Ellipsoid(self.center, tuple(max(r + d, 1e-3) for r in self.radii), self.axes)

    @property
    def volume_mm3(self) -> float:
        return 4.0 / 3.0 * math.pi * float(np.prod(self.radii))


def Sphere(center: Array3, radius: float) -> Ellipsoid:  # noqa: N802 - reads as a shape name
    """A sphere is an ellipsoid with equal radii."""
    return Ellipsoid(center, (radius, radius, radius))


@dataclass(frozen=True)
class Cylinder(Shape):
    """A (possibly tapered) circular cylinder from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``).

    ``r1=None`` gives a straight cylinder. ``round_ends`` adds hemispherical caps (a capsule) of the
    end radii.
    """

    p0: Array3
    p1: Array3
    r0: float
    r1: float | None = None
    round_ends: bool = False

    @property
    def _r1(self) -> float:
        return self.r0 if self.r1 is None else self.r1

    @property
    def length(self) -> float:
        return float(np.linalg.norm(_vec(self.p1) - _vec(self.p0)))

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        a = _vec(self.p0)
        axis = _vec(self.p1) - a
        length = np.linalg.norm(axis)
        w = axis / length
        rel = p - _t(a, p)
        s = rel @ _t(w, p)
        radial2 = (rel * rel).sum(dim=1) - s * s
        frac = (s / length).clamp(0.0, 1.0)
        radius = self.r0 + (self._r1 - self.r0) * frac
        mask = (radial2 <= radius * radius) & (s >= 0) & (s <= length)
        if self.round_ends:
            d0 = (rel * rel).sum(dim=1)
            d1 = ((p - _t(_vec(self.p1), p)) ** 2).sum(dim=1)
            mask = mask | (d0 <= self.r0**2) | (d1 <= self._r1**2)
        return mask

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        a, b = _vec(self.p0), _vec(self.p1)
        r = max(self.r0, self._r1)
        return np.minimum(a, b) - r, np.maximum(a, b) + r

    def grown(self, d: float) -> Cylinder:
        a, b = _vec(self.p0), _vec(self.p1)
        if self.round_ends:
            return Cylinder(
                tuple(a),
                tuple(b),
                max(self.r0 + d, 1e-3),
                None if self.r1 is None else max(self.r1 + d, 1e-3),
                True,
            )
        w = unit(b - a)
        return Cylinder(
            tuple(a - d * w),
            tuple(b + d * w),
            max(self.r0 + d, 1e-3),
            None if self.r1 is None else max(self.r1 + d, 1e-3),
            False,
        )

    @property
    def volume_mm3(self) -> float:
        r0, r1, h = self.r0, self._r1, self.length
        v = math.pi * h * (r0 * r0 + r0 * r1 + r1 * r1) / 3.0
        if self.round_ends:
            v += 2.0 / 3.0 * math.pi * (r0**3 + r1**3)
        return v


def Capsule(p0: Array3, p1: Array3, radius: float) -> Cylinder:  # noqa: N802
    """A cylinder with hemispherical ends."""
    return Cylinder(p0, p1, radius, None, True)


@dataclass(frozen=True)
class Box(Shape):
    """A box centred at ``center`` with half-sizes ``half`` along the columns of ``axes``."""

    center: Array3
    half: Array3
    axes: np.ndarray | None = None

    def _frame(self) -> np.ndarray:
        return np.eye(3) if self.axes is None else np.asarray(self.axes, dtype=np.float64)

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        local = (p - _t(_vec(self.center), p)) @ _t(self._frame(), p)
        return (local.abs() <= _t(_vec(self.half), p)).all(dim=1)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        half = (np.abs(self._frame()) * _vec(self.half)[None, :]).sum(axis=1)
        c = _vec(self.center)
        return c - half, c + half

    def grown(self, d: float) -> Box:
        return Box(self.center, tuple(max(h + d, 1e-3) for h in self.half), self.axes)

    @property
    def volume_mm3(self) -> float:
        return 8.0 * float(np.prod(self.half))


@dataclass(frozen=True)
class EllipticSection(Shape):
    """A solid whose axial (constant-z) sections are ellipses varying piecewise linearly along z.

    ``z`` are increasing knot positions; ``cx, cy`` the section centres and ``a, b`` the semi-axes
    along x and y at each knot. The solid spans ``z[0] .. z[-1]``. Used for the trunk and thighs.
    """

    z: tuple[float, ...]
    cx: tuple[float, ...]
    cy: tuple[float, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.z)
        if n < 2 or any(len(v) != n for v in (self.cx, self.cy, self.a, self.b)):
            raise GeometryError("EllipticSection needs at least two knots and equal-length profiles")
        if np.any(np.diff(self.z) <= 0):
            raise GeometryError("EllipticSection knots must increase along z")

    _TABLE_STEP_MM = 0.02

    def _table(self, like: torch.Tensor) -> torch.Tensor:
        """(cx, cy, 1/a, 1/b) sampled every 0.02 mm along z: a gather replaces a search per point."""
        zz = np.arange(self.z[0], self.z[-1] + self._TABLE_STEP_MM, self._TABLE_STEP_MM)
        cx, cy, a, b = self._profile(zz)
        return _t(np.stack([cx, cy, 1.0 / a, 1.0 / b], axis=1), like)

    def _profile(self, zq: np.ndarray) -> list[np.ndarray]:
        zk = np.asarray(self.z, dtype=np.float64)
        return [
            np.interp(zq, zk, np.asarray(v, dtype=np.float64)) for v in (self.cx, self.cy, self.a, self.b)
        ]

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        table = self._table(p)
        z = p[:, 2]
        row = ((z - self.z[0]) * (1.0 / self._TABLE_STEP_MM) + 0.5).long().clamp_(0, table.shape[0] - 1)
        t = table[row]
        inside_z = (z >= self.z[0]) & (z <= self.z[-1])
        u = (p[:, 0] - t[:, 0]) * t[:, 2]
        v = (p[:, 1] - t[:, 1]) * t[:, 3]
        return inside_z & (u * u + v * v <= 1.0)

    def inside_axes(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        cx, cy, a, b = (_t(v, z) for v in self._profile(z.detach().cpu().double().numpy()))
        u = ((x[None, :] - cx[:, None]) / a[:, None]) ** 2  # [nz, nx]
        v = ((y[None, :] - cy[:, None]) / b[:, None]) ** 2  # [nz, ny]
        inside_z = (z >= self.z[0]) & (z <= self.z[-1])
        return (u[:, None, :] + v[:, :, None] <= 1.0) & inside_z[:, None, None]

    def section(self, z: float) -> tuple[float, float, float, float]:
        """``(cx, cy, a, b)`` of the section at height ``z``."""
        return tuple(float(v) for v in self._profile(np.asarray(z, dtype=np.float64)))  # type: ignore[return-value]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        cx, cy, a, b = (np.asarray(v) for v in (self.cx, self.cy, self.a, self.b))
        lo = np.array([np.min(cx - a), np.min(cy - b), self.z[0]])
        hi = np.array([np.max(cx + a), np.max(cy + b), self.z[-1]])
        return lo, hi

    def grown(self, d: float) -> EllipticSection:
        return EllipticSection(
            self.z,
            self.cx,
            self.cy,
            tuple(max(v + d, 1e-3) for v in self.a),
            tuple(max(v + d, 1e-3) for v in self.b),
        )

    @property
    def volume_mm3(self) -> float:
        zz = np.linspace(self.z[0], self.z[-1], 2001)
        _, _, a, b = self._profile(zz)
        return float(np.trapezoid(math.pi * a * b, zz))


@dataclass(frozen=True)
class Clipped(Shape):
    """The part of ``shape`` inside the axis-aligned box ``lower .. upper`` (LPS mm)."""

    shape: Shape
    lower: Array3
    upper: Array3

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        lo, hi = _t(_vec(self.lower), p), _t(_vec(self.upper), p)
        return self.shape.inside(p) & (p >= lo).all(dim=1) & (p <= hi).all(dim=1)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.shape.bounds()
        return np.maximum(lo, _vec(self.lower)), np.minimum(hi, _vec(self.upper))

    def grown(self, d: float) -> Clipped:
        return Clipped(self.shape.grown(d), self.lower, self.upper)


@dataclass(frozen=True)
class Paint:
    """One painter step: points inside ``shape`` get ``label``."""

    shape: Shape
    label: int


# --------------------------------------------------------------------------- rasteriser
def paint_points(
    points: torch.Tensor, steps: Sequence[Paint], boxes: np.ndarray | None = None
) -> torch.Tensor:
    """Labels (int16) of ``points`` [N, 3] after applying ``steps`` in order; 0 where nothing paints.

    ``boxes`` (shape [len(steps), 2, 3]) are the steps' bounds, computed when not given. Points
    outside a step's box are never tested against its shape.
    """
    labels = torch.zeros(points.shape[0], dtype=torch.int16, device=points.device)
    if points.shape[0] == 0:
        return labels
    if boxes is None:
        boxes = np.stack([np.stack(s.shape.bounds()) for s in steps])
    lo_all = points.min(dim=0).values.cpu().numpy()
    hi_all = points.max(dim=0).values.cpu().numpy()
    for step, box in zip(steps, boxes, strict=True):
        if np.any(box[0] > hi_all) or np.any(box[1] < lo_all):
            continue
        lo, hi = _t(box[0], points), _t(box[1], points)
        sel = ((points >= lo) & (points <= hi)).all(dim=1).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        hit = step.shape.inside(points.index_select(0, sel))
        labels[sel[hit]] = step.label
    return labels


def _index_box(grid_inv: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Continuous (k, j, i) index range covering the LPS box ``box`` ([2, 3]) on a grid."""
    corners = np.array(np.meshgrid(*box.T, indexing="ij")).reshape(3, -1).T  # 8 x (x, y, z)
    ijk = corners @ grid_inv[:3, :3].T + grid_inv[:3, 3]
    kji = ijk[:, ::-1]
    return kji.min(axis=0), kji.max(axis=0)


class _GridPoints:
    """LPS positions of index blocks of one grid, built by broadcasting (no full coordinate array)."""

    def __init__(self, grid: Volume, device: torch.device):
        a = torch.as_tensor(grid.affine, dtype=torch.float32, device=device)
        self.step_i, self.step_j, self.step_k = a[:3, 0], a[:3, 1], a[:3, 2]
        self.origin = a[:3, 3]
        self.device = device
        self.axis_aligned = bool(np.allclose(grid.direction, np.eye(3)))

    def axes(self, k: torch.Tensor, j: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x of columns ``i``, y of rows ``j``, z of slices ``k`` (axis-aligned grids only)."""
        return (
            self.origin[0] + i.to(torch.float32) * self.step_i[0],
            self.origin[1] + j.to(torch.float32) * self.step_j[1],
            self.origin[2] + k.to(torch.float32) * self.step_k[2],
        )

    def block(self, k: torch.Tensor, j: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Points of the index block k × j × i (1-D float index tensors), shape [nk, nj, ni, 3]."""
        pk = self.origin + k.to(torch.float32)[:, None] * self.step_k
        pj = j.to(torch.float32)[:, None] * self.step_j
        pi = i.to(torch.float32)[:, None] * self.step_i
        return pk[:, None, None, :] + pj[None, :, None, :] + pi[None, None, :, :]

    def points(self, kji: torch.Tensor) -> torch.Tensor:
        """Points of continuous indices ``kji`` [N, 3]."""
        kji = kji.to(torch.float32)
        return torch.addmm(self.origin, kji, torch.stack([self.step_k, self.step_j, self.step_i]))


def _paint_block(
    gp: _GridPoints,
    k_range: tuple[int, int],
    shape_yx: tuple[int, int],
    steps: Sequence[Paint],
    index_boxes: list[tuple[np.ndarray, np.ndarray]],
) -> torch.Tensor:
    """Centre labels of slices ``k_range`` of a grid with ``shape_yx`` rows and columns."""
    k0, k1 = k_range
    ny, nx = shape_yx
    out = torch.zeros((k1 - k0, ny, nx), dtype=torch.int16, device=gp.device)
    for step, (lo, hi) in zip(steps, index_boxes, strict=True):
        a = [max(int(math.ceil(lo[0])), k0), max(int(math.ceil(lo[1])), 0), max(int(math.ceil(lo[2])), 0)]
        b = [
            min(int(math.floor(hi[0])) + 1, k1),
            min(int(math.floor(hi[1])) + 1, ny),
            min(int(math.floor(hi[2])) + 1, nx),
        ]
        if any(bb <= aa for aa, bb in zip(a, b, strict=True)):
            continue
        rng = [torch.arange(aa, bb, device=gp.device) for aa, bb in zip(a, b, strict=True)]
        inside = step.shape.inside_axes(*gp.axes(*rng)) if gp.axis_aligned else None
        if inside is None:
            pts = gp.block(*rng)
            inside = step.shape.inside(pts.reshape(-1, 3)).reshape(pts.shape[:3])
        view = out[a[0] - k0 : b[0] - k0, a[1] : b[1], a[2] : b[2]]
        view.masked_fill_(inside, step.label)
    return out


def _brick_labels(
    centre: torch.Tensor, k_offset: int, dims: torch.Tensor, n_labels: int, brick: int
) -> torch.Tensor:
    """Which labels occur at voxel centres in each brick or its 26 neighbours: bool [bz, by, bx, L]."""
    nk, nj, ni = centre.shape
    dev = centre.device
    k = torch.div(torch.arange(k_offset, k_offset + nk, device=dev), brick, rounding_mode="floor")
    j = torch.div(torch.arange(nj, device=dev), brick, rounding_mode="floor")
    i = torch.div(torch.arange(ni, device=dev), brick, rounding_mode="floor")
    key = (k[:, None, None] * dims[1] + j[None, :, None]) * dims[2] + i[None, None, :]
    combined = torch.unique(key * n_labels + centre.long())
    table = torch.zeros(int(dims.prod()) * n_labels, dtype=torch.float32, device=dev)
    table[combined] = 1.0
    table = table.reshape(int(dims[0]), int(dims[1]), int(dims[2]), n_labels).permute(3, 0, 1, 2)
    table = torch.nn.functional.max_pool3d(table[None], kernel_size=3, stride=1, padding=1)[0]
    return table.permute(1, 2, 3, 0) > 0


def _paint_scattered(
    gp: _GridPoints,
    vox: torch.Tensor,
    sub: torch.Tensor,
    steps: Sequence[Paint],
    index_boxes: list[tuple[np.ndarray, np.ndarray]],
    present: torch.Tensor,
    brick: int,
) -> torch.Tensor:
    """Labels [M, s³] of the sub-points of voxels ``vox`` [M, 3] (k, j, i).

    Voxels are grouped in bricks of ``brick``³. A step visits only the bricks that its box touches and
    in which (or beside which) its label occurs at some voxel centre (``present`` from
    :func:`_brick_labels`): a point's final label is that of the last step holding it, so steps whose
    label is absent nearby cannot be the last one there, and skipping them changes nothing unless a
    structure is thinner than a voxel and falls between all centres.
    """
    m, ns = vox.shape[0], sub.shape[0]
    labels = torch.zeros((m, ns), dtype=torch.int16, device=vox.device)
    if m == 0:
        return labels
    dims = torch.as_tensor(present.shape[:3], device=vox.device)
    bk = torch.div(vox, brick, rounding_mode="floor")
    key = (bk[:, 0] * dims[1] + bk[:, 1]) * dims[2] + bk[:, 2]
    order = torch.argsort(key)
    key_sorted = key[order]
    ukeys, counts = torch.unique_consecutive(key_sorted, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    dims_np = dims.cpu().numpy()
    ukeys_np = ukeys.cpu().numpy()
    present_rows = present.reshape(-1, present.shape[3])[ukeys].cpu().numpy()  # [n_ukeys, L]
    for step, (lo, hi) in zip(steps, index_boxes, strict=True):
        blo = np.floor((np.maximum(lo, 0) - 0.5) / brick).astype(np.int64)
        bhi = np.floor((hi + 0.5) / brick).astype(np.int64)
        blo = np.maximum(blo, 0)
        bhi = np.minimum(bhi, dims_np - 1)
        if np.any(bhi < blo):
            continue
        grid_b = np.meshgrid(*[np.arange(x, y + 1) for x, y in zip(blo, bhi, strict=True)], indexing="ij")
        want = ((grid_b[0] * dims_np[1] + grid_b[1]) * dims_np[2] + grid_b[2]).ravel()
        pos = np.searchsorted(ukeys_np, want)
        valid = pos < ukeys_np.size
        pos, want = pos[valid], want[valid]
        pos = pos[ukeys_np[pos] == want]
        pos = pos[present_rows[pos, step.label]]
        if pos.size == 0:
            continue
        pos_t = torch.as_tensor(pos, device=vox.device)
        st, ct = starts[pos_t], counts[pos_t]
        total = int(ct.sum())
        offs = torch.arange(total, device=vox.device) - torch.repeat_interleave(torch.cumsum(ct, 0) - ct, ct)
        rows = order[torch.repeat_interleave(st, ct) + offs]
        pts = gp.points((vox[rows][:, None, :].to(torch.float32) + sub[None, :, :]).reshape(-1, 3))
        inside = step.shape.inside(pts).reshape(-1, ns)
        label = torch.as_tensor(step.label, dtype=torch.int16, device=vox.device)
        labels[rows] = torch.where(inside, label, labels[rows])
    return labels


def rasterize(
    grid: Volume,
    steps: Sequence[Paint],
    activity_lut: np.ndarray,
    supersample: int = 2,
    device: str | torch.device = "cpu",
    chunk_voxels: int = 2_000_000,
    reporter=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw painter ``steps`` on ``grid``: int16 labels and float32 activity, both [z, y, x].

    Parameters
    ----------
    grid : the target grid (any orientation and spacing; its data is not used).
    steps : painter steps, applied in order (later steps own shared points).
    activity_lut : activity per label id (index = label).
    supersample : points per voxel edge in surface voxels (``s³`` per voxel); 1 samples centres only.
    device : torch device for the computation.
    chunk_voxels : voxels labelled at once (bounds memory: about 40 bytes per voxel of a chunk).
    reporter : optional :class:`spectct.progress.Reporter` for a progress bar.

    Returns
    -------
    labels, activity : NumPy arrays of the grid's shape.
    """
    if supersample < 1 or supersample > 8:
        raise InputError(f"supersample must be 1..8, got {supersample}")
    dev = resolve_device(device)
    nz, ny, nx = grid.shape
    lut = torch.as_tensor(np.asarray(activity_lut, dtype=np.float32), device=dev)
    boxes = np.stack([np.stack(s.shape.bounds()) for s in steps])
    labels_out = np.zeros((nz, ny, nx), dtype=np.int16)
    act_out = np.zeros((nz, ny, nx), dtype=np.float32)
    slab = max(1, chunk_voxels // max(1, ny * nx))
    gp = _GridPoints(grid, dev)
    inv = np.linalg.inv(grid.affine)
    index_boxes = [_index_box(inv, box) for box in boxes]
    s = supersample
    offs = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s - 0.5
    sub = torch.stack(torch.meshgrid(offs, offs, offs, indexing="ij"), dim=-1).reshape(-1, 3)  # k, j, i
    brick = 8
    brick_dims = torch.as_tensor([-(-n // brick) for n in (nz, ny, nx)], device=dev)
    n_labels = max(int(lut.shape[0]), max(st.label for st in steps) + 1)
    chunks = list(range(0, nz, slab))
    iterator = reporter.track(chunks, "rasterising phantom") if reporter is not None else chunks
    for z0 in iterator:
        z1 = min(nz, z0 + slab)
        # centre labels of the slab with a one-slice halo for the neighbour test
        h0, h1 = max(0, z0 - 1), min(nz, z1 + 1)
        centre = _paint_block(gp, (h0, h1), (ny, nx), steps, index_boxes)
        mixed = torch.zeros_like(centre, dtype=torch.bool)
        for axis in range(3):
            n = centre.shape[axis] - 1
            diff = centre.narrow(axis, 1, n) != centre.narrow(axis, 0, n)
            mixed.narrow(axis, 1, n).logical_or_(diff)
            mixed.narrow(axis, 0, n).logical_or_(diff)
        if s > 1 and bool(mixed.any()):
            present = _brick_labels(centre, h0, brick_dims, n_labels, brick)
        centre = centre[z0 - h0 : z0 - h0 + (z1 - z0)]
        mixed = mixed[z0 - h0 : z0 - h0 + (z1 - z0)]
        act = lut[centre.long()]
        if s > 1:
            idx = mixed.nonzero()  # [M, 3] local k, j, i
            if idx.shape[0]:
                vox = idx.clone()
                vox[:, 0] += z0
                sub_lab = _paint_scattered(gp, vox, sub, steps, index_boxes, present, brick)
                # majority vote; ties go to the centre's label (an unbiased sample), not to the
                # smallest id, which would shrink every high-id component
                sub_long = sub_lab.long()
                vote = torch.mode(sub_long, dim=1).values
                own = centre[idx[:, 0], idx[:, 1], idx[:, 2]].long()
                n_vote = (sub_long == vote[:, None]).sum(dim=1)
                n_own = (sub_long == own[:, None]).sum(dim=1)
                vote = torch.where(n_own >= n_vote, own, vote).to(torch.int16)
                mean_act = lut[sub_lab.long()].mean(dim=1)
                # a voxel whose points are mostly outside the body is outside: no activity there
                mean_act = torch.where(vote == 0, torch.zeros_like(mean_act), mean_act)
                centre[idx[:, 0], idx[:, 1], idx[:, 2]] = vote
                act[idx[:, 0], idx[:, 1], idx[:, 2]] = mean_act
        labels_out[z0:z1] = centre.cpu().numpy()
        act_out[z0:z1] = act.cpu().numpy()
    return labels_out, act_out
