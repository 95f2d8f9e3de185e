"""Radionuclides used in SPECT, with decay correction.

Half-lives and photon yields from the NNDC/ENSDF evaluated decay data (Tc-99m: 6.0067 h,
140.511 keV at 89 %; Lu-177: 6.647 d, 112.95 keV at 6.2 % and 208.37 keV at 10.4 %).
xraylib's radionuclide table lacks both, so the values are written here with their source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spectct.errors import InputError


@dataclass(frozen=True)
class Radionuclide:
    name: str
    half_life_s: float
    photons: tuple[tuple[float, float], ...]  # (energy keV, photons per decay)

    @property
    def decay_constant(self) -> float:
        """λ = ln 2 / T½ in 1/s."""
        return math.log(2.0) / self.half_life_s

    @property
    def main_energy_kev(self) -> float:
        return max(self.photons, key=lambda p: p[1])[0]

    def decay_factor(self, elapsed_s: float) -> float:
        """Fraction of activity left after ``elapsed_s`` seconds: exp(−λ t)."""
        return math.exp(-self.decay_constant * elapsed_s)

    def activity_at(self, activity_bq: float, elapsed_s: float) -> float:
        return activity_bq * self.decay_factor(elapsed_s)

    def decays_during(self, activity_at_start_bq: float, duration_s: float) -> float:
        """Number of decays in an acquisition of ``duration_s`` starting at the given activity:
        A₀ (1 − e^{−λT}) / λ."""
        lam = self.decay_constant
        return activity_at_start_bq * (1.0 - math.exp(-lam * duration_s)) / lam

    def mean_activity_factor(self, duration_s: float) -> float:
        """Mean activity over a frame relative to its start: (1 − e^{−λT}) / (λT)."""
        lam_t = self.decay_constant * duration_s
        return 1.0 if lam_t == 0 else (1.0 - math.exp(-lam_t)) / lam_t


TC99M = Radionuclide("Tc-99m", half_life_s=6.0067 * 3600.0, photons=((140.511, 0.89),))
LU177 = Radionuclide("Lu-177", half_life_s=6.647 * 86400.0, photons=((112.9498, 0.062), (208.3662, 0.104)))

RADIONUCLIDES = {r.name: r for r in (TC99M, LU177)}
_ALIASES = {"tc99m": TC99M, "99mtc": TC99M, "tc-99m": TC99M, "lu177": LU177, "177lu": LU177, "lu-177": LU177}


def get_radionuclide(name: str) -> Radionuclide:
    key = name.strip().lower().replace(" ", "").replace("^", "")
    if key in _ALIASES:
        return _ALIASES[key]
    raise InputError(f"unknown radionuclide {name!r}; known: {', '.join(RADIONUCLIDES)}")
