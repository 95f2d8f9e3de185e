"""Named materials and their linear attenuation coefficients through xraylib.

Tissue compositions come from xraylib's NIST compound database (ICRP/ICRU tissues) where one exists;
marrow and spongiosa use the ICRU Report 46 elemental mass fractions (Woodard & White, Br J Radiol
1986); the alloys use the nominal compositions of their ASTM standards (F136 Ti-6Al-4V, F138 316L,
F75 CoCrMo). Densities are those of ../shared/PHYSICS.md. μ(E) = ρ Σ_i w_i (μ/ρ)_i(E), with the total
cross-section (photoelectric + coherent + incoherent) of xraylib.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xraylib

from spectct.errors import InputError


@dataclass(frozen=True)
class Material:
    """A homogeneous material: name, density in g/cm³, and either a NIST name or mass fractions."""

    name: str
    density_g_cm3: float
    nist_name: str | None = None
    mass_fractions: tuple[tuple[str, float], ...] = ()
    is_metal: bool = False

    def mu(self, energy_kev: float | np.ndarray) -> np.ndarray | float:
        """Linear attenuation coefficient in 1/mm at ``energy_kev`` (scalar or array, 1–1000 keV)."""
        energies = np.atleast_1d(np.asarray(energy_kev, dtype=float))
        if np.any(energies < 1.0) or np.any(energies > 1000.0):
            raise InputError(f"energy out of range for {self.name}: {energies.min()}–{energies.max()} keV")
        values = np.array([_mu_per_mm(self, float(e)) for e in energies])
        return float(values[0]) if np.ndim(energy_kev) == 0 else values

    def mass_attenuation(self, energy_kev: float) -> float:
        """Mass attenuation coefficient μ/ρ in cm²/g."""
        return _mu_per_mm(self, float(energy_kev)) * 10.0 / self.density_g_cm3


@lru_cache(maxsize=65536)
def _mu_per_mm(material: Material, energy_kev: float) -> float:
    if material.nist_name is not None:
        mu_rho = xraylib.CS_Total_CP(material.nist_name, energy_kev)
    elif material.density_g_cm3 == 0 or not material.mass_fractions:
        return 0.0
    else:
        total = sum(w for _, w in material.mass_fractions)
        mu_rho = sum(w / total * xraylib.CS_Total(xraylib.SymbolToAtomicNumber(sym), energy_kev)
                     for sym, w in material.mass_fractions)
    return mu_rho * material.density_g_cm3 / 10.0  # cm^2/g * g/cm^3 = 1/cm -> 1/mm


def _frac(**w: float) -> tuple[tuple[str, float], ...]:
    return tuple(w.items())


#: The library, keyed by name. Air and the ICRP tissues use xraylib's NIST table with its composition.
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("air", 0.001205, nist_name="Air, Dry (near sea level)"),
        Material("water", 1.00, nist_name="Water, Liquid"),
        Material("adipose", 0.95, nist_name="Adipose Tissue (ICRP)"),
        Material("soft_tissue", 1.05, nist_name="Tissue, Soft (ICRP)"),
        Material("muscle", 1.05, nist_name="Muscle, Skeletal"),
        Material("skin", 1.09, nist_name="Skin (ICRP)"),
        # ICRU 46 red and yellow marrow, spongiosa (trabecular bone with marrow)
        Material("red_marrow", 1.03, mass_fractions=_frac(H=0.105, C=0.414, N=0.034, O=0.439, P=0.001,
                                                          S=0.002, Cl=0.002, K=0.002, Fe=0.001)),
        Material("yellow_marrow", 0.98, mass_fractions=_frac(H=0.115, C=0.644, N=0.007, O=0.231, Na=0.001,
                                                             S=0.001, Cl=0.001)),
        Material("trabecular_bone", 1.18, mass_fractions=_frac(H=0.085, C=0.404, N=0.028, O=0.367, Na=0.001,
                                                               Mg=0.001, P=0.034, S=0.002, Cl=0.002, K=0.001,
                                                               Ca=0.074, Fe=0.001)),
        Material("cortical_bone", 1.92, nist_name="Bone, Cortical (ICRP)"),
        # implant alloys (ASTM F136, F138, F75 nominal compositions)
        Material("ti6al4v", 4.43, mass_fractions=_frac(Ti=0.90, Al=0.06, V=0.04), is_metal=True),
        Material("steel_316l", 8.00, mass_fractions=_frac(Fe=0.655, Cr=0.17, Ni=0.12, Mo=0.025, Mn=0.02,
                                                          Si=0.01), is_metal=True),
        Material("cocrmo", 8.30, mass_fractions=_frac(Co=0.65, Cr=0.28, Mo=0.06, Mn=0.01), is_metal=True),
    )
}


def get_material(name: str) -> Material:
    """Look a material up by name; unknown names raise :class:`InputError` listing the known ones."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise InputError(f"unknown material {name!r}; known: {', '.join(MATERIALS)}") from None


def mu_table(names: list[str] | tuple[str, ...], energies_kev: np.ndarray) -> np.ndarray:
    """μ in 1/mm for each material (rows) at each energy (columns), float64."""
    energies = np.atleast_1d(np.asarray(energies_kev, dtype=float))
    return np.array([np.atleast_1d(get_material(n).mu(energies)) for n in names])
