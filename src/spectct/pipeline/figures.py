"""The case's figure set (case-study.txt figures 1–9) from a study folder, through spectct.render."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from spectct.io.nifti import read_nifti
from spectct.io.study import Study
from spectct.progress import SILENT, Reporter
from spectct.report.figures import MAX_FOCUS_FIGURES


def _plate_point(findings: dict, fallback: np.ndarray) -> np.ndarray:
    """A point on the lateral plate (its centroid) for the coronal views, else ``fallback``."""
    for c in findings.get("implants", []):
        if c.get("kind") == "plate" and c.get("side") == "right":
            return np.asarray(c["centroid_lps"], dtype=float)
    plates = [c for c in findings.get("implants", []) if c.get("kind") == "plate"]
    return np.asarray(plates[0]["centroid_lps"], float) if plates else fallback


def case_figures(study: Study, device: str = "cpu", reporter: Reporter = SILENT,
                 max_focus_figures: int = MAX_FOCUS_FIGURES, case: bool = True) -> dict[str, Any]:
    """Write figures/*.png of the case into the study folder; returns the list written.

    ``case``: the coronal views pass through the right lateral plate (the case's figures 5–6); otherwise
    (any other study) through the hottest focus.
    """
    from spectct.render.fuse import fused_figure, hottest_point, side_by_side
    from spectct.render.mip import mip_figure, rotating_mip
    from spectct.render.planar import planar_figure
    from spectct.render.vrt import volume_render

    out = study.figures
    out.mkdir(parents=True, exist_ok=True)
    spect = read_nifti(study.path("spect/spect.nii.gz"))
    ct_mar = read_nifti(study.path("ct/ct_mar.nii.gz"))
    ct_nomar = read_nifti(study.path("ct/ct_nomar.nii.gz"))
    findings = json.loads(study.path("findings.json").read_text())
    hot = sorted(findings.get("findings", []), key=lambda f: -f["peak_bq_ml"])
    peak = np.asarray(hot[0]["peak_lps"], float) if hot else hottest_point(spect)
    written = []

    reporter.info("figures: planar statics")
    ant, post = (study.path(f"planar/{v}.npy") for v in ("anterior", "posterior"))
    if ant.exists() and post.exists():
        acq = json.loads(study.path("spect/acquisition.json").read_text()) if study.path(
            "spect/acquisition.json").exists() else {}
        pixel = float(((acq.get("planar") or {}).get("geometry") or {}).get("pixel_mm", [2.3976])[0])
        planar_figure(np.load(ant, allow_pickle=False), np.load(post, allow_pickle=False), pixel,
                      out / "planar.png", title="Planar statics, 3 h p.i. (99mTc-HMPAO leukocytes)")
        written.append("planar.png")

    reporter.info("figures: SPECT MIP (anterior and rotating)")
    mip_figure(spect, out / "spect_mip.png", angles=(0.0,), cmap="gray_r", title="SPECT MIP, anterior",
               device=device)
    rotating_mip(spect, n_angles=24, path_gif=out / "spect_mip_rotating.gif",
                 path_png_strip=out / "spect_mip_strip.png", device=device, title="SPECT MIP",
                 path_mp4=out / "spect_mip_rotating.mp4")
    written += ["spect_mip.png", "spect_mip_rotating.gif", "spect_mip_rotating.mp4", "spect_mip_strip.png"]

    reporter.info("figures: volume rendering")
    volume_render(ct_mar, None, view="anterior", path=out / "vrt_ct_mar.png", title="CT with MAR, VRT",
                  device=device)
    volume_render(ct_mar, spect, view="anterior", path=out / "vrt_fused.png", title="SPECT/CT with MAR, VRT",
                  device=device)
    written += ["vrt_ct_mar.png", "vrt_fused.png"]

    reporter.info("figures: CT with and without MAR")
    plate = _plate_point(findings, peak) if case else peak
    through = "through the lateral plate" if case else "through the hottest focus"
    side_by_side([ct_nomar, ct_mar], point_lps=plate, path=out / "ct_mar_comparison.png",
                 titles=["CT without MAR", "CT with MAR"], planes=("coronal", "axial"), ct_window="bone",
                 title="Coronal and axial CT without vs with metal artifact reduction")
    written.append("ct_mar_comparison.png")

    reporter.info("figures: fused MPR")
    fused_figure(None, spect, point_lps=plate, planes=("coronal",), path=out / "coronal_spect.png",
                 title="Coronal SPECT MPR", device=device)
    fused_figure(ct_mar, spect, point_lps=np.array([plate[0], plate[1], peak[2]]), planes=("coronal", "sagittal"),
                 path=out / "coronal_spect_fused.png", title=f"Coronal SPECT/CT with MAR {through}",
                 device=device)
    written += ["coronal_spect.png", "coronal_spect_fused.png"]
    for rank, f in enumerate(hot[:max_focus_figures], start=1):
        where = f.get("nearest_implant") or f"{f.get('side')} {f.get('structure')}"
        point = np.asarray(f["peak_lps"], float)
        fused_figure(ct_mar, spect, point_lps=point, planes=("axial", "coronal"),
                     path=out / f"focus_{rank}.png", markers=[(point, str(f["id"]))],
                     title=f"Finding {f['id']}: {f.get('kind', 'focus')} at {where} ({f.get('classification')})",
                     device=device)
        written.append(f"focus_{rank}.png")
    if not hot:  # still show the hottest voxel, labelled as such
        fused_figure(ct_mar, spect, point_lps=peak, planes=("axial", "coronal"), path=out / "focus_1.png",
                     title="Hottest voxel (no finding above background)", device=device)
        written.append("focus_1.png")
    metrics_path = study.path("ct/mar_metrics.json")
    if metrics_path.exists():
        mar_metrics_figure(json.loads(metrics_path.read_text())["metrics"], out / "mar_metrics.png")
        written.append("mar_metrics.png")
    return {"figures": written}


_METHOD_NAMES = {"none": "without MAR", "li": "LI", "nmar": "NMAR", "imar": "iMAR-like"}


def mar_metrics_figure(metrics: dict[str, dict[str, float]], path) -> None:
    """Bar chart of the error near metal and in the rest of the body for each MAR method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spectct.atomic import atomic_path

    order = [m for m in ("none", "li", "nmar", "imar") if m in metrics]
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=120, layout="constrained")
    x = np.arange(len(order))
    band = [metrics[m]["rmse_band"] for m in order]
    outside = [metrics[m]["rmse_outside"] for m in order]
    ax.bar(x - 0.2, band, 0.4, label="within 20 mm of metal", color="#b03a2e")
    ax.bar(x + 0.2, outside, 0.4, label="rest of the body", color="#2e86c1")
    for xi, v in zip(x, band, strict=True):
        ax.text(xi - 0.2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [_METHOD_NAMES.get(m, m) for m in order])
    ax.set_ylabel("RMSE against metal-free CT (HU)")
    ax.set_title("CT error from metal, by reduction method")
    ax.legend(frameon=False, fontsize=8)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
