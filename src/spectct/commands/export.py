"""`spectct export STUDY --dicom OUT` (the study as a DICOM set) and `spectct info PATH` (what a file is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from spectct.errors import InputError
from spectct.progress import Reporter


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        study: Annotated[Path, typer.Argument(help="Study folder (ct/, spect/, findings.json, figures/).")],
        dicom: Annotated[Path, typer.Option("--dicom", help="Output folder (replaced atomically).")],
        patient_id: Annotated[str, typer.Option("--patient-id", help="PatientID to write.")] = "",
        patient_name: Annotated[str, typer.Option("--patient-name", help="PatientName to write.")] = "",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Write the study's CT, MAR CT, SPECT (Bq/mL), projections, hot spots (SEG), findings (SR) and
        figures (secondary capture) as one DICOM study."""
        from spectct.io.dicom_out import export_study

        reporter = Reporter(quiet=quiet)
        patient = {k: v for k, v in (("PatientID", patient_id), ("PatientName", patient_name)) if v}
        written = export_study(study, dicom, patient=patient or None, reporter=reporter)
        for name in written:
            reporter.info(f"wrote {name}")

    @app.command("info")
    def info(
        path: Annotated[Path, typer.Argument(help="NIfTI/Interfile/DICOM file or folder.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object instead of text.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Accepted; info always prints.")] = False,
    ) -> None:
        """Print what a file or folder is: format, geometry, windows, series."""
        from spectct.io.load import describe

        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        text = describe(path)
        typer.echo(json.dumps({"path": str(path), "description": text}) if as_json else text)
