"""Study-folder entry points of the CT chain (simulate, MAR), shared by the CLI and the pipeline."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import numpy as np

from spectct.atomic import write_text
from spectct.ct.simulate import reconstruct_ct, simulate_ct_study
from spectct.io.study import Study
from spectct.progress import SILENT, Reporter

__all__ = ["mar_study", "simulate_ct_study"]


def mar_study(study: Study, method: str = "imar", device: str = "cpu", reporter: Reporter = SILENT,
              compare: tuple[str, ...] = ("li", "nmar"), compare_every: int = 1) -> dict[str, Any]:
    """Metal artifact reduction of the study's raw CT data, measured against the metal-free reference.

    Writes ``ct/ct_mar.nii.gz`` (``method``), ``ct/metal_mask.nii.gz`` and ``ct/mar_metrics.json`` with
    the artifact metrics (:func:`spectct.ct.mar_metrics.artifact_metrics`) of the image without MAR,
    with ``method`` and with each method in ``compare``, all against the reconstruction of the
    simulator's noise-free metal-free sinogram (``CtRaw.reference``). The reading never sees that
    reference; it is evaluation only. ``ct/ct_nomar.nii.gz`` is kept as it is: the vendor's advice is to
    read both.

    ``compare_every`` > 1 measures every method (``method`` included, so the table stays like for like) on
    every ``compare_every``-th slice only: the comparison methods then run on those slices alone, which
    keeps the evaluation of a 1-mm, 400-slice scan affordable. The metrics are per-slice in-plane measures,
    so a regular sample of slices estimates them without bias.
    """
    from spectct.ct.mar import mar_sinogram
    from spectct.ct.mar_metrics import artifact_metrics
    from spectct.ct.sinogram_io import load_raw, load_reference
    from spectct.io.nifti import read_nifti, write_nifti

    t0 = time.perf_counter()
    raw_path = study.path("ct/sinogram.npz")
    raw = load_raw(raw_path, reference=False)  # the reference is read for the compared slices only
    reporter.info(f"MAR ({method}) on {raw.sinogram.shape[0]} slices")
    mar, mask = mar_sinogram(raw, method=method, device=device, reporter=reporter, return_mask=True)
    nomar = read_nifti(study.path("ct/ct_nomar.nii.gz"))
    metrics: dict[str, Any] = {}
    every = max(1, int(compare_every))
    sel = np.arange(0, raw.sinogram.shape[0], every)
    reference = load_reference(raw_path, sel)
    if reference is not None:
        part = replace(raw, sinogram=raw.sinogram[sel], reference=reference, metal_trace=raw.metal_trace[sel],
                       z_mm=raw.z_mm[sel])
        del raw
        ref = reconstruct_ct(part, n_pixels=part.n_pixels, pixel_mm=part.pixel_mm, device=device,
                             sinogram=part.reference)
        metal = mask.data.astype(bool)[sel]
        px = (mar.spacing[1], mar.spacing[2])
        metrics["none"] = artifact_metrics(nomar.data[sel], ref.data, metal, pixel_mm=px)
        metrics[method] = artifact_metrics(mar.data[sel], ref.data, metal, pixel_mm=px)
        for other in compare:
            if other != method:
                img = mar_sinogram(part, method=other, device=device, reporter=reporter)
                metrics[other] = artifact_metrics(img, ref, metal)
    write_nifti(mar, study.path("ct/ct_mar.nii.gz"))
    write_nifti(mask.with_data(mask.data.astype(np.uint8), unit="label"), study.path("ct/metal_mask.nii.gz"))
    clean = {k: {m: round(float(v), 3) for m, v in d.items()} for k, d in metrics.items()}
    write_text(study.path("ct/mar_metrics.json"), json.dumps({"reference": "metal-free noise-free simulation",
                                                               "slices_every": every, "metrics": clean}, indent=1))
    seconds = time.perf_counter() - t0
    study.record_stage("ct_mar", {"method": method, "compared": list(compare), "compared_every": every,
                                  "metrics": clean}, seconds)
    return {"method": method, "band_rmse": {k: d.get("rmse_band") for k, d in clean.items()}}

