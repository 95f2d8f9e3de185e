import math

import pytest
import xraylib

from spectct.errors import InputError
from spectct.physics.materials import MATERIALS, get_material
from spectct.physics.radionuclide import TC99M, get_radionuclide


def test_water_mu_at_tc99m():
    assert get_material("water").mu(140.5) == pytest.approx(0.0154, rel=0.01)


def test_titanium_alloy_follows_xraylib():
    ti = get_material("ti6al4v")
    ref = 4.43 * sum(w * xraylib.CS_Total(xraylib.SymbolToAtomicNumber(s), 70.0)
                     for s, w in (("Ti", 0.90), ("Al", 0.06), ("V", 0.04))) / 10
    assert ti.mu(70.0) == pytest.approx(ref, rel=0.02)
    pure_ti = 4.506 * xraylib.CS_Total(22, 70.0) / 10
    assert ti.mu(70.0) == pytest.approx(pure_ti * 4.43 / 4.506, rel=0.1)


def test_material_ordering_is_physical():
    e = 70.0
    mu = {n: m.mu(e) for n, m in MATERIALS.items()}
    assert mu["air"] < mu["adipose"] < mu["water"] < mu["muscle"] < mu["cortical_bone"] < mu["ti6al4v"]
    assert mu["ti6al4v"] < mu["steel_316l"]
    assert mu["yellow_marrow"] < mu["red_marrow"] < mu["trabecular_bone"]


def test_unknown_material():
    with pytest.raises(InputError, match="unknown material"):
        get_material("unobtainium")


def test_decay_after_three_hours():
    f = TC99M.decay_factor(3 * 3600)
    assert f == pytest.approx(2 ** (-3 / 6.0067), rel=1e-9)
    assert f == pytest.approx(0.7071, abs=2e-3)
    assert get_radionuclide("99mTc") is TC99M
    decays = TC99M.decays_during(1e6, 20.0)
    assert decays == pytest.approx(1e6 * 20 * (1 - TC99M.decay_constant * 10), rel=1e-6)
    assert math.isclose(TC99M.main_energy_kev, 140.511)
