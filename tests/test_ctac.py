"""CTAC: HU → μ at 140.5 keV against the literature table, metal cap, μ-map resampling and overlap checks."""

from __future__ import annotations

import numpy as np
import pytest

from spectct.errors import GeometryError, InputError
from spectct.physics.materials import get_material
from spectct.spect.ctac import bilinear_coefficients, ct_to_mumap, effective_ct_energy, hu_to_mu
from spectct.volume import Volume

# PyTomography's scanner table (per HU, 1/cm), ../shared/PHYSICS.md: (kVp, a1 below 0, a2 above 0)
TABLE = [(110, 1.6335e-4, 9.775e-5), (130, 1.6364e-4, 1.0895e-4), (120, 1.6577e-4, 1.0386e-4)]


@pytest.mark.parametrize(("kvp", "a1", "a2"), TABLE)
def test_bilinear_coefficients_match_published_table(kvp, a1, a2):
    mu_w, s_low, s_high = bilinear_coefficients(kvp)
    assert mu_w * 10 == pytest.approx(0.1538, rel=0.01)  # water at 140.5 keV, 1/cm
    assert s_high * 10 == pytest.approx(a2, rel=0.05)
    # below 0 HU the transform is the air–water line: μ_water/1000 (the table's a1 is ~6 % higher)
    assert s_low * 10 == pytest.approx(a1, rel=0.08)


def test_effective_energy_rises_with_kvp():
    e = [effective_ct_energy(k) for k in (80, 110, 140)]
    assert e[0] < e[1] < e[2]
    assert 55 < e[1] < 85


def test_hu_to_mu_anchor_points_and_metal_cap():
    hu = Volume(np.array([[[-1000.0, 0.0, 1000.0, 30000.0]]], dtype=np.float32), spacing=(1, 1, 1), unit="HU")
    mu = hu_to_mu(hu, kvp=110).data[0, 0]
    water = get_material("water").mu(140.511)
    steel = get_material("steel_316l").mu(140.511)
    assert mu[0] == pytest.approx(get_material("air").mu(140.511), abs=1e-5)
    assert mu[1] == pytest.approx(water, rel=1e-5)
    # +1000 HU at 110 kVp is denser than water but well below cortical bone's HU (~1500)
    assert water < mu[2] < get_material("cortical_bone").mu(140.511)
    assert mu[3] == pytest.approx(steel, rel=1e-5)  # capped at the alloy's true μ
    uncapped = hu_to_mu(hu, kvp=110, metal=None).data[0, 0, 3]
    assert uncapped > 1.5 * steel
    with pytest.raises(InputError):
        hu_to_mu(hu, kvp=110, method="trilinear")


def _ct_cylinder(frame="1.2.3"):
    """A 1-mm CT of a water cylinder (radius 60 mm) with a cortical-bone rod, in HU."""
    ct = Volume.from_bounds((-80, -80, -40), (80, 80, 40), 1.0, unit="HU", frame_of_reference=frame)
    z, y, x = np.meshgrid(*ct.axis_coordinates(), indexing="ij")
    hu = np.full(ct.shape, -1000.0, dtype=np.float32)
    hu[(x**2 + y**2) < 60**2] = 0.0
    hu[((x - 25) ** 2 + y**2) < 10**2] = 1200.0
    return ct.with_data(hu)


def test_ct_to_mumap_resamples_with_smoothing():
    ct = _ct_cylinder()
    grid = Volume.from_bounds((-96, -96, -48), (96, 96, 48), 4.8, frame_of_reference="1.2.3")
    mu = ct_to_mumap(ct, grid, kvp=110)
    assert mu.unit == "1/mm" and mu.same_grid(grid)
    z, y, x = np.meshgrid(*grid.axis_coordinates(), indexing="ij")
    water = get_material("water").mu(140.511)
    inside = (((x + 25) ** 2 + y**2) < 15**2) & (np.abs(z) < 20)
    assert mu.data[inside].mean() == pytest.approx(water, rel=0.02)
    assert mu.data[(x**2 + y**2) > 75**2].max() < 0.1 * water
    rod = ((x - 25) ** 2 + y**2 < 4**2) & (np.abs(z) < 20)
    assert mu.data[rod].mean() > 1.2 * water
    # total attenuation ∫μ is preserved by smoothing + resampling (within the fill-in at the edges)
    central = np.abs(z) < 30
    ct_mu = hu_to_mu(ct, 110)
    zc = np.meshgrid(*ct.axis_coordinates(), indexing="ij")[0]
    ratio = (mu.data[central].sum() * grid.voxel_volume_ml) / (
        ct_mu.data[np.abs(zc) < 30].sum() * ct.voxel_volume_ml
    )
    assert ratio == pytest.approx(1.0, rel=0.05)


def test_ct_to_mumap_geometry_errors():
    ct = _ct_cylinder()
    far = Volume.from_bounds((500, 500, 500), (600, 600, 600), 4.8, frame_of_reference="1.2.3")
    with pytest.raises(GeometryError, match="overlap"):
        ct_to_mumap(ct, far, kvp=110)
    other = Volume.from_bounds((-96, -96, -48), (96, 96, 48), 4.8, frame_of_reference="9.9.9")
    with pytest.raises(GeometryError, match="frame of reference"):
        ct_to_mumap(ct, other, kvp=110)


def test_metal_streaks_change_the_mumap_and_mar_removes_the_change():
    """Bright/dark streaks beside a steel rod (as without MAR) perturb μ near the rod; a CT with the
    streaks removed (as with MAR) agrees with the clean μ-map except at the metal itself."""
    from spectct.spect.ctac import mumap_change

    clean = _ct_cylinder()
    z, y, x = np.meshgrid(*clean.axis_coordinates(), indexing="ij")
    rod = ((x + 20) ** 2 + y**2) < 4**2
    hu_mar = clean.data.copy()
    hu_mar[rod] = 12000.0
    hu_streak = hu_mar.copy()
    band = (np.abs(y) < 3) & ~rod & ((x**2 + y**2) < 60**2)
    hu_streak[band & (x > -20)] += 800.0
    hu_streak[band & (x < -20)] -= 600.0
    grid = Volume.from_bounds((-96, -96, -48), (96, 96, 48), 4.8, frame_of_reference="1.2.3")
    mu_mar = ct_to_mumap(clean.with_data(hu_mar), grid, kvp=110)
    mu_streak = ct_to_mumap(clean.with_data(hu_streak), grid, kvp=110)
    mu_clean = ct_to_mumap(clean, grid, kvp=110)
    with_streaks = mumap_change(mu_clean, mu_streak)
    with_mar = mumap_change(mu_clean, mu_mar)
    assert with_streaks["changed_voxels"] > 3 * max(1, with_mar["changed_voxels"])
    # the metal stays capped at steel's μ: the μ-map near the rod never exceeds it
    assert mu_mar.data.max() <= get_material("steel_316l").mu(140.511) + 1e-6
    with pytest.raises(GeometryError):
        mumap_change(mu_clean, _ct_cylinder())
