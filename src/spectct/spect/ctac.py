"""CT-based attenuation correction: Hounsfield units → linear attenuation at the SPECT photon energy.

The bilinear (kVp-dependent) transform treats a voxel with HU < 0 as a mixture of air and water and a
voxel with HU ≥ 0 as a mixture of water and cortical bone (Blankespoor et al., IEEE TNS 1996; Brown et al.,
Appl Radiat Isot 2008)::

    μ(HU) = μ_w(E) + HU · (μ_w(E) − μ_air(E)) / 1000                       HU < 0
    μ(HU) = μ_w(E) + HU · (μ_b(E) − μ_w(E)) / HU_bone(kVp)                 HU ≥ 0
    HU_bone(kVp) = 1000 · (μ_b(E_eff) − μ_w(E_eff)) / μ_w(E_eff)

where E is the SPECT photon energy and E_eff the effective energy of the CT beam. All attenuation
coefficients come from xraylib (:mod:`spectct.physics.materials`); the CT spectrum comes from SpekPy.
E_eff is the energy-weighted mean energy (the signal of an energy-integrating CT detector) of the kVp
spectrum with 6 mm Al total filtration after 200 mm of water (an average patient); with these choices the
bone slopes agree within 3 % with PyTomography's scanner table (Siemens Symbia T 110/130 kVp, GE Optima
540 120 kVp; see tests/test_ctac.py).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError
from spectct.physics.materials import get_material
from spectct.spect.recon import gaussian_filter3d
from spectct.volume import Volume

TC99M_KEV = 140.511
#: CT beam model for the effective energy (see module docstring).
CT_FILTRATION_MM_AL = 6.0
CT_PATIENT_WATER_MM = 200.0
CT_ANODE_ANGLE_DEG = 12.0


@lru_cache(maxsize=32)
def effective_ct_energy(kvp: float) -> float:
    """Effective energy (keV) of a CT beam at ``kvp``: energy-weighted mean of the SpekPy spectrum
    (tungsten anode, 12°, 6 mm Al) hardened by 200 mm of water."""
    if not (40.0 <= float(kvp) <= 150.0):
        raise InputError(f"CT tube voltage {kvp} kVp outside the supported 40–150 kVp")
    import spekpy

    spek = spekpy.Spek(kvp=float(kvp), th=CT_ANODE_ANGLE_DEG)
    spek.filter("Al", CT_FILTRATION_MM_AL)
    spek.filter("Water, Liquid", CT_PATIENT_WATER_MM)
    k, fluence = spek.get_spectrum()
    return float((k * k * fluence).sum() / (k * fluence).sum())


@lru_cache(maxsize=64)
def bilinear_coefficients(kvp: float, energy_kev: float = TC99M_KEV) -> tuple[float, float, float]:
    """Coefficients of the bilinear HU → μ transform, all in 1/mm.

    Returns
    -------
    (mu_water, slope_below_0, slope_above_0): ``μ = mu_water + slope · HU`` on each side of HU = 0.
    """
    water, bone, air = get_material("water"), get_material("cortical_bone"), get_material("air")
    e_eff = effective_ct_energy(kvp)
    mu_w = float(water.mu(energy_kev))
    hu_bone = 1000.0 * (bone.mu(e_eff) - water.mu(e_eff)) / water.mu(e_eff)
    slope_low = (mu_w - float(air.mu(energy_kev))) / 1000.0
    slope_high = (float(bone.mu(energy_kev)) - mu_w) / hu_bone
    return mu_w, slope_low, float(slope_high)


def hu_to_mu(
    hu: Volume,
    kvp: float,
    energy_kev: float = TC99M_KEV,
    method: str = "bilinear",
    metal: str | None = "steel_316l",
) -> Volume:
    """Convert a CT volume in HU to linear attenuation coefficients (1/mm) at ``energy_kev``.

    Parameters
    ----------
    hu : CT volume, unit HU.
    kvp : CT tube voltage.
    energy_kev : SPECT photon energy (default Tc-99m 140.511 keV).
    method : ``"bilinear"`` (Blankespoor 1996 / Brown 2008) — the only one implemented.
    metal : material whose true μ at ``energy_kev`` caps the result (metal streaks and saturated HU must
        not produce an absurd μ); ``None`` for no cap.

    Returns
    -------
    Volume on the same grid, unit ``1/mm``, float32, ≥ 0.
    """
    if method != "bilinear":
        raise InputError(f"unknown HU→μ method {method!r}; available: bilinear")
    if hu.unit not in ("HU", "1"):
        raise InputError(f"CT volume must be in HU, got unit {hu.unit!r}")
    mu_w, s_low, s_high = bilinear_coefficients(float(kvp), float(energy_kev))
    h = np.asarray(hu.data, dtype=np.float32)
    if not np.all(np.isfinite(h)):
        raise InputError("CT volume contains NaN or infinite HU values")
    mu = np.where(h < 0, mu_w + s_low * h, mu_w + s_high * h).astype(np.float32)
    np.clip(mu, 0.0, None, out=mu)
    if metal is not None:
        np.minimum(mu, np.float32(get_material(metal).mu(float(energy_kev))), out=mu)
    return hu.with_data(mu, unit="1/mm")


def ct_to_mumap(
    ct_hu: Volume,
    spect_grid: Volume,
    kvp: float,
    energy_kev: float = TC99M_KEV,
    device: str | torch.device = "cpu",
    smooth_fwhm_mm: float | tuple[float, float, float] | None = None,
    metal: str | None = "steel_316l",
    min_overlap: float = 0.05,
) -> Volume:
    """A μ-map on the SPECT grid from a CT in HU.

    Steps: check that CT and SPECT share a frame of reference and overlap; convert HU → μ on the CT grid
    (:func:`hu_to_mu`, metal cap included); smooth with a Gaussian whose FWHM is the SPECT voxel size per
    axis (or ``smooth_fwhm_mm``) so that the 1-mm CT is brought to the SPECT grid's resolution without
    aliasing; resample trilinearly in patient coordinates. Outside the CT field μ = 0 (air).

    Parameters
    ----------
    ct_hu : CT volume in HU (any orientation, patient coordinates).
    spect_grid : the SPECT image grid (its data is not used).
    kvp, energy_kev, metal : see :func:`hu_to_mu`.
    device : torch device for smoothing and resampling.
    smooth_fwhm_mm : FWHM of the smoothing in mm (scalar or ``(z, y, x)``); default the SPECT voxel size.
    min_overlap : smallest fraction of the SPECT field that the CT must cover; below it GeometryError.

    Returns
    -------
    Volume on ``spect_grid`` in 1/mm, float32.
    """
    fa, fb = ct_hu.frame_of_reference, spect_grid.frame_of_reference
    if fa and fb and fa != fb:
        raise GeometryError(f"CT frame of reference {fa} differs from the SPECT's {fb}; register them first")
    if not ct_hu.overlaps(spect_grid):
        raise GeometryError("CT does not overlap the SPECT field of view (patient coordinates)")
    covered = _covered_fraction(ct_hu, spect_grid)
    if covered < min_overlap:
        raise GeometryError(
            f"CT covers only {100 * covered:.0f} % of the SPECT field of view "
            f"(at least {100 * min_overlap:.0f} % needed)"
        )
    dev = resolve_device(device)
    mu_ct = hu_to_mu(ct_hu, kvp, energy_kev, metal=metal)
    fwhm = np.broadcast_to(
        np.asarray(spect_grid.spacing if smooth_fwhm_mm is None else smooth_fwhm_mm, dtype=float), (3,)
    )
    # express the FWHM (given along the SPECT axes) on the CT axes via the direction cosines
    axes_world = np.abs(ct_hu.direction.T @ spect_grid.direction)  # [ct axis (x,y,z), spect axis (x,y,z)]
    fwhm_xyz_spect = fwhm[::-1]
    fwhm_ct_xyz = axes_world @ fwhm_xyz_spect
    # subtract the CT's own voxel blur in quadrature (a box of width d has FWHM ≈ d)
    ct_sp_xyz = np.asarray(ct_hu.spacing[::-1])
    fwhm_ct_xyz = np.sqrt(np.clip(fwhm_ct_xyz**2 - ct_sp_xyz**2, 0.0, None))
    # block-average first (integer factors keeping the CT voxel ≤ half the smoothing width): same result on
    # the SPECT grid at a fraction of the cost for a 1-mm CT
    factors = np.maximum(1, np.floor(fwhm_ct_xyz / (2.0 * ct_sp_xyz)).astype(int))[::-1]  # (z, y, x)
    t = torch.as_tensor(mu_ct.data, device=dev)
    nz, ny, nx = (np.array(t.shape) // factors) * factors
    t = t[:nz, :ny, :nx]
    if np.any(factors > 1):
        t = torch.nn.functional.avg_pool3d(t[None, None], kernel_size=tuple(int(f) for f in factors))[0, 0]
    coarse_sp = tuple(float(s) * f for s, f in zip(ct_hu.spacing, factors, strict=True))
    shift_ijk = (factors[::-1] - 1) / 2.0 * np.asarray(ct_hu.spacing[::-1])  # (x, y, z) index axes, mm
    coarse_origin = tuple(np.asarray(ct_hu.origin) + ct_hu.direction @ shift_ijk)
    coarse_fwhm = np.sqrt(
        np.clip(fwhm_ct_xyz**2 - (np.asarray(coarse_sp[::-1])) ** 2 + ct_sp_xyz**2, 0.0, None)
    )
    t = gaussian_filter3d(t, tuple(coarse_fwhm[::-1]), coarse_sp)
    smoothed = Volume(
        t.cpu().numpy(),
        spacing=coarse_sp,
        origin=coarse_origin,
        direction=ct_hu.direction.copy(),
        unit="1/mm",
        frame_of_reference=ct_hu.frame_of_reference,
    )
    del t
    out = smoothed.resample_to(spect_grid, order="linear", fill=0.0, device=dev)
    data = np.clip(out.data.astype(np.float32), 0.0, None)
    return Volume(
        data,
        spacing=spect_grid.spacing,
        origin=spect_grid.origin,
        direction=spect_grid.direction.copy(),
        unit="1/mm",
        frame_of_reference=spect_grid.frame_of_reference or ct_hu.frame_of_reference,
    )


def _covered_fraction(ct: Volume, grid: Volume) -> float:
    """Fraction of the grid's bounding box inside the CT's bounding box (axis-aligned boxes in LPS)."""
    a, b = ct.extent_world, grid.extent_world
    inter = np.clip(np.minimum(a[1], b[1]) - np.maximum(a[0], b[0]), 0.0, None)
    return float(np.prod(inter) / np.prod(b[1] - b[0]))


def mumap_change(
    mu_reference: Volume, mu_other: Volume, region: np.ndarray | None = None, rel_threshold: float = 0.1
) -> dict:
    """How much a μ-map changes between two CTs (e.g. without and with metal artefact reduction).

    Parameters
    ----------
    mu_reference, mu_other : μ-maps (1/mm) on the same grid (e.g. from ``ct_nomar`` and ``ct_mar``).
    region : boolean mask restricting the comparison (default: voxels where either map exceeds 1 % of water).
    rel_threshold : a voxel "changes" when ``|Δμ| > rel_threshold · μ_reference`` (and above 1 % of water).

    Returns
    -------
    dict with ``max_abs_change_per_mm``, ``mean_change_per_mm`` (other − reference), ``fraction_changed``
    and ``changed_voxels``; numbers a report can print next to the two μ-map images.
    """
    if not mu_reference.same_grid(mu_other):
        raise GeometryError("μ-maps to compare must share a grid; resample one onto the other first")
    a = np.asarray(mu_reference.data, dtype=np.float64)
    b = np.asarray(mu_other.data, dtype=np.float64)
    floor = 0.01 * float(get_material("water").mu(TC99M_KEV))
    mask = ((a > floor) | (b > floor)) if region is None else np.asarray(region, dtype=bool)
    if mask.shape != a.shape:
        raise GeometryError(f"region shape {mask.shape} does not match the μ-maps {a.shape}")
    if not mask.any():
        return {
            "max_abs_change_per_mm": 0.0,
            "mean_change_per_mm": 0.0,
            "fraction_changed": 0.0,
            "changed_voxels": 0,
        }
    diff = (b - a)[mask]
    changed = np.abs(diff) > np.maximum(rel_threshold * a[mask], floor)
    return {
        "max_abs_change_per_mm": float(np.abs(diff).max()),
        "mean_change_per_mm": float(diff.mean()),
        "fraction_changed": float(changed.mean()),
        "changed_voxels": int(changed.sum()),
    }
