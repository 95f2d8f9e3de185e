"""SPECT simulation: absolute counts, decay, scatter, noise, planar statics and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spectct.errors import GeometryError, InputError
from spectct.physics.collimator import Collimator
from spectct.physics.materials import get_material
from spectct.physics.radionuclide import TC99M
from spectct.spect.geometry import SpectGeometry
from spectct.spect.projector import SpectModel
from spectct.spect.scatter_model import ScatterModel
from spectct.spect.simulate import (
    StudyAcquisition,
    activity_from_relative,
    scatter_to_primary_ratio,
    simulate_planar,
    simulate_spect,
)


def _geometry(radius=120.0, stops=2, matrix=32, pixel=4.0, time_s=20.0):
    g = SpectGeometry.dual_head(stops_per_head=stops, matrix=matrix, pixel_mm=pixel, radius_mm=radius,
                                time_per_stop_s=time_s)
    g.n_rows = 8
    return g


def _cylinder(grid, radius_mm, value):
    zz, yy, xx = np.meshgrid(*grid.axis_coordinates(), indexing="ij")
    return grid.with_data(((np.hypot(xx, yy) <= radius_mm) * value).astype(np.float32))


def _phantom(g, radius_mm=60.0, conc=1000.0):
    grid = g.image_grid()
    act = _cylinder(grid, radius_mm, conc)
    act.unit = "Bq/mL"
    mu = _cylinder(grid, radius_mm, 0.01536)
    mu.unit = "1/mm"
    return act, mu


def test_point_in_air_gives_absolute_counts():
    """A 1 MBq point in air for 20 s: counts = A·T·ε·f_peak (no attenuation, no scatter)."""
    g = _geometry()
    grid = g.image_grid()
    act = grid.with_data(np.zeros(grid.shape, np.float32), unit="Bq/mL")
    act.data[4, 16, 16] = 1e6 / grid.voxel_volume_ml
    mu = grid.with_data(np.zeros(grid.shape, np.float32), unit="1/mm")
    p = simulate_spect(act, mu, g, oversample=1, noise=False)
    coll = Collimator.lehr()
    f_peak = ScatterModel().primary_fraction(g.windows[0], 140.511)
    decays = 1e6 * 20.0 * TC99M.mean_activity_factor(20.0)
    expected = decays * coll.counts_per_decay(0.89) * f_peak
    assert p.window("photopeak")[0].sum() == pytest.approx(expected, rel=0.01)
    # the per-head sensitivity this implies, against the data sheet's 91 cps/MBq
    assert 55 < p.window("photopeak")[0].sum() / 20.0 < 110


def test_counts_scale_with_activity_time_and_decay():
    g = _geometry(stops=4)
    act, mu = _phantom(g)
    base = simulate_spect(act, mu, g, oversample=1, noise=False).counts
    double = simulate_spect(act.with_data(act.data * 2), mu, g, oversample=1, noise=False).counts
    np.testing.assert_allclose(double, 2 * base, rtol=1e-5)
    g40 = _geometry(stops=4, time_s=40.0)
    longer = simulate_spect(act, mu, g40, oversample=1, noise=False).counts
    lam = TC99M.decay_constant
    # same view (stop 0): decays in 40 s vs 20 s from the same start
    ratio = (1 - math.exp(-lam * 40)) / (1 - math.exp(-lam * 20))
    np.testing.assert_allclose(longer[:, :2].sum(), base[:, :2].sum() * ratio, rtol=1e-5)
    # later stops decay: view 4 (head 0, stop 2, 90°) starts 40 s after view 0 (0°); both are axis-aligned
    # views of a centred cylinder, so their ratio is the decay factor
    per_view = base[0].sum(axis=(1, 2))
    assert per_view[4] / per_view[0] == pytest.approx(math.exp(-lam * 40.0), rel=2e-4)


def test_scatter_to_primary_ratio_published_range_and_depth():
    """SPR in the photopeak for a thigh-sized (15 cm) water cylinder lies in the published range for
    Tc-99m (≈0.1–0.5); it grows with the size of the body and is zero in air."""
    g = _geometry(stops=2, matrix=48)
    grid = g.image_grid()
    x = np.zeros(grid.shape, np.float32)
    x[:, 24, 24] = 1.0  # line source on the axis
    sprs = []
    for radius in (50.0, 75.0, 90.0):
        model = SpectModel(g, grid, mu=_cylinder(grid, radius, 0.01536).with_data(
            _cylinder(grid, radius, 0.01536).data, unit="1/mm"))
        sprs.append(scatter_to_primary_ratio(model, x))
    assert 0.15 < sprs[1] < 0.5
    assert sprs[0] < sprs[1] < sprs[2]
    uniform = _cylinder(grid, 75.0, 1.0).data
    model = SpectModel(g, grid, mu=_cylinder(grid, 75.0, 0.01536).with_data(
        _cylinder(grid, 75.0, 0.01536).data, unit="1/mm"))
    assert 0.08 < scatter_to_primary_ratio(model, uniform) < sprs[1]
    assert scatter_to_primary_ratio(SpectModel(g, grid), x) == pytest.approx(0.0, abs=1e-9)


def test_scatter_windows_and_tew():
    """Lower window holds scatter, upper window little; the TEW trapezoid applied to the lower window's
    scatter estimates the photopeak scatter within 50 % (the spectrum is consistent with TEW)."""
    g = _geometry(stops=2, matrix=32)
    act, mu = _phantom(g, radius_mm=60.0)
    full = simulate_spect(act, mu, g, oversample=1, noise=False)
    no_scatter = ScatterModel(broad_mu_water_per_cm=get_material("water").mu(140.511) * 10.0)
    prim = simulate_spect(act, mu, g, oversample=1, noise=False, scatter=no_scatter)
    s_peak = full.window("photopeak").sum() - prim.window("photopeak").sum()
    s_lower = full.window("lower").sum() - prim.window("lower").sum()
    s_upper = full.window("upper").sum() - prim.window("upper").sum()
    assert s_peak > 0 and s_lower > 10 * s_upper >= 0
    w = {x.name: x.width_kev for x in g.windows}
    tew = (s_lower / w["lower"] + s_upper / w["upper"]) * w["photopeak"] / 2
    assert 0.5 < tew / s_peak < 1.5
    # primaries leak into the abutting windows through the energy resolution (9.9 % FWHM)
    assert prim.window("lower").sum() > 0.01 * prim.window("photopeak").sum()


def test_same_seed_same_counts():
    g = _geometry()
    act, mu = _phantom(g)
    a = simulate_spect(act, mu, g, rng=7, oversample=1).counts
    b = simulate_spect(act, mu, g, rng=np.random.default_rng(7), oversample=1).counts
    c = simulate_spect(act, mu, g, rng=8, oversample=1).counts
    assert a.dtype == np.int32 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.sum() > 1000


def test_oversampled_matches_coarse_totals():
    g = _geometry()
    act, mu = _phantom(g)
    coarse = simulate_spect(act, mu, g, oversample=1, noise=False).counts.sum(axis=(2, 3))
    fine = simulate_spect(act, mu, g, oversample=2, noise=False).counts.sum(axis=(2, 3))
    np.testing.assert_allclose(fine, coarse, rtol=0.05)


def test_bad_inputs():
    g = _geometry()
    act, mu = _phantom(g)
    with pytest.raises(InputError, match="negative"):
        simulate_spect(act.with_data(act.data - 1.0), mu, g)
    with pytest.raises(InputError, match="NaN"):
        simulate_spect(act.with_data(np.where(act.data > 0, np.nan, 0).astype(np.float32)), mu, g)
    other = SpectGeometry.dual_head(stops_per_head=2, matrix=16, pixel_mm=4.0).image_grid()
    with pytest.raises(GeometryError):
        simulate_spect(act, other.with_data(other.data, unit="1/mm"), g)
    with pytest.raises(GeometryError, match="inside the body"):
        simulate_spect(act, mu, _geometry(radius=40.0))


def test_activity_from_relative_and_protocol():
    g = _geometry()
    rel = _cylinder(g.image_grid(), 60.0, 2.0)
    acq = StudyAcquisition()
    bq = activity_from_relative(rel, acq.injected_activity_bq, acq.delay_s, acq.fraction_in_fov)
    total = bq.data.astype(np.float64).sum() * bq.voxel_volume_ml
    assert total == pytest.approx(330e6 * 0.5 ** (3 / 6.0067) * 0.05, rel=1e-5)
    assert bq.unit == "Bq/mL"
    d = acq.to_dict()
    assert d["injected_activity_bq"] == 330e6 and d["scatter"]["broad_mu_water_per_cm"] == 0.12
    with pytest.raises(InputError):
        activity_from_relative(rel, -1.0, 0.0, 0.1)


def test_planar_anterior_brighter_for_anterior_source():
    g = _geometry(matrix=32)
    grid = g.image_grid()
    act, mu = _phantom(g, radius_mm=50.0, conc=0.0)
    act.data[4, 6, 16] = 1e7  # anterior (−y) point inside the cylinder
    out = simulate_planar(act, mu, matrix=(16, 32), pixel_mm=4.0, time_s=60.0, rng=3)
    assert out["anterior"].shape == (16, 32) and out["posterior"].shape == (16, 32)
    assert out["anterior"].sum() > 1.5 * out["posterior"].sum()
    assert grid.shape[1] == 32


def test_planar_png(tmp_path):
    from spectct.spect.planar import display_levels, write_planar_png

    img = np.zeros((20, 30))
    img[5, 5] = 1000.0
    img[10:15, 10:20] = 10.0
    lo, hi = display_levels(img)
    assert lo == 0.0 and 10.0 <= hi < 1000.0  # a single hot pixel does not set the scale
    path = write_planar_png(img, tmp_path / "anterior.png", "anterior")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError):
        display_levels(np.full((3, 3), np.nan))


def _tiny_study(tmp_path, activity_value=1.0):
    from spectct.phantom.model import Component, Phantom
    from spectct.volume import Volume

    lab = Volume.from_bounds((-60.0, -60.0, -20.0), (60.0, 60.0, 20.0), 4.0, unit="label", dtype=np.int16)
    zz, yy, xx = np.meshgrid(*lab.axis_coordinates(), indexing="ij")
    lab.data[np.hypot(xx, yy) <= 50.0] = 1
    act = lab.with_data((lab.data > 0).astype(np.float32) * activity_value, unit="relative")
    comps = [Component(1, "thigh", "muscle", "muscle", activity=1.0)]
    ph = Phantom(labels=lab, activity=act, components=comps)
    ph.save(tmp_path / "truth")
    return tmp_path


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path):
    import subprocess
    import sys

    from spectct.spect.acquire import run_simulate_spect

    study = _tiny_study(tmp_path, activity_value=-1.0)
    with pytest.raises(InputError, match="activity.nii.gz: activity has negative"):
        run_simulate_spect(study)
    assert not (study / "spect").exists() and not (study / "planar").exists()
    study2 = _tiny_study(tmp_path / "b")
    with pytest.raises(GeometryError, match="inside the body"):
        run_simulate_spect(study2, radius_mm=30.0)
    assert not (study2 / "spect").exists()
    out = subprocess.run([sys.executable, "-m", "spectct", "simulate-spect", str(study), "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "negative" in out.stderr
    assert not (study / "spect").exists() and not (study / "protocol.json").exists()


@pytest.mark.slow
def test_cli_writes_study_outputs(tmp_path):
    """The full case acquisition on a small phantom: Interfile per window, planar PNG/NPY, protocol."""
    import json

    from spectct.io.interfile import read_projections_interfile
    from spectct.spect.acquire import run_simulate_spect

    study = _tiny_study(tmp_path)
    doc = run_simulate_spect(study, oversample=1, planar_time_s=60.0)
    for name in ("photopeak", "lower", "upper"):
        assert (study / "spect" / "projections" / f"projections_{name}.hs").is_file()
    proj = read_projections_interfile(study / "spect" / "projections" / "projections_photopeak.hs")
    assert proj.counts.shape[-3:] == (120, 128, 128)
    assert proj.counts.sum() == doc["counts_per_window"]["photopeak"]
    for name in ("anterior", "posterior"):
        assert (study / "planar" / f"{name}.png").is_file() and (study / "planar" / f"{name}.npy").is_file()
    acq = json.loads((study / "spect" / "acquisition.json").read_text())
    assert acq["acquisition"]["injected_activity_bq"] == 330e6
    assert "simulate-spect" in json.loads((study / "protocol.json").read_text())["stages"]
