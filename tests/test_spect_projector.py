"""SPECT projector: exact adjoint, collimator response, attenuation, geometry conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectct.errors import GeometryError, InputError
from spectct.physics.collimator import Collimator
from spectct.spect.geometry import SpectGeometry
from spectct.spect.projector import SpectModel


def _random_mu(grid, rng, scale=0.02):
    return grid.with_data((rng.random(grid.shape) * scale).astype(np.float32), unit="1/mm")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_dot_product_adjoint(dtype, tol):
    rng = np.random.default_rng(0)
    g = SpectGeometry.dual_head(stops_per_head=6, matrix=32, radius_mm=110.0)
    g.radii_mm = g.radii_mm + rng.uniform(0, 60, g.n_views)  # non-circular orbit
    grid = g.image_grid()
    model = SpectModel(g, grid, mu=_random_mu(grid, rng), dtype=dtype, batch_views=5)
    x = torch.as_tensor(rng.random(grid.shape), dtype=dtype)
    y = torch.as_tensor(rng.random(model.out_shape), dtype=dtype)
    lhs = float((model.forward(x) * y).sum())
    rhs = float((x * model.adjoint(y)).sum())
    assert abs(lhs - rhs) <= tol * abs(lhs)
    views = [7, 2, 11]
    lhs = float((model.forward(x, views) * y[:3]).sum())
    rhs = float((x * model.adjoint(y[:3], views)).sum())
    assert abs(lhs - rhs) <= tol * abs(lhs)


def test_adjoint_matches_explicit_matrix_oversampled():
    """Tiny system, 2× oversampled grid: Aᵀ built column by column equals A transposed."""
    rng = np.random.default_rng(1)
    g = SpectGeometry.dual_head(stops_per_head=1, matrix=3, radius_mm=12.0, pixel_mm=4.0, start_angle_deg=30.0)
    grid = g.image_grid(oversample=2)
    model = SpectModel(g, grid, mu=_random_mu(grid, rng), dtype=torch.float64)
    n, p = int(np.prod(grid.shape)), int(np.prod(model.out_shape))
    eye_n, eye_p = torch.eye(n, dtype=torch.float64), torch.eye(p, dtype=torch.float64)
    a = torch.stack([model.forward(eye_n[i].view(grid.shape)).reshape(-1) for i in range(n)], 1)
    at = torch.stack([model.adjoint(eye_p[i].view(model.out_shape)).reshape(-1) for i in range(p)], 1)
    assert torch.allclose(a, at.T, atol=1e-13)
    assert float(a.max()) > 0


def test_sensitivity_is_adjoint_of_ones():
    g = SpectGeometry.dual_head(stops_per_head=3, matrix=16, radius_mm=60.0)
    model = SpectModel(g, g.image_grid(), psf=True, dtype=torch.float64)
    ones = torch.ones(model.out_shape, dtype=torch.float64)
    assert torch.allclose(model.sensitivity(), model.adjoint(ones))


def _point_profile_fwhm(model, point_index, view):
    x = torch.zeros(model.grid.shape, dtype=torch.float64)
    x[point_index] = 1.0
    p = model.forward(x, [view])[0].numpy()
    px_row, px_col = model.geometry.pixel_mm
    fw = []
    for axis, px in ((1, px_col), (0, px_row)):
        prof = p.sum(axis=1 - axis)
        c = np.arange(prof.size)
        mean = (prof * c).sum() / prof.sum()
        var = (prof * (c - mean) ** 2).sum() / prof.sum()
        fw.append(math.sqrt(var) * px * 2 * math.sqrt(2 * math.log(2)))
    return fw, p


@pytest.mark.parametrize("distance_mm", [100.0, 200.0])
@pytest.mark.parametrize("angle", [0.0, 90.0, 45.0])
def test_point_source_fwhm_in_air(distance_mm, angle):
    """FWHM of a point in air at 10 and 20 cm matches the collimator model within 5 %."""
    coll = Collimator.lehr()
    g = SpectGeometry(angles_deg=[angle], radii_mm=[distance_mm], n_rows=32, n_cols=64, pixel_mm=(2.0, 2.0))
    model = SpectModel(g, g.image_grid(), collimator=coll, dtype=torch.float64)
    (fw_col, fw_row), p = _point_profile_fwhm(model, (16, 32, 32), 0)  # voxel centre 1 mm off-axis
    expected = coll.fwhm_mm(distance_mm + _depth_of(g, model.grid, (16, 32, 32)))
    assert fw_col == pytest.approx(expected, rel=0.05)
    assert fw_row == pytest.approx(expected, rel=0.05)
    assert p.sum() == pytest.approx(1.0, rel=0.02)  # a unit source in air projects to ≈ 1 per view


def _depth_of(g, grid, index):
    xyz = grid.index_to_world(np.array(index, dtype=float))
    return float(-(xyz[:2] @ g.detector_normals()[0]))


def test_lehr_resolution_numbers():
    """Effective-length model reproduces the published LEHR numbers (≈ 7.5 mm at 10 cm)."""
    c = Collimator.lehr()
    assert 3.5 < c.fwhm_mm(0.0) < 4.5
    assert c.fwhm_mm(100.0) == pytest.approx(7.5, abs=0.6)
    assert 12.5 < c.fwhm_mm(250.0) < 14.5
    sens = c.sensitivity_cps_per_mbq()
    assert 50 < sens < 130  # data sheet: 91 cps/MBq


def test_water_cylinder_attenuation_matches_exp_mu_chord():
    """A point at the centre of a water cylinder: attenuated/unattenuated = exp(−μ R) within 2 %."""
    g = SpectGeometry.dual_head(stops_per_head=4, matrix=96, radius_mm=150.0, pixel_mm=2.0)
    g = g.subset([0, 1, 2, 5])
    g.n_rows = 8
    grid = g.image_grid()
    mu_water = 0.01538
    radius = 70.0
    zz, yy, xx = np.meshgrid(*grid.axis_coordinates(), indexing="ij")
    # partial-volume cylinder (4×4 sub-samples per voxel) so the edge is not a staircase
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    frac = np.zeros(grid.shape, dtype=np.float64)
    for a in sub:
        for b in sub:
            frac += (np.hypot(xx + a * 2.0, yy + b * 2.0) <= radius) / 16.0
    mu = grid.with_data((mu_water * frac).astype(np.float32), unit="1/mm")
    x = np.zeros(grid.shape)
    x[4, 48, 48] = 1.0  # voxel centre at (1, 1) mm from the axis
    att = SpectModel(g, grid, mu=mu, dtype=torch.float64).forward(x).sum(dim=(1, 2)).numpy()
    air = SpectModel(g, grid, dtype=torch.float64).forward(x).sum(dim=(1, 2)).numpy()
    centre = grid.index_to_world(np.array([4.0, 48.0, 48.0]))[:2]
    for v in range(g.n_views):
        n = g.detector_normals()[v]
        # chord from the point to the cylinder edge towards the detector
        b = centre @ n
        chord = -b + math.sqrt(b * b - (centre @ centre - radius ** 2))
        assert att[v] / air[v] == pytest.approx(math.exp(-mu_water * chord), rel=0.02)


def test_column_and_row_conventions():
    """Anterior view: patient left (+x) → higher column; head (+z) → row 0 side; 90° view looks from the right."""
    g = SpectGeometry(angles_deg=[0.0, 90.0, 180.0], radii_mm=[200.0] * 3, n_rows=16, n_cols=32, pixel_mm=(4.0, 4.0))
    grid = g.image_grid()
    model = SpectModel(g, grid, psf=False, dtype=torch.float64)
    x = np.zeros(grid.shape)
    k, j, i = 12, 16, 24  # superior, on y≈0, patient left
    x[k, j, i] = 1.0
    pos = grid.index_to_world(np.array([k, j, i], dtype=float))
    p = model.forward(x).numpy()
    r0, c0 = np.unravel_index(p[0].argmax(), p[0].shape)
    assert r0 == g.n_rows - 1 - k  # row 0 is the most superior
    assert (c0 - (g.n_cols - 1) / 2) * 4.0 == pytest.approx(pos[0], abs=2.0)
    _, c2 = np.unravel_index(p[2].argmax(), p[2].shape)
    assert (c2 - (g.n_cols - 1) / 2) * 4.0 == pytest.approx(-pos[0], abs=2.0)  # posterior view mirrors x
    _, c1 = np.unravel_index(p[1].argmax(), p[1].shape)
    assert (c1 - (g.n_cols - 1) / 2) * 4.0 == pytest.approx(-pos[1], abs=2.0)
    np.testing.assert_allclose(g.detector_normals()[1], [-1.0, 0.0], atol=1e-12)  # 90° = patient right


def test_bad_inputs_raise():
    g = SpectGeometry.dual_head(stops_per_head=2, matrix=16, radius_mm=60.0)
    grid = g.image_grid()
    other = g.image_grid(n_slices=8)
    with pytest.raises(GeometryError):
        SpectModel(g, grid, mu=other.with_data(other.data, unit="1/mm"))
    with pytest.raises(InputError):
        SpectModel(g, grid, mu=grid.with_data(np.full(grid.shape, np.nan, np.float32), unit="1/mm"))
    with pytest.raises(InputError):
        SpectModel(g, grid, mu=grid.with_data(np.full(grid.shape, 15.0, np.float32), unit="1/mm"))
    with pytest.raises(GeometryError):
        SpectModel(g, SpectGeometry.dual_head(stops_per_head=2, matrix=20).image_grid())
    model = SpectModel(g, grid)
    with pytest.raises(InputError):
        model.forward(np.zeros((3, 3, 3)))
    with pytest.raises(InputError):
        model.forward(np.zeros(grid.shape), views=[99])


def test_fewer_slices_map_to_central_rows():
    g = SpectGeometry.dual_head(stops_per_head=2, matrix=16, radius_mm=60.0)
    full, part = g.image_grid(), g.image_grid(n_slices=8)
    x = np.zeros(part.shape)
    x[3, 8, 8] = 1.0
    xf = np.zeros(full.shape)
    xf[7, 8, 8] = 1.0  # same world position on the full grid
    np.testing.assert_allclose(part.index_to_world(np.array([3, 8, 8.0])), full.index_to_world(np.array([7, 8, 8.0])))
    pa = SpectModel(g, part, dtype=torch.float64).forward(x)
    pf = SpectModel(g, full, dtype=torch.float64).forward(xf)
    assert torch.allclose(pa, pf, atol=1e-12)
