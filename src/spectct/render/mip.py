"""Maximum-intensity projections, single and rotating (PNG strip, animated GIF and H.264 MP4).

Angle convention (rotation about the patient's long axis, ``axis="z"``): 0° is the anterior view (the
viewer in front of the patient looking posteriorly; patient right on image left, head up); +90° is the
left lateral view (viewer at the patient's left; anterior on image left); 180° the posterior view.
Other axes rotate the same anterior view about ``x`` or ``y`` (right-hand rule in LPS).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spectct.atomic import atomic_path  # noqa: E402
from spectct.device import resolve_device  # noqa: E402
from spectct.errors import InputError  # noqa: E402
from spectct.render.annotate import decorate, edge_letters  # noqa: E402
from spectct.render.mpr import Slice2D, sample_world  # noqa: E402
from spectct.volume import Volume  # noqa: E402

_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}
#: anterior view: looking along +y (towards posterior), image right = +x (patient left), image up = +z (head)
_VIEW0 = (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))


def rotation_matrix(axis: str, angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` about an LPS axis (Rodrigues' formula)."""
    if axis not in _AXES:
        raise InputError(f"rotation axis must be 'x', 'y' or 'z', got {axis!r}")
    k = np.asarray(_AXES[axis])
    t = math.radians(float(angle_deg))
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(t) * kx + (1 - math.cos(t)) * kx @ kx


def view_frame(angle_deg: float = 0.0, axis: str = "z") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS unit vectors (image right, image up, viewing direction) of a view at ``angle_deg``."""
    r = rotation_matrix(axis, angle_deg)
    return tuple(r @ v for v in _VIEW0)  # type: ignore[return-value]


def _corners(volume: Volume) -> np.ndarray:
    lo, hi = volume.extent_world
    return np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T


def mip(volume: Volume, angle_deg: float = 0.0, axis: str = "z", device: str | torch.device | None = "cpu",
        step_mm: float | None = None, field_mm: tuple[float, float, float, float] | None = None,
        max_points: int = 4_000_000) -> Slice2D:
    """Maximum-intensity projection of ``volume`` seen from ``angle_deg`` (0° = anterior).

    Rays are parallel; samples are taken every ``step_mm`` (default: the finest voxel spacing) by
    trilinear interpolation in patient coordinates, so the image is oriented by the grid's LPS geometry.

    Parameters
    ----------
    volume : image to project (SPECT in Bq/mL, CT in HU ...).
    angle_deg : view angle about ``axis`` (see module docstring).
    axis : ``"z"`` (long axis, default), ``"y"`` or ``"x"``.
    device : torch device.
    step_mm : pixel size and sampling step along the rays.
    field_mm : ``(left, right, bottom, top)`` display window in mm about the volume's centre; by default
        the projected bounding box.
    max_points : samples interpolated at once (bounds memory).

    Returns
    -------
    Slice2D
        The projection; its anchor is the volume's centre, and ``to_display`` places any LPS point.
    """
    dev = resolve_device(device)
    right, up, look = view_frame(angle_deg, axis)
    centre = volume.center_world
    rel = _corners(volume) - centre
    step = float(step_mm) if step_mm is not None else float(min(volume.spacing))
    if not step > 0:
        raise InputError(f"MIP step must be positive, got {step_mm}")
    if field_mm is None:
        u0, u1 = float((rel @ right).min()), float((rel @ right).max())
        v0, v1 = float((rel @ up).min()), float((rel @ up).max())
    else:
        u0, u1, v0, v1 = (float(f) for f in field_mm)
    w0, w1 = float((rel @ look).min()), float((rel @ look).max())
    nu, nv, nw = (max(1, int(round((b - a) / step))) for a, b in ((u0, u1), (v0, v1), (w0, w1)))
    f64 = dict(dtype=torch.float64, device=dev)
    u = torch.as_tensor(u0 + (np.arange(nu) + 0.5) * (u1 - u0) / nu, **f64)
    v = torch.as_tensor(v1 - (np.arange(nv) + 0.5) * (v1 - v0) / nv, **f64)
    w = torch.as_tensor(w0 + (np.arange(nw) + 0.5) * (w1 - w0) / nw, **f64)
    c, r_, up_, lk = (torch.as_tensor(a, **f64) for a in (centre, right, up, look))
    out = torch.empty((nv, nu), dtype=torch.float32, device=dev)
    rows = max(1, max_points // (nu * nw))
    base = c + u[:, None, None] * r_ + w[None, :, None] * lk  # [nu, nw, 3]
    for r0 in range(0, nv, rows):
        r1 = min(nv, r0 + rows)
        pts = base[None] + v[r0:r1, None, None, None] * up_
        out[r0:r1] = sample_world(volume, pts, device=dev).amax(dim=-1)
    return Slice2D(data=out.cpu().numpy(), extent=(u0, u1, v0, v1), letters=edge_letters(right, up),
                   right_lps=right, up_lps=up, anchor_lps=centre, plane=f"MIP {angle_deg:g}°",
                   unit=volume.unit, normal_lps=-look)


def _unit_label(unit: str) -> str:
    return {"Bq/mL": "activity concentration (Bq/mL)", "HU": "HU", "counts": "counts"}.get(unit, unit)


def draw_projection(ax, sl: Slice2D, vmax: float, cmap: str = "gray_r", title: str | None = None,
                    vmin: float = 0.0):
    """Draw a projection with letters and a scale bar; returns the image artist."""
    im = ax.imshow(sl.data, extent=sl.extent, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="bilinear",
                   origin="upper")
    dark = cmap in ("gray", "hot", "inferno", "magma")
    decorate(ax, sl.letters, color="white" if dark else "black", title=title)
    ax.set_facecolor("black" if dark else "white")
    return im


def _fixed_field(volume: Volume, axis: str) -> tuple[float, float, float, float]:
    """A display window that holds every rotated view (the bounding sphere across the axis)."""
    rel = _corners(volume) - volume.center_world
    k = np.asarray(_AXES[axis])
    along = rel @ k
    across = np.linalg.norm(rel - along[:, None] * k, axis=1).max()
    if axis == "z":
        return -across, across, float(along.min()), float(along.max())
    return -across, across, -across, across


def rotating_mip(volume: Volume, n_angles: int = 36, path_gif: str | os.PathLike | None = None,
                 path_png_strip: str | os.PathLike | None = None, axis: str = "z", cmap: str = "gray_r",
                 vmax: float | None = None, strip_views: int = 8, frame_ms: int = 120, dpi: int = 100,
                 step_mm: float | None = None, device: str | torch.device | None = "cpu",
                 title: str | None = None, path_mp4: str | os.PathLike | None = None) -> list[Slice2D]:
    """MIPs at ``n_angles`` equally spaced angles over 360°, written as an animated GIF, an MP4 and/or a PNG strip.

    Parameters
    ----------
    volume : image to project.
    n_angles : number of views (first at 0° = anterior).
    path_gif : animated GIF to write (loops forever), or None.
    path_png_strip : PNG with ``strip_views`` of the views side by side (evenly spaced), or None.
    axis : rotation axis (``"z"``: about the patient's long axis).
    cmap : matplotlib colour map (inverse grey by default, as nuclear medicine displays).
    vmax : top of the display range; default the largest value over all views.
    frame_ms : frame duration of the GIF and of the MP4 (its frame rate is 1000 / ``frame_ms``).
    path_mp4 : MP4 to write (H.264, yuv420p; one video frame per view, see :func:`write_mp4`), or None.
    """
    if n_angles < 1:
        raise InputError(f"n_angles must be at least 1, got {n_angles}")
    angles = [360.0 * a / n_angles for a in range(n_angles)]
    field = _fixed_field(volume, axis)
    views = [mip(volume, a, axis=axis, device=device, step_mm=step_mm, field_mm=field) for a in angles]
    top = float(vmax) if vmax is not None else max(float(s.data.max()) for s in views)
    if not top > 0:
        top = 1.0
    label = _unit_label(volume.unit)
    if path_gif is not None or path_mp4 is not None:
        frames = []
        for sl in views:
            fig, ax = plt.subplots(figsize=(4.0, 4.0 * (field[3] - field[2]) / (field[1] - field[0]) + 0.4),
                                   dpi=dpi)
            draw_projection(ax, sl, top, cmap=cmap, title=f"{title + ' — ' if title else ''}{sl.plane}")
            fig.tight_layout()
            fig.canvas.draw()
            frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
            plt.close(fig)
        if path_gif is not None:
            import imageio.v3 as iio

            with atomic_path(path_gif, suffix=".gif") as tmp:
                iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=frame_ms, loop=0)
        if path_mp4 is not None:
            write_mp4(frames, path_mp4, fps=1000.0 / frame_ms)
    if path_png_strip is not None:
        k = max(1, min(strip_views, n_angles))
        picks = [views[int(round(i * n_angles / k)) % n_angles] for i in range(k)]
        aspect = (field[3] - field[2]) / (field[1] - field[0])
        nrows = 1 if k <= 4 else 2
        ncols = -(-k // nrows)
        fig = plt.figure(figsize=(3.2 * ncols + 1.0, (3.2 * aspect + 0.4) * nrows + 0.5), dpi=120,
                         layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        im = None
        for ax in axes.ravel()[k:]:
            ax.axis("off")
        for ax, sl in zip(axes.ravel(), picks, strict=False):
            im = draw_projection(ax, sl, top, cmap=cmap, title=sl.plane)
        cb = fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
        cb.set_label(label)
        if title:
            fig.suptitle(title)
        with atomic_path(path_png_strip, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
    return views


def _even_rgb(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``frame`` (H, W, 3 uint8) padded with white at the bottom and right to ``height`` × ``width``."""
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    out[: frame.shape[0], : frame.shape[1]] = frame[..., :3]
    return out


def write_mp4(frames: list[np.ndarray] | np.ndarray, path: str | os.PathLike, fps: float = 8.0,
              quality: float = 7.0) -> Path:
    """Write RGB frames as an H.264 MP4 (yuv420p, the pixel format every browser and player decodes).

    The frames are padded (white, bottom and right) to one size with even height and width, which
    yuv420p's 2 × 2 chroma subsampling requires; ffmpeg comes from the ``imageio-ffmpeg`` package, whose
    bundled binary includes libx264. The file is written atomically.

    Parameters
    ----------
    frames : sequence of (H, W, 3) or (H, W, 4) uint8 images (alpha is dropped).
    path : MP4 to write.
    fps : frames per second.
    quality : imageio-ffmpeg quality 0–10 (10 best), mapped by it to x264's constant-quality scale.
    """
    if len(frames) == 0:
        raise InputError("write_mp4 needs at least one frame")
    if not fps > 0:
        raise InputError(f"MP4 frame rate must be positive, got {fps}")
    arrays = [np.asarray(f) for f in frames]
    for f in arrays:
        if f.ndim != 3 or f.shape[2] not in (3, 4) or f.dtype != np.uint8:
            raise InputError(f"MP4 frames must be (H, W, 3|4) uint8 images, got {f.shape} {f.dtype}")
    height = max(f.shape[0] for f in arrays)
    width = max(f.shape[1] for f in arrays)
    height, width = height + height % 2, width + width % 2
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - imageio-ffmpeg is a dependency
        raise InputError("writing MP4 needs the 'imageio-ffmpeg' package") from None
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (width, height), pix_fmt_in="rgb24", pix_fmt_out="yuv420p", fps=float(fps), quality=quality,
            codec="libx264", macro_block_size=2, output_params=["-f", "mp4", "-movflags", "+faststart"],
        )
        writer.send(None)  # start ffmpeg
        try:
            for f in arrays:
                writer.send(np.ascontiguousarray(_even_rgb(f, height, width)))
        finally:
            writer.close()
    return Path(path)


def mip_figure(volume: Volume, path: str | os.PathLike, angles: tuple[float, ...] = (0.0,), axis: str = "z",
               cmap: str = "gray_r", vmax: float | None = None, title: str | None = None,
               device: str | torch.device | None = "cpu") -> Path:
    """One PNG with MIPs at the given angles, shared display range and a colour bar with units."""
    views = [mip(volume, a, axis=axis, device=device) for a in angles]
    top = float(vmax) if vmax is not None else max(float(s.data.max()) for s in views) or 1.0
    ratios = [abs(v.extent[1] - v.extent[0]) / abs(v.extent[3] - v.extent[2]) for v in views]
    height = 4.6
    fig = plt.figure(figsize=(height * sum(ratios) + 1.4, height + 0.8), dpi=120, layout="constrained")
    axes = fig.subplots(1, len(views), squeeze=False, width_ratios=ratios)
    im = None
    for ax, sl in zip(axes[0], views, strict=True):
        im = draw_projection(ax, sl, top, cmap=cmap, title=sl.plane)
    cb = fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02)
    cb.set_label(_unit_label(volume.unit))
    if title:
        fig.suptitle(title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
