"""`spectct recon-spect`: OSEM reconstruction of SPECT projections to Bq/mL, with CTAC, PSF and scatter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from spectct.errors import InputError
from spectct.progress import Reporter


def register(app: typer.Typer) -> None:
    @app.command("recon-spect")
    def recon_spect(
        projections: Annotated[
            Path, typer.Argument(help="DICOM NM tomo file, Interfile header, or study folder.")
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output NIfTI (Bq/mL).")] = Path(
            "spect.nii.gz"
        ),
        ct: Annotated[
            Path | None, typer.Option("--ct", help="CT for AC: DICOM folder or NIfTI (HU).")
        ] = None,
        mumap: Annotated[Path | None, typer.Option("--mumap", "--mu", help="μ-map NIfTI in 1/mm.")] = None,
        kvp: Annotated[
            float | None, typer.Option("--kvp", help="CT kVp (default: DICOM header, else 120).")
        ] = None,
        iterations: Annotated[int, typer.Option("--iterations", min=1)] = 5,
        subsets: Annotated[int, typer.Option("--subsets", min=1)] = 15,
        psf: Annotated[
            bool, typer.Option("--psf/--no-psf", help="Model the collimator-detector response.")
        ] = True,
        scatter: Annotated[str, typer.Option("--scatter", help="tew, dew or none.")] = "tew",
        filter_mm: Annotated[
            float | None, typer.Option("--filter-mm", help="Gaussian post-filter FWHM (mm).")
        ] = None,
        photopeak: Annotated[
            float | None, typer.Option("--photopeak", help="Photopeak energy (keV).")
        ] = None,
        collimator: Annotated[
            str | None, typer.Option("--collimator", help="lehr or megp (default: file).")
        ] = None,
        device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
        angle_offset: Annotated[
            float,
            typer.Option(
                "--angle-offset", help="Add this many degrees to every DICOM view angle (vendor convention)."
            ),
        ] = 0.0,
        vendor_flip: Annotated[
            bool, typer.Option("--vendor-flip", help="Mirror the DICOM orbit (vendor convention).")
        ] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Reconstruct SPECT projections with OSEM (+CTAC, PSF, TEW/DEW scatter) to Bq/mL."""
        from spectct.atomic import write_text
        from spectct.io.nifti import write_nifti
        from spectct.spect.study import reconstruct_file

        rep = Reporter(quiet=quiet)
        if not (out.name.endswith(".nii") or out.name.endswith(".nii.gz")):
            raise InputError(f"{out}: output must be a .nii or .nii.gz file")
        image, meta = reconstruct_file(projections, ct=ct, mumap=mumap, kvp=kvp, iterations=iterations,
                                       subsets=subsets, psf=psf, scatter=scatter, filter_mm=filter_mm,
                                       photopeak=photopeak, collimator=collimator, device=device,
                                       angle_offset=angle_offset, vendor_flip=vendor_flip, reporter=rep)
        write_nifti(image, out)
        side = out.with_name(out.name.removesuffix(".gz").removesuffix(".nii") + ".json")
        write_text(side, json.dumps(meta, indent=2, default=str) + "\n")
        rep.info(f"wrote {out} (Bq/mL) and {side.name}; max {float(image.data.max()):.4g} Bq/mL")
