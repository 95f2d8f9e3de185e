"""TEW / DEW scatter estimates: formulas, window selection, a linear scatter spectrum, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from spectct.errors import InputError
from spectct.spect.geometry import EnergyWindow, Projections, SpectGeometry, tc99m_windows
from spectct.spect.scatter import adjacent_windows, dew, dew_estimate, tew, tew_estimate


def _projections(windows, counts_per_window):
    g = SpectGeometry.dual_head(stops_per_head=2, matrix=4, windows=windows)
    counts = np.stack([np.full((g.n_views, 4, 4), c, dtype=np.float32) for c in counts_per_window])
    return Projections(counts, g)


def test_tew_formula_by_hand():
    lo = np.full((2, 3, 3), 40.0)
    up = np.full((2, 3, 3), 10.0)
    s = tew_estimate(lo, up, 4.0, 5.0, 21.0)
    assert s.dtype == np.float32
    assert np.allclose(s, (40 / 4 + 10 / 5) * 21 / 2)
    assert np.allclose(tew_estimate(lo, None, 4.0, None, 21.0), 40 / 4 * 21 / 2)
    assert np.allclose(dew_estimate(lo, 4.0, 21.0, k=0.5), 0.5 * 40 * 21 / 4)


def test_tew_is_exact_for_a_linear_scatter_spectrum():
    """Scatter with a linear energy density: TEW's trapezoid matches the true integral under the peak
    up to the windows' finite width (narrow windows → within 1 %)."""
    peak, lower, upper = tc99m_windows()

    def density(e):  # scatter counts per keV, falling with energy
        return 50.0 - 0.3 * (e - 100.0)

    def integral(w):
        e = np.linspace(w.lower_kev, w.upper_kev, 2001)
        return np.trapezoid(density(e), e)

    proj = _projections((peak, lower, upper), [integral(peak) + 1000.0, integral(lower), integral(upper)])
    est = tew(proj)
    assert est.shape == (4, 4, 4)
    assert est.mean() == pytest.approx(integral(peak), rel=0.01)
    # DEW with the classic k = 0.5 is not exact for this spectrum but of the right size
    assert 0.3 < dew(proj, k=0.5).mean() / integral(peak) < 1.2


def test_adjacent_windows_for_lu177_six_window_file():
    wins = (
        EnergyWindow("w1", 101.7, 124.3),
        EnergyWindow("w2", 187.2, 228.8),
        EnergyWindow("w3", 229.63, 251.16),
        EnergyWindow("w4", 166.89, 186.31),
        EnergyWindow("w5", 124.32, 134.68),
        EnergyWindow("w6", 91.2, 100.8),
    )
    proj = _projections(wins, [1, 2, 3, 4, 5, 6])
    assert adjacent_windows(proj, peak=208.0) == (1, 3, 2)
    assert adjacent_windows(proj, peak=113.0) == (0, 5, 4)
    assert adjacent_windows(proj, peak="w2") == (1, 3, 2)
    with pytest.raises(InputError, match="no energy window"):
        adjacent_windows(proj, peak=300.0)


def test_scatter_rejects_bad_counts_and_missing_windows():
    with pytest.raises(InputError, match="negative"):
        tew_estimate(-np.ones((1, 2, 2)), None, 4.0, None, 20.0)
    with pytest.raises(InputError, match="NaN"):
        dew_estimate(np.full((1, 2, 2), np.nan), 4.0, 20.0)
    peak_only = _projections((EnergyWindow("photopeak", 130, 151),), [10])
    with pytest.raises(InputError, match="below the photopeak"):
        tew(peak_only)


def test_tew_smoothing_keeps_total():
    rng = np.random.default_rng(0)
    lo = rng.poisson(20.0, size=(3, 16, 16)).astype(float)
    up = rng.poisson(5.0, size=(3, 16, 16)).astype(float)
    raw = tew_estimate(lo, up, 4.2, 4.2, 21.0)
    smooth = tew_estimate(lo, up, 4.2, 4.2, 21.0, smooth_fwhm_px=4.0)
    assert smooth.sum() == pytest.approx(raw.sum(), rel=1e-3)
    assert smooth.std() < 0.5 * raw.std()
