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
    from spectct.spect.acquire import run_simulate_spect

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


def reconstruct_file(projections, *, ct=None, ct_volume=None, mumap=None, kvp: float | None = None,
                     iterations: int = 5, subsets: int = 15, psf: bool = True, scatter: str = "tew",
                     filter_mm: float | None = None, photopeak: float | None = None, collimator: str | None = None,
                     device: str = "cpu", angle_offset: float = 0.0, vendor_flip: bool = False,
                     reporter: Reporter = SILENT):
    """Reconstruct projections from a file (DICOM NM, Interfile, study folder) to Bq/mL.

    The CT for attenuation correction comes from ``ct`` (DICOM folder or NIfTI), or ``ct_volume`` (a
    :class:`~spectct.volume.Volume` in HU, e.g. after MAR), or a μ-map NIfTI ``mumap``. Returns the image and
    a metadata dict of what was done.
    """
    from pathlib import Path

    from spectct.errors import InputError
    from spectct.io.nifti import read_nifti
    from spectct.spect.ctac import ct_to_mumap
    from spectct.spect.inputs import collimator_for, load_ct, load_projections_with_info
    from spectct.spect.recon import _photon_energy_in, photopeak_window, reconstruct_spect, spect_grid

    scatter_key = scatter.strip().lower()
    if scatter_key not in ("tew", "dew", "none"):
        raise InputError(f"--scatter must be tew, dew or none, got {scatter!r}")
    if sum(x is not None for x in (ct, ct_volume, mumap)) > 1:
        raise InputError("give either a CT or a μ-map for attenuation correction, not both")
    proj, info = load_projections_with_info(Path(projections), angle_offset, vendor_flip)
    axis_xy = info["axis_xy"]
    p = photopeak_window(proj, photopeak)
    energy = _photon_energy_in(proj, p)
    coll = collimator_for(collimator, proj, energy, info["collimator"])
    grid = spect_grid(proj, axis_xy)
    grid.frame_of_reference = info["frame_of_reference"]  # CTAC checks the CT against it
    mu = None
    ct_info: dict = {}
    ct_kvp = None
    if ct is not None:
        ct_volume, ct_kvp = load_ct(Path(ct), reporter)
    if ct_volume is not None:
        used_kvp = kvp or ct_kvp or 120.0
        if kvp is None and ct_kvp is None:
            reporter.info(f"CT tube voltage unknown; using {used_kvp:g} kVp for the HU→μ transform (--kvp to set)")
        mu = ct_to_mumap(ct_volume, grid, used_kvp, energy, device=device)
        ct_info = {"ct": str(ct) if ct is not None else "given volume", "kvp": used_kvp, "mu_energy_kev": energy}
    elif mumap is not None:
        mu = read_nifti(mumap)
        if mu.unit != "1/mm":
            raise InputError(f"{mumap}: μ-map must be in 1/mm, file says {mu.unit!r}")
        ct_info = {"mumap": str(mumap)}
    meta: dict = {}
    image = reconstruct_spect(proj, mu, iterations=iterations, subsets=subsets, psf=psf,
                              scatter=None if scatter_key == "none" else scatter_key, postfilter_fwhm_mm=filter_mm,
                              device=device, reporter=reporter, collimator=coll, photopeak_kev=photopeak,
                              metadata=meta, rotation_axis_xy_mm=axis_xy)
    if image.frame_of_reference is None:
        image.frame_of_reference = info["frame_of_reference"]
    meta.update(ct_info)
    meta["projections"] = str(projections)
    meta["angle_offset_deg"], meta["vendor_flip"] = angle_offset, vendor_flip
    meta["radionuclide"] = proj.radionuclide
    meta["acquisition"] = {"views": proj.geometry.n_views, "time_per_view_s": proj.geometry.time_per_view_s,
                           "matrix": proj.geometry.n_cols, "pixel_mm": proj.geometry.pixel_mm[1],
                           "windows": [w.name for w in proj.geometry.windows], "collimator": coll.name,
                           "start_time_after_injection_s": proj.start_time_after_injection_s}
    return image, meta
