"""`spectct analyze --spect SPECT --ct CT [--late-spect SPECT2] --out DIR`: read the study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectct.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("analyze")
    def analyze(
        spect: Annotated[
            Path, typer.Option("--spect", help="SPECT in Bq/mL (NIfTI, Interfile, DICOM NM recon).")
        ],
        ct: Annotated[Path, typer.Option("--ct", help="CT in HU (NIfTI or DICOM series folder).")],
        out: Annotated[Path, typer.Option("--out", help="Output folder: findings.json and figures/.")],
        late_spect: Annotated[
            Path | None, typer.Option("--late-spect", help="Late SPECT (e.g. 20 h).")
        ] = None,
        early_hours: Annotated[float, typer.Option(help="Early acquisition, hours after injection.")] = 3.0,
        late_hours: Annotated[float, typer.Option(help="Late acquisition, hours after injection.")] = 20.0,
        late_decay_corrected: Annotated[
            bool, typer.Option(help="The late SPECT is already decay-corrected to the early time.")
        ] = False,
        radionuclide: Annotated[
            str | None,
            typer.Option(help="Tracer radionuclide (decay correction; default Tc-99m). One that does not label "
                         "leukocytes, e.g. Lu-177, turns the infection rules off."),
        ] = None,
        tracer: Annotated[
            str | None,
            typer.Option("--tracer", help="Radiopharmaceutical, e.g. '99mTc-HMPAO leukocytes', 'In-111 oxine WBC' "
                         "(infection rules) or '177Lu-PSMA-617' (focal uptake described, no infection claim). "
                         "Default: the DICOM SPECT's Radiopharmaceutical, else a leukocyte study."),
        ] = None,
        figures: Annotated[
            bool, typer.Option(help="Write figures/ (MIP and fused planes per finding).")
        ] = True,
        device: Annotated[str, typer.Option(help="torch device (cpu, cuda).")] = "cpu",
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
    ) -> None:
        """Find the foci, attribute them to implant components and anatomy, classify them; print a table."""
        from spectct.analysis import analyze_study
        from spectct.analysis.findings import findings_table
        from spectct.io.load import load_volume
        from spectct.progress import Reporter

        reporter = Reporter(quiet=quiet)
        if early_hours < 0 or late_hours < 0:
            raise InputError("--early-hours and --late-hours must be ≥ 0")
        spect_v = load_volume(spect, reporter=reporter)
        ct_v = load_volume(ct, reporter=reporter)
        late_v = load_volume(late_spect, reporter=reporter) if late_spect is not None else None
        if ct_v.unit not in ("HU", "1"):
            raise InputError(f"{ct}: CT must be in HU, got unit {ct_v.unit!r}")
        if spect_v.unit not in ("Bq/mL", "counts", "relative", "1"):
            raise InputError(f"{spect}: SPECT must be an activity image, got unit {spect_v.unit!r}")
        if tracer is None:
            from spectct.analysis.tracer import radiopharmaceutical_from_dicom

            tracer = radiopharmaceutical_from_dicom(spect)
        doc = analyze_study(
            spect_v,
            ct_v,
            late_spect=late_v,
            out_dir=out,
            device=device,
            reporter=reporter,
            early_time_s=early_hours * 3600.0,
            late_time_s=late_hours * 3600.0,
            radionuclide=radionuclide,
            late_decay_corrected=late_decay_corrected,
            figures=figures,
            tracer=tracer,
        )
        typer.echo(findings_table(doc))
        reporter.info(f"wrote {out / 'findings.json'}")
