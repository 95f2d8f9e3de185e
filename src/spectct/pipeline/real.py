"""Reading real (or any external) SPECT/CT: ``spectct run``. No simulation; the same reading stages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from spectct.errors import InputError
from spectct.pipeline.case import CT_MAR, CT_NOMAR, FINDINGS, SPECT, stage_figures, stage_report
from spectct.pipeline.runner import Stage, StageContext

LATE = "spect/spect_late.nii.gz"


def is_volume_file(path: Path) -> bool:
    """A reconstructed image (NIfTI, Interfile image, DICOM NM RECON TOMO) rather than projections."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".hv")):
        return True
    if path.is_file() and not name.endswith((".hs", ".h33")):
        from spectct.io.dicom_common import is_dicom_file
        from spectct.io.load import _nm_kind

        return is_dicom_file(path) and _nm_kind(path) == "recon"
    return False


def check_inputs(ct: Path, spect: Path, late: Path | None) -> None:
    for what, p in (("--ct", ct), ("--spect", spect), ("--late", late)):
        if p is not None and not p.exists():
            raise InputError(f"{what} {p}: no such file or folder")


def stage_ct_input(ctx: StageContext) -> dict[str, Any]:
    from spectct.io.load import load_volume
    from spectct.io.nifti import write_nifti

    src = ctx.settings["ct"]
    ct = load_volume(src, unit="HU", reporter=ctx.reporter)
    if ct.unit != "HU":
        raise InputError(f"{src}: CT must be in HU, found {ct.unit!r}")
    kvp = None
    if Path(src).is_dir():
        from spectct.io.dicom_ct import ct_series_headers

        value = ct_series_headers(src)[0].get("KVP", None)
        kvp = float(value) if value not in (None, "") else None
    write_nifti(ct, ctx.study.path(CT_NOMAR))
    ctx.study.record_stage("ct_input", {"source": str(src), "geometry": {"kvp": kvp, "slice_mm": ct.spacing[0]},
                                        "n_pixels": ct.shape[2], "pixel_mm": round(ct.spacing[2], 4)})
    return {"shape": list(ct.shape)}


def stage_ct_mar(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

    from spectct.ct.mar import mar_image
    from spectct.ct.metal import metal_mask
    from spectct.io.nifti import read_nifti, write_nifti

    t0 = time.perf_counter()
    method = ctx.settings.get("mar", "imar")
    ct = read_nifti(ctx.study.path(CT_NOMAR))
    if method == "none":
        ctx.reporter.info("MAR off (--mar none): the MAR image is the original CT")
        mar = ct
    else:
        mar = mar_image(ct, method=method, device=ctx.device, reporter=ctx.reporter)
    mask = metal_mask(ct)
    write_nifti(mar, ctx.study.path(CT_MAR))
    write_nifti(ct.with_data(mask.astype(np.uint8), unit="label"), ctx.study.path("ct/metal_mask.nii.gz"))
    note = "off" if method == "none" else f"{method} (image domain, no raw data)"
    ctx.study.record_stage("ct_mar", {"method": note}, time.perf_counter() - t0)
    return {"metal_voxels": int(mask.sum())}


def _spect_to_study(ctx: StageContext, src: Path, target: str, label: str) -> dict[str, Any]:
    from spectct.io.load import load_volume
    from spectct.io.nifti import read_nifti, write_nifti
    from spectct.spect.study import reconstruct_file

    if is_volume_file(src):
        image = load_volume(src, unit="Bq/mL", reporter=ctx.reporter)
        meta: dict[str, Any] = {"source": str(src), "reconstructed": "by the scanner or another program"}
    else:
        ct = read_nifti(ctx.study.path(CT_MAR))
        kvp = ((ctx.study.stage_parameters("ct_input") or {}).get("geometry") or {}).get("kvp")
        image, meta = reconstruct_file(src, ct_volume=ct, kvp=kvp, iterations=ctx.settings["iterations"],
                                       subsets=ctx.settings["subsets"], device=ctx.device, reporter=ctx.reporter)
    write_nifti(image, ctx.study.path(target))
    ctx.study.record_stage(label, _protocol_entry(meta, ctx))
    return {"max": float(image.data.max())}


def _protocol_entry(meta: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    acq = meta.get("acquisition") or {}
    return {"radiopharmaceutical": meta.get("radionuclide"), "matrix": acq.get("matrix"),
            "pixel_mm": acq.get("pixel_mm"), "time_per_stop_s": acq.get("time_per_view_s"),
            "stops_per_head": acq.get("views"), "heads": "—", "collimator": acq.get("collimator"),
            "windows": ", ".join(acq.get("windows", [])) or None,
            "delay_h": (acq.get("start_time_after_injection_s") or 0) / 3600 or None,
            "iterations": ctx.settings["iterations"], "subsets": ctx.settings["subsets"], "source": meta.get("source")}


def stage_spect(ctx: StageContext) -> dict[str, Any]:
    out = _spect_to_study(ctx, Path(ctx.settings["spect"]), SPECT, "spect_input")
    entry = ctx.study.stage_parameters("spect_input") or {}
    ctx.study.record_stage("spect_recon", {"iterations": entry.get("iterations"), "subsets": entry.get("subsets"),
                                           "corrections": "CT attenuation (MAR CT), resolution recovery, TEW scatter"})
    return out


def stage_late(ctx: StageContext) -> dict[str, Any]:
    return _spect_to_study(ctx, Path(ctx.settings["late"]), LATE, "late_input")


def stage_analyze(ctx: StageContext) -> dict[str, Any]:
    from spectct.analysis import analyze_study
    from spectct.io.nifti import read_nifti

    study = ctx.study
    late = read_nifti(study.path(LATE)) if ctx.settings.get("late") else None
    tracer, nuclide = study_tracer(ctx)
    doc = analyze_study(read_nifti(study.path(SPECT)), read_nifti(study.path(CT_MAR)), late_spect=late,
                        out_dir=study.root, device=ctx.device, reporter=ctx.reporter, figures=False,
                        radionuclide=nuclide, tracer=tracer)
    return {"findings": len(doc["findings"]), "tracer_rules": doc["tracer"]["rules"]}


def study_tracer(ctx: StageContext) -> tuple[str | None, str | None]:
    """(radiopharmaceutical, radionuclide) of the study: ``--tracer``, else the DICOM SPECT's Radiopharmaceutical
    text; the radionuclide the SPECT stage found (DICOM code, window names, Interfile isotope)."""
    from spectct.analysis.tracer import radiopharmaceutical_from_dicom

    nuclide = ctx.settings.get("radionuclide") or (ctx.study.stage_parameters("spect_input") or {}).get(
        "radiopharmaceutical")  # the SPECT stage records the radionuclide under this protocol key
    tracer = ctx.settings.get("tracer")
    if not tracer and ctx.settings.get("spect"):
        src = Path(ctx.settings["spect"])
        tracer = radiopharmaceutical_from_dicom(src) if src.exists() else None
    return tracer, nuclide


def run_stages_for(ct: Path, spect: Path, late: Path | None, iterations: int, subsets: int,
                   mar: str = "imar", tracer: str | None = None) -> list[Stage]:
    """The stages of ``spectct run`` (inputs outside the study are named by absolute path)."""
    ct, spect = ct.resolve(), spect.resolve()
    stages = [
        Stage("ct_input", "read the CT", stage_ct_input, inputs=(str(ct),), outputs=(CT_NOMAR,),
              params={"ct": str(ct)}),
        Stage("ct_mar", "metal artifact reduction (image domain)", stage_ct_mar, inputs=(CT_NOMAR,),
              outputs=(CT_MAR, "ct/metal_mask.nii.gz"), params={"mar": mar}, requires=("spectct.ct.mar",)),
        Stage("spect", "read or reconstruct the SPECT (OSEM + CTAC + PSF + TEW)", stage_spect,
              inputs=(str(spect), CT_MAR), outputs=(SPECT,),
              params={"spect": str(spect), "iterations": iterations, "subsets": subsets}),
    ]
    if late is not None:
        late = late.resolve()
        stages.append(Stage("late", "read or reconstruct the late SPECT", stage_late, inputs=(str(late), CT_MAR),
                            outputs=(LATE,), params={"late": str(late), "iterations": iterations,
                                                     "subsets": subsets}))
    analyze_inputs = (SPECT, CT_MAR) + ((LATE,) if late is not None else ())
    figures = ("figures/spect_mip.png", "figures/vrt_ct_mar.png", "figures/vrt_fused.png",
               "figures/ct_mar_comparison.png", "figures/coronal_spect.png", "figures/coronal_spect_fused.png",
               "figures/focus_1.png")
    stages += [
        Stage("analyze", "implants from CT, hot spots, localisation, classification", stage_analyze,
              inputs=analyze_inputs, outputs=(FINDINGS,),
              params={"late": str(late) if late else None, "tracer": tracer}),
        Stage("figures", "figures", stage_figures, inputs=(SPECT, CT_MAR, CT_NOMAR, FINDINGS), outputs=figures),
        Stage("report", "HTML report", stage_report, inputs=(FINDINGS, *figures), outputs=("report.html",)),
    ]
    return stages
