"""Figure annotations: orientation letters from LPS vectors, and a scale bar in mm.

Orientation letters follow the radiology convention R/L (patient right/left), A/P (anterior/posterior)
and H/F (head/feet). They are derived from the LPS direction an image edge points to, never from array
order, so an oblique or flipped grid is labelled correctly.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes

from spectct.errors import InputError

# letter for the positive and the negative direction of each LPS axis
_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))


def orientation_letter(vector_lps, min_component: float = 0.25) -> str:
    """Letters naming the patient direction a vector points to.

    Parameters
    ----------
    vector_lps : three LPS components (any length but zero).
    min_component : components whose share of the unit vector is below this are not named.

    Returns
    -------
    str
        One to three letters, strongest component first: ``(1, 0, 0)`` → ``"L"``, ``(-1, 0, 0)`` → ``"R"``,
        ``(0.7, 0.7, 0)`` → ``"LP"``.
    """
    v = np.asarray(vector_lps, dtype=float).reshape(3)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError(f"orientation of a zero or non-finite vector {tuple(v)} is undefined")
    v = v / norm
    order = np.argsort(-np.abs(v), kind="stable")
    out = [_LETTERS[a][0 if v[a] > 0 else 1] for a in order if abs(v[a]) >= min_component]
    return "".join(out)


def edge_letters(right_lps, up_lps) -> dict[str, str]:
    """Letters for the four edges of an image whose right and up directions are given in LPS."""
    r, u = np.asarray(right_lps, float), np.asarray(up_lps, float)
    return {"right": orientation_letter(r), "left": orientation_letter(-r),
            "top": orientation_letter(u), "bottom": orientation_letter(-u)}


def label_edges(ax: Axes, letters: dict[str, str], color: str = "white", fontsize: float = 12) -> None:
    """Write the orientation letters at the middle of each edge, inside the image."""
    backdrop = "white" if color in ("black", "k") else "black"
    style = dict(color=color, fontsize=fontsize, fontweight="bold", transform=ax.transAxes,
                 bbox=dict(boxstyle="round,pad=0.15", facecolor=backdrop, alpha=0.35, edgecolor="none"))
    ax.text(0.015, 0.5, letters["left"], ha="left", va="center", **style)
    ax.text(0.985, 0.5, letters["right"], ha="right", va="center", **style)
    ax.text(0.5, 0.985, letters["top"], ha="center", va="top", **style)
    ax.text(0.5, 0.015, letters["bottom"], ha="center", va="bottom", **style)


def nice_length(span_mm: float, fraction: float = 0.2) -> float:
    """A round length (1, 2 or 5 × 10ⁿ mm) close to ``fraction`` of ``span_mm``."""
    if not (span_mm > 0 and math.isfinite(span_mm)):
        raise InputError(f"scale bar needs a positive image width, got {span_mm}")
    target = span_mm * fraction
    exp = math.floor(math.log10(target))
    best = 1.0
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10**exp <= target:
            best = m
    return best * 10**exp


def add_scale_bar(ax: Axes, span_mm: float | None = None, color: str = "white", loc: str = "lower right",
                  fontsize: float = 9) -> float:
    """Draw a scale bar on an axes whose data units are mm; return its length in mm."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1 = ax.get_xlim()
    span = abs(x1 - x0) if span_mm is None else span_mm
    length = nice_length(span)
    label = f"{length / 10:g} cm" if length >= 10 else f"{length:g} mm"
    bar = AnchoredSizeBar(ax.transData, length, label, loc, pad=0.4, borderpad=0.6, sep=3, frameon=False,
                          color=color, size_vertical=span * 0.006, fontproperties={"size": fontsize})
    ax.add_artist(bar)
    return length


def decorate(ax: Axes, letters: dict[str, str], color: str = "white", title: str | None = None,
             scale_bar: bool = True) -> None:
    """Orientation letters, a scale bar, no ticks, and an optional title on an image axes in mm."""
    label_edges(ax, letters, color=color)
    if scale_bar:
        add_scale_bar(ax, color=color)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=11)
