"""Fused SPECT/CT display: CT in grey (window/level), SPECT as a hot overlay with threshold and opacity.

Both images are sampled on the same plane pixels in patient coordinates (see :mod:`spectct.render.mpr`),
so they overlay correctly whatever their grids. Every panel carries orientation letters and a scale
bar; the figure carries colour bars in HU and in the SPECT unit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from spectct.atomic import atomic_path  # noqa: E402
from spectct.errors import GeometryError, InputError  # noqa: E402
from spectct.render.annotate import decorate  # noqa: E402
from spectct.render.colormaps import spect_cmap, window_limits  # noqa: E402
from spectct.render.mpr import Slice2D, plane_slice  # noqa: E402
from spectct.volume import Volume  # noqa: E402

Marker = tuple[Sequence[float], str]

_UNIT_LABELS = {"Bq/mL": "SPECT (Bq/mL)", "counts": "SPECT (counts)", "relative": "SPECT (relative)",
                "HU": "CT (HU)", "1/mm": "μ (1/mm)"}


def hottest_point(volume: Volume) -> np.ndarray:
    """LPS position (mm) of the largest voxel value."""
    idx = np.unravel_index(int(np.argmax(volume.data)), volume.shape)
    return volume.index_to_world(np.asarray(idx, dtype=float))


def default_point(ct: Volume | None, spect: Volume | None) -> np.ndarray:
    """The SPECT maximum when there is a SPECT, else the CT centre."""
    if spect is not None and float(spect.data.max()) > 0:
        return hottest_point(spect)
    vol = ct if ct is not None else spect
    return vol.center_world  # type: ignore[union-attr]


def spect_display_range(spect: Volume, threshold: float | None, vmax: float | None,
                        threshold_fraction: float = 0.2) -> tuple[float, float]:
    """``(threshold, vmax)``: by default the volume maximum and ``threshold_fraction`` of it."""
    top = float(vmax) if vmax is not None else float(np.max(spect.data))
    if not top > 0:
        top = 1.0
    thr = float(threshold) if threshold is not None else threshold_fraction * top
    if thr >= top:
        raise InputError(f"SPECT threshold {thr:g} must be below the display maximum {top:g}")
    return thr, top


def _draw_markers(ax, sl: Slice2D, markers: Sequence[Marker], tolerance_mm: float) -> None:
    for point, label in markers:
        if sl.distance_to_plane(point) > tolerance_mm:
            continue
        u, v = sl.to_display(point)
        ax.plot([u], [v], marker="o", markersize=14, markerfacecolor="none", markeredgecolor="cyan", mew=1.5)
        if label:
            ax.annotate(label, (u, v), xytext=(10, 10), textcoords="offset points", color="cyan", fontsize=9,
                        bbox=dict(boxstyle="round,pad=0.2", facecolor="black", alpha=0.5, edgecolor="none"))


def _draw_crosshair(ax, sl: Slice2D) -> None:
    l0, l1, b0, b1 = sl.extent
    gap, arm = 0.03 * (l1 - l0), 0.08 * (l1 - l0)
    style = dict(color="lime", lw=0.8, alpha=0.8)
    ax.plot([-gap - arm, -gap], [0, 0], **style)
    ax.plot([gap, gap + arm], [0, 0], **style)
    ax.plot([0, 0], [-gap - arm, -gap], **style)
    ax.plot([0, 0], [gap, gap + arm], **style)


def draw_fused(ax, ct_sl: Slice2D | None, sp_sl: Slice2D | None, ct_limits: tuple[float, float],
               sp_range: tuple[float, float], opacity: float, cmap: str = "hot") -> None:
    """Draw one fused panel (no annotations)."""
    ax.set_facecolor("black")
    if ct_sl is not None:
        ax.imshow(ct_sl.data, extent=ct_sl.extent, cmap="gray", vmin=ct_limits[0], vmax=ct_limits[1],
                  interpolation="bilinear", origin="upper")
    if sp_sl is not None:
        thr, top = sp_range
        if ct_sl is not None:  # overlay: below the threshold the CT shows through
            ax.imshow(np.ma.masked_less(sp_sl.data, thr), extent=sp_sl.extent, cmap=spect_cmap(cmap),
                      vmin=thr, vmax=top, alpha=opacity, interpolation="bilinear", origin="upper")
        else:  # SPECT alone: the threshold is the bottom of the colour scale
            ax.imshow(sp_sl.data, extent=sp_sl.extent, cmap=cmap, vmin=thr, vmax=top,
                      interpolation="bilinear", origin="upper")
    ref = ct_sl if ct_sl is not None else sp_sl
    ax.set_xlim(ref.extent[0], ref.extent[1])  # type: ignore[union-attr]
    ax.set_ylim(ref.extent[2], ref.extent[3])  # type: ignore[union-attr]
    ax.set_aspect("equal")


def fused_figure(ct: Volume | None, spect: Volume | None, point_lps=None,
                 planes: Sequence[str] = ("axial", "coronal", "sagittal"),
                 path: str | os.PathLike = "fused.png",
                 ct_window: str | tuple[float, float] = "bone", spect_threshold: float | None = None,
                 spect_max: float | None = None, opacity: float = 0.5, title: str | None = None,
                 markers: Sequence[Marker] = (), units: str | None = None, cmap: str = "hot",
                 step_mm: float | None = None, crosshair: bool = True, dpi: int = 120,
                 device: str | torch.device | None = "cpu") -> Path:
    """Write a PNG of fused SPECT/CT planes through a point.

    Parameters
    ----------
    ct : CT in HU, or None (SPECT alone on black).
    spect : SPECT volume, or None (CT alone).
    point_lps : LPS point (mm) the planes pass through; default the SPECT maximum (else the CT centre).
    planes : any of ``"axial"``, ``"coronal"``, ``"sagittal"``.
    path : PNG to write (atomically).
    ct_window : ``"bone"``, ``"soft"``, ``"metal"`` or ``(level, width)`` in HU.
    spect_threshold : SPECT values below it are not shown (default 20 % of ``spect_max``).
    spect_max : top of the SPECT colour scale (default the volume maximum).
    opacity : SPECT overlay opacity over the CT.
    title : figure title.
    markers : ``[(point_lps, label), ...]`` drawn as labelled circles on every plane that passes within
        5 mm (or 1.5 pixels, if larger) of the point.
    units : label of the SPECT colour bar (default from the volume's unit, e.g. "SPECT (Bq/mL)").
    cmap : matplotlib map for SPECT.
    step_mm : pixel size (default the CT's finest spacing, at least 0.5 mm).
    crosshair : mark the point itself.

    Returns
    -------
    Path
        ``path``.
    """
    if ct is None and spect is None:
        raise InputError("fused_figure needs a CT, a SPECT or both")
    if ct is not None and spect is not None and not ct.overlaps(spect):
        raise GeometryError("SPECT and CT fields of view do not overlap; nothing to fuse")
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"opacity must be in [0, 1], got {opacity}")
    if not planes:
        raise InputError("no planes requested")
    p = default_point(ct, spect) if point_lps is None else np.asarray(point_lps, dtype=float)
    base = ct if ct is not None else spect
    lo, hi = base.extent_world  # type: ignore[union-attr]
    if np.any(p < lo - 1e-6) or np.any(p > hi + 1e-6):
        raise GeometryError(f"point {tuple(np.round(p, 1))} mm (LPS) lies outside the "
                            f"{'CT' if ct is not None else 'SPECT'} volume")
    step = float(step_mm) if step_mm is not None else max(0.5, float(min(base.spacing)))  # type: ignore[union-attr]
    ct_limits = window_limits(ct_window)
    sp_range = spect_display_range(spect, spect_threshold, spect_max) if spect is not None else (0.0, 1.0)
    panels = []
    for plane in planes:
        ct_sl = plane_slice(ct, p, plane, step_mm=step, device=device) if ct is not None else None
        sp_sl = (plane_slice(spect, p, plane, step_mm=step, extent_from=base, device=device)
                 if spect is not None else None)
        panels.append((plane, ct_sl, sp_sl))
    ratios = []
    for _, c, s in panels:
        e = (c or s).extent
        ratios.append(abs(e[1] - e[0]) / abs(e[3] - e[2]))
    height = 4.6
    width = sum(height * r for r in ratios) + 1.6 * ((ct is not None) + (spect is not None))
    fig = plt.figure(figsize=(max(width, 5.0), height + (0.9 if title else 0.5)), dpi=dpi,
                     layout="constrained")
    axes = fig.subplots(1, len(panels), width_ratios=ratios, squeeze=False)[0]
    tol = max(5.0, 1.5 * step)
    for ax, (plane, ct_sl, sp_sl) in zip(axes, panels, strict=True):
        draw_fused(ax, ct_sl, sp_sl, ct_limits, sp_range, opacity, cmap)
        ref = ct_sl or sp_sl
        if crosshair:
            _draw_crosshair(ax, ref)
        _draw_markers(ax, ref, markers, tol)
        q = np.round(p) + 0.0  # no "-0"
        z_note = {"axial": f"z = {q[2]:.0f} mm", "coronal": f"y = {q[1]:.0f} mm",
                  "sagittal": f"x = {q[0]:.0f} mm"}.get(plane, "")
        decorate(ax, ref.letters, title=f"{plane} ({z_note})")
    if ct is not None:
        cb = fig.colorbar(ScalarMappable(Normalize(*ct_limits), "gray"), ax=list(axes), fraction=0.025,
                          pad=0.01)
        cb.set_label(f"CT (HU), window L {np.mean(ct_limits):.0f} / W {ct_limits[1] - ct_limits[0]:.0f}")
    if spect is not None:
        cb = fig.colorbar(ScalarMappable(Normalize(*sp_range), spect_cmap(cmap)), ax=list(axes),
                          fraction=0.025, pad=0.01)
        cb.set_label(units or _UNIT_LABELS.get(spect.unit, f"SPECT ({spect.unit})"))
    if title:
        fig.suptitle(title, fontsize=13)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    plt.close(fig)
    return Path(path)


def side_by_side(volumes: Sequence[Volume], point_lps=None, path: str | os.PathLike = "compare.png",
                 titles: Sequence[str] | None = None, planes: Sequence[str] = ("axial",),
                 ct_window: str | tuple[float, float] = "metal", spect: Volume | None = None,
                 spect_threshold: float | None = None, spect_max: float | None = None, opacity: float = 0.5,
                 title: str | None = None, markers: Sequence[Marker] = (), step_mm: float | None = None,
                 dpi: int = 120, device: str | torch.device | None = "cpu") -> Path:
    """Compare CT volumes (e.g. without and with MAR) in the same planes and the same window.

    One column per volume, one row per plane; an optional SPECT overlay is drawn on every panel with one
    display range. Volumes may sit on different grids; every panel samples the first volume's field of
    view so that the columns line up.
    """
    if not volumes:
        raise InputError("side_by_side needs at least one volume")
    titles = list(titles) if titles is not None else [f"volume {i + 1}" for i in range(len(volumes))]
    if len(titles) != len(volumes):
        raise InputError(f"{len(titles)} titles for {len(volumes)} volumes")
    ref_vol = volumes[0]
    p = default_point(ref_vol, spect) if point_lps is None else np.asarray(point_lps, dtype=float)
    step = float(step_mm) if step_mm is not None else max(0.5, float(min(ref_vol.spacing)))
    ct_limits = window_limits(ct_window)
    sp_range = spect_display_range(spect, spect_threshold, spect_max) if spect is not None else (0.0, 1.0)
    grid = []
    for plane in planes:
        row = []
        for vol in volumes:
            ct_sl = plane_slice(vol, p, plane, step_mm=step, extent_from=ref_vol, device=device)
            sp_sl = (plane_slice(spect, p, plane, step_mm=step, extent_from=ref_vol, device=device)
                     if spect is not None else None)
            row.append((ct_sl, sp_sl))
        grid.append(row)
    e = grid[0][0][0].extent
    aspect = abs(e[3] - e[2]) / abs(e[1] - e[0])
    panel = 4.2
    fig = plt.figure(figsize=(panel * len(volumes) + 1.6, panel * aspect * len(planes) + 0.8), dpi=dpi,
                     layout="constrained")
    axes = fig.subplots(len(planes), len(volumes), squeeze=False)
    tol = max(5.0, 1.5 * step)
    for r, plane in enumerate(planes):
        for c, (ct_sl, sp_sl) in enumerate(grid[r]):
            ax = axes[r, c]
            draw_fused(ax, ct_sl, sp_sl, ct_limits, sp_range, opacity)
            _draw_markers(ax, ct_sl, markers, tol)
            decorate(ax, ct_sl.letters, title=f"{titles[c]} — {plane}")
    cb = fig.colorbar(ScalarMappable(Normalize(*ct_limits), "gray"), ax=axes.ravel().tolist(), fraction=0.025,
                      pad=0.01)
    cb.set_label(f"CT (HU), window L {np.mean(ct_limits):.0f} / W {ct_limits[1] - ct_limits[0]:.0f}")
    if spect is not None:
        cb = fig.colorbar(ScalarMappable(Normalize(*sp_range), spect_cmap()), ax=axes.ravel().tolist(),
                          fraction=0.025, pad=0.01)
        cb.set_label(_UNIT_LABELS.get(spect.unit, f"SPECT ({spect.unit})"))
    if title:
        fig.suptitle(title, fontsize=13)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    plt.close(fig)
    return Path(path)
