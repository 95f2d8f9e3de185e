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
