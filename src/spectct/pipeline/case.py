"""The simulated case, stage by stage: phantom → CT → MAR → SPECT → OSEM → reading → figures → report.

Each stage is a thin composition of library functions; the study folder (../shared/ARCHITECTURE.md)
carries everything between stages, so any stage can be re-run alone (``--force STAGE``).
"""

from __future__ import annotations

from typing import Any

from spectct.pipeline.runner import Stage, StageContext
from spectct.pipeline.sizes import DemoSize

TRUTH = ("truth/labels.nii.gz", "truth/activity.nii.gz", "truth/materials.nii.gz", "truth/components.json")
CT_RAW, CT_NOMAR, CT_MAR = "ct/sinogram.npz", "ct/ct_nomar.nii.gz", "ct/ct_mar.nii.gz"
PROJ = "spect/acquisition.json"
SPECT = "spect/spect.nii.gz"
FINDINGS = "findings.json"
FIGURES = ("figures/planar.png", "figures/spect_mip.png", "figures/vrt_ct_mar.png", "figures/vrt_fused.png",
           "figures/ct_mar_comparison.png", "figures/coronal_spect.png", "figures/coronal_spect_fused.png",
           "figures/focus_1.png", "figures/spect_mip_rotating.gif", "figures/spect_mip_rotating.mp4",
           "figures/mar_metrics.png")


def _size(ctx: StageContext) -> DemoSize:
    return ctx.settings["size"]


def stage_phantom(ctx: StageContext) -> dict[str, Any]:
    from spectct.atomic import atomic_dir
    from spectct.phantom.case import build_case, case_phantom
    from spectct.phantom.figures import write_figures

    size, seed = _size(ctx), ctx.settings["seed"]
    ph = case_phantom(voxel_mm=size.phantom_voxel_mm, seed=seed, device=ctx.device, reporter=ctx.reporter)
    with atomic_dir(ctx.study.truth) as tmp:
        ph.save(tmp)
        write_figures(ph, tmp, build_case(seed)[2])
    ctx.study.record_stage("phantom", {"voxel_mm": size.phantom_voxel_mm, "seed": seed})
    return {"shape": list(ph.labels.shape), "components": len(ph.components)}


def stage_ct_simulate(ctx: StageContext) -> dict[str, Any]:
    from spectct.ct.study import simulate_ct_study

    size = _size(ctx)
    return simulate_ct_study(ctx.study, kv=110.0, mas=150.0, views=size.ct_views, channels=size.ct_channels,
                             z_range=size.ct_z_range_mm, pixel_mm=size.ct_pixel_mm, slice_mm=size.ct_slice_mm,
                             filter="hann", seed=ctx.settings["seed"], figures=True, device=ctx.device,
                             reporter=ctx.reporter, stage_name="ct_simulate")


def stage_ct_mar(ctx: StageContext) -> dict[str, Any]:
    from spectct.ct.study import mar_study

    return mar_study(ctx.study, method="imar", device=ctx.device, reporter=ctx.reporter,
                     compare=ctx.settings.get("mar_compare", ()), compare_every=ctx.settings.get("mar_compare_every", 1))


def stage_spect_simulate(ctx: StageContext) -> dict[str, Any]:
    from spectct.spect.study import simulate_spect_study

    size = _size(ctx)
    return simulate_spect_study(ctx.study, seed=ctx.settings["seed"], stops_per_head=size.spect_stops_per_head,
                                time_per_stop_s=size.spect_time_per_stop_s, matrix=size.spect_matrix,
                                pixel_mm=size.spect_pixel_mm, device=ctx.device, reporter=ctx.reporter)


def stage_spect_recon(ctx: StageContext) -> dict[str, Any]:
    from spectct.spect.study import reconstruct_spect_study

    size = _size(ctx)
    return reconstruct_spect_study(ctx.study, iterations=size.osem_iterations, subsets=size.osem_subsets,
                                   device=ctx.device, reporter=ctx.reporter)


def stage_analyze(ctx: StageContext) -> dict[str, Any]:
    from spectct.analysis import analyze_study
    from spectct.io.nifti import read_nifti
    from spectct.spect.study import RADIOPHARMACEUTICAL

    study = ctx.study
    doc = analyze_study(read_nifti(study.path(SPECT)), read_nifti(study.path(CT_MAR)), out_dir=study.root,
                        device=ctx.device, reporter=ctx.reporter, figures=False, tracer=RADIOPHARMACEUTICAL)
    return {"findings": len(doc["findings"]), "implants": len(doc["implants"])}


def stage_figures(ctx: StageContext) -> dict[str, Any]:
    from spectct.pipeline.figures import case_figures

    return case_figures(ctx.study, device=ctx.device, reporter=ctx.reporter, case=ctx.settings.get("case", True))


def stage_truth_check(ctx: StageContext) -> dict[str, Any]:
    from spectct.pipeline.truthcheck import write_truth_check

    doc = write_truth_check(ctx.study)
    return {"passed": doc["passed"]}


def stage_report(ctx: StageContext) -> dict[str, Any]:
    from spectct.report.html import build_report

    build_report(ctx.study, title=ctx.settings.get("title"))
    return {}


def demo_stages(size: DemoSize, seed: int) -> list[Stage]:
    """The stages of ``spectct demo`` with the parameters that decide whether each is up to date."""
    p = size.as_dict() | {"seed": seed}
    return [
        Stage("phantom", "digital patient (labels, activity, materials)", stage_phantom, outputs=TRUTH,
              params={k: p[k] for k in ("phantom_voxel_mm", "seed")}, requires=("spectct.phantom.case",)),
        Stage("ct_simulate", "polyenergetic 110 kV CT of the implant region, FBP without MAR", stage_ct_simulate,
              inputs=TRUTH, outputs=(CT_RAW, CT_NOMAR, "ct/topogram.png"),
              params={k: p[k] for k in ("ct_pixels", "ct_pixel_mm", "ct_slice_mm", "ct_views", "ct_channels",
                                        "ct_z_range_mm", "seed")},
              requires=("spectct.ct.simulate",)),
        Stage("ct_mar", "metal artifact reduction (iMAR-like) against the metal-free reference", stage_ct_mar,
              inputs=(CT_RAW,), outputs=(CT_MAR, "ct/metal_mask.nii.gz", "ct/mar_metrics.json"),
              requires=("spectct.ct.mar",)),
        Stage("spect_simulate", "dual-head Tc-99m SPECT and planar statics", stage_spect_simulate,
              inputs=TRUTH, outputs=(PROJ, "planar/anterior.npy", "planar/posterior.npy"),
              params={k: p[k] for k in ("spect_matrix", "spect_pixel_mm", "spect_stops_per_head",
                                        "spect_time_per_stop_s", "seed")},
              requires=("spectct.spect.simulate",)),
        Stage("spect_recon", "OSEM with CT attenuation, resolution recovery and TEW scatter correction",
              stage_spect_recon, inputs=(PROJ, CT_MAR), outputs=(SPECT, "spect/mumap.nii.gz"),
              params={k: p[k] for k in ("osem_iterations", "osem_subsets")}, requires=("spectct.spect.recon",)),
        Stage("analyze", "implants from CT, hot spots, localisation, classification", stage_analyze,
              inputs=(SPECT, CT_MAR), outputs=(FINDINGS,), requires=("spectct.analysis",)),
        Stage("figures", "the case's figure set", stage_figures,
              inputs=(SPECT, CT_MAR, CT_NOMAR, FINDINGS), outputs=FIGURES, requires=("spectct.render.vrt",)),
        Stage("truth_check", "reading compared with the phantom's truth", stage_truth_check,
              inputs=(FINDINGS, *TRUTH), outputs=("truth_check.json",)),
        Stage("report", "HTML report", stage_report, inputs=(FINDINGS, "truth_check.json", *FIGURES),
              outputs=("report.html",)),
    ]
