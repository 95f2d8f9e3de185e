"""Simulated SPECT and planar acquisitions with absolute counts, scatter windows and Poisson noise.

Counts
------
For a view ``v`` of duration ``T`` starting ``t_v`` after the start of the acquisition, the expected
counts of window ``w`` in a detector pixel are

    N_w = ε · D_v · [ f_p(w) · P + f_p(ref) · f_s(w) · S_ref ],   D_v = e^{−λ t_v} (1 − e^{−λT}) / λ,

with ``P`` the attenuated, collimator-blurred projection of the activity in Bq per voxel at the start
of the acquisition (:class:`~spectct.spect.projector.SpectModel`), ``S_ref`` the scatter of the
build-up model (:mod:`spectct.spect.scatter_model`), ``f_p``/``f_s`` the primary/scatter fractions of
each energy window and ``ε = g · y · ε_NaI`` the collimator's geometric efficiency × photon yield ×
crystal photo-absorption (:class:`~spectct.physics.collimator.Collimator`). Measured counts are Poisson
draws from a seeded generator.

Activity
--------
The case phantom holds a *relative* WBC concentration. :func:`activity_from_relative` scales it to
Bq/mL at the start of the scan: injected activity × decay to the scan × the fraction of the injected
leukocyte activity that lies inside the phantom. The default fraction, 5 %, is a documented assumption:
3–4 h after injection labelled leukocytes sit mostly in spleen, liver and the axial red marrow
(Roca M, de Vries EFJ, Jamar F, Israel O, Signore A, "Guidelines for the labelling of leucocytes with
99mTc-HMPAO", Eur J Nucl Med Mol Imaging 2010;37:835–841; Signore A et al., EANM guideline, EJNMMI
2018); two thighs with mostly yellow marrow, blood pool and a focus hold a few per cent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from spectct.errors import GeometryError, InputError
from spectct.physics.collimator import Collimator
from spectct.physics.radionuclide import get_radionuclide
from spectct.progress import SILENT, Reporter
from spectct.spect.geometry import Projections, SpectGeometry
from spectct.spect.projector import SpectModel
from spectct.spect.scatter_model import ScatterModel
from spectct.volume import Volume


@dataclass
class StudyAcquisition:
    """The case's acquisition protocol (case-study.txt, ../shared/PHYSICS.md) and model assumptions."""

    radionuclide: str = "Tc-99m"
    injected_activity_bq: float = 330e6
    delay_s: float = 3 * 3600.0
    fraction_in_fov: float = 0.05
    stops_per_head: int = 60
    time_per_stop_s: float = 20.0
    step_time_s: float = 3.0
    matrix: int = 128
    pixel_mm: float = 4.7952
    radius_mm: float | None = None  # None: body-contour orbit
    clearance_mm: float = 20.0
    start_angle_deg: float = 0.0
    direction: str = "CCW"
    oversample: int = 1  # 2 = forward model on 2.4 mm voxels (≈ 8× the time; less inverse crime)
    planar_matrix: tuple[int, int] = (256, 256)
    planar_pixel_mm: float = 2.3976
    planar_time_s: float = 300.0
    planar_clearance_mm: float = 30.0
    collimator: str = "LEHR"
    seed: int = 0
    scatter: ScatterModel = field(default_factory=ScatterModel)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["planar_matrix"] = list(self.planar_matrix)
        return d

    def collimator_model(self) -> Collimator:
        nuc = get_radionuclide(self.radionuclide)
        if self.collimator.upper() == "LEHR":
            return Collimator.lehr(nuc.main_energy_kev)
        if self.collimator.upper() == "MEGP":
            return Collimator.megp(nuc.main_energy_kev)
        raise InputError(f"unknown collimator {self.collimator!r}; known: LEHR, MEGP")


def activity_from_relative(relative: Volume, injected_activity_bq: float, delay_s: float,
                           fraction_in_fov: float, radionuclide: str = "Tc-99m") -> Volume:
    """Scale a relative concentration map to Bq/mL at ``delay_s`` after injection.

    ``Σ concentration × voxel volume = injected × e^{−λ·delay} × fraction_in_fov``.
    """
    _check_activity(relative, "relative activity")
    if not injected_activity_bq > 0 or not 0 < fraction_in_fov <= 1 or delay_s < 0:
        raise InputError("need injected activity > 0, 0 < fraction in FOV ≤ 1 and delay ≥ 0")
    total_rel = float(np.asarray(relative.data, dtype=np.float64).sum() * relative.voxel_volume_ml)
    if total_rel <= 0:
        raise InputError("relative activity map is empty (no positive voxel)")
    bq = injected_activity_bq * get_radionuclide(radionuclide).decay_factor(delay_s) * fraction_in_fov
    scaled = np.asarray(relative.data, dtype=np.float64) * (bq / total_rel)
    return relative.with_data(scaled.astype(np.float32), unit="Bq/mL")


def _check_activity(activity: Volume, what: str) -> None:
    a = np.asarray(activity.data)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} contains NaN or infinite values")
    if a.min() < 0:
        raise InputError(f"{what} has negative values (minimum {a.min():.3g})")


def _check_inputs(activity: Volume, mu: Volume) -> None:
    _check_activity(activity, "activity")
    if not activity.same_grid(mu):
        raise GeometryError(f"μ-map grid {mu.shape} @ {mu.spacing} mm differs from the activity grid "
                            f"{activity.shape} @ {activity.spacing} mm")
    m = np.asarray(mu.data)
    if not np.all(np.isfinite(m)) or m.min() < 0:
        raise InputError("μ-map must be finite and non-negative")
    if mu.unit not in ("1/mm", "1"):
        raise InputError(f"μ-map unit must be 1/mm, got {mu.unit!r}")


def _to_grid_bq(activity: Volume, grid: Volume, device) -> np.ndarray:
    """Activity (Bq/mL) resampled onto ``grid`` as Bq per voxel, conserving the activity inside it."""
    conc = activity.resample_to(grid, device=device).data.astype(np.float64)
    per_voxel = np.clip(conc, 0, None) * grid.voxel_volume_ml
    lo, hi = grid.extent_world
    centres = activity.index_to_world(np.argwhere(activity.data > 0).astype(np.float64))
    inside = np.all((centres >= lo) & (centres <= hi), axis=1)
    values = np.asarray(activity.data)[activity.data > 0].astype(np.float64)
    target = float(values[inside].sum() * activity.voxel_volume_ml)
    total = float(per_voxel.sum())
    if total > 0:
        per_voxel *= target / total
    return per_voxel.astype(np.float32)


def simulate_spect(activity_bq_per_ml: Volume, mu: Volume, geometry: SpectGeometry,
                   collimator: Collimator | None = None, rng: np.random.Generator | int | None = 0,
                   device: str | torch.device = "cpu", reporter: Reporter = SILENT,
                   scatter: ScatterModel | None = None, oversample: int = 2, radionuclide: str = "Tc-99m",
                   start_time_after_injection_s: float = 0.0, injected_activity_bq: float | None = None,
                   noise: bool = True) -> Projections:
    """Simulate a SPECT acquisition of every energy window of ``geometry``.

    Parameters
    ----------
    activity_bq_per_ml : activity concentration at the start of the acquisition.
    mu : attenuation map (1/mm) at the photon energy, on the activity's grid.
    geometry : the acquisition (its radii must clear the body, else :class:`GeometryError`).
    collimator : default LEHR at the radionuclide's main energy.
    rng : NumPy generator or seed for the Poisson noise.
    oversample : the forward model runs on a grid ``oversample`` times finer than the detector pixels.
    noise : False returns the expected counts (float32) instead of Poisson draws.

    Returns
    -------
    Projections
        counts ``[window, view, row, col]`` (int32, or float32 expected counts without noise).
    """
    _check_inputs(activity_bq_per_ml, mu)
    nuc = get_radionuclide(radionuclide)
    energy, yld = max(nuc.photons, key=lambda p: p[1])
    collimator = collimator or Collimator.lehr(energy)
    scatter = scatter or ScatterModel()
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    grid = geometry.image_grid(oversample=oversample)
    reporter.info(f"SPECT: resampling activity and μ onto {grid.shape} voxels of {grid.spacing[1]:.2f} mm")
    x = _to_grid_bq(activity_bq_per_ml, grid, device)
    mu_g = mu.resample_to(grid, device=device)
    mu_g = mu_g.with_data(np.clip(mu_g.data, 0, None).astype(np.float32), unit="1/mm")
    if mu_g.data.max() > 0:
        geometry.check_orbit_clears(mu_g)
    model = SpectModel(geometry, grid, mu=mu_g, collimator=collimator, device=device, psf=True,
                       cache_attenuation=False)
    expected = expected_counts(model, x, scatter, collimator, nuc, yld, energy, reporter)
    counts = expected if not noise else gen.poisson(expected).astype(np.int32)
    return Projections(counts=counts, geometry=geometry, radionuclide=nuc.name,
                       start_time_after_injection_s=float(start_time_after_injection_s),
                       injected_activity_bq=injected_activity_bq)


def expected_counts(model: SpectModel, activity_bq_per_voxel, scatter: ScatterModel, collimator: Collimator,
                    nuc, photon_yield: float, energy_kev: float, reporter: Reporter = SILENT) -> np.ndarray:
    """Expected counts ``[window, view, row, col]`` (float32) of activity in Bq per voxel of the grid."""
    g = model.geometry
    views = np.arange(g.n_views)
    batches = [views[i:i + 8] for i in range(0, g.n_views, 8)]
    ratio = scatter.mu_ratio(energy_kev)
    x = torch.as_tensor(np.asarray(activity_bq_per_voxel), dtype=model.dtype, device=model.device)
    prim = torch.zeros(model.out_shape, dtype=model.dtype, device=model.device)
    broad = torch.zeros_like(prim)
    for b in reporter.track(batches, "SPECT forward projection"):
        prim[b], broad[b] = model.forward_mu_scales(x, (1.0, ratio), b)
    scat_ref = scatter.spread((broad - prim).clamp(min=0), g.pixel_mm)
    f_prim, f_scat = scatter.window_factors(g.windows, energy_kev)
    f_ref = scatter.primary_fraction(scatter.reference_window(energy_kev), energy_kev)
    eff = collimator.counts_per_decay(photon_yield)
    lam = nuc.decay_constant
    t = g.view_start_times_s()
    decays = np.exp(-lam * t) * (-math.expm1(-lam * g.time_per_view_s)) / lam  # per Bq at the start
    d = torch.as_tensor(decays * eff, dtype=model.dtype, device=model.device)[:, None, None]
    out = np.empty((len(g.windows),) + tuple(prim.shape), dtype=np.float32)
    for w in range(len(g.windows)):
        out[w] = (d * (f_prim[w] * prim + f_ref * f_scat[w] * scat_ref)).cpu().numpy()
    return out


def scatter_to_primary_ratio(model: SpectModel, activity_bq_per_voxel, scatter: ScatterModel | None = None,
                             window: str = "photopeak", energy_kev: float = 140.511) -> float:
    """Scatter / primary counts in ``window`` summed over all views (no noise)."""
    scatter = scatter or ScatterModel()
    g = model.geometry
    x = torch.as_tensor(np.asarray(activity_bq_per_voxel), dtype=model.dtype, device=model.device)
    prim, broad = model.forward_mu_scales(x, (1.0, scatter.mu_ratio(energy_kev)))
    f_prim, f_scat = scatter.window_factors(g.windows, energy_kev)
    f_ref = scatter.primary_fraction(scatter.reference_window(energy_kev), energy_kev)
    w = g.window_index(window)
    s = f_ref * f_scat[w] * float((broad - prim).clamp(min=0).sum())
    return s / (f_prim[w] * float(prim.sum()))


def simulate_planar(activity_bq_per_ml: Volume, mu: Volume, collimator: Collimator | None = None,
                    rng: np.random.Generator | int | None = 0, matrix: tuple[int, int] = (256, 256),
                    pixel_mm: float = 2.3976, time_s: float = 300.0, radius_mm: float | None = None,
                    clearance_mm: float = 30.0, axial_center_mm: float | None = None,
                    device: str | torch.device = "cpu", reporter: Reporter = SILENT,
                    scatter: ScatterModel | None = None, radionuclide: str = "Tc-99m") -> dict:
    """Simultaneous anterior and posterior statics of a dual-head camera (photopeak window).

    The same physics as :func:`simulate_spect` with two opposed views at 0° and 180°. Each image is seen
    from its detector: the anterior image has the patient's right on the left, the posterior image the
    patient's left on the left (as scanners display them).

    Returns
    -------
    dict
        ``"anterior"``, ``"posterior"``: int32 counts ``[row, col]`` (row 0 = head end);
        ``"geometry"``: the :class:`SpectGeometry`; ``"expected"``: float32 ``[2, row, col]``.
    """
    _check_inputs(activity_bq_per_ml, mu)
    if axial_center_mm is None:
        axial_center_mm = float(activity_bq_per_ml.center_world[2])
    g = SpectGeometry.planar(matrix=matrix, pixel_mm=pixel_mm, radius_mm=radius_mm or 1.0, time_s=time_s,
                             axial_center_mm=axial_center_mm)
    if radius_mm is None:
        g.radii_mm = g.body_contour_radii(mu, clearance_mm=clearance_mm)
    proj = simulate_spect(activity_bq_per_ml, mu, g, collimator, rng=rng, device=device, reporter=reporter,
                          scatter=scatter, oversample=1, radionuclide=radionuclide, noise=False)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    peak = proj.window("photopeak")
    counts = gen.poisson(peak).astype(np.int32)
    return {"anterior": counts[0], "posterior": counts[1], "geometry": g, "expected": peak}
