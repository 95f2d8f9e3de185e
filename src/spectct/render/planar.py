"""Planar (static) gamma-camera images, anterior and posterior side by side, as a scanner shows them.

Input convention: each image is given *as seen by its detector* facing the patient, rows from head
(row 0) to feet. The anterior detector therefore has the patient's right on its left (column 0), and the
posterior detector has the patient's right on its right. This is how a dual-head camera records the
pair, and how the pair is displayed (Society of Nuclear Medicine procedure guidelines show anterior
views with patient right on viewer's left and posterior views mirrored).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spectct.atomic import atomic_path  # noqa: E402
from spectct.errors import InputError  # noqa: E402
from spectct.render.annotate import decorate  # noqa: E402

ANTERIOR_LETTERS = {"left": "R", "right": "L", "top": "H", "bottom": "F"}
POSTERIOR_LETTERS = {"left": "L", "right": "R", "top": "H", "bottom": "F"}


def _check_image(img, name: str) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim != 2 or min(a.shape) < 2:
        raise InputError(f"{name} planar image must be a 2-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} planar image contains NaN or infinite values")
    if np.any(a < 0):
        raise InputError(f"{name} planar image has negative counts")
    return a


def planar_figure(anterior: np.ndarray, posterior: np.ndarray, pixel_mm: float | tuple[float, float],
                  path: str | os.PathLike, inverse_grey: bool = True, title: str | None = None,
                  vmax: float | None = None, saturation: float = 1.0, unit: str = "counts",
                  posterior_mirrored: bool = False, dpi: int = 120) -> Path:
    """Write anterior and posterior planar statics side by side with one count scale.

    Parameters
    ----------
    anterior, posterior : 2-D count images [rows head→feet, cols] as seen by each detector (see module
        docstring).
    pixel_mm : detector pixel size (one value or (row, col)).
    path : PNG to write (atomically).
    inverse_grey : black counts on white (nuclear-medicine display) instead of white on black.
    title : figure title.
    vmax : top of the count scale; default ``saturation`` × the larger image maximum.
    saturation : fraction of the maximum where the display saturates (e.g. 0.5 to show faint uptake).
    unit : colour-bar label.
    posterior_mirrored : set when the posterior image was stored already flipped to the anterior's
        left–right sense (column 0 = patient right); it is then flipped back for display.

    Returns
    -------
    Path
        ``path``.
    """
    ant = _check_image(anterior, "anterior")
    post = _check_image(posterior, "posterior")
    if posterior_mirrored:
        post = post[:, ::-1]
    pr, pc = (float(pixel_mm), float(pixel_mm)) if np.isscalar(pixel_mm) else (float(p) for p in pixel_mm)
    if not (pr > 0 and pc > 0):
        raise InputError(f"pixel size must be positive, got {pixel_mm}")
    if not 0 < saturation <= 1:
        raise InputError(f"saturation must be in (0, 1], got {saturation}")
    top = float(vmax) if vmax is not None else saturation * max(ant.max(), post.max())
    if not top > 0:
        top = 1.0
    cmap = "gray_r" if inverse_grey else "gray"
    fg = "black" if inverse_grey else "white"
    h = max(ant.shape[0] * pr, post.shape[0] * pr)
    w = ant.shape[1] * pc + post.shape[1] * pc
    fig = plt.figure(figsize=(min(14.0, 9.0 * w / h + 1.4), 9.0 if h >= w / 2 else 5.0), dpi=dpi,
                     layout="constrained")
    axes = fig.subplots(1, 2)
    im = None
    for ax, img, name, letters in ((axes[0], ant, "ANT", ANTERIOR_LETTERS), (axes[1], post, "POST",
                                                                          POSTERIOR_LETTERS)):
        ny, nx = img.shape
        extent = (-nx * pc / 2, nx * pc / 2, -ny * pr / 2, ny * pr / 2)
        im = ax.imshow(img, extent=extent, cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest",
                       origin="upper")
        decorate(ax, letters, color=fg, title=f"{name}  (total {img.sum():,.0f} {unit})")
        ax.text(0.02, 0.98, name, transform=ax.transAxes, ha="left", va="top", color=fg, fontsize=14,
                fontweight="bold")
    cb = fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02)
    cb.set_label(unit)
    if title:
        fig.suptitle(title, fontsize=13)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    plt.close(fig)
    return Path(path)
