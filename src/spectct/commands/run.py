"""`spectct run`: read real SPECT/CT (DICOM, NIfTI, Interfile) into a study folder and report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        ct: Annotated[Path, typer.Option("--ct", help="CT: DICOM folder or NIfTI in HU.")],
        spect: Annotated[Path, typer.Option("--spect", help="SPECT projections (DICOM NM, Interfile) or image.")],
        out: Annotated[Path, typer.Option("--out", help="Study folder to create or resume.")],
        late: Annotated[Path | None, typer.Option("--late", help="Late acquisition for dual time point.")] = None,
        iterations: Annotated[int, typer.Option("--iterations", min=1)] = 5,
        subsets: Annotated[int, typer.Option("--subsets", min=1)] = 15,
        mar: Annotated[str, typer.Option("--mar", help="MAR method: imar, nmar, li or none.")] = "imar",
        tracer: Annotated[str | None, typer.Option(
            "--tracer", help="Radiopharmaceutical (default: from the DICOM, else from the radionuclide); "
            "labelled leukocytes get the infection rules, other tracers a neutral reading.")] = None,
        device: Annotated[str, typer.Option("--device", help="torch device: cpu, cuda or auto.")] = "cpu",
        force: Annotated[list[str] | None, typer.Option("--force", help="Re-run this stage (repeatable; 'all').")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Reconstruct and read a real SPECT/CT study: MAR, OSEM with CTAC, hot spots, figures, report."""
        from spectct.device import resolve_device
        from spectct.errors import InputError
        from spectct.io.study import Study
        from spectct.pipeline.real import check_inputs, run_stages_for
        from spectct.pipeline.runner import run_stages, timing_table
        from spectct.progress import Reporter

        reporter = Reporter(quiet=quiet)
        if mar not in ("imar", "nmar", "li", "none"):
            raise InputError(f"--mar {mar!r}: choose imar, nmar, li or none")
        check_inputs(ct, spect, late)
        study = Study.open(out)
        settings = {"ct": ct.resolve(), "spect": spect.resolve(), "late": late.resolve() if late else None,
                    "iterations": iterations, "subsets": subsets, "title": "SPECT/CT report", "case": False,
                    "mar": mar, "tracer": tracer}
        results = run_stages(study, run_stages_for(ct, spect, late, iterations, subsets, mar, tracer),
                             device=str(resolve_device(device)), reporter=reporter, force=force or (),
                             settings=settings)
        if not quiet:
            reporter.console.print(timing_table(results))
