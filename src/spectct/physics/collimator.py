"""Parallel-hole collimator–detector response and geometric sensitivity.

Resolution (Metz CE, Atkins FB, Beck RN, "The geometric transfer function component for scintillation
camera collimators with straight parallel holes", Phys Med Biol 1980;25:1059–1070; Tsui BMW, Gullberg
GT, "The geometric transfer function for cone and fan beam collimators", Phys Med Biol 1990;35:81–93):
the geometric FWHM of a parallel-hole collimator at distance ``d`` from its face is
``D (L_eff + d) / L_eff`` with the effective hole length ``L_eff = L − 2/μ_septa(E)`` that accounts
for septal penetration near the hole edges. Adding the intrinsic resolution in quadrature gives the
Gaussian system response ``σ(d) = √((a d + b)² + c²)`` with ``a = D/L_eff/k``, ``b = D/k``,
``c = R_int/k``, ``k = 2√(2 ln 2)`` — the form used by PyTomography's SPECT PSF model.

Geometric efficiency (Anger HO, "Scintillation camera with multichannel collimators", J Nucl Med
1964;5:515–531; Cherry SR, Sorenson JA, Phelps ME, *Physics in Nuclear Medicine*, 4th ed., 2012,
ch. 14): ``g = (K D² / (L_eff (D + t)))²`` with ``K ≈ 0.26`` for hexagonal holes, 0.24 for round and
0.28 for square holes. The lead attenuation coefficient comes from xraylib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xraylib

from spectct.errors import InputError

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SHAPE_K = {"hex": 0.26, "round": 0.24, "square": 0.28}
_PB_DENSITY = 11.35  # g/cm³


def lead_mu_per_mm(energy_kev: float) -> float:
    """Linear attenuation of lead (xraylib total cross-section × 11.35 g/cm³) in 1/mm."""
    return xraylib.CS_Total(82, float(energy_kev)) * _PB_DENSITY / 10.0


def nai_photopeak_efficiency(energy_kev: float, thickness_mm: float = 9.5) -> float:
    """Fraction of normally incident photons absorbed photoelectrically in a NaI(Tl) crystal.

    ``(1 − e^{−μ t}) · τ/μ`` with xraylib cross-sections (NaI 3.67 g/cm³). Compton events followed by
    absorption also reach the photopeak; this is a lower bound, close at 140 keV where τ dominates.
    """
    e = float(energy_kev)
    rho = 3.67
    w_na = 22.98977 / (22.98977 + 126.90447)
    mu_rho = w_na * xraylib.CS_Total(11, e) + (1 - w_na) * xraylib.CS_Total(53, e)
    tau_rho = w_na * xraylib.CS_Photo(11, e) + (1 - w_na) * xraylib.CS_Photo(53, e)
    mu = mu_rho * rho / 10.0
    return (1.0 - math.exp(-mu * thickness_mm)) * tau_rho / mu_rho


@dataclass(frozen=True)
class Collimator:
    """A parallel-hole collimator with its camera's intrinsic resolution.

    Attributes
    ----------
    name : label.
    hole_mm : hole diameter D (flat-to-flat for hexagonal holes).
    septa_mm : septal thickness t.
    length_mm : hole length L.
    intrinsic_fwhm_mm : intrinsic resolution of the camera (FWHM).
    energy_kev : photon energy the response is computed for.
    hole_shape : "hex", "round" or "square" (Anger's K factor).
    crystal_mm : NaI(Tl) thickness (for detection efficiency).
    """

    name: str
    hole_mm: float
    septa_mm: float
    length_mm: float
    intrinsic_fwhm_mm: float
    energy_kev: float = 140.511
    hole_shape: str = "hex"
    crystal_mm: float = 9.5

    def __post_init__(self) -> None:
        for key in ("hole_mm", "length_mm", "energy_kev", "crystal_mm"):
            if not getattr(self, key) > 0:
                raise InputError(f"collimator {self.name}: {key} must be positive")
        if self.septa_mm < 0 or self.intrinsic_fwhm_mm < 0:
            raise InputError(f"collimator {self.name}: septa and intrinsic resolution must be ≥ 0")
        if self.hole_shape not in _SHAPE_K:
            raise InputError(f"collimator {self.name}: hole shape must be one of {', '.join(_SHAPE_K)}")
        if self.effective_length_mm <= 0:
            raise InputError(f"collimator {self.name}: septal penetration leaves no effective hole length")

    @classmethod
    def lehr(cls, energy_kev: float = 140.511) -> Collimator:
        """Siemens Symbia LEHR: hexagonal 1.11 mm holes, 0.16 mm septa, 24.05 mm long, 3.8 mm intrinsic
        (Siemens Symbia data sheet; ../shared/PHYSICS.md)."""
        return cls("LEHR", 1.11, 0.16, 24.05, 3.8, energy_kev)

    @classmethod
    def megp(cls, energy_kev: float = 208.366) -> Collimator:
        """GE MEGP (Discovery/Optima NM-CT): hexagonal 3.0 mm holes, 1.05 mm septa, 58 mm long, 3.9 mm
        intrinsic (GE Discovery NM/CT 670 data sheet; SIMIND collimator table entry GE-MEGP)."""
        return cls("MEGP", 3.0, 1.05, 58.0, 3.9, energy_kev)

    # ----------------------------------------------------------------- resolution
    @property
    def effective_length_mm(self) -> float:
        """``L − 2/μ_Pb(E)`` (Mather 1957 / Metz 1980 penetration correction)."""
        return self.length_mm - 2.0 / lead_mu_per_mm(self.energy_kev)

    @property
    def sigma_coefficients(self) -> tuple[float, float, float]:
        """``(a, b, c)`` of ``σ(d) = √((a d + b)² + c²)`` in mm (a dimensionless)."""
        a = self.hole_mm / self.effective_length_mm / _FWHM_PER_SIGMA
        b = self.hole_mm / _FWHM_PER_SIGMA
        c = self.intrinsic_fwhm_mm / _FWHM_PER_SIGMA
        return a, b, c

    def sigma_mm(self, distance_mm):
        """Gaussian σ (mm) of the system response at ``distance_mm`` from the collimator face
        (scalar, NumPy array or torch tensor; negative distances are clamped to 0)."""
        a, b, c = self.sigma_coefficients
        d = distance_mm.clamp(min=0) if hasattr(distance_mm, "clamp") else _clip0(distance_mm)
        return ((a * d + b) ** 2 + c * c) ** 0.5

    def fwhm_mm(self, distance_mm):
        """System FWHM in mm at ``distance_mm`` from the collimator face."""
        return self.sigma_mm(distance_mm) * _FWHM_PER_SIGMA

    # ----------------------------------------------------------------- sensitivity
    @property
    def geometric_efficiency(self) -> float:
        """Fraction of isotropically emitted photons passing the collimator (Anger's formula)."""
        k = _SHAPE_K[self.hole_shape]
        return (k * self.hole_mm ** 2 / (self.effective_length_mm * (self.hole_mm + self.septa_mm))) ** 2

    def detection_efficiency(self) -> float:
        """Photoelectric absorption of the crystal at ``energy_kev`` (:func:`nai_photopeak_efficiency`)."""
        return nai_photopeak_efficiency(self.energy_kev, self.crystal_mm)

    def counts_per_decay(self, photon_yield: float) -> float:
        """Full-energy counts per decay (all energies in the peak, before the energy window)."""
        return self.geometric_efficiency * photon_yield * self.detection_efficiency()

    def sensitivity_cps_per_mbq(self, photon_yield: float = 0.89, window_fraction: float = 1.0) -> float:
        """System sensitivity in counts/s per MBq for a source in air, per head.

        ``g · yield · ε_crystal · window_fraction · 10⁶``. With the LEHR at 140.5 keV (yield 0.89,
        NNDC) this is compared in the project report with the data sheet's 91 cps/MBq (202 cpm/µCi).
        """
        return self.counts_per_decay(photon_yield) * window_fraction * 1e6


def _clip0(d):
    if isinstance(d, (int, float)):
        return max(float(d), 0.0)
    return np.maximum(np.asarray(d, dtype=float), 0.0)
