"""`spectct phantom`: write the case's digital patient into a study folder's truth/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectct.atomic import atomic_dir, ensure_writable_dir
from spectct.errors import InputError, OutputError


def register(app: typer.Typer) -> None:
    @app.command("phantom")
    def phantom(
        out: Annotated[Path, typer.Option("--out", help="Study folder; the phantom goes to OUT/truth/.")],
        voxel_mm: Annotated[
            float, typer.Option("--voxel-mm", help="Isotropic voxel size in mm (0.5–10).")
        ] = 2.0,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the patient-specific variations.")] = 0,
        supersample: Annotated[
            int, typer.Option("--supersample", help="Points per voxel edge at surfaces (1–8).")
        ] = 2,
        figures: Annotated[
            bool, typer.Option("--figures/--no-figures", help="Write coronal and axial PNGs.")
        ] = True,
        device: Annotated[str, typer.Option("--device", help="torch device (cpu, cuda, auto).")] = "cpu",
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
    ) -> None:
        """Rasterise the femoral-implant patient: labels, activity, materials, components, figures."""
        from spectct.phantom.case import build_case, case_phantom, check_voxel_mm
        from spectct.phantom.figures import write_figures
        from spectct.progress import Reporter

        reporter = Reporter(quiet=quiet)
        check_voxel_mm(voxel_mm)
        if not 1 <= supersample <= 8:
            raise InputError(f"--supersample must be 1..8, got {supersample}")
        if out.exists() and not out.is_dir():
            raise OutputError(f"output {out} exists and is not a folder")
        ensure_writable_dir(out)
        ph = case_phantom(
            voxel_mm=voxel_mm, seed=seed, supersample=supersample, device=device, reporter=reporter
        )
        target = out / "truth"
        with atomic_dir(target) as tmp:
            ph.save(tmp)
            if figures:
                write_figures(ph, tmp, build_case(seed)[2])
        # temporary folders and files are created private; the truth folder is for all its readers
        target.chmod(0o755)
        for path in target.iterdir():
            path.chmod(0o644)
        reporter.info(
            f"phantom {ph.labels.shape} at {voxel_mm} mm with {len(ph.components)} components "
            f"written to {target}"
        )
