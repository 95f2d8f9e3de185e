"""DICOM outputs: SPECT in the CT's frame (checked with SimpleITK/GDCM), SEG, SR, SC, export, validation."""

from __future__ import annotations

import json
import shutil
import subprocess

import highdicom as hd
import imageio.v3 as iio
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from spectct.errors import InputError
from spectct.io.dicom_ct import ct_series_headers, read_ct_series
from spectct.io.dicom_nm import read_nm_volume
from spectct.io.dicom_out import (
    export_study,
    write_ct_series,
    write_nm_projections,
    write_secondary_capture,
    write_seg,
    write_spect_series,
    write_sr,
)
from spectct.io.nifti import write_nifti
from spectct.spect.geometry import Projections, SpectGeometry
from spectct.volume import Volume


@pytest.fixture
def ct_folder(tmp_path):
    rng = np.random.default_rng(0)
    ct = Volume(
        rng.integers(-1000, 1500, (8, 24, 20)).astype(np.float32),
        spacing=(2.5, 0.9765625, 0.9765625),
        origin=(-9.5, -11.25, -10.0),
        unit="HU",
    )
    return write_ct_series(ct, tmp_path / "ct", patient={"PatientID": "P-1", "PatientName": "Test^Case"})


def _spect(frame=None) -> Volume:
    data = np.random.default_rng(2).random((5, 6, 7)).astype(np.float32) * 5000.0
    return Volume(
        data, spacing=(4.4, 4.4, 4.4), origin=(-13.2, -11.0, -8.8), unit="Bq/mL", frame_of_reference=frame
    )


def test_spect_series_geometry_matches_in_simpleitk(ct_folder, tmp_path):
    ct = read_ct_series(ct_folder)
    spect = _spect(ct.frame_of_reference)
    f = write_spect_series(spect, tmp_path / "spect", ct_reference=ct_folder)
    img = sitk.ReadImage(str(f))
    assert img.GetOrigin() == pytest.approx(spect.origin)
    assert img.GetSpacing() == pytest.approx(spect.spacing[::-1])
    assert np.allclose(sitk.GetArrayFromImage(img), spect.data, atol=spect.data.max() / 65535)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct_folder)))
    ct_img = reader.Execute()
    assert ct_img.GetOrigin() == pytest.approx(ct.origin) and ct_img.GetSpacing() == pytest.approx(
        ct.spacing[::-1]
    )
    ds, ref = pydicom.dcmread(f), pydicom.dcmread(sorted(ct_folder.glob("*.dcm"))[0])
    assert ds.FrameOfReferenceUID == ref.FrameOfReferenceUID and ds.StudyInstanceUID == ref.StudyInstanceUID
    assert ds.PatientID == "P-1"
    back = read_nm_volume(f)
    assert back.same_grid(spect, atol_mm=1e-6) and back.unit == "Bq/mL"


def test_seg_sr_sc(ct_folder, tmp_path):
    masks = np.zeros((2, 8, 24, 20), dtype=bool)
    masks[0, 2:4, 5:9, 5:9] = True
    masks[1, 6, 1:3, 1:3] = True
    seg = hd.seg.segread(write_seg(masks, ["focus 1", "focus 2"], ct_folder, tmp_path / "seg.dcm"))
    assert seg.number_of_segments == 2
    headers = ct_series_headers(ct_folder)
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID
    vol = seg.get_volume(combine_segments=False)
    assert int(vol.array.sum()) == int(masks.sum())
    sr = pydicom.dcmread(
        write_sr(
            [
                {
                    "name": "focus 1",
                    "position_lps_mm": (1.0, 2.0, 3.0),
                    "peak_bq_ml": 1234.5,
                    "volume_ml": 3.25,
                    "ratio": 4.5,
                    "classification": "infection likely",
                }
            ],
            ct_folder,
            tmp_path / "sr.dcm",
        )
    )
    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
    numbers = [float(e.value) for e in sr.iterall() if e.keyword == "NumericValue"]
    assert any("infection likely" in t and "(1.0, 2.0, 3.0)" in t for t in texts)
    assert sorted(numbers) == pytest.approx([3.25, 4.5, 1234.5])
    assert sr.PatientID == "P-1"
    iio.imwrite(tmp_path / "fig.png", np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    sc = pydicom.dcmread(
        write_secondary_capture(tmp_path / "fig.png", tmp_path / "sc.dcm", reference=ct_folder)
    )
    assert sc.Rows == 20 and sc.Columns == 30 and sc.StudyInstanceUID == headers[0].StudyInstanceUID
    with pytest.raises(InputError):
        write_seg(masks, ["only one"], ct_folder, tmp_path / "bad.dcm")


def _study(tmp_path):
    s = tmp_path / "study"
    (s / "ct").mkdir(parents=True)
    (s / "spect").mkdir()
    (s / "figures").mkdir()
    ct = Volume(
        np.full((8, 20, 20), -1000.0, np.float32), spacing=(2.5, 2.0, 2.0), origin=(-19, -19, -9), unit="HU"
    )
    write_nifti(ct, s / "ct" / "ct_nomar.nii.gz")
    write_nifti(ct, s / "ct" / "ct_mar.nii.gz")
    write_nifti(_spect(), s / "spect" / "spect.nii.gz")
    g = SpectGeometry.dual_head(stops_per_head=4, radius_mm=200.0, matrix=8, pixel_mm=4.0)
    write_nm_projections(
        Projections(np.ones((3, 8, 8, 8), np.float32), g), s / "spect" / "projections" / "nm.dcm"
    )
    (s / "findings.json").write_text(
        json.dumps(
            {
                "findings": [
                    {
                        "id": 1,
                        "peak_lps": [0, 0, 0],
                        "peak_bq_ml": 100.0,
                        "mean_bq_ml": 50.0,
                        "volume_ml": 0.2,
                        "ratio_to_background": 4.0,
                        "classification": "infection likely",
                    }
                ]
            }
        )
    )
    iio.imwrite(s / "figures" / "fused.png", np.zeros((10, 12, 3), np.uint8))
    return s


def test_export_study_and_validate(tmp_path):
    study = _study(tmp_path)
    written = export_study(study, tmp_path / "out", patient={"PatientID": "EXP"})
    assert set(written) >= {
        "CT/",
        "MAR_CT/",
        "SPECT/spect_recon.dcm",
        "NM/projections.dcm",
        "SEG/hotspots.dcm",
        "SR/findings.dcm",
        "SC/fused.dcm",
    }
    files = sorted((tmp_path / "out").rglob("*.dcm"))
    studies = {pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID for f in files}
    assert len(studies) == 1
    assert {pydicom.dcmread(f, stop_before_pixels=True).PatientID for f in files} == {"EXP"}
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) not installed: outputs not validated")
    one_per_series = {}
    for f in files:
        one_per_series.setdefault(f.parent, f)
    for f in one_per_series.values():
        res = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{f}: {errors}"


def test_cli_export_info_and_exit_code(tmp_path, spectct_cli):
    study = _study(tmp_path)
    code, _, err = spectct_cli("export", study, "--dicom", tmp_path / "out", "--quiet")
    assert code == 0, err
    code, out, _ = spectct_cli("info", tmp_path / "out" / "NM" / "projections.dcm")
    assert code == 0 and "3 window(s) × 8 views" in out
    code, out, _ = spectct_cli("info", tmp_path / "out")
    assert code == 0 and "CT " in out and "SEG" in out
    (tmp_path / "bad.dcm").write_text("not dicom")
    code, _, err = spectct_cli("info", tmp_path / "bad.dcm")
    assert code == 2 and "bad.dcm" in err and "Traceback" not in err
    code, _, err = spectct_cli("export", tmp_path / "nostudy", "--dicom", tmp_path / "out2")
    assert code == 2 and "nostudy" in err and not (tmp_path / "out2").exists()
