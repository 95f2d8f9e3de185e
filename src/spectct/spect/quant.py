"""Quantitative SPECT: reconstructed counts → activity concentration (Bq/mL), decay-corrected.

The chain (e.g. Dewaraja YK et al., MIRD Pamphlet No. 23, J Nucl Med 2012;53:1310-1325; Ritt P et al.,
EJNMMI Phys 2016): a *system sensitivity* S (cps/MBq per detector head, photopeak window) is measured on a
source in air, here a simulated one (:func:`calibrate_sensitivity`). OSEM with the system model ``A``
returns an image ``x`` such that ``A x`` are the expected counts per view. A voxel holding activity ``a``
(MBq) gives ``a · S · t_view`` counts per view in air, while the model predicts ``x · g`` counts per
view, ``g`` being the model's own counts per view from a unit voxel in air (:func:`projector_gain`). So

    a = x · g / (S · t_view)      and      C [Bq/mL] = 10⁶ · a / V_voxel[mL].

The activity at acquisition is finally referred to the injection time with the decay factor of the
radionuclide, including the decay during the acquisition (:func:`decay_correction_to_injection`).
"""

from __future__ import annotations

import numpy as np
import torch

from spectct.device import resolve_device
from spectct.errors import InputError


def counts_to_bq_per_ml(
    image,
    sensitivity_cps_per_mbq: float,
    time_per_view_s: float,
    n_views: int,
    voxel_ml: float,
    *,
    projector_total_gain: float | None = None,
    decay_factor: float = 1.0,
) -> np.ndarray:
    """Convert a reconstructed image in model counts to Bq/mL.

    Parameters
    ----------
    image : OSEM image ``[z, y, x]`` (NumPy or tensor), in the system model's units.
    sensitivity_cps_per_mbq : photopeak counts per second per MBq for one view (one head), source in air.
    time_per_view_s : acquisition time of one view.
    n_views : number of views of the acquisition.
    voxel_ml : voxel volume in mL.
    projector_total_gain : counts summed over *all* views that the model predicts from a unit voxel in air
        (:func:`projector_gain`); default ``n_views`` (a model whose unit voxel gives one count per view).
    decay_factor : multiplier referring the activity to the reference time (e.g. injection).

    Returns
    -------
    float32 NumPy array in Bq/mL.
    """
    for name, v in (
        ("sensitivity", sensitivity_cps_per_mbq),
        ("time per view", time_per_view_s),
        ("voxel volume", voxel_ml),
        ("decay factor", decay_factor),
    ):
        if not (np.isfinite(v) and v > 0):
            raise InputError(f"{name} must be a positive number, got {v}")
    if int(n_views) < 1:
        raise InputError(f"number of views must be positive, got {n_views}")
    gain_per_view = (float(n_views) if projector_total_gain is None else float(projector_total_gain)) / int(
        n_views
    )
    x = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    mbq = x.astype(np.float64) * gain_per_view / (sensitivity_cps_per_mbq * time_per_view_s)
    return (mbq * 1e6 / voxel_ml * decay_factor).astype(np.float32)


def acquisition_decay_factor(projections) -> float:
    """Mean activity during the acquisition relative to the activity at its start.

    Each view ``v`` starting at ``t_v`` and lasting ``τ`` sees on average ``e^{−λ t_v} (1 − e^{−λτ})/(λτ)``
    of the starting activity; OSEM weighs all views equally, so the image reflects the mean over views.
    1 when the radionuclide is unknown.
    """
    from spectct.physics.radionuclide import get_radionuclide

    if not projections.radionuclide:
        return 1.0
    nuc = get_radionuclide(projections.radionuclide)
    g = projections.geometry
    t = np.asarray(g.view_start_times_s(), dtype=float)
    return float(np.mean(np.exp(-nuc.decay_constant * t)) * nuc.mean_activity_factor(g.time_per_view_s))


def decay_correction_to_injection(projections, reference: str = "injection") -> float:
    """Factor that turns the mean activity seen during the acquisition into the activity at ``reference``.

    ``"acquisition"``: the start of the acquisition, ``F = 1 / acquisition_decay_factor``;
    ``"injection"``: additionally divided by ``e^{−λ t₀}``, ``t₀`` = start after injection (0 if unknown).
    """
    from spectct.physics.radionuclide import get_radionuclide

    if reference not in ("injection", "acquisition"):
        raise InputError(f"decay reference must be 'injection' or 'acquisition', got {reference!r}")
    f = 1.0 / acquisition_decay_factor(projections)
    if reference == "injection" and projections.radionuclide:
        t0 = float(projections.start_time_after_injection_s or 0.0)
        f /= get_radionuclide(projections.radionuclide).decay_factor(t0)
    return f


def projector_gain(geometry, grid, collimator, device="cpu", psf: bool = True) -> float:
    """Counts summed over all views that the unattenuated system model predicts from a unit voxel at the
    centre of ``grid`` (measured by forward projection on four views spread over the orbit, scaled to all
    views: for a source on the axis every view sees the same)."""
    from spectct.spect.projector import SpectModel

    dev = resolve_device(device)
    views = np.unique(np.linspace(0, geometry.n_views - 1, min(4, geometry.n_views)).astype(int))
    model = SpectModel(geometry.subset(views), grid, None, collimator, device=dev, psf=psf)
    x = torch.zeros(grid.shape, dtype=torch.float32, device=dev)
    c = tuple(s // 2 for s in grid.shape)
    x[c] = 1.0
    return float(model.forward(x).sum()) / views.size * geometry.n_views


def calibrate_sensitivity(
    geometry,
    collimator,
    device="cpu",
    *,
    window: str | None = None,
    radionuclide: str | None = "Tc-99m",
    activity_mbq: float = 10.0,
    source_radius_mm: float = 10.0,
) -> float:
    """System sensitivity in cps/MBq per head, measured like a physicist would: a small sphere of known
    activity in air at the centre of the field is "acquired" with the simulator, and the photopeak counts
    of each view are divided by activity × time (noise-free expected counts, averaged over the views).

    Parameters
    ----------
    geometry : the acquisition's :class:`~spectct.spect.geometry.SpectGeometry` (its windows and timing).
    collimator : the collimator model.
    device : torch device.
    window : name of the photopeak window (default the window named ``photopeak`` or the first).
    radionuclide : isotope of the calibration source.
    activity_mbq : source activity.
    source_radius_mm : radius of the spherical source.
    """
    key = (
        geometry_key(geometry),
        repr(collimator),
        str(resolve_device(device)),
        window,
        radionuclide or "Tc-99m",
        float(activity_mbq),
        float(source_radius_mm),
    )
    if key not in _CALIBRATIONS:
        _CALIBRATIONS[key] = _measure_sensitivity(
            geometry,
            collimator,
            device,
            window,
            radionuclide or "Tc-99m",
            float(activity_mbq),
            float(source_radius_mm),
        )
    return _CALIBRATIONS[key]


_CALIBRATIONS: dict[tuple, float] = {}


def geometry_key(geometry) -> tuple:
    """A hashable summary of the parts of a geometry that change the sensitivity measurement."""
    return (
        geometry.n_rows,
        geometry.n_cols,
        tuple(geometry.pixel_mm),
        float(geometry.time_per_view_s),
        tuple((w.name, w.lower_kev, w.upper_kev) for w in geometry.windows),
        float(np.mean(geometry.radii_mm)),
    )


def _measure_sensitivity(
    geometry, collimator, device, window, radionuclide, activity_mbq, radius_mm
) -> float:
    """Simulate (noise-free) a sphere of ``activity_mbq`` in air at the field centre, one view of 1 s, with
    the acquisition's pixel size, energy windows and orbit radius; return photopeak cps/MBq."""
    import dataclasses

    from spectct.physics.radionuclide import get_radionuclide
    from spectct.spect.simulate import simulate_spect
    from spectct.volume import Volume

    radius_mm = max(radius_mm, float(max(geometry.pixel_mm)))  # at least the 8 voxels around the centre
    n = int(min(geometry.n_cols, max(16, int(np.ceil(6 * radius_mm / geometry.pixel_mm[1])) + 16)))
    n_rows = int(min(geometry.n_rows, n))
    calib = dataclasses.replace(
        geometry,
        angles_deg=np.array([0.0]),
        radii_mm=np.array([float(np.mean(geometry.radii_mm))]),
        n_rows=n_rows,
        n_cols=n,
        time_per_view_s=1.0,
        heads=1,
        stops_per_head=1,
        step_time_s=0.0,
    )
    grid = calib.image_grid(unit="Bq/mL")
    z, y, x = np.meshgrid(*[c - np.mean(c) for c in grid.axis_coordinates()], indexing="ij")
    sphere = (x**2 + y**2 + z**2) <= radius_mm**2
    if not sphere.any():
        raise InputError(f"calibration sphere of radius {radius_mm} mm is smaller than a voxel")
    conc = np.where(sphere, activity_mbq * 1e6 / (sphere.sum() * grid.voxel_volume_ml), 0.0).astype(
        np.float32
    )
    activity = Volume(
        conc,
        spacing=grid.spacing,
        origin=tuple(np.asarray(grid.origin) - [0, 0, 0]),
        direction=grid.direction,
        unit="Bq/mL",
    )
    air = activity.with_data(np.zeros_like(conc), unit="1/mm")
    proj = simulate_spect(
        activity, air, calib, collimator=collimator, device=device, noise=False, radionuclide=radionuclide
    )
    names = [w.name for w in calib.windows]
    if window is None:
        w = names.index("photopeak") if "photopeak" in names else 0
    elif window in names:
        w = names.index(window)
    else:
        raise InputError(f"no energy window {window!r} for the calibration; windows: {', '.join(names)}")
    nuc = get_radionuclide(radionuclide)
    seconds = calib.time_per_view_s * nuc.mean_activity_factor(calib.time_per_view_s)
    counts = float(np.asarray(proj.counts[w], dtype=np.float64).sum())
    return counts / (activity_mbq * seconds)
