"""Planar static images: scanner-like display of anterior/posterior counts.

Nuclear-medicine workstations show planar statics in an inverse grey scale (black = many counts)
with the upper level at a high percentile of the counts so that a few hot pixels do not wash the image
out; anterior images are seen from the front (patient right on the viewer's left), posterior images
from behind. :func:`spectct.spect.simulate.simulate_planar` produces the counts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spectct.atomic import atomic_path
from spectct.errors import InputError


def display_levels(counts: np.ndarray, percentile: float = 99.5) -> tuple[float, float]:
    """(lower, upper) display window: 0 and the ``percentile`` of the non-zero counts (≥ 1)."""
    c = np.asarray(counts, dtype=np.float64)
    if not np.all(np.isfinite(c)) or c.ndim != 2:
        raise InputError("planar image must be a finite 2-D array")
    top = float(np.percentile(c[c > 0], percentile)) if np.any(c > 0) else 1.0
    return 0.0, max(top, 1.0)


def write_planar_png(counts: np.ndarray, path: str | os.PathLike, label: str = "",
                     percentile: float = 99.5, dpi: int = 128) -> Path:
    """Write a planar image as an inverse-grey PNG with its view label and total counts (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(counts, dtype=np.float64)
    lo, hi = display_levels(c, percentile)
    fig = plt.figure(figsize=(4, 4 * c.shape[0] / c.shape[1]), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(c, cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
    style = {"transform": ax.transAxes, "va": "top", "color": "tab:blue"}
    if label:
        ax.text(0.02, 0.98, label.upper(), ha="left", fontsize=8, **style)
    ax.text(0.98, 0.98, f"{int(c.sum()):,} counts", ha="right", fontsize=7, **style)
    ax.axis("off")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
