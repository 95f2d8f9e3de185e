"""The bend test of screws and carriers on voxel clouds shaped like what a reconstructed CT leaves:
slabs a carrier's shell thinned (a kink that is not there) and a sliver at a nail's tip."""

from __future__ import annotations

import inspect

import numpy as np

from spectct.analysis.implants import _bend_fit, _centerline_deviation, _Part, decompose_implants

BEND_DEG = inspect.signature(decompose_implants).parameters["bend_deg"].default
BEND_GAIN = inspect.signature(decompose_implants).parameters["bend_gain"].default


def _grid(step=2.0, x=(-10, 52), yz=8):
    g = np.arange(x[0], x[1], step)
    h = np.arange(-yz, yz + 1, step)
    return np.meshgrid(g, h, h, indexing="ij")


def _part(mask, X, Y, Z):
    pts = np.stack([X[mask], Y[mask], Z[mask]], axis=1)
    return _Part("screw", np.zeros((len(pts), 3), int), pts)


def test_kink_from_shell_thinned_slabs_is_not_confirmed():
    """A straight 32-mm rod (6 mm across: a 4.5-mm screw with blooming, 2-mm voxels) whose side facing a
    carrier is missing over 10 mm reads as bent from all slabs; without the thinned slabs next to the
    carrier it does not."""
    X, Y, Z = _grid()
    rod = (X >= 0) & (X <= 32) & (Y**2 + Z**2 <= 3.0**2)
    dent = (X >= 10) & (X <= 20) & (Y > 0)  # the half towards the carrier went with its shell
    part = _part(rod & ~dent, X, Y, Z)
    angle, gain = _bend_fit(part, 4.0, 8.0)
    assert angle > BEND_DEG and gain >= BEND_GAIN  # the false kink the contact test must remove
    contact = (part.pts[:, 0] >= 8) & (part.pts[:, 0] <= 22) & (part.pts[:, 1] >= 0)
    assert _bend_fit(part, 4.0, 8.0, contact)[0] <= BEND_DEG


def test_real_bend_beside_a_carrier_is_kept():
    """A rod bent by 20° whose knee lies against a carrier: those slabs are full, so they stay, and the
    bend reads the same with or without the contact marks."""
    X, Y, Z = _grid(x=(-10, 60), yz=20)
    knee = np.array([20.0, 0.0, 0.0])
    d2 = np.array([np.cos(np.radians(20.0)), np.sin(np.radians(20.0)), 0.0])
    t = np.clip((X - knee[0]) * d2[0] + (Y - knee[1]) * d2[1], 0.0, 24.0)
    arm2 = (X - knee[0] - t * d2[0]) ** 2 + (Y - t * d2[1]) ** 2 + Z**2 <= 3.0**2
    arm1 = (X >= 0) & (X <= 20) & (Y**2 + Z**2 <= 3.0**2)
    part = _part(arm1 | arm2, X, Y, Z)
    angle, gain = _bend_fit(part, 4.0, 8.0)
    assert angle > BEND_DEG + 4.0 and gain >= BEND_GAIN
    contact = np.abs(part.pts[:, 0] - 20.0) <= 6.0
    assert _bend_fit(part, 4.0, 8.0, contact)[0] == angle


def test_thinned_slab_without_contact_marks_is_kept():
    """Without contact marks only the half-median rule applies (a thinned stretch away from any carrier
    is the screw's own shape)."""
    X, Y, Z = _grid()
    rod = (X >= 0) & (X <= 32) & (Y**2 + Z**2 <= 3.0**2)
    dent = (X >= 10) & (X <= 20) & (Y > 0)
    part = _part(rod & ~dent, X, Y, Z)
    none = np.zeros(len(part.pts), bool)
    assert _bend_fit(part, 4.0, 8.0, none) == _bend_fit(part, 4.0, 8.0)


def test_nail_tip_sliver_does_not_bend_the_nail():
    """A straight nail (12 mm across, 200 mm long, 2-mm voxels) with a 4-voxel sliver 6 mm off its axis
    beyond the tip (what blooming and the opening leave there; its 3-voxel end slab read 5.5 mm under the
    former "≥ 3 voxels" rule): the centre line stays within 1 mm."""
    X, Y, Z = _grid(x=(-4, 212), yz=10)
    nail = (X >= 0) & (X <= 200) & (Y**2 + Z**2 <= 6.0**2)
    sliver = (X >= 202) & (X <= 208) & (np.abs(Y - 6.0) <= 1.0) & (np.abs(Z) <= 1.0)
    part = _part(nail | sliver, X, Y, Z)
    assert _centerline_deviation(part, 4.0) < 1.0
    assert _centerline_deviation(_part(nail, X, Y, Z), 4.0) < 1.0
