"""Analytic primitives and the supersampling rasteriser: volumes and partial volume against truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectct.errors import GeometryError, InputError
from spectct.phantom.shapes import (
    Box,
    Capsule,
    Cylinder,
    Ellipsoid,
    EllipticSection,
    Paint,
    Sphere,
    frame_from_axis,
    paint_points,
    rasterize,
    rotate,
)
from spectct.volume import Volume

SHAPES = [
    Sphere((1.3, -0.7, 2.1), 9.0),
    Ellipsoid((0.0, 0.5, 0.0), (12.0, 7.0, 5.0), frame_from_axis((1.0, 1.0, 0.3))),
    Cylinder((-10.0, -4.0, -8.0), (9.0, 6.0, 10.0), 4.0),
    Cylinder((-12.0, 0.0, -2.0), (12.0, 1.0, 3.0), 6.0, 3.0),
    Capsule((-6.0, -6.0, 0.0), (8.0, 5.0, 2.0), 3.5),
    Box((0.5, 0.0, -0.5), (11.0, 4.0, 6.0), frame_from_axis((0.2, 1.0, 1.0))),
    EllipticSection(
        z=(-10.0, 0.0, 12.0), cx=(0.0, 2.0, -1.0), cy=(0.0, -1.0, 1.0), a=(8.0, 12.0, 6.0), b=(6.0, 9.0, 5.0)
    ),
]


def _grid(voxel=(1.0, 1.0, 1.0), direction=None) -> Volume:
    g = Volume.from_bounds((-20.0, -20.0, -20.0), (20.0, 20.0, 20.0), voxel, unit="label", dtype=np.int16)
    if direction is not None:
        g = Volume(
            g.data,
            g.spacing,
            origin=tuple(-direction @ np.array([19.5, 19.5, 19.5]) * 1.0),
            direction=direction,
            unit="label",
        )
    return g


def _monte_carlo_volume(shape, n=400_000, seed=1) -> float:
    lo, hi = shape.bounds()
    rng = np.random.default_rng(seed)
    pts = rng.uniform(lo, hi, size=(n, 3))
    inside = shape.inside(torch.as_tensor(pts, dtype=torch.float64)).numpy()
    return float(inside.mean() * np.prod(hi - lo))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: type(s).__name__)
def test_analytic_volume_and_bounds(shape):
    mc = _monte_carlo_volume(shape)
    assert abs(mc - shape.volume_mm3) / shape.volume_mm3 < 0.02
    # nothing inside lies outside the bounds: sample a box twice as large
    lo, hi = shape.bounds()
    c, h = (lo + hi) / 2, (hi - lo)
    pts = np.random.default_rng(2).uniform(c - h, c + h, size=(100_000, 3))
    inside = shape.inside(torch.as_tensor(pts)).numpy()
    assert np.all((pts[inside] >= lo - 1e-9) & (pts[inside] <= hi + 1e-9))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: type(s).__name__)
def test_rasterised_volume_and_partial_volume(shape):
    grid = _grid((1.5, 1.5, 1.5))
    background = Box((0.0, 0.0, 0.0), (19.0, 19.0, 19.0))
    lut = np.array([0.0, 1.0, 5.0], dtype=np.float32)
    labels, act = rasterize(grid, [Paint(background, 1), Paint(shape, 2)], lut, supersample=4)
    v_label = np.count_nonzero(labels == 2) * 1.5**3
    # the activity image carries partial volume: its excess over the background integrates to the
    # object's volume times its excess concentration (4 per mL)
    v_act = (act[labels > 0] - 1.0).sum() / 4.0 * 1.5**3
    assert abs(v_label - shape.volume_mm3) / shape.volume_mm3 < 0.05
    assert abs(v_act - shape.volume_mm3) / shape.volume_mm3 < 0.02
    # voxels straddling the surface hold intermediate values
    assert np.any((act > 1.2) & (act < 4.8))


def test_oblique_grid_gives_the_same_volume():
    shape = SHAPES[1]
    r = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    r *= np.sign(np.linalg.det(r))
    lut = np.array([0.0, 1.0], dtype=np.float32)
    straight, _ = rasterize(_grid(), [Paint(shape, 1)], lut)
    oblique, _ = rasterize(_grid(direction=r), [Paint(shape, 1)], lut)
    assert abs(np.count_nonzero(oblique) - np.count_nonzero(straight)) / np.count_nonzero(straight) < 0.03


def test_painter_order_and_supersampled_rasteriser_agree_with_points():
    outer, inner = Sphere((0.0, 0.0, 0.0), 15.0), Sphere((2.0, 0.0, 0.0), 8.0)
    steps = [Paint(outer, 1), Paint(inner, 2)]
    grid = _grid((2.0, 2.0, 2.0))
    labels, act = rasterize(grid, steps, np.array([0.0, 1.0, 5.0], np.float32), supersample=1)
    pts = grid.index_to_world(np.indices(grid.shape).reshape(3, -1).T)
    expect = paint_points(torch.as_tensor(pts, dtype=torch.float32), steps).numpy().reshape(grid.shape)
    assert np.array_equal(labels, expect)
    assert set(np.unique(labels)) == {0, 1, 2}
    centre = grid.world_to_index(np.array([2.0, 0.0, 0.0])).round().astype(int)
    assert labels[tuple(centre)] == 2 and act[tuple(centre)] == 5.0


def test_chunking_does_not_change_the_result():
    steps = [Paint(s, i + 1) for i, s in enumerate(SHAPES[:4])]
    lut = np.arange(5, dtype=np.float32)
    a = rasterize(_grid((2.0, 2.0, 2.0)), steps, lut, chunk_voxels=10**7)
    b = rasterize(_grid((2.0, 2.0, 2.0)), steps, lut, chunk_voxels=900)
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])


def test_rotate_and_frame():
    f = frame_from_axis((0.0, 0.0, 2.0))
    assert np.allclose(f.T @ f, np.eye(3)) and np.allclose(f[:, 2], [0, 0, 1])
    assert np.allclose(rotate((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), 90.0), [0.0, 1.0, 0.0])
    assert math.isclose(np.linalg.norm(rotate((1.0, 2.0, 3.0), (1.0, 1.0, 0.0), 33.0)), math.sqrt(14))


def test_bad_inputs():
    with pytest.raises(GeometryError):
        EllipticSection(z=(0.0, 0.0), cx=(0.0, 0.0), cy=(0.0, 0.0), a=(1.0, 1.0), b=(1.0, 1.0))
    with pytest.raises(InputError):
        rasterize(_grid(), [Paint(SHAPES[0], 1)], np.zeros(2, np.float32), supersample=0)
