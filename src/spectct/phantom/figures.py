"""Figures to look at the digital patient: coronal and axial sections of labels and activity.

Sections are shown in the radiological convention: the patient's right on the viewer's left, head up
in coronal views, anterior up in axial views (seen from the feet). Labels are coloured by kind (metal
in blue shades, infection in red/orange, bone white, marrow pink, soft tissues in browns), with the
implants and infections named in the legend.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, PowerNorm  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from spectct.atomic import atomic_path  # noqa: E402
from spectct.errors import GeometryError  # noqa: E402
from spectct.phantom.model import Phantom  # noqa: E402

#: RGB colour per kind.
KIND_COLOURS = {
    "air": (0.0, 0.0, 0.0),
    "skin": (0.85, 0.65, 0.55),
    "fat": (0.95, 0.85, 0.55),
    "muscle": (0.65, 0.3, 0.3),
    "soft_tissue": (0.75, 0.45, 0.45),
    "bone": (0.97, 0.97, 0.95),
    "marrow": (0.95, 0.6, 0.75),
    "nail": (0.2, 0.5, 1.0),
    "plate": (0.0, 0.9, 1.0),
    "screw": (0.4, 0.3, 1.0),
    "focus": (1.0, 0.0, 0.0),
    "tract": (1.0, 0.85, 0.0),
    "collection": (1.0, 0.5, 0.0),
}


def _lut(phantom: Phantom) -> ListedColormap:
    n = max(c.id for c in phantom.components) + 1
    colours = np.zeros((n, 3))
    for c in phantom.components:
        colours[c.id] = KIND_COLOURS.get(c.kind, (0.5, 0.5, 0.5))
    return ListedColormap(colours)


def _axes_mm(phantom: Phantom) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        return phantom.labels.axis_coordinates()
    except GeometryError:
        raise GeometryError("phantom figures need an axis-aligned grid") from None


def _extent(coords: np.ndarray) -> tuple[float, float]:
    step = coords[1] - coords[0] if coords.size > 1 else 1.0
    return float(coords[0] - step / 2), float(coords[-1] + step / 2)


def _legend(fig, phantom: Phantom) -> None:
    kinds_present = sorted({c.kind for c in phantom.components}, key=list(KIND_COLOURS).index)
    handles = [Patch(color=KIND_COLOURS[k], label=k.replace("_", " ")) for k in kinds_present]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)


def _orient(ax, left: str, right: str, top: str, bottom: str) -> None:
    style = dict(transform=ax.transAxes, color="w", fontsize=10, fontweight="bold", ha="center", va="center")
    ax.text(0.03, 0.5, left, **style)
    ax.text(0.97, 0.5, right, **style)
    ax.text(0.5, 0.97, top, **style)
    ax.text(0.5, 0.03, bottom, **style)


def _act_norm(phantom: Phantom) -> PowerNorm:
    # a square-root scale keeps normal marrow visible beside the infection maximum
    return PowerNorm(gamma=0.5, vmin=0.0, vmax=float(np.max(phantom.activity.data)) or 1.0)


def coronal_figure(
    phantom: Phantom,
    path: str | os.PathLike,
    y_mm: float = 3.0,
    zoom_mm: tuple[float, float, float, float] = (-175.0, -35.0, -425.0, -75.0),
) -> Path:
    """Coronal section at ``y_mm``: labels, a zoom on the right femur, activity, and an activity MIP.

    ``zoom_mm`` is (x_min, x_max, z_min, z_max) of the zoomed panel. Written atomically.
    """
    zc, yc, xc = _axes_mm(phantom)
    j = int(np.argmin(np.abs(yc - y_mm)))
    ext = (*_extent(xc), *_extent(zc))
    n = max(c.id for c in phantom.components) + 1
    fig, axes = plt.subplots(1, 4, figsize=(20, 7.5), layout="constrained")
    common = dict(origin="lower", extent=ext, interpolation="nearest")
    for ax in axes[:2]:
        ax.imshow(phantom.labels.data[:, j, :], cmap=_lut(phantom), vmin=-0.5, vmax=n - 0.5, **common)
    axes[0].set_title(f"labels, coronal y = {yc[j]:.1f} mm")
    axes[1].set_xlim(zoom_mm[0], zoom_mm[1])
    axes[1].set_ylim(zoom_mm[2], zoom_mm[3])
    axes[1].set_title("labels, right femur")
    norm = _act_norm(phantom)
    im = axes[2].imshow(phantom.activity.data[:, j, :], cmap="hot", norm=norm, **common)
    axes[2].set_title("relative activity, same section")
    axes[3].imshow(phantom.activity.data.max(axis=1), cmap="hot", norm=norm, **common)
    axes[3].set_title("activity MIP (anterior view)")
    fig.colorbar(im, ax=axes[2:], shrink=0.6, label="relative concentration per mL (square-root scale)")
    for ax in axes:
        ax.set_xlabel("x (mm)")
        _orient(ax, "R", "L", "H", "F")
    axes[0].set_ylabel("z (mm)")
    _legend(fig, phantom)
    return _save(fig, path)


def axial_figure(
    phantom: Phantom,
    path: str | os.PathLike,
    z_mm: tuple[float, ...] = (-204.0, -368.0),
    zoom_mm: tuple[float, float, float, float] = (-175.0, -45.0, -60.0, 60.0),
) -> Path:
    """Axial sections at ``z_mm`` (rows): labels, a zoom on the right thigh, activity. Written atomically.

    ``zoom_mm`` is (x_min, x_max, y_min, y_max) of the zoomed panel.
    """
    zc, yc, xc = _axes_mm(phantom)
    ext = (*_extent(xc), *_extent(yc)[::-1])
    n = max(c.id for c in phantom.components) + 1
    norm = _act_norm(phantom)
    fig, axes = plt.subplots(len(z_mm), 3, figsize=(16, 4.4 * len(z_mm)), squeeze=False, layout="constrained")
    for row, z in enumerate(z_mm):
        k = int(np.argmin(np.abs(zc - z)))
        for ax in axes[row, :2]:
            ax.imshow(phantom.labels.data[k], cmap=_lut(phantom), vmin=-0.5, vmax=n - 0.5, extent=ext,
                      interpolation="nearest")
        axes[row, 0].set_title(f"labels, axial z = {zc[k]:.1f} mm")
        axes[row, 1].set_xlim(zoom_mm[0], zoom_mm[1])
        axes[row, 1].set_ylim(zoom_mm[3], zoom_mm[2])
        axes[row, 1].set_title("labels, right thigh")
        im = axes[row, 2].imshow(phantom.activity.data[k], cmap="hot", norm=norm, extent=ext,
                                 interpolation="nearest")
        axes[row, 2].set_title("relative activity (square-root scale)")
        fig.colorbar(im, ax=axes[row, 2], shrink=0.8)
        for ax in axes[row]:
            _orient(ax, "R", "L", "A", "P")
            ax.set_xlabel("x (mm)")
            ax.set_ylabel("y (mm)")
    _legend(fig, phantom)
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def write_figures(phantom: Phantom, folder: str | os.PathLike, landmarks: dict | None = None) -> list[Path]:
    """Write ``phantom_coronal.png`` and ``phantom_axial.png`` into ``folder``.

    ``landmarks`` (from :func:`spectct.phantom.case.build_case`) place the axial sections at plate
    screw 2 and at the sinus tract; without them fixed heights are used.
    """
    folder = Path(folder)
    z_mm: tuple[float, ...] = (-204.0, -368.0)
    if landmarks is not None and "plate_screw_tips" in landmarks:
        tract_mid = 0.5 * (landmarks["tract_start"][2] + landmarks["tract_end"][2])
        z_mm = (float(landmarks["plate_screw_tips"][2][2]), float(tract_mid))
    return [
        coronal_figure(phantom, folder / "phantom_coronal.png"),
        axial_figure(phantom, folder / "phantom_axial.png", z_mm=z_mm),
    ]
