"""`spectct simulate-ct STUDY` and `spectct recon-ct SINOGRAM --out CT.nii.gz`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectct.errors import InputError


def _parse_slices(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--slices {text!r}: expected Z0:Z1 in mm (LPS z, e.g. -200:-160)") from None
    if not b > a:
        raise InputError(f"--slices {text!r}: Z1 must be greater than Z0")
    return a, b


def register(app: typer.Typer) -> None:
    @app.command("simulate-ct")
    def simulate_ct_cmd(
        study_dir: Annotated[Path, typer.Argument(help="Study folder with truth/.")],
        kv: Annotated[float, typer.Option("--kv", help="Tube voltage in kV (70–150).")] = 110.0,
        mas: Annotated[float, typer.Option("--mas", help="Effective mAs per rotation.")] = 150.0,
        views: Annotated[int, typer.Option("--views", help="Views per rotation.")] = 1152,
        slices: Annotated[str | None, typer.Option(
            "--slices", help="z range Z0:Z1 in LPS mm (default: the whole truth).")] = None,
        pixel_mm: Annotated[float, typer.Option("--pixel-mm", help="CT pixel size in mm.")] = 500.0 / 512,
        slice_mm: Annotated[float, typer.Option("--slice-mm", help="Slice thickness, spacing (mm).")] = 1.0,
        filter: Annotated[str, typer.Option("--filter", help="ram-lak, shepp-logan, hann.")] = "hann",
        seed: Annotated[int, typer.Option("--seed", help="Seed of the quantum and electronic noise.")] = 0,
        figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Axial/coronal PNGs.")] = True,
        device: Annotated[str, typer.Option("--device", help="torch device (cpu, cuda, auto).")] = "cpu",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Polyenergetic fan-beam CT of the study's phantom: raw data, FBP in HU (no MAR), topogram."""
        from spectct.ct.geometry import KVP_RANGE
        from spectct.ct.simulate import simulate_ct_study
        from spectct.io.study import Study
        from spectct.progress import Reporter

        reporter = Reporter(quiet=quiet)
        zr = _parse_slices(slices)
        if not KVP_RANGE[0] <= kv <= KVP_RANGE[1]:  # before the study folder is touched
            raise InputError(f"--kv {kv:g}: tube voltage is outside the CT range "
                             f"{KVP_RANGE[0]:g}–{KVP_RANGE[1]:g} kV")
        study = Study.open(study_dir, create=False)
        simulate_ct_study(study, kv=kv, mas=mas, views=views, z_range=zr, pixel_mm=pixel_mm, slice_mm=slice_mm,
                          filter=filter, seed=seed, figures=figures, device=device, reporter=reporter)

    @app.command("recon-ct")
    def recon_ct_cmd(
        sinogram: Annotated[Path, typer.Argument(help="Raw CT data (.npz from simulate-ct).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output CT in HU (.nii or .nii.gz).")],
        filter: Annotated[str, typer.Option("--filter", help="ram-lak, shepp-logan, hann.")] = "hann",
        n_pixels: Annotated[int | None, typer.Option("--n-pixels", help="Image matrix.")] = None,
        pixel_mm: Annotated[float | None, typer.Option("--pixel-mm", help="Pixel size in mm.")] = None,
        reference: Annotated[bool, typer.Option(
            "--reference", help="Reconstruct the metal-free reference sinogram instead.")] = False,
        device: Annotated[str, typer.Option("--device", help="torch device (cpu, cuda, auto).")] = "cpu",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Fan-beam FBP of raw CT data to HU on an LPS grid (1 slice per raw slice)."""
        from spectct.ct.fbp import FILTERS
        from spectct.ct.simulate import reconstruct_ct
        from spectct.ct.sinogram_io import load_raw
        from spectct.io.nifti import write_nifti
        from spectct.progress import Reporter

        reporter = Reporter(quiet=quiet)
        if filter not in FILTERS:
            raise InputError(f"--filter {filter!r}: choose one of {', '.join(FILTERS)}")
        name = out.name.lower()
        if not (name.endswith(".nii") or name.endswith(".nii.gz")):
            raise InputError(f"--out {out}: the CT is written as NIfTI (.nii or .nii.gz)")
        raw = load_raw(sinogram)
        if reference and raw.reference is None:
            raise InputError(f"{sinogram}: holds no metal-free reference sinogram")
        n = int(n_pixels or raw.n_pixels)
        h = float(pixel_mm or raw.pixel_mm)
        if not (2 <= n <= 4096 and 0.05 <= h <= 10.0):
            raise InputError(f"--n-pixels {n} / --pixel-mm {h}: out of range")
        ct = reconstruct_ct(raw, n_pixels=n, pixel_mm=h, filter=filter, device=device, reporter=reporter,
                            sinogram=raw.reference if reference else None)
        write_nifti(ct, out)
        reporter.info(f"wrote {out} ({ct.shape[0]} slices, {n}² × {h:.3f} mm)")

