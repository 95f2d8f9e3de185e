"""`spectct mar INPUT --method li|nmar|imar --out CT_MAR.nii.gz`: metal artifact reduction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectct.errors import InputError


def _is_volume_input(path: Path) -> bool:
    """NIfTI, Interfile, DICOM files and folders are images; anything else is tried as raw data."""
    from spectct.io.dicom_common import is_dicom_file
    from spectct.io.load import _is_interfile

    name = path.name.lower()
    return (path.is_dir() or name.endswith((".nii", ".nii.gz", ".dcm", ".ima", ".hv"))
            or _is_interfile(path) or is_dicom_file(path))


def register(app: typer.Typer) -> None:
    @app.command("mar")
    def mar(
        input: Annotated[Path, typer.Argument(
            help="Raw CT data (.npz from simulate-ct), a DICOM CT folder, or a NIfTI in HU.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Corrected CT (HU), .nii or .nii.gz.")],
        method: Annotated[str, typer.Option(
            "--method", "-m", help="li, nmar or imar (iterated NMAR + frequency split).")] = "imar",
        mask_out: Annotated[Path | None, typer.Option(
            "--mask-out", help="Also write the metal mask (.nii.gz).")] = None,
        iterations: Annotated[int | None, typer.Option(
            "--iterations", min=1, max=10,
            help="NMAR passes of imar (default: 2 from raw data, 1 from an image).")] = None,
        n_pixels: Annotated[int | None, typer.Option(
            "--n-pixels", help="Raw input: image matrix (default: the scan's).")] = None,
        pixel_mm: Annotated[float | None, typer.Option(
            "--pixel-mm", help="Raw input: pixel size in mm.")] = None,
        device: Annotated[str, typer.Option("--device", help="torch device: cpu, cuda, auto.")] = "cpu",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Metal artifact reduction (LI, NMAR, iMAR-like) from raw data or from a reconstructed CT."""
        import numpy as np

        from spectct.ct.mar import IMAR_ITERATIONS, METHODS, mar_image, mar_sinogram
        from spectct.ct.metal import metal_mask
        from spectct.io.nifti import write_nifti
        from spectct.progress import Reporter

        reporter = Reporter(quiet=quiet)
        if method.lower() not in METHODS:
            raise InputError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
        name = out.name.lower()
        if not (name.endswith(".nii") or name.endswith(".nii.gz")):
            raise InputError(f"--out {out}: the corrected CT is written as NIfTI (.nii or .nii.gz)")
        if not input.exists():
            raise InputError(f"{input}: no such file or folder")
        if _is_volume_input(input):
            from spectct.io.load import load_volume

            ct = load_volume(input, reporter=reporter)
            if ct.unit not in ("HU", "1"):
                raise InputError(f"{input}: image unit is {ct.unit!r}; MAR needs a CT in HU")
            try:
                result = mar_image(ct, method=method, iterations=iterations, device=device, reporter=reporter)
            except InputError as exc:
                raise InputError(f"{input}: {exc}") from None
            mask = ct.with_data(metal_mask(ct).astype(np.uint8), unit="label")
        else:
            from spectct.ct.sinogram_io import load_raw

            raw = load_raw(input)
            try:
                result, mask = mar_sinogram(raw, method=method, n_pixels=n_pixels, pixel_mm=pixel_mm,
                                            iterations=iterations or IMAR_ITERATIONS, device=device, reporter=reporter,
                                            return_mask=True)
            except InputError as exc:
                raise InputError(f"{input}: {exc}") from None
        write_nifti(result, out)
        reporter.info(f"wrote {out}")
        if mask_out is not None:
            write_nifti(mask, mask_out)
            reporter.info(f"wrote {mask_out}")
