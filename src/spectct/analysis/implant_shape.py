"""Shape measures of implant parts: principal axes, the centre line of a screw and its bend, and the gap
between a plate and the bone (the methods are described in :mod:`spectct.analysis.implants`).

Centre lines of screws
----------------------

A screw is a cylinder a few mm across; at 1–2 mm voxels with blooming its metal mask is three to four voxels
wide, so a slab centroid of its voxels moves in steps of a voxel and a 15° bend over a 12-mm arm (3 mm of
displacement) is barely above that noise. Two things make the centre line usable:

- Sub-voxel sections. The screw's own voxels (as a 0/1 mask) are sampled by trilinear interpolation on
  discs perpendicular to its principal axis every half voxel, and the centre of each section is the
  centroid of the interpolated mask. The interpolation turns the staircase of the voxel mask into a
  smooth profile, so the section centre follows a sloped axis instead of jumping a voxel at a time.
- Clean sections only. A section is used only where nothing else is near: no other metal within the disc
  (a carrier, or its one-voxel shell that took the screw's side facing it; another screw split off this one
  does not count, see :func:`screw_centre_line`) and an area within 0.4–1.6 × the median section (below, the
  last sliver of an end cap; above, another part merged into this one in the mask: both have lopsided
  centres). A stretch of screw beside a nail or in a plate hole is thus left out rather than read as a kink.
  The lower bound is loose because the mask's area follows the background: a 4.5-mm screw at 2-mm voxels
  reads half the area in soft tissue that it reads in cortex (the 2500-HU threshold is reached farther
  out on a brighter background), and a tighter bound dropped the far arm of a bent screw leaving the bone.

The bend is then read by two-phase regression on the clean section centres (two straight arms meeting at a
knee, the knee searched over the centres; Hudson 1966, J Am Stat Assoc 61:1097): the angle between the two
arms and the *deviation*, the distance of the shorter arm's far end from the longer arm's line
(= short arm length × sin angle). The deviation is what a voxel grid resolves; the angle of a short arm is
not (see :func:`screw_bend`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spectct.analysis.anatomy import BONE_HU, METAL_HU
from spectct.volume import Volume


def principal_shape(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
    """Centre, principal axes (rows, largest first), length along axis 1 and widths along axes 2, 3."""
    center = pts.mean(axis=0)
    if len(pts) < 3:
        return center, np.eye(3), 0.0, (0.0, 0.0)
    cov = np.cov((pts - center).T)
    w, v = np.linalg.eigh(cov)
    axes = v[:, ::-1].T
    proj = (pts - center) @ axes.T
    lo, hi = np.percentile(proj, [0.5, 99.5], axis=0)
    ext = hi - lo
    return center, axes, float(proj[:, 0].max() - proj[:, 0].min()), (float(ext[1]), float(ext[2]))


@dataclass
class CentreLine:
    """Section centres of a screw along its principal axis.

    ``t`` are the sections' positions along ``axis`` (mm from ``center``), ``points`` their centres (LPS
    mm), ``area`` the interpolated metal area of each section (mm²) and ``clean`` whether the section is
    usable (nothing else near, area near the median). ``radius_mm`` is the screw's equivalent radius.
    """

    center: np.ndarray
    axis: np.ndarray
    t: np.ndarray
    points: np.ndarray
    area: np.ndarray
    clean: np.ndarray
    radius_mm: float


def fit_line(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through points: (centroid, unit direction)."""
    c = p.mean(axis=0)
    _, _, vt = np.linalg.svd(p - c, full_matrices=False)
    return c, vt[0]


def line_distance(p: np.ndarray, c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Distances of points ``p`` from the line through ``c`` along unit ``a``."""
    d = p - c
    return np.linalg.norm(d - np.outer(d @ a, a), axis=1)


def screw_centre_line(
    idx: np.ndarray,
    metal: np.ndarray,
    ct: Volume,
    screws_idx: np.ndarray | None = None,
    step_vox: float = 0.5,
    area_range: tuple[float, float] = (0.4, 1.6),
) -> CentreLine:
    """The centre line of one screw from its voxels and the CT's whole metal mask.

    Parameters
    ----------
    idx : (N, 3) CT indices [k, j, i] of the screw's voxels.
    metal : the CT's metal mask (bool, CT shape); metal not in ``idx`` is "something else".
    ct : the CT grid (spacing, orientation).
    screws_idx : (M, 3) CT indices of the voxels of all screws found (this one included, or not). Another
        screw beside this one is not "something else": where two screws touched, the fragment was split
        between their axes (``implants._split_touching``) and each half keeps its whole cross-section,
        whereas the one-voxel shell taken around a carrier removes the side of the screw facing it.
    step_vox : distance between sections, in voxels (of the largest spacing).
    area_range : a clean section's area relative to the median clean section's.

    Returns
    -------
    CentreLine. Sections run from end to end of the voxels' extent along their first principal axis; a
    section is centred on the centroid of the voxels within half a voxel of it and has the radius of the
    screw plus 1.5 voxels, so that the whole cross-section lies inside it.
    """
    vox = float(max(ct.spacing))
    pts = ct.index_to_world(idx)
    center = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - center, full_matrices=False)
    axis, u, v = vt[0], vt[1], vt[2]
    t_vox = (pts - center) @ axis
    length = float(t_vox.max() - t_vox.min()) + vox
    radius = math.sqrt(len(idx) * ct.voxel_volume_ml * 1000.0 / max(length, 1e-6) / math.pi)
    disc = radius + 1.5 * vox
    # local boxes of the screw's own mask and of the other metal around it
    pad = int(math.ceil(disc / min(ct.spacing))) + 2
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, np.array(metal.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    own = np.zeros(tuple(hi - lo), np.float32)
    own[tuple((idx - lo).T)] = 1.0
    other = metal[box] & (own == 0)
    if screws_idx is not None and len(screws_idx):
        inside = np.all((screws_idx >= lo) & (screws_idx < hi), axis=1)
        other[tuple((screws_idx[inside] - lo).T)] = False
    other = other.astype(np.float32)
    # section grid: a square of half-width ``disc`` sampled every quarter voxel, kept within the disc
    h = 0.25 * min(ct.spacing)
    s = np.arange(-disc, disc + 1e-6, h)
    su, sv = np.meshgrid(s, s, indexing="ij")
    inside = su**2 + sv**2 <= disc**2
    su, sv = su[inside], sv[inside]
    step = step_vox * vox
    ts = np.arange(t_vox.min() + 0.5 * step, t_vox.max(), step)
    out_p, out_a, out_c, out_t = [], [], [], []
    for t in ts:
        near = np.abs(t_vox - t) <= 0.5 * vox
        if near.sum() < 2:
            continue
        c0 = pts[near].mean(axis=0)
        c0 = c0 + (t - (c0 - center) @ axis) * axis  # on the section's plane
        plane = c0[None, :] + su[:, None] * u[None, :] + sv[:, None] * v[None, :]
        coords = (ct.world_to_index(plane) - lo).T
        w = ndimage.map_coordinates(own, coords, order=1, mode="constant", cval=0.0)
        if w.sum() <= 0:
            continue
        o = ndimage.map_coordinates(other, coords, order=1, mode="constant", cval=0.0)
        out_t.append(t)
        out_p.append((w[:, None] * plane).sum(axis=0) / w.sum())
        out_a.append(float(w.sum() * h * h))
        out_c.append(bool(o.max() < 0.05))
    if not out_t:
        empty = np.zeros((0, 3))
        return CentreLine(center, axis, np.zeros(0), empty, np.zeros(0), np.zeros(0, bool), radius)
    area = np.asarray(out_a)
    clean = np.asarray(out_c)
    ref = float(np.median(area[clean])) if clean.any() else float(np.median(area))
    clean &= (area >= area_range[0] * ref) & (area <= area_range[1] * ref)
    return CentreLine(center, axis, np.asarray(out_t), np.asarray(out_p), area, clean, radius)


@dataclass
class Bend:
    """Two-arm fit of a centre line: ``angle_deg`` between the arms, ``deviation_mm`` of the shorter arm's
    far end from the longer arm's line, the arms' lengths (mm along the axis) and the knee (LPS mm)."""

    angle_deg: float
    deviation_mm: float
    short_arm_mm: float
    long_arm_mm: float
    knee: np.ndarray | None


NO_BEND = Bend(0.0, 0.0, 0.0, 0.0, None)


def screw_bend(line: CentreLine, min_arm_mm: float, min_points: int = 4) -> Bend:
    """The best two-arm fit (least total squared distance of the clean section centres from their arm's
    line) over all knees whose arms each span ``min_arm_mm`` or more and hold ``min_points`` centres.

    :data:`NO_BEND` when no such knee exists (a screw mostly beside a carrier cannot be read). The arms
    share the knee centre. Arm lengths are spans of clean centres along the axis, so a gap (the nail a
    locking screw passes) inside an arm counts as part of it: the arm's line is fitted across the gap.
    """
    keep = line.clean
    p, t = line.points[keep], line.t[keep]
    n = len(p)
    best: tuple[float, Bend] | None = None
    for b in range(min_points - 1, n - min_points + 1):
        a1, a2 = p[: b + 1], p[b:]
        l1, l2 = float(t[b] - t[0]), float(t[-1] - t[b])
        if min(l1, l2) < min_arm_mm:
            continue
        (c1, d1), (c2, d2) = fit_line(a1), fit_line(a2)
        sse = float((line_distance(a1, c1, d1) ** 2).sum() + (line_distance(a2, c2, d2) ** 2).sum())
        if best is not None and sse >= best[0]:
            continue
        angle = math.degrees(math.acos(min(1.0, abs(float(d1 @ d2)))))
        if l1 <= l2:
            dev = float(line_distance(a1[:1], c2, d2)[0])
        else:
            dev = float(line_distance(a2[-1:], c1, d1)[0])
        best = (sse, Bend(angle, dev, min(l1, l2), max(l1, l2), p[b].copy()))
    return NO_BEND if best is None else best[1]


def standoff_profile(
    pts: np.ndarray,
    ct_hu: Volume,
    metal_threshold_hu: float = METAL_HU,
    slab_mm: float = 10.0,
    max_mm: float = 40.0,
    step_mm: float = 0.5,
    cortex_mm: float = 3.0,
    rays: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft tissue between a plate and the bone along the plate normal, slab by slab along the plate.

    Parameters
    ----------
    pts : (N, 3) LPS positions (mm) of the plate's voxels (the plate alone, without screws or barrel).
    ct_hu : the CT in HU, sampled along the rays by trilinear interpolation.
    metal_threshold_hu : HU of metal; bone is ``BONE_HU`` ≤ HU < metal.
    slab_mm : slab width along the plate's long axis.
    max_mm : a ray that meets no bone this far from the plate's mid-plane finds "no bone beside this slab".
    step_mm : ray sampling step.
    cortex_mm : bone is reached where a bone sample is followed by this much bone (or metal: a screw in
        the cortex); a thinner bright rim is the partial-volume halo of the plate, not cortex.
    rays : rays per slab, spread over the middle 80 % of the plate's width.

    Returns
    -------
    positions, gaps : the slabs' centres along the long axis (mm from the plate centre, increasing along
        the first principal axis) and their gaps in mm (NaN where no ray met bone). A ray starts on the
        slab's mid-plane (median position of its voxels along the normal) and its gap is the length of
        soft tissue (neither metal nor bone) it crosses before reaching bone; the slab's gap is the median
        over its rays (a ray running along a screw reads no gap). The normal is turned towards the side
        where the rays reach bone nearer. Counting soft tissue makes the measure independent of the
        plate's apparent thickness (metal blooming); the partial-volume halo of metal and cortex shortens
        it by about a voxel, so it errs towards "not displaced".
    """
    center, axes, _, (width, _) = principal_shape(pts)
    rel = pts - center
    t_long, t_across, t_norm = rel @ axes[0], rel @ axes[1], rel @ axes[2]
    edges = np.arange(t_long.min(), t_long.max() + slab_mm, slab_mm)
    centres = 0.5 * (edges[:-1] + edges[1:])
    steps = np.arange(0.0, max_mm + step_mm, step_mm)
    n_cortex = max(1, int(round(cortex_mm / step_mm)))
    offsets = width * np.linspace(-0.4, 0.4, rays) if rays > 1 else np.zeros(1)
    data = np.asarray(ct_hu.data, dtype=np.float32)

    def ray_gap(start: np.ndarray, direction: np.ndarray) -> tuple[float, float]:
        """(gap, distance to bone) along one ray; NaN, inf when it meets no bone."""
        ray = start[None, :] + steps[:, None] * direction[None, :]
        hu = ndimage.map_coordinates(data, ct_hu.world_to_index(ray).T, order=1, mode="constant", cval=-1000.0)
        metal = hu >= metal_threshold_hu
        bone = (hu >= BONE_HU) & ~metal
        solid = np.concatenate([bone | metal, np.zeros(n_cortex, bool)])
        left_plate = np.flatnonzero(~metal)
        if left_plate.size == 0:
            return math.nan, math.inf
        for i in np.flatnonzero(bone[left_plate[0] :]) + left_plate[0]:
            if solid[i : i + n_cortex].all():
                soft = ~(bone | metal)[:i]
                return float(soft.sum() * step_mm), float(steps[i])
        return math.nan, math.inf

    def profile(sign: float) -> tuple[np.ndarray, float]:
        gaps = np.full((len(centres), len(offsets)), np.nan)
        reach = []
        for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            sel = (t_long >= a) & (t_long < b)
            if sel.sum() < 3:
                continue
            mid = float(np.median(t_norm[sel]))
            mid_across = float(np.median(t_across[sel]))
            for r, v in enumerate(offsets):
                start = center + centres[k] * axes[0] + (mid_across + v) * axes[1] + mid * axes[2]
                gaps[k, r], d = ray_gap(start, sign * axes[2])
                reach.append(d)
        return gaps, float(np.median(reach)) if reach else math.inf

    (g_pos, d_pos), (g_neg, d_neg) = profile(1.0), profile(-1.0)
    chosen = g_pos if d_pos <= d_neg else g_neg
    out = np.full(len(centres), np.nan)
    found = np.isfinite(chosen).any(axis=1)
    out[found] = np.nanmedian(chosen[found], axis=1)
    return centres, out


def plate_standoff(
    pts: np.ndarray, ct_hu: Volume, metal_threshold_hu: float = METAL_HU, slab_mm: float = 10.0
) -> tuple[float, str | None] | None:
    """The plate's gap to the bone along its normal (mm, see :func:`standoff_profile`) and where it lies
    ("upper end", "middle", "lower end": thirds of the plate by LPS z; None without a gap); None when no
    ray meets bone.

    The gap is the second largest of the slab gaps, i.e. the largest found in at least two slabs: a plate
    is rigid, so a real stand-off spans several slabs, while one slab can misread (a streak, a screw head).
    Its place is the mean position of the slabs at or above it.
    """
    centres, gaps = standoff_profile(pts, ct_hu, metal_threshold_hu, slab_mm=slab_mm)
    ok = np.isfinite(gaps)
    if not ok.any():
        return None
    ranked = np.sort(gaps[ok])[::-1]
    gap = float(ranked[1] if len(ranked) > 1 else ranked[0])
    at = float(centres[ok][gaps[ok] >= gap].mean())
    along = at / max(float(np.ptp(centres)) / 2.0, 1e-6)  # −1 … 1 along the first axis
    upward = along * (1.0 if float(principal_shape(pts)[1][0][2]) >= 0 else -1.0)  # +1 at the end with the larger z
    where = "upper end" if upward > 1.0 / 3.0 else "lower end" if upward < -1.0 / 3.0 else "middle"
    return gap, (where if gap > 0 else None)
