"""X-ray tube spectra from spekpy, and the effective energy of a CT beam.

Spectra come from SpekPy (G. Poludniowski, A. Omar, R. Bujila, P. Andreo, "SpekPy v2.0 — a software
toolkit for modeling x-ray tube spectra", Med. Phys. 48 (2021) 3630–3637), a tungsten-anode model
validated against measured diagnostic spectra.

The default filtration — 3.0 mm Al plus a 0.9 mm titanium flat filter behind a 7° tungsten anode —
is a nominal CT beam: at 110 kV it gives a first half-value layer of ≈ 7.6 mm Al, in the 6–9 mm Al
range reported for clinical multi-slice CT beams (e.g. J. M. Boone, "Method for evaluating bow tie
filter angle-dependent attenuation in CT", Med. Phys. 37 (2010) 40–48; A. C. Turner et al.,
Med. Phys. 36 (2009) 2154–2164).  The exact filtration of the case's scanner is not published.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from spectct.errors import InputError
from spectct.physics.materials import get_material

#: nominal CT filtration (material, thickness in mm), see the module docstring.
CT_FILTRATION: tuple[tuple[str, float], ...] = (("Al", 3.0), ("Ti", 0.9))
CT_ANODE_ANGLE_DEG = 7.0
KVP_RANGE = (70.0, 150.0)


def tube_spectrum(kvp: float = 110.0, filtration: tuple[tuple[str, float], ...] = CT_FILTRATION,
                  anode_angle: float = CT_ANODE_ANGLE_DEG,
                  bin_kev: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Photon spectrum of a tungsten tube.

    Parameters
    ----------
    kvp : tube voltage, 70–150 kV.
    filtration : ``(material, mm)`` pairs as spekpy names them (``"Al"``, ``"Ti"``, ``"Cu"`` …).
    anode_angle : target angle in degrees.
    bin_kev : width of the energy bins.

    Returns
    -------
    energies_kev : mid-bin energies (float64).
    fluence : photons per mm² per mAs at 1 m from the focal spot in each bin (not per keV).
    """
    if not (KVP_RANGE[0] <= kvp <= KVP_RANGE[1]):
        raise InputError(f"tube voltage {kvp} kV is outside the CT range "
                         f"{KVP_RANGE[0]:g}–{KVP_RANGE[1]:g} kV")
    if not bin_kev > 0 or not anode_angle > 0:
        raise InputError(f"spectrum bin width and anode angle must be positive, got {bin_kev}, {anode_angle}")
    filt = tuple((str(m), float(t)) for m, t in filtration)
    k, f = _spekpy_spectrum(float(kvp), filt, float(anode_angle), float(bin_kev))
    return k.copy(), f.copy()


@lru_cache(maxsize=32)
def _spekpy_spectrum(kvp: float, filtration: tuple[tuple[str, float], ...], anode_angle: float,
                     bin_kev: float) -> tuple[np.ndarray, np.ndarray]:
    import spekpy

    try:
        spec = spekpy.Spek(kvp=kvp, th=anode_angle, dk=bin_kev, z=100.0, mas=1.0)
        if filtration:
            spec.multi_filter(filtration)
        k, per_cm2 = spec.get_spectrum(diff=False)  # photons per cm² per bin at 1 m for 1 mAs
    except Exception as exc:  # spekpy raises plain Exceptions for unknown filter materials etc.
        raise InputError(f"spekpy could not model kVp={kvp}, filtration={filtration}: {exc}") from None
    return np.asarray(k, dtype=np.float64), np.asarray(per_cm2, dtype=np.float64) / 100.0


def detected_weights(energies_kev: np.ndarray, fluence: np.ndarray) -> np.ndarray:
    """Normalised weights of an energy-integrating detector: ``E Φ(E) / Σ E Φ(E)``."""
    w = np.asarray(energies_kev) * np.asarray(fluence)
    return w / w.sum()


def water_effective_mu(kvp: float = 110.0, water_mm: float = 200.0,
                       filtration: tuple[tuple[str, float], ...] = CT_FILTRATION,
                       anode_angle: float = CT_ANODE_ANGLE_DEG) -> float:
    """Effective water attenuation ``−ln(S(L)/S(0)) / L`` (1/mm) of the energy-integrated beam.

    ``S(L)`` is the energy-weighted detector signal behind ``L = water_mm`` of water; ``L → 0`` gives
    the initial slope (the unhardened beam).
    """
    k, f = tube_spectrum(kvp, filtration, anode_angle)
    w = detected_weights(k, f)
    mu = np.asarray(get_material("water").mu(k))
    if water_mm <= 0:
        return float((w * mu).sum())
    return float(-np.log((w * np.exp(-mu * water_mm)).sum()) / water_mm)


def effective_energy(kvp: float = 110.0, water_mm: float = 200.0,
                     filtration: tuple[tuple[str, float], ...] = CT_FILTRATION,
                     anode_angle: float = CT_ANODE_ANGLE_DEG) -> float:
    """Energy (keV) of the monoenergetic beam that water attenuates like this spectrum.

    The energy ``E`` where ``μ_water(E)`` equals :func:`water_effective_mu` behind ``water_mm`` of
    water (200 mm: a typical patient cross-section, so the hardened beam a scanner's water calibration
    sees).  This is the energy whose water μ sets the CT number scale (0 HU).
    """
    target = water_effective_mu(kvp, water_mm, filtration, anode_angle)
    grid = np.linspace(15.0, float(kvp), 2000)
    mu = np.asarray(get_material("water").mu(grid))  # decreasing with energy over this range
    return float(np.interp(-target, -mu, grid))
