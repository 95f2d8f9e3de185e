"""`spectct simulate-spect STUDY`: the case's SPECT and planar acquisitions from STUDY/truth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("simulate-spect")
    def simulate_spect_cmd(
        study_dir: Annotated[Path, typer.Argument(help="Study folder holding truth/ (`spectct phantom`).")],
        seed: int = typer.Option(0, "--seed", help="Seed of the Poisson noise."),
        injected_mbq: float = typer.Option(330.0, "--injected-mbq", help="Injected activity in MBq."),
        delay_h: float = typer.Option(3.0, "--delay-h", help="Hours from injection to the scan."),
        fraction_in_fov: float = typer.Option(0.05, "--fraction-in-fov",
                                              help="Fraction of the injected WBC activity in the phantom."),
        radius_mm: float = typer.Option(None, "--radius-mm",
                                        help="Circular orbit radius (default: body contour)."),
        clearance_mm: float = typer.Option(20.0, "--clearance-mm", help="Body-contour clearance in mm."),
        oversample: int = typer.Option(1, "--oversample",
                                       help="Forward model on a grid k× finer than the pixels (1–3; 2 ≈ 8× time)."),
        planar_time_s: float = typer.Option(300.0, "--planar-time-s", help="Planar static duration in s."),
        stops_per_head: int = typer.Option(60, "--stops-per-head", help="Stops per head (2 heads, 360°)."),
        time_per_stop_s: float = typer.Option(20.0, "--time-per-stop-s", help="Seconds per stop."),
        matrix: int = typer.Option(128, "--matrix", help="Detector matrix (square)."),
        pixel_mm: float = typer.Option(4.7952, "--pixel-mm", help="Detector pixel size in mm."),
        device: str = typer.Option("cpu", "--device", help="torch device (cpu, cuda, auto)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
    ) -> None:
        """Simulate the dual-head Tc-99m WBC SPECT (3 windows, Poisson) and the planar statics."""
        from spectct.progress import Reporter
        from spectct.spect.acquire import run_simulate_spect

        reporter = Reporter(quiet=quiet)
        run_simulate_spect(study_dir, seed=seed, injected_mbq=injected_mbq, delay_h=delay_h,
                           fraction_in_fov=fraction_in_fov, radius_mm=radius_mm, clearance_mm=clearance_mm,
                           oversample=oversample, planar_time_s=planar_time_s, device=device,
                           reporter=reporter, stops_per_head=stops_per_head, time_per_stop_s=time_per_stop_s,
                           matrix=matrix, pixel_mm=pixel_mm)
