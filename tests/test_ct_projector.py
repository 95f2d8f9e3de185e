"""Fan-beam projector and FBP: exact adjoint, line integrals and recovered values against truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectct.ct.fbp import fbp, hu_to_mu, mu_to_hu
from spectct.ct.geometry import CtGeometry
from spectct.ct.projector import FanBeamProjector
from spectct.errors import GeometryError, InputError


def _disc(n: int, h: float, radius: float, value: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    c = (np.arange(n) - (n - 1) / 2) * h
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return (((xx - cx) ** 2 + (yy - cy) ** 2) < radius**2).astype(np.float64) * value


def test_geometry_defaults_cover_field():
    g = CtGeometry()
    assert g.scan_field_radius_mm >= 250.0
    s = g.scaled(n_views=90, n_channels=128)
    assert s.n_views == 90 and s.n_channels == 128
    assert s.scan_field_radius_mm == pytest.approx(g.scan_field_radius_mm, rel=1e-9)
    assert np.allclose(np.diff(g.angles_rad()), 2 * np.pi / 1152)
    assert CtGeometry.from_dict(g.to_dict()) == g


def test_geometry_rejects_bad_values():
    with pytest.raises(InputError, match="kV"):
        CtGeometry(kvp=160)
    with pytest.raises(GeometryError):
        CtGeometry(n_channels=100)  # fan far too narrow for 500 mm at the default pitch


@pytest.mark.parametrize("offset", [0.0, 0.25])
def test_adjoint_dot_product(offset):
    g = CtGeometry(detector_offset_channels=offset).scaled(n_views=45, n_channels=96)
    p = FanBeamProjector(g, 40, 7.0)
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.random((3, 40, 40)))
    y = torch.as_tensor(rng.random((3, 45, 96)))
    lhs = float((p.forward(x) * y).sum())
    rhs = float((x * p.adjoint(y)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_forward_line_integrals_of_off_centre_disc():
    """Every view sees the chord lengths of a disc: max chord = diameter × μ, and the integral over
    the fan angle is area × μ / (distance from the source to the disc), view by view."""
    g = CtGeometry().scaled(n_views=36, n_channels=368)
    n, h = 200, 1.25
    img = _disc(n, h, 40.0, 0.02, cx=30.0, cy=-20.0)
    s = FanBeamProjector(g, n, h).forward(img)[0].numpy()
    assert s.max(axis=1) == pytest.approx(np.full(36, 80 * 0.02), rel=0.02)
    beta = g.angles_rad()
    dist = np.hypot(30.0 - g.sid_mm * np.sin(beta), -20.0 + g.sid_mm * np.cos(beta))
    mass = s.sum(axis=1) * g.channel_pitch_rad * dist
    assert mass == pytest.approx(np.full(36, np.pi * 40**2 * 0.02), rel=0.01)


@pytest.mark.parametrize(("filt", "method"), [("ram-lak", "rebin"), ("shepp-logan", "rebin"),
                                              ("hann", "rebin"), ("hann", "fan")])
def test_fbp_recovers_disc_values(filt, method):
    g = CtGeometry().scaled(n_views=180, n_channels=368)
    n, h = 128, 500 / 128
    img = _disc(n, h, 150.0, 0.02) + _disc(n, h, 30.0, 0.01, cx=60.0)
    sino = FanBeamProjector(g, n, h).forward(img)
    rec = fbp(sino, g, n_pixels=n, pixel_mm=h, filter=filt, method=method).numpy()[0]
    c = (np.arange(n) - (n - 1) / 2) * h
    yy, xx = np.meshgrid(c, c, indexing="ij")
    centre = ((xx + 40) ** 2 + yy**2) < 25**2
    insert = ((xx - 60) ** 2 + yy**2) < 15**2
    outside = ((xx**2 + yy**2) > 170**2) & ((xx**2 + yy**2) < 240**2)
    assert rec[centre].mean() == pytest.approx(0.02, rel=0.01)
    assert rec[insert].mean() == pytest.approx(0.03, rel=0.02)
    assert abs(rec[outside].mean()) < 2e-4


def test_fbp_rejects_mismatched_sinogram_and_filter():
    g = CtGeometry().scaled(n_views=60, n_channels=128)
    with pytest.raises(InputError, match="shape"):
        fbp(np.zeros((2, 61, 128)), g, n_pixels=32, pixel_mm=10.0)
    with pytest.raises(InputError, match="filter"):
        fbp(np.zeros((1, 60, 128)), g, n_pixels=32, pixel_mm=10.0, filter="cosine-ish")
    with pytest.raises(InputError, match="NaN"):
        fbp(np.full((1, 60, 128), np.nan), g, n_pixels=32, pixel_mm=10.0)


def test_hu_round_trip():
    mu_w = 0.0186
    assert mu_to_hu(0.0, mu_w) == pytest.approx(-1000.0)
    assert mu_to_hu(mu_w, mu_w) == pytest.approx(0.0)
    hu = np.array([-1000.0, 0.0, 1200.0])
    assert np.allclose(mu_to_hu(hu_to_mu(hu, mu_w), mu_w), hu)


def _grid_sample_joseph(p: FanBeamProjector, img: torch.Tensor) -> torch.Tensor:
    """Independent reference: Joseph's samples drawn with bilinear ``grid_sample`` ray by ray."""
    import torch.nn.functional as F

    g, n, h = p.geometry, p.n_pixels, p.pixel_mm
    beta = torch.as_tensor(g.angles_rad(), dtype=torch.float64)[:, None]
    gamma = torch.as_tensor(g.fan_angles_rad(), dtype=torch.float64)[None, :]
    sx, sy = g.sid_mm * torch.sin(beta), -g.sid_mm * torch.cos(beta)
    dx, dy = -torch.sin(beta + gamma), torch.cos(beta + gamma)
    ym = dy.abs() >= dx.abs()
    du, dv = torch.where(ym, dy, dx), torch.where(ym, dx, dy)
    su, sv = torch.where(ym, sy, sx), torch.where(ym, sx, sy)
    s = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * h  # sample positions along the major axis
    v = sv[..., None] + (s - su[..., None]) * (dv / du)[..., None]  # the ray's other coordinate
    u = s.expand_as(v)
    x, y = torch.where(ym[..., None], v, u), torch.where(ym[..., None], u, v)
    grid = torch.stack([x, y], -1) / (h * (n - 1) / 2)  # mm -> normalised, align_corners=True
    out = F.grid_sample(img[None], grid.reshape(1, -1, n, 2).to(img.dtype), align_corners=True)
    return out[0].sum(-1).reshape(img.shape[0], *g.sinogram_shape) * (h / du.abs()).to(img.dtype)


def test_sparse_joseph_matches_grid_sample_reference():
    g = CtGeometry(detector_offset_channels=0.25).scaled(n_views=40, n_channels=120)
    p = FanBeamProjector(g, 48, 9.0)
    x = torch.as_tensor(np.random.default_rng(2).random((2, 48, 48)))
    ref = _grid_sample_joseph(p, x)
    assert torch.allclose(p.forward(x), ref, rtol=1e-9, atol=1e-12)
    assert torch.allclose(p.forward(x, views=[7, 3]), ref[:, [7, 3]], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_views, stored", [(40, 10), (42, 21), (41, 41)])  # quarter-, half-turn, none
def test_symmetric_matrix_stores_part_of_the_rotation_and_stays_exact(n_views, stored):
    """Views shared through quarter/half turns of the image give the independent reference, adjoint exact."""
    g = CtGeometry(detector_offset_channels=0.25, start_angle_rad=0.3).scaled(n_views=n_views, n_channels=90)
    p = FanBeamProjector(g, 40, 11.0)
    rng = np.random.default_rng(5)
    x = torch.as_tensor(rng.random((7, 40, 40)))  # more slices than one product holds
    y = torch.as_tensor(rng.random((7, n_views, 90)))
    assert p._full_matrix(torch.float64, False).shape[0] == stored * 90
    assert torch.allclose(p.forward(x), _grid_sample_joseph(p, x), rtol=1e-9, atol=1e-12)
    assert float((p.forward(x) * y).sum()) == pytest.approx(float((x * p.adjoint(y)).sum()), rel=1e-12)


def test_uncached_view_chunks_agree_and_stay_adjoint(monkeypatch):
    """The on-the-fly grid_sample path used for large geometries equals the cached matrix."""
    import spectct.ct.projector as proj_mod

    g = CtGeometry().scaled(n_views=30, n_channels=80)
    p = FanBeamProjector(g, 32, 12.0)
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.random((2, 32, 32)))
    y = torch.as_tensor(rng.random((2, 30, 80)))
    fwd, adj = p.forward(x), p.adjoint(y)
    monkeypatch.setattr(proj_mod, "_CACHE_NNZ", 0)
    monkeypatch.setattr(proj_mod, "work_elements", lambda device: 80 * 32 * 2)  # a view per chunk
    assert torch.allclose(p.forward(x), fwd, rtol=1e-10, atol=1e-13)
    adj2 = p.adjoint(y)
    assert torch.allclose(adj2, adj, rtol=1e-10, atol=1e-13)
    assert float((fwd * y).sum()) == pytest.approx(float((x * adj2).sum()), rel=1e-10)


def test_matrix_cache_is_bounded(monkeypatch):
    import spectct.ct.projector as proj_mod

    proj_mod.clear_matrix_cache()
    x = torch.ones((1, 16, 16))
    for nv in range(10, 10 + 2 * (proj_mod._CACHE_ENTRIES + 2), 2):
        FanBeamProjector(CtGeometry().scaled(n_views=nv, n_channels=64), 16, 20.0).forward(x)
    assert len(proj_mod._CACHE) == proj_mod._CACHE_ENTRIES
    monkeypatch.setattr(proj_mod, "_CACHE_TOTAL_NNZ", 1)
    FanBeamProjector(CtGeometry().scaled(n_views=99, n_channels=64), 16, 20.0).forward(x)
    assert len(proj_mod._CACHE) == 1  # only the newest survives a tiny budget
    proj_mod.clear_matrix_cache()


@pytest.mark.parametrize("offset", [0.0, 0.013])  # quarter-turn sharing on / off
def test_parallel_backprojection_matrix_matches_interpolation(offset):
    from spectct.ct.fbp import _backproject_on_the_fly, parallel_backproject

    theta = np.arange(60) * np.pi / 60 + offset
    q = torch.as_tensor(np.random.default_rng(4).normal(size=(3, 60, 90)))
    a = parallel_backproject(q, theta, 1.5, 40, 3.0, 0.25)
    b = _backproject_on_the_fly(q, theta, 1.5, 40, 3.0, 0.25)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_parallel_backprojection_of_constant_and_of_a_line():
    """Truth: constant projections back-project, view by view, to the weight where the pixel's
    t = x cos θ + y sin θ lies on the detector (|t| ≤ 20 mm), fading linearly to 0 over one sample
    beyond its edge; a single sample at t = 0 of the θ = 0 view paints the column x = 0."""
    from spectct.ct.fbp import parallel_backproject

    nm, nt, dt, n, h = 8, 21, 2.0, 30, 2.0  # detector reaches |t| ≤ 20 mm, the grid ±29 mm
    theta = np.arange(nm) * np.pi / nm
    img = parallel_backproject(torch.ones((1, nm, nt), dtype=torch.float64), theta, dt, n, h, 0.5)[0]
    c = (np.arange(n) - (n - 1) / 2) * h
    yy, xx = np.meshgrid(c, c, indexing="ij")
    t = np.abs(xx[None] * np.cos(theta)[:, None, None] + yy[None] * np.sin(theta)[:, None, None])
    expect = 0.5 * np.clip(1.0 - (t / dt - (nt - 1) / 2), 0.0, 1.0).sum(0)
    assert np.allclose(img.numpy(), expect, atol=1e-12)
    assert np.allclose(img.numpy()[np.hypot(xx, yy) < 19.0], 0.5 * nm)
    q = torch.zeros((1, 1, 11), dtype=torch.float64)
    q[0, 0, 5] = 1.0
    line = parallel_backproject(q, np.array([0.0]), 1.0, 9, 1.0, 1.0)[0].numpy()
    assert np.allclose(line[:, 4], 1.0) and np.allclose(np.delete(line, 4, axis=1), 0.0)


def test_empty_border_is_skipped_exactly(monkeypatch):
    """A body that leaves the field's border empty is projected on the inner grid: same line integrals."""
    g = CtGeometry().scaled(n_views=60, n_channels=160)
    p = FanBeamProjector(g, 96, 500 / 96)
    x = torch.zeros((2, 96, 96), dtype=torch.float64)
    x[:, 30:70, 20:80] = torch.as_tensor(np.random.default_rng(7).random((2, 40, 60)))
    assert p._empty_border(x) == 12  # 16 free pixels on the right, in steps of 96 // 16 = 6
    fast = p.forward(x)
    monkeypatch.setattr(FanBeamProjector, "_empty_border", lambda self, img: 0)
    assert torch.allclose(fast, FanBeamProjector(g, 96, 500 / 96).forward(x), rtol=1e-12, atol=1e-13)
