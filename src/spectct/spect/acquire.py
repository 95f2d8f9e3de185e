"""Acquire a study's phantom: SPECT projections (all windows) and planar statics into the study folder.
Shared by ``spectct simulate-spect`` and the demo pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def run_simulate_spect(study_dir: Path, seed: int = 0, injected_mbq: float = 330.0, delay_h: float = 3.0,
                       fraction_in_fov: float = 0.05, radius_mm: float | None = None,
                       clearance_mm: float = 20.0,
                       oversample: int = 1, planar_time_s: float = 300.0, device: str = "cpu",
                       reporter=None, stops_per_head: int = 60, time_per_stop_s: float = 20.0,
                       matrix: int = 128, pixel_mm: float = 4.7952) -> dict:
    """Validate, simulate, then write everything (nothing is written when an input is bad)."""
    from spectct.atomic import atomic_dir, atomic_path, write_text
    from spectct.errors import GeometryError, InputError
    from spectct.io.study import Study
    from spectct.phantom.model import Phantom
    from spectct.progress import SILENT
    from spectct.spect.geometry import SpectGeometry
    from spectct.spect.planar import write_planar_png
    from spectct.spect.simulate import (
        StudyAcquisition,
        activity_from_relative,
        simulate_planar,
        simulate_spect,
    )

    reporter = reporter or SILENT
    t0 = time.perf_counter()
    if not study_dir.is_dir():
        raise InputError(f"{study_dir}: study folder does not exist")
    if oversample not in (1, 2, 3):
        raise InputError(f"--oversample must be 1, 2 or 3, got {oversample}")
    if radius_mm is not None and not radius_mm > 0:
        raise InputError(f"--radius-mm must be positive, got {radius_mm}")
    if not planar_time_s > 0:
        raise InputError(f"--planar-time-s must be positive, got {planar_time_s}")
    study = Study.open(study_dir, create=False)
    truth = study.truth
    phantom = Phantom.load(truth)
    rel = phantom.activity
    a = np.asarray(rel.data)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{truth / 'activity.nii.gz'}: activity contains NaN or infinite values")
    if a.min() < 0:
        raise InputError(f"{truth / 'activity.nii.gz'}: activity has negative values (minimum {a.min():.3g})")
    if not rel.same_grid(phantom.labels):
        raise GeometryError(f"{truth / 'activity.nii.gz'}: activity grid differs from labels.nii.gz "
                            "(the μ-map grid)")
    if stops_per_head < 1 or matrix < 8 or not pixel_mm > 0 or not time_per_stop_s > 0:
        raise InputError(f"bad acquisition: {stops_per_head} stops, matrix {matrix}, pixel {pixel_mm} mm, "
                         f"{time_per_stop_s} s per stop")
    acq = StudyAcquisition(injected_activity_bq=injected_mbq * 1e6, delay_s=delay_h * 3600.0,
                           fraction_in_fov=fraction_in_fov, radius_mm=radius_mm, clearance_mm=clearance_mm,
                           oversample=oversample, planar_time_s=planar_time_s, seed=seed,
                           stops_per_head=int(stops_per_head), time_per_stop_s=float(time_per_stop_s),
                           matrix=int(matrix), pixel_mm=float(pixel_mm))
    nuc_energy = 140.511
    collimator = acq.collimator_model()
    reporter.info("μ-map at 140.5 keV from the phantom materials")
    mu = phantom.mu_map(nuc_energy)
    activity = activity_from_relative(rel, acq.injected_activity_bq, acq.delay_s, acq.fraction_in_fov,
                                      acq.radionuclide)
    body = mu.data > 0.0077
    if not body.any():
        raise InputError(f"{truth}: the phantom has no body (μ-map empty)")
    zc = mu.index_to_world(np.argwhere(body).astype(float))[:, 2]
    axial_center = float(0.5 * (zc.min() + zc.max()))
    geometry = SpectGeometry.dual_head(stops_per_head=acq.stops_per_head, radius_mm=radius_mm or 250.0,
                                       matrix=acq.matrix, pixel_mm=acq.pixel_mm,
                                       time_per_stop_s=acq.time_per_stop_s,
                                       start_angle_deg=acq.start_angle_deg,
                                       direction=acq.direction, axial_center_mm=axial_center,
                                       step_time_s=acq.step_time_s)
    if radius_mm is None:
        geometry.radii_mm = geometry.body_contour_radii(mu, clearance_mm=clearance_mm)
    else:
        geometry.check_orbit_clears(mu)
    seeds = np.random.SeedSequence(seed).spawn(2)
    reporter.info(f"SPECT: {geometry.n_views} views, radius {geometry.radii_mm.min():.0f}–"
                  f"{geometry.radii_mm.max():.0f} mm, oversample {oversample}")
    projections = simulate_spect(activity, mu, geometry, collimator, rng=np.random.default_rng(seeds[0]),
                                 device=device, reporter=reporter, scatter=acq.scatter, oversample=oversample,
                                 radionuclide=acq.radionuclide, start_time_after_injection_s=acq.delay_s,
                                 injected_activity_bq=acq.injected_activity_bq)
    reporter.info("planar anterior/posterior statics")
    planar = simulate_planar(activity, mu, collimator, rng=np.random.default_rng(seeds[1]),
                             matrix=acq.planar_matrix, pixel_mm=acq.planar_pixel_mm, time_s=acq.planar_time_s,
                             clearance_mm=acq.planar_clearance_mm, axial_center_mm=axial_center,
                             device=device, reporter=reporter, scatter=acq.scatter,
                             radionuclide=acq.radionuclide)
    seconds = time.perf_counter() - t0

    # ---------------------------------------------------------------- write (all inputs were good)
    window_totals = {w.name: int(projections.counts[i].sum()) for i, w in enumerate(geometry.windows)}
    doc = {
        "acquisition": acq.to_dict(),
        "geometry": geometry.to_dict(),
        "dicom": geometry.to_dicom(),
        "collimator": {"name": collimator.name, "hole_mm": collimator.hole_mm,
                       "septa_mm": collimator.septa_mm,
                       "length_mm": collimator.length_mm, "intrinsic_fwhm_mm": collimator.intrinsic_fwhm_mm,
                       "energy_kev": collimator.energy_kev,
                       "sensitivity_cps_per_mbq": collimator.sensitivity_cps_per_mbq(0.89)},
        "radionuclide": acq.radionuclide,
        "activity_in_phantom_at_scan_bq": float(activity.data.astype(np.float64).sum()
                                                * activity.voxel_volume_ml),
        "start_time_after_injection_s": acq.delay_s,
        "counts_per_window": window_totals,
        "planar": {"geometry": planar["geometry"].to_dict(), "anterior_counts": int(planar["anterior"].sum()),
                   "posterior_counts": int(planar["posterior"].sum())},
        "seconds": seconds,
    }
    try:
        from spectct.io.interfile import write_projections_interfile
    except ImportError:  # pragma: no cover - the IO module ships with spectct
        write_projections_interfile = None
    with atomic_dir(study.spect / "projections") as tmp:
        if write_projections_interfile is not None:
            write_projections_interfile(projections, tmp)
        else:
            _write_raw_projections(projections, tmp)
    write_text(study.spect / "acquisition.json", json.dumps(doc, indent=1))
    for name in ("anterior", "posterior"):
        img = planar[name]
        with atomic_path(study.planar / f"{name}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, img)
        write_planar_png(img, study.planar / f"{name}.png", name)
    study.record_stage("simulate-spect", doc, seconds=seconds)
    reporter.info(f"projections {window_totals} written to {study.spect / 'projections'}; "
                  f"planar to {study.planar} ({seconds:.0f} s)")
    return doc


def _write_raw_projections(projections, folder: Path) -> None:
    """Fallback writer: one raw float32 file per window plus a JSON header."""
    g = projections.geometry
    for i, w in enumerate(g.windows):
        np.asarray(projections.counts[i], dtype=np.float32).tofile(folder / f"projections_{w.name}.raw")
    (folder / "projections.json").write_text(json.dumps({"geometry": g.to_dict(), "shape": list(
        projections.counts.shape), "radionuclide": projections.radionuclide}))
