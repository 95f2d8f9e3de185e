"""Anatomy from CT alone: body, skin, bone (with its marrow cavity), metal, body midline, femurs.

Everything is computed on a working grid of ``voxel_mm`` (default 2 mm) resampled from the CT in
patient coordinates, which is fine enough to label SPECT foci (≈ 4.8 mm voxels, ≈ 12 mm FWHM) and
keeps a 1-mm whole-thigh CT tractable on two cores.

Sides come from LPS coordinates only: a point is on the patient's right when its x lies below the
body midline (patient right is −x), whatever the array order of the input.

HU thresholds are conventional CT values (not fitted to this phantom): air/body boundary at −300 HU
(between fat ≈ −100 HU and air −1000 HU), bone at ≥ 200 HU (trabecular bone ≈ 200–400 HU, cortical
≈ 1000–1900 HU), metal at ≥ 2500 HU (above the densest cortical bone, below titanium and steel,
which saturate the CT scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from spectct.errors import InputError
from spectct.volume import Volume

BODY_HU = -300.0
BONE_HU = 200.0
METAL_HU = 2500.0
MAX_CAVITY_MM2 = 2000.0  # marrow cavities (femoral canal ≈ 200–500 mm², trochanter less than ≈ 50 mm across)
SKIN_DEPTH_MM = 8.0  # points this close to the body surface count as skin (≈ half a SPECT FWHM)
THIRDS = ("proximal", "middle", "distal")


@dataclass
class FemurExtent:
    """A femur found in the CT: its side, the LPS z of its distal and proximal ends and its label."""

    side: str
    z_distal: float
    z_proximal: float
    label: int

    @property
    def length_mm(self) -> float:
        return self.z_proximal - self.z_distal

    def third(self, z: float) -> str | None:
        """``"proximal"``, ``"middle"`` or ``"distal"`` third at height ``z`` (proximal = towards the hip,
        larger z), or None outside the femur's extent."""
        if not (self.z_distal - 5.0 <= z <= self.z_proximal + 5.0):
            return None
        frac = (self.z_proximal - z) / max(self.length_mm, 1e-6)
        return THIRDS[int(np.clip(np.floor(frac * 3.0), 0, 2))]


@dataclass
class Anatomy:
    """Masks on a working grid plus the geometry derived from them.

    Attributes
    ----------
    grid : the working grid (its ``data`` is the resampled CT in HU).
    body, bone, filled, metal : boolean masks [z, y, x]; ``filled`` is bone with its marrow cavity and
        any metal inside it (per-slice hole filling of bone ∪ metal).
    depth_mm : distance inside the body to its surface in mm (0 outside).
    midline_x : LPS x of the body midline in mm (x of the body's centre of mass).
    femurs : femurs found, keyed by side.
    bone_labels : connected components of ``filled`` (femurs carry their ``FemurExtent.label``).
    """

    grid: Volume
    body: np.ndarray
    bone: np.ndarray
    filled: np.ndarray
    metal: np.ndarray
    depth_mm: np.ndarray
    midline_x: float
    femurs: dict[str, FemurExtent] = field(default_factory=dict)
    bone_labels: np.ndarray | None = None
    _grid_cache: dict = field(default_factory=dict, repr=False)

    def on_grid(self, grid: Volume, name: str) -> np.ndarray:
        """One of ``body``, ``bone``, ``filled``, ``metal``, ``depth_mm`` sampled at the voxel centres of
        another grid (nearest working voxel; 0/False outside), e.g. the SPECT's."""
        key = (grid.shape, tuple(np.round(grid.affine, 6).ravel()))
        if key not in self._grid_cache:
            centres = grid.index_to_world(np.indices(grid.shape).reshape(3, -1).T)
            idx, inside = self._index(centres)
            self._grid_cache = {key: (idx, inside)}  # keep one grid: the SPECT's
        idx, inside = self._grid_cache[key]
        arr = getattr(self, name)
        values = arr[idx[:, 0], idx[:, 1], idx[:, 2]]
        return np.where(inside, values, np.zeros_like(values)).reshape(grid.shape)

    # ----------------------------------------------------------------- queries
    def side_of(self, x_lps: float) -> str:
        """``"right"`` when ``x_lps`` lies right of the midline (smaller x, LPS), else ``"left"``."""
        return "right" if x_lps < self.midline_x else "left"

    def _index(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.rint(self.grid.world_to_index(np.atleast_2d(xyz))).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < np.array(self.grid.shape)), axis=-1)
        return np.clip(idx, 0, np.array(self.grid.shape) - 1), inside

    def sample(self, mask: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        """Values of a working-grid array at LPS points ``[..., (x, y, z)]`` (nearest voxel; 0 outside)."""
        idx, inside = self._index(xyz)
        values = mask[idx[:, 0], idx[:, 1], idx[:, 2]]
        return np.where(inside, values, np.zeros_like(values))

    def tissue_at(self, xyz: np.ndarray) -> np.ndarray:
        """Tissue word at each LPS point: implant, bone, marrow, skin, soft tissue or outside body."""
        xyz = np.atleast_2d(xyz)
        out = np.full(len(xyz), "outside body", dtype=object)
        body = self.sample(self.body, xyz).astype(bool)
        depth = self.sample(self.depth_mm, xyz)
        out[body] = "soft tissue"
        out[body & (depth <= SKIN_DEPTH_MM)] = "skin"
        filled = self.sample(self.filled, xyz).astype(bool)
        out[filled] = "marrow"
        out[self.sample(self.bone, xyz).astype(bool)] = "bone"
        out[self.sample(self.metal, xyz).astype(bool)] = "implant"
        return out

    def structure_at(self, xyz: np.ndarray, near_mm: float = 6.0) -> tuple[str, str | None]:
        """Bony structure at or within ``near_mm`` of a point and the femur third at its height.

        Returns (structure, third): structure is ``"femur"``, ``"pelvis"``, ``"bone"`` or ``"soft tissue"``;
        third is given for any point at the height of that side's femur (soft tissue of the thigh too).
        """
        xyz = np.asarray(xyz, dtype=float).reshape(3)
        side = self.side_of(xyz[0])
        femur = self.femurs.get(side)
        third = femur.third(xyz[2]) if femur is not None else None
        if self.bone_labels is None:
            return "soft tissue", third
        r = int(np.ceil(near_mm / min(self.grid.spacing)))
        idx, _ = self._index(xyz)
        k, j, i = (int(c) for c in idx[0])
        sl = tuple(slice(max(0, c - r), c + r + 1) for c in (k, j, i))
        labels = self.bone_labels[sl]
        found = np.unique(labels[labels > 0])
        if femur is not None and femur.label in found:
            return "femur", third
        if found.size:
            above_femurs = bool(self.femurs) and all(
                xyz[2] > f.z_proximal - 0.25 * f.length_mm for f in self.femurs.values()
            )
            near_mid = abs(xyz[0] - self.midline_x) < 60.0
            if above_femurs or near_mid:
                return "pelvis", None
            return "bone", third
        return "soft tissue", third


def segment_anatomy(
    ct: Volume,
    voxel_mm: float = 2.0,
    metal_threshold_hu: float = METAL_HU,
    midline_x: float | None = None,
    device: str = "cpu",
) -> Anatomy:
    """Segment body, skin depth, bone with marrow cavity, metal and femurs from a CT in HU.

    Parameters
    ----------
    ct : CT volume in HU, any grid in patient coordinates.
    voxel_mm : working voxel size; finer CTs are resampled (trilinear) to it, coarser ones kept.
    metal_threshold_hu : HU above which a voxel is metal.
    midline_x : LPS x of the body midline; by default the body's centre of mass (give it for a CT
        that holds one side only).
    device : torch device of the resampling.

    Notes
    -----
    Bone is HU ≥ 200 below the metal threshold; its marrow cavity is recovered by filling the holes of
    bone ∪ metal slice by slice (axial) up to ``MAX_CAVITY_MM2``, per connected bone piece, which also
    puts intramedullary metal inside the bone and leaves the pelvic cavity and joint spaces out. Femurs
    are the connected bone components on each side of the midline whose craniocaudal extent exceeds
    100 mm; the longest per side is taken. When a femur touches the pelvis (coarse voxels), the bone of
    that side below the lowest bone crossing the midline is taken as the femur instead.
    """
    if ct.unit not in ("HU", "1"):
        raise InputError(f"CT must be in HU, got unit {ct.unit!r}")
    grid = _working_grid(ct, voxel_mm)
    hu = ct.data.astype(np.float32) if grid is None else ct.resample_to(grid, fill=-1000.0, device=device).data
    grid = ct if grid is None else grid
    body = hu > BODY_HU
    if not body.any():
        raise InputError("CT contains no body (no voxel above −300 HU)")
    body = _largest_components(body, keep_fraction=0.05)
    body = _fill_slices(body)
    metal = hu >= metal_threshold_hu
    bone = (hu >= BONE_HU) & ~metal
    filled = _fill_small_holes(bone | metal, grid, MAX_CAVITY_MM2) & body
    depth = ndimage.distance_transform_edt(body, sampling=grid.spacing).astype(np.float32)
    if midline_x is None:
        midline_x = float(grid.index_to_world(np.array(ndimage.center_of_mass(body)))[0])
    anatomy = Anatomy(
        grid=grid.with_data(hu, unit="HU"),
        body=body,
        bone=bone,
        filled=filled,
        metal=metal,
        depth_mm=depth,
        midline_x=float(midline_x),
    )
    _find_femurs(anatomy)
    return anatomy


def _working_grid(ct: Volume, voxel_mm: float) -> Volume | None:
    lo, hi = ct.extent_world
    if not np.allclose(ct.direction, np.eye(3), atol=1e-6):
        return Volume.from_bounds(tuple(lo), tuple(hi), voxel_mm, unit="HU", frame_of_reference=ct.frame_of_reference)
    if min(ct.spacing) >= voxel_mm * 0.99:
        return None
    vox = np.maximum(np.array(ct.spacing[::-1]), voxel_mm)  # (dx, dy, dz), never finer than the CT
    return Volume.from_bounds(tuple(lo), tuple(hi), tuple(vox), unit="HU", frame_of_reference=ct.frame_of_reference)


def _largest_components(mask: np.ndarray, keep_fraction: float) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= keep_fraction * sizes.max()) + 1
    return np.isin(labels, keep)


_PLANAR = np.array(
    [[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]],
    dtype=bool,
)


def _fill_small_holes(mask: np.ndarray, grid: Volume, max_area_mm2: float) -> np.ndarray:
    """Fill, per connected bone piece and per axial slice, the holes smaller than ``max_area_mm2`` (marrow
    cavities). Holes closed only by two pieces together (a joint space, the pelvic cavity) stay open."""
    labels, n = ndimage.label(mask)
    out = mask.copy()
    pix_mm2 = grid.spacing[1] * grid.spacing[2]
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        piece = labels[sl] == lab
        if piece.sum() < 20:
            continue
        holes = ndimage.binary_fill_holes(piece, structure=_PLANAR) & ~piece
        hl, nh = ndimage.label(holes, structure=_PLANAR)
        if nh == 0:
            continue
        small = np.concatenate([[False], np.bincount(hl.ravel())[1:] * pix_mm2 <= max_area_mm2])
        other = (labels[sl] > 0) & ~piece
        if other.any():  # a hole that holds another piece is a joint space, not a cavity
            small[np.unique(hl[ndimage.binary_dilation(other)])] = False
            small[0] = False
        out[sl] |= small[hl]
    return out


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    out = np.empty_like(mask)
    for k in range(mask.shape[0]):
        out[k] = ndimage.binary_fill_holes(mask[k])
    return out


def _find_femurs(anatomy: Anatomy) -> None:
    grid = anatomy.grid
    labels, n = ndimage.label(anatomy.filled)
    anatomy.bone_labels = labels
    if n == 0:
        return
    z_of_k, _, x_of_i = _axis_world(grid)
    objects = ndimage.find_objects(labels)
    best: dict[str, tuple[float, FemurExtent]] = {}
    for lab, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        comp = labels[sl] == lab
        kk, _, ii = np.nonzero(comp)
        ks = kk + sl[0].start
        zs = z_of_k[ks]
        xs = x_of_i[ii + sl[2].start]
        extent = float(zs.max() - zs.min()) + grid.spacing[0]
        if extent < 100.0:
            continue
        # a femur sits to one side: most of its voxels are away from the midline
        offset = np.median(xs) - anatomy.midline_x
        if abs(offset) < 30.0 or np.mean(np.sign(xs - anatomy.midline_x) == np.sign(offset)) < 0.9:
            continue
        side = "right" if offset < 0 else "left"
        femur = FemurExtent(side=side, z_distal=float(zs.min()), z_proximal=float(zs.max()), label=lab)
        if side not in best or extent > best[side][0]:
            best[side] = (extent, femur)
    anatomy.femurs = {side: f for side, (_, f) in best.items()}
    missing = [side for side in ("right", "left") if side not in anatomy.femurs]
    if missing:
        _femurs_below_pelvis(anatomy, labels, z_of_k, x_of_i, missing)


def _femurs_below_pelvis(
    anatomy: Anatomy, labels: np.ndarray, z_of_k: np.ndarray, x_of_i: np.ndarray, sides: list[str], band_mm: float = 30.0
) -> None:
    """Fallback when a femur touches the pelvis in the CT (coarse voxels): the femur is taken as the bone
    of its side below the lowest bone crossing the midline band (pubic symphysis, sacrum)."""
    band = np.abs(x_of_i - anatomy.midline_x) < band_mm
    mid_rows = np.flatnonzero(anatomy.filled[:, :, band].any(axis=(1, 2)))
    z_cut = float(z_of_k[mid_rows].min()) if mid_rows.size else np.inf
    below = (z_of_k < z_cut)[:, None, None]
    for side in sides:
        sign = -1.0 if side == "right" else 1.0
        cols = (sign * (x_of_i - anatomy.midline_x) >= band_mm)[None, None, :]
        lab, n = ndimage.label(anatomy.filled & below & cols)
        best = None
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None:
                continue
            zs = z_of_k[sl[0]]
            extent = float(zs.max() - zs.min()) + anatomy.grid.spacing[0]
            if extent >= 100.0 and (best is None or extent > best[0]):
                best = (extent, i, float(zs.min()), float(zs.max()))
        if best is None:
            continue
        new_label = int(labels.max()) + 1
        labels[lab == best[1]] = new_label
        anatomy.femurs[side] = FemurExtent(side=side, z_distal=best[2], z_proximal=best[3], label=new_label)


def _axis_world(grid: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS z of each slice, y of each row and x of each column for an axis-aligned grid."""
    z, y, x = grid.axis_coordinates()
    return z, y, x
