"""`spectct render ...`: single figures (fused planes, MPR, MIP, rotating MIP, VRT, CT comparison, planar)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectct.errors import InputError

render_app = typer.Typer(help="Single figures: fused SPECT/CT, MPR, MIP, volume rendering, planar.",
                         no_args_is_help=True)

_PLANES = ("axial", "coronal", "sagittal")


def parse_point(text: str | None):
    """``"x,y,z"`` (LPS mm) → three floats, or None."""
    if text is None:
        return None
    parts = text.replace(";", ",").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--point must be three numbers 'x,y,z' in LPS mm, got {text!r}") from None
    if len(values) != 3:
        raise InputError(f"--point must be three numbers 'x,y,z' in LPS mm, got {text!r}")
    return values


def parse_planes(text: str) -> tuple[str, ...]:
    planes = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in planes if p not in _PLANES]
    if bad or not planes:
        raise InputError(f"--planes takes a comma list of {', '.join(_PLANES)}, got {text!r}")
    return planes


def parse_window(text: str):
    if "," in text:
        try:
            level, width = (float(v) for v in text.split(","))
        except ValueError:
            raise InputError(f"--window must be bone, soft, metal or 'level,width', got {text!r}") from None
        return level, width
    return text


def _png(path: Path, option: str = "--out") -> Path:
    if path.suffix.lower() != ".png":
        raise InputError(f"{option} {path}: figures are written as .png")
    return path


def _load(path: Path, reporter, what: str):
    from spectct.io.load import load_volume

    reporter.info(f"reading {what} {path}")
    return load_volume(path, reporter=reporter)


def _load_planar(path: Path):
    import numpy as np

    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".npy":
            img = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            img = iio.imread(path)
    except Exception as exc:  # numpy/imageio raise many types for unreadable files
        raise InputError(f"{path}: not a readable image ({exc})") from None
    img = np.asarray(img, dtype=float)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3].mean(axis=-1)
    if img.ndim != 2:
        raise InputError(f"{path}: planar image must be 2-D, got shape {img.shape}")
    return img


@render_app.command("fused")
def fused(
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    ct: Annotated[
        Path | None, typer.Option("--ct", help="CT volume (NIfTI, DICOM folder, Interfile).")
    ] = None,
    spect: Annotated[Path | None, typer.Option("--spect", help="SPECT volume.")] = None,
    point: Annotated[
        str | None, typer.Option("--point", help="LPS point 'x,y,z' in mm (default: SPECT maximum).")
    ] = None,
    planes: Annotated[str, typer.Option("--planes", help="Comma list of planes.")] = "axial,coronal,sagittal",
    window: Annotated[
        str, typer.Option("--window", help="CT window: bone, soft, metal or 'level,width' (HU).")
    ] = "bone",
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="SPECT display threshold (volume units).")
    ] = None,
    vmax: Annotated[float | None, typer.Option("--max", help="Top of the SPECT colour scale.")] = None,
    opacity: Annotated[float, typer.Option("--opacity", help="SPECT overlay opacity (0–1).")] = 0.5,
    title: Annotated[str | None, typer.Option("--title", help="Figure title.")] = None,
    device: Annotated[str, typer.Option("--device", help="torch device (cpu, cuda, auto).")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Fused SPECT/CT planes through a point (CT grey, SPECT hot overlay, colour bars, orientation)."""
    from spectct.progress import Reporter
    from spectct.render.fuse import fused_figure

    reporter = Reporter(quiet=quiet)
    if ct is None and spect is None:
        raise InputError("give --ct, --spect or both")
    _png(out)
    ct_v = _load(ct, reporter, "CT") if ct is not None else None
    sp_v = _load(spect, reporter, "SPECT") if spect is not None else None
    fused_figure(ct_v, sp_v, parse_point(point), parse_planes(planes), out, ct_window=parse_window(window),
                 spect_threshold=threshold, spect_max=vmax, opacity=opacity, title=title, device=device)
    reporter.info(f"wrote {out}")


@render_app.command("mpr")
def mpr(
    volume: Annotated[
        Path, typer.Option("--volume", help="Any volume; HU volumes are shown with a CT window.")
    ],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    point: Annotated[
        str | None, typer.Option("--point", help="LPS point 'x,y,z' in mm (default: centre).")
    ] = None,
    planes: Annotated[str, typer.Option("--planes", help="Comma list of planes.")] = "axial,coronal,sagittal",
    window: Annotated[
        str, typer.Option("--window", help="CT window: bone, soft, metal or 'level,width'.")
    ] = "bone",
    device: Annotated[str, typer.Option("--device", help="torch device.")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Axial, coronal and sagittal planes of one volume (through its maximum unless it is a CT)."""
    from spectct.progress import Reporter
    from spectct.render.fuse import default_point, fused_figure

    reporter = Reporter(quiet=quiet)
    _png(out)
    vol = _load(volume, reporter, "volume")
    p = parse_point(point)
    if p is None:
        p = vol.center_world if vol.unit == "HU" else default_point(None, vol)
    if vol.unit == "HU":
        fused_figure(vol, None, p, parse_planes(planes), out, ct_window=parse_window(window), device=device)
    else:
        fused_figure(None, vol, p, parse_planes(planes), out, spect_threshold=float(vol.data.min()),
                     device=device)
    reporter.info(f"wrote {out}")


@render_app.command("mip")
def mip_cmd(
    volume: Annotated[Path, typer.Option("--volume", help="Volume to project (usually the SPECT).")],
    out: Annotated[Path, typer.Option("--out", help="PNG with the MIPs at --angles.")],
    angles: Annotated[
        str, typer.Option("--angles", help="Comma list of view angles in degrees (0 = anterior).")
    ] = "0",
    gif: Annotated[
        Path | None, typer.Option("--gif", help="Also write a rotating MIP as an animated GIF.")
    ] = None,
    mp4: Annotated[
        Path | None, typer.Option("--mp4", help="Also write a rotating MIP as an H.264 MP4 video.")
    ] = None,
    strip: Annotated[
        Path | None, typer.Option("--strip", help="Also write a PNG strip of rotating views.")
    ] = None,
    n_angles: Annotated[int, typer.Option("--n-angles", help="Views over 360° for --gif/--mp4/--strip.")] = 36,
    frame_ms: Annotated[
        int, typer.Option("--frame-ms", help="Duration of one view in the GIF/MP4 (ms).")
    ] = 120,
    cmap: Annotated[str, typer.Option("--cmap", help="Colour map (gray_r: black on white).")] = "gray_r",
    title: Annotated[str | None, typer.Option("--title", help="Figure title.")] = None,
    device: Annotated[str, typer.Option("--device", help="torch device.")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Maximum-intensity projections (and optionally a rotating MIP as GIF, MP4 and/or PNG strip)."""
    from spectct.progress import Reporter
    from spectct.render.mip import mip_figure, rotating_mip

    reporter = Reporter(quiet=quiet)
    _png(out)
    if gif is not None and gif.suffix.lower() != ".gif":
        raise InputError(f"--gif {gif}: the animation is written as .gif")
    if mp4 is not None and mp4.suffix.lower() != ".mp4":
        raise InputError(f"--mp4 {mp4}: the video is written as .mp4")
    if n_angles < 1:
        raise InputError(f"--n-angles must be at least 1, got {n_angles}")
    if frame_ms < 1:
        raise InputError(f"--frame-ms must be at least 1, got {frame_ms}")
    if strip is not None:
        _png(strip, "--strip")
    try:
        angle_list = tuple(float(a) for a in angles.split(","))
    except ValueError:
        raise InputError(f"--angles must be a comma list of numbers, got {angles!r}") from None
    vol = _load(volume, reporter, "volume")
    mip_figure(vol, out, angles=angle_list, cmap=cmap, title=title, device=device)
    if gif is not None or mp4 is not None or strip is not None:
        reporter.info(f"rotating MIP over {n_angles} views")
        rotating_mip(vol, n_angles, gif, strip, cmap=cmap, title=title, device=device, frame_ms=frame_ms,
                     path_mp4=mp4)
    written = [p for p in (out, gif, mp4, strip) if p is not None]
    reporter.info("wrote " + ", ".join(str(p) for p in written))


@render_app.command("vrt")
def vrt(
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    ct: Annotated[Path, typer.Option("--ct", help="CT volume (HU).")],
    spect: Annotated[Path | None, typer.Option("--spect", help="SPECT volume for hot spots.")] = None,
    view: Annotated[
        str, typer.Option("--view", help="anterior, posterior, left, right, or an angle in degrees.")
    ] = "anterior",
    step: Annotated[
        float | None, typer.Option("--step-mm", help="Ray step and pixel size in mm (default automatic).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="SPECT threshold (default 35 % of max).")
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Figure title.")] = None,
    device: Annotated[str, typer.Option("--device", help="torch device.")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Volume rendering of bone and metal with SPECT hot spots (torch ray caster, headless)."""
    from spectct.progress import Reporter
    from spectct.render.vrt import VIEWS, volume_render

    reporter = Reporter(quiet=quiet)
    _png(out)
    if view in VIEWS:
        v: str | float = view
    else:
        try:
            v = float(view)
        except ValueError:
            raise InputError(f"--view must be one of {', '.join(VIEWS)} or an angle, got {view!r}") from None
    ct_v = _load(ct, reporter, "CT")
    sp_v = _load(spect, reporter, "SPECT") if spect is not None else None
    reporter.info("ray casting")
    volume_render(ct_v, sp_v, v, out, step_mm=step, spect_threshold=threshold, title=title, device=device)
    reporter.info(f"wrote {out}")


@render_app.command("compare")
def compare(
    ct: Annotated[list[Path], typer.Option("--ct", help="CT volumes to compare (repeat: --ct A --ct B).")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    titles: Annotated[str | None, typer.Option("--titles", help="Comma list of column titles.")] = None,
    point: Annotated[
        str | None, typer.Option("--point", help="LPS point 'x,y,z' in mm (default: centre).")
    ] = None,
    planes: Annotated[str, typer.Option("--planes", help="Comma list of planes (rows).")] = "axial",
    window: Annotated[str, typer.Option("--window", help="CT window shared by all panels.")] = "metal",
    spect: Annotated[
        Path | None, typer.Option("--spect", help="Optional SPECT overlay on every panel.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="torch device.")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """CT volumes side by side in one window (e.g. without and with metal artefact reduction)."""
    from spectct.progress import Reporter
    from spectct.render.fuse import side_by_side

    reporter = Reporter(quiet=quiet)
    _png(out)
    vols = [_load(p, reporter, "CT") for p in ct]
    names = [t.strip() for t in titles.split(",")] if titles else [p.name for p in ct]
    sp_v = _load(spect, reporter, "SPECT") if spect is not None else None
    p = parse_point(point)
    if p is None:
        p = vols[0].center_world
    side_by_side(vols, p, out, titles=names, planes=parse_planes(planes), ct_window=parse_window(window),
                 spect=sp_v, device=device)
    reporter.info(f"wrote {out}")


@render_app.command("planar")
def planar(
    anterior: Annotated[
        Path, typer.Option("--anterior", help="Anterior static (.npy, 16-bit PNG/TIFF), rows head→feet.")
    ],
    posterior: Annotated[
        Path, typer.Option("--posterior", help="Posterior static, as seen by its detector.")
    ],
    pixel_mm: Annotated[float, typer.Option("--pixel-mm", help="Detector pixel size in mm.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    saturation: Annotated[
        float, typer.Option("--saturation", help="Fraction of the maximum shown as black.")
    ] = 1.0,
    normal_grey: Annotated[bool, typer.Option("--white-on-black", help="White counts on black.")] = False,
    title: Annotated[str | None, typer.Option("--title", help="Figure title.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Anterior and posterior planar statics side by side."""
    from spectct.progress import Reporter
    from spectct.render.planar import planar_figure

    reporter = Reporter(quiet=quiet)
    _png(out)
    planar_figure(_load_planar(anterior), _load_planar(posterior), pixel_mm, out,
                  inverse_grey=not normal_grey, saturation=saturation, title=title)
    reporter.info(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(render_app, name="render")
