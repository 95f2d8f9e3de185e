"""`spectct demo`: the whole simulated case into a study folder, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Annotated[Path, typer.Option("--out", help="Study folder to create or resume.")] = Path("study-demo"),
        size: Annotated[str, typer.Option("--size", help="small (≈2 min), standard or full.")] = "small",
        seed: Annotated[int, typer.Option("--seed", help="Seed of the patient and of all noise.")] = 0,
        device: Annotated[str, typer.Option("--device", help="torch device: cpu, cuda or auto.")] = "cpu",
        force: Annotated[list[str] | None, typer.Option("--force", help="Re-run this stage (repeatable; 'all').")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Simulate and read the femoral-implant leukocyte SPECT/CT case end to end, then write the report."""
        from spectct.device import resolve_device
        from spectct.io.study import Study
        from spectct.pipeline.case import demo_stages
        from spectct.pipeline.runner import run_stages, timing_table
        from spectct.pipeline.sizes import get_size
        from spectct.progress import Reporter

        reporter = Reporter(quiet=quiet)
        preset = get_size(size)
        dev = str(resolve_device(device))
        study = Study.open(out)
        results = run_stages(study, demo_stages(preset, seed), device=dev, reporter=reporter, force=force or (),
                             settings={"size": preset, "seed": seed,
                                       # LI and NMAR beside iMAR for the MAR figure, all measured on every
                                       # 4th slice (the comparison alone would add 60 % to the MAR stage)
                                       "mar_compare": ("li", "nmar"), "mar_compare_every": 4})
        if not quiet:
            reporter.console.print(timing_table(results))
            report = study.path("report.html")
            if report.exists():
                reporter.info(f"report: {report.resolve()}")
