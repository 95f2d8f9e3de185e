"""`spectct run` on external volumes: CT (NIfTI, HU) and a reconstructed SPECT (NIfTI, Bq/mL)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spectct.cli import app
from spectct.io.nifti import write_nifti
from spectct.volume import Volume


def _scene(tmp_path):
    """A thigh-like water cylinder with a femur and a steel rod on the patient's right, and a hot focus there."""
    nz, ny, nx, h = 24, 96, 128, 2.5
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    xmm, ymm = (x - (nx - 1) / 2) * h, (y - (ny - 1) / 2) * h
    ct = np.full((nz, ny, nx), -1000.0, np.float32)
    for cx in (-70.0, 70.0):
        ct[((xmm - cx) ** 2 + ymm**2) < 55**2] = 40.0
        ct[((xmm - cx) ** 2 + ymm**2) < 15**2] = 1400.0
        ct[((xmm - cx) ** 2 + ymm**2) < 9**2] = 200.0
    ct[((xmm + 70) ** 2 + ymm**2) < 5**2] = 3071.0  # the rod in the right femur
    origin = (-(nx - 1) / 2 * h, -(ny - 1) / 2 * h, -30.0)
    ct_vol = Volume(ct, spacing=(h, h, h), origin=origin, unit="HU", frame_of_reference="1.2.3")
    sp = np.full((nz, ny, nx), 100.0, np.float32) * (ct > -500)
    zmm = origin[2] + z * h
    sp += 8000.0 * np.exp(-(((xmm + 88) ** 2 + ymm**2 + zmm**2) / (2 * 6.0**2)))
    sp_vol = Volume(sp.astype(np.float32), spacing=(h, h, h), origin=origin, unit="Bq/mL", frame_of_reference="1.2.3")
    return write_nifti(ct_vol, tmp_path / "ct.nii.gz"), write_nifti(sp_vol, tmp_path / "spect.nii.gz")


def test_run_reads_external_volumes_and_reports(tmp_path):
    ct, spect = _scene(tmp_path)
    out = tmp_path / "study"
    res = CliRunner().invoke(app, ["run", "--ct", str(ct), "--spect", str(spect), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "findings.json").read_text())
    assert doc["findings"], "the hot focus was not found"
    hottest = max(doc["findings"], key=lambda f: f["peak_bq_ml"])
    assert hottest["side"] == "right"
    assert abs(hottest["peak_lps"][0] + 88) < 6
    html = (out / "report.html").read_text()
    assert "SPECT/CT report" in html and "Truth check" not in html
    assert (out / "ct" / "ct_mar.nii.gz").exists()
    again = CliRunner().invoke(app, ["run", "--ct", str(ct), "--spect", str(spect), "--out", str(out)])
    assert again.exit_code == 0 and again.output.count("up to date") >= 5


def test_run_missing_input_is_a_clean_error(tmp_path):
    import sys

    from spectct.cli import main

    argv = sys.argv
    sys.argv = ["spectct", "run", "--ct", str(tmp_path / "nope"), "--spect", str(tmp_path / "nope2"),
                "--out", str(tmp_path / "s")]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = argv
    assert exc.value.code == 2
    assert not (tmp_path / "s").exists()
