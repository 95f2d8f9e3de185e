"""Fragments of one screw separated by its plate are joined across the plate hole on a 1-mm CT.

On a 1-mm CT the head of a plate screw, standing outside the plate, is a fragment of its own, and the part
of the screw inside the plate hole goes to the plate (with its one-voxel shell): the point halfway between
head and shank then lies in the hole, up to a screw radius from the plate's metal, not in the metal.
"""

from __future__ import annotations

import numpy as np

from spectct.analysis.implants import _diameter, _join_across_carriers, _make_part
from spectct.volume import Volume

HOLE_R = 2.5  # mm, radius of the empty hole left between head and shank (shank radius 3 mm)


def _scene(hole_r: float = HOLE_R):
    """A 5-mm plate (x ∈ [−5, 0]) along z with an empty hole of radius ``hole_r`` at y = z = 0; a head disc
    outside it (x ∈ [−9, −6]) and a 30-mm shank inside it (x ∈ [1, 31]): radius 3 mm (a bloomed 4.5-mm
    screw), thinned to 1 mm over its first 3 mm by the carrier's shell."""
    ct = Volume.from_bounds((-40.0, -20.0, -12.0), (40.0, 20.0, 34.0), 1.0, unit="HU")
    Z, Y, X = np.meshgrid(*ct.axis_coordinates(), indexing="ij")
    plate = (X >= -5.0) & (X <= 0.0) & (np.abs(Y) <= 8.0) & (np.abs(Z) <= 38.0) & (np.hypot(Y, Z) > hole_r)
    head = (X >= -9.0) & (X <= -6.0) & (np.hypot(Y, Z) <= 4.0)
    r = np.hypot(Y, Z)
    shank = ((X >= 1.0) & (X <= 3.0) & (r <= 1.0)) | ((X >= 4.0) & (X <= 31.0) & (r <= 3.0))
    parts = [_make_part(kind, np.argwhere(m), ct) for kind, m in (("carrier", plate), ("screw", head), ("screw", shank))]
    return ct, parts


def test_head_and_shank_joined_across_the_plate_hole():
    ct, (plate, head, shank) = _scene()
    # the midpoint of the gap lies in the hole, farther than one voxel from the plate's metal
    assert HOLE_R > max(ct.spacing) and HOLE_R <= 0.5 * _diameter(shank, ct)
    joined = _join_across_carriers([head, shank], [plate], ct)
    assert len(joined) == 1
    assert len(joined[0].idx) == len(head.idx) + len(shank.idx)
    assert joined[0].through is plate


def test_gap_wider_than_a_screw_radius_is_not_bridged():
    # a 6-mm empty hole: the midpoint lies farther from metal than the shank's radius, no carrier between
    ct, (plate, head, shank) = _scene(hole_r=6.0)
    assert 6.0 > 0.5 * _diameter(shank, ct)
    assert len(_join_across_carriers([head, shank], [plate], ct)) == 2
