"""The figure set of the report: which study files make up the case's figures, in reading order."""

from __future__ import annotations

from dataclasses import dataclass

#: Fused figures drawn for the hottest findings (focus_1 … focus_N).
MAX_FOCUS_FIGURES = 6


@dataclass(frozen=True)
class FigureSpec:
    key: str
    path: str  # relative to the study folder
    caption: str


#: The case's figures (case-study.txt, figures 1–9) in the order a reader expects them.
CASE_FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("xray", "ct/topogram.png", "Anterior X-ray (CT topogram): nails, lateral plate and screws."),
    FigureSpec("planar", "figures/planar.png",
               "Planar anterior and posterior statics at 3 h (inverse grey, same scale)."),
    FigureSpec("mip", "figures/spect_mip.png", "SPECT maximum intensity projection, anterior (a rotating MIP is in "
               "figures/spect_mip_rotating.gif and, as H.264 video, figures/spect_mip_rotating.mp4)."),
    FigureSpec("vrt_ct", "figures/vrt_ct_mar.png", "CT volume rendering with MAR: bone and metal."),
    FigureSpec("vrt_fused", "figures/vrt_fused.png", "SPECT/CT volume rendering with MAR: leukocyte uptake on bone and "
               "implants."),
    FigureSpec("mar", "figures/ct_mar_comparison.png", "Coronal CT without and with metal artifact reduction (same "
               "window)."),
    FigureSpec("coronal_spect", "figures/coronal_spect.png", "Coronal SPECT MPR (SPECT alone, same plane)."),
    FigureSpec("coronal_fused", "figures/coronal_spect_fused.png", "Coronal SPECT MPR and fused SPECT/CT with MAR "
               "through the lateral plate."),
    FigureSpec("hottest", "figures/focus_1.png", "Axial and coronal CT and fused SPECT/CT at the hottest focus."),
    FigureSpec("mar_metrics", "figures/mar_metrics.png", "Metal artifact reduction measured against the metal-free "
               "reference: error near metal (RMSE within 20 mm) for each method."),
)


def focus_figure(index: int) -> FigureSpec:
    """The fused figure of the ``index``-th finding (1 = hottest)."""
    return FigureSpec(f"focus_{index}", f"figures/focus_{index}.png",
                      f"Axial and coronal CT and fused SPECT/CT at the finding ranked {index} by peak uptake.")
