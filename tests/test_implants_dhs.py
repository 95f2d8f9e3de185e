"""A dynamic hip screw (DHS) takes in the pieces of its own system, not a side-plate screw passing its barrel.

On the small demo's 2-mm CT the shank of the upper side-plate screw lay 4.9 mm from the lag screw's barrel,
within the 5.1-mm touch distance of 2-mm voxels, and was swallowed by the hip screw (the plate then had one
screw, numbered 1, where the truth has two). The scene here is that case on 2-mm voxels: a lag screw
(12 mm across) with its barrel (19 mm across) as one fragment, a compression screw in line with them beyond
a gap, and a 4.5-mm plate screw (drawn 5 mm across, as blooming widens it) aimed across the plate at 50° to
the lag axis, 4 mm from the barrel.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from spectct.analysis.anatomy import segment_anatomy
from spectct.analysis.implants import DHS_DIAMETER_MM, _diameter, _hip_screws, _make_part, decompose_implants
from spectct.volume import Volume
from test_implants_bend import _screw  # tests/ is on sys.path (pytest rootdir conftest)

VOXEL_MM = 2.0
TOUCH_MM = 2.5 * VOXEL_MM + 0.1  # the touch distance of implants._name_parts on this grid


def _dhs_parts():
    """(lag screw with barrel, compression screw, plate screw shank) as screw fragments of a 2-mm CT."""
    ct = Volume.from_bounds((-70.0, -20.0, -40.0), (30.0, 20.0, 70.0), VOXEL_MM, unit="HU")
    Z, Y, X = np.meshgrid(*ct.axis_coordinates(), indexing="ij")
    p = np.stack([X, Y, Z], axis=-1)
    u = np.array([-1.0, 0.0, 1.0]) / math.sqrt(2.0)  # neck axis: medial and up, 135° to the shaft
    t = p @ u
    r = np.linalg.norm(p - t[..., None] * u, axis=-1)
    lag = ((r <= 9.5) & (t >= 0.0) & (t <= 34.0)) | ((r <= 6.0) & (t >= 0.0) & (t <= 80.0))
    compression = (r <= 3.0) & (t >= -22.0) & (t <= -4.0)
    d = np.array([-math.cos(math.radians(25.0)), math.sin(math.radians(25.0)), 0.0])  # across the plate
    a = np.array([8.0, 0.0, -10.0])
    s = np.clip((p - a) @ d, 0.0, 20.0)
    shank = np.linalg.norm(p - a - s[..., None] * d, axis=-1) <= 2.5
    return ct, [_make_part("screw", np.argwhere(m), ct) for m in (lag, compression, shank)]


def test_plate_screw_beside_the_barrel_stays_a_screw():
    ct, (lag, compression, shank) = _dhs_parts()
    # the premise: both pieces touch the hip screw on this grid; only the compression screw runs along it
    tree = cKDTree(lag.pts)
    assert tree.query(shank.pts)[0].min() <= TOUCH_MM and tree.query(compression.pts)[0].min() <= TOUCH_MM
    assert _diameter(lag, ct) >= DHS_DIAMETER_MM and lag.length >= 30.0
    assert abs(float(shank.axes[0] @ lag.axes[0])) < math.cos(math.radians(45.0))
    hips, rest = _hip_screws([lag, compression, shank], ct, TOUCH_MM)
    assert len(hips) == 1
    assert len(hips[0].idx) == len(lag.idx) + len(compression.idx)  # the compression screw joins
    assert len(rest) == 1 and rest[0] is shank  # the plate screw stays a screw of its own
    assert hips[0].core is lag


def test_fragment_along_the_lag_screw_joins_within_35_degrees():
    """The allowance for pieces of the hip screw: a touching fragment at 30° to the lag axis joins, one at 40°
    does not (the phantom's barrel fragment of the nominal CT lies at 12°, the plate screw at 54°)."""
    ct, (lag, _, _) = _dhs_parts()
    Z, Y, X = np.meshgrid(*ct.axis_coordinates(), indexing="ij")
    p = np.stack([X, Y, Z], axis=-1)
    u = np.array([-1.0, 0.0, 1.0]) / math.sqrt(2.0)
    w = np.array([0.0, 1.0, 0.0])
    for angle, joins in ((30.0, True), (40.0, False)):
        c, s_ = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        d = c * u + s_ * w
        a = -6.0 * u  # starts 6 mm beyond the barrel's lateral end, on the lag axis, and leaves it
        s = np.clip((p - a) @ -d, 0.0, 18.0)
        piece = _make_part("screw", np.argwhere(np.linalg.norm(p - a + s[..., None] * d, axis=-1) <= 2.5), ct)
        assert cKDTree(lag.pts).query(piece.pts)[0].min() <= TOUCH_MM
        hips, rest = _hip_screws([lag, piece], ct, TOUCH_MM)
        assert (len(rest) == 0) == joins, angle



def dhs_scene(z_upper: float, blur_mm: float = 0.8, voxel_mm: float = VOXEL_MM, sub: int = 2) -> Volume:
    """CT in HU of a femur along z (axis at x = −7 mm, cortex r 14 mm) with a nail (r 5.5 mm) and a DHS: a lag
    screw (r 6 mm) up the neck at 135° to the shaft, through the nail, its barrel (r 9.5 mm, 34 mm long) in a
    side plate (6 × 20 mm, 145 mm long) on the lateral cortex, and two plate screws whose heads sit in the
    plate 6 mm to either side of its midline (z = ``z_upper`` and −45 mm), aimed medially and 25° outwards.
    Metal is drawn as in ``test_implants_bend.nail_scene`` (partial volume, 12 000 HU, Gaussian blur of
    ``blur_mm``, clipped at 3071 HU), so the 2500-HU mask blooms."""
    ct = Volume.from_bounds((-60.0, -25.0, -255.0), (24.0, 25.0, 70.0), voxel_mm, unit="HU")
    z, y, x = ct.axis_coordinates()
    off = ((np.arange(sub) + 0.5) / sub - 0.5) * voxel_mm
    Z, Y, X = np.meshgrid(*[(a[:, None] + off[None]).ravel() for a in (z, y, x)], indexing="ij")
    p = np.stack([X, Y, Z], axis=-1)
    u = np.array([-1.0, 0.0, 1.0]) / math.sqrt(2.0)
    t = p @ u
    r = np.linalg.norm(p - t[..., None] * u, axis=-1)
    metal = ((r <= 9.5) & (t >= -8.0) & (t <= 26.0)) | ((r <= 6.0) & (t >= -4.0) & (t <= 80.0))  # barrel, lag
    metal |= (X >= 7.0) & (X <= 13.0) & (np.abs(Y) <= 10.0) & (Z >= -130.0) & (Z <= 15.0)  # side plate
    metal |= ((X + 7.0) ** 2 + Y**2 <= 5.5**2) & (Z >= -250.0) & (Z <= 50.0)  # nail
    for zs, side in ((z_upper, 1.0), (-45.0, -1.0)):
        d = np.array([-math.cos(math.radians(25.0)), side * math.sin(math.radians(25.0)), 0.0])
        head = np.array([10.0, 6.0 * side, zs])
        metal |= _screw(X, Y, Z, head, head + d, 24.0)
    frac = metal.reshape(len(z), sub, len(y), sub, len(x), sub).mean(axis=(1, 3, 5))
    Zc, Yc, Xc = np.meshgrid(z, y, x, indexing="ij")
    rr = np.hypot(Xc + 7.0, Yc)
    background = np.where(rr <= 14.0, 1500.0, 40.0)
    background[rr <= 8.0] = 100.0
    hu = ndimage.gaussian_filter(frac * 12000.0 + (1.0 - frac) * background, blur_mm / voxel_mm)
    return ct.with_data(np.minimum(hu, 3071.0).astype(np.float32))


def test_both_side_plate_screws_found_beside_the_barrel():
    """The whole decomposition of the 2-mm scene: the upper plate screw passes beside the barrel, its shank
    fragment 4 mm from the hip screw's metal at 52° to the lag axis (the former rule gave it to the hip screw
    and found one plate screw); both are found on the plate and numbered from the hip."""
    ct = dhs_scene(-16.0)
    comps = decompose_implants(ct, anatomy=segment_anatomy(ct, midline_x=-100.0))
    plate_screws = sorted((c for c in comps if c.carrier == "left dynamic hip screw plate"), key=lambda c: c.number)
    assert [c.number for c in plate_screws] == [1, 2], [c.name for c in comps]
    assert abs(plate_screws[0].centroid_lps[2] + 16.0) < 4.0 and abs(plate_screws[1].centroid_lps[2] + 45.0) < 4.0
    hip = next(c for c in comps if c.name == "left dynamic hip screw")
    assert hip.centroid_lps[2] > 0.0  # the lag screw up the neck
