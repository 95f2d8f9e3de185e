"""Study-folder entry points of the SPECT chain (acquire, reconstruct), shared by the CLI and the pipeline."""

from __future__ import annotations

import json
import time
from typing import Any

from spectct.io.study import Study
from spectct.progress import SILENT, Reporter

#: The case's radiopharmaceutical (case-study.txt).
RADIOPHARMACEUTICAL = "99mTc-HMPAO labelled leukocytes"


def simulate_spect_study(study: Study, *, seed: int = 0, stops_per_head: int = 60, time_per_stop_s: float = 20.0,
                         matrix: int = 128, pixel_mm: float = 4.7952, device: str = "cpu",
                         reporter: Reporter = SILENT) -> dict[str, Any]:
    """Acquire the study's phantom: tomographic projections (all windows) and planar statics."""
    from spectct.commands.simulate_spect import run_simulate_spect

    doc = run_simulate_spect(study.root, seed=seed, device=device, reporter=reporter, stops_per_head=stops_per_head,
                             time_per_stop_s=time_per_stop_s, matrix=matrix, pixel_mm=pixel_mm)
    acq, geo = doc["acquisition"], doc["geometry"]
    study.record_stage("spect_simulate", {
        "radiopharmaceutical": RADIOPHARMACEUTICAL,
        "injected_activity_mbq": acq["injected_activity_bq"] / 1e6,
        "delay_h": acq["delay_s"] / 3600.0,
        "heads": geo.get("heads", 2), "stops_per_head": acq["stops_per_head"],
        "time_per_stop_s": acq["time_per_stop_s"], "matrix": acq["matrix"], "pixel_mm": acq["pixel_mm"],
        "collimator": acq.get("collimator", "LEHR"),
        "windows": ", ".join(f"{w['name']} {w['lower_kev']:.1f}–{w['upper_kev']:.1f} keV" for w in geo["windows"]),
        "counts_per_window": doc.get("counts_per_window"),
        "orbit": "body contour" if acq.get("radius_mm") is None else f"circular {acq['radius_mm']} mm",
    })
    return {"counts": doc.get("counts_per_window")}


def reconstruct_spect_study(study: Study, *, iterations: int = 5, subsets: int = 15, psf: bool = True,
                            scatter: str | None = "tew", postfilter_fwhm_mm: float | None = None,
                            ct_name: str = "ct/ct_mar.nii.gz", device: str = "cpu",
                            reporter: Reporter = SILENT) -> dict[str, Any]:
    """OSEM of the study's projections with CT attenuation correction from the MAR CT, to Bq/mL."""
    from spectct.io.interfile import read_projections_interfile
    from spectct.io.nifti import read_nifti, write_nifti
    from spectct.spect.ctac import ct_to_mumap
    from spectct.spect.recon import reconstruct_spect, spect_grid

    t0 = time.perf_counter()
    projections = read_projections_interfile(study.path("spect/projections"))
    ct = read_nifti(study.path(ct_name))
    ct_params = study.stage_parameters("ct_simulate") or {}
    kvp = float((ct_params.get("geometry") or {}).get("kvp", 110.0))
    energy = 140.511
    grid = spect_grid(projections)
    reporter.info(f"μ-map from {ct_name} ({kvp:g} kV → {energy} keV)")
    mu = ct_to_mumap(ct, grid, kvp, energy, device=device)
    meta: dict[str, Any] = {}
    image = reconstruct_spect(projections, mu, iterations=iterations, subsets=subsets, psf=psf, scatter=scatter,
                              postfilter_fwhm_mm=postfilter_fwhm_mm, device=device, reporter=reporter, metadata=meta)
    image.frame_of_reference = ct.frame_of_reference
    mu.frame_of_reference = ct.frame_of_reference
    write_nifti(mu, study.path("spect/mumap.nii.gz"))
    write_nifti(image, study.path("spect/spect.nii.gz"))
    corrections = [f"CT attenuation (bilinear HU→μ, {kvp:g} kV, from the MAR CT)"]
    if psf:
        corrections.append("resolution recovery (LEHR response)")
    if scatter:
        corrections.append(f"{scatter.upper()} scatter (additive term)")
    corrections.append("decay to injection")
    study.record_stage("spect_recon", {
        "iterations": iterations, "subsets": subsets, "corrections": "; ".join(corrections),
        "postfilter_fwhm_mm": postfilter_fwhm_mm, "ct": ct_name,
        "details": json.loads(json.dumps(meta, default=str)),
    }, seconds=time.perf_counter() - t0)
    return {"max_bq_ml": float(image.data.max())}
