"""DICOM NM projections: our writer → our reader is exact; vendor frame orders; bad input refused."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from spectct.errors import GeometryError, InputError
from spectct.io.dicom_nm import read_nm_acquisition, read_nm_projections
from spectct.io.dicom_out import write_nm_projections
from spectct.spect.geometry import EnergyWindow, Projections, SpectGeometry, tc99m_windows


def _projections(direction="CW", seed=0) -> Projections:
    rng = np.random.default_rng(seed)
    g = SpectGeometry.dual_head(
        stops_per_head=8,
        radius_mm=230.0,
        matrix=16,
        pixel_mm=4.7952,
        time_per_stop_s=20.0,
        start_angle_deg=10.0,
        direction=direction,
        radii_mm=rng.uniform(200, 260, 16),
        axial_center_mm=-123.4,
    )
    counts = rng.poisson(7.0, size=(3, 16, 16, 16)).astype(np.float32)
    return Projections(
        counts,
        g,
        radionuclide="Tc-99m",
        start_time_after_injection_s=4 * 3600 + 12.5,
        injected_activity_bq=740e6,
    )


@pytest.mark.parametrize("direction", ["CW", "CCW"])
def test_round_trip_exact(tmp_path, direction):
    p = _projections(direction)
    q = read_nm_projections(write_nm_projections(p, tmp_path / "nm.dcm"))
    g, h = p.geometry, q.geometry
    assert np.array_equal(q.counts, p.counts)
    assert np.allclose(h.angles_deg, g.angles_deg, atol=1e-9)
    assert np.allclose(h.radii_mm, g.radii_mm, atol=1e-9)
    assert h.windows == g.windows
    assert (h.heads, h.stops_per_head, h.direction) == (2, 8, direction)
    assert h.pixel_mm == g.pixel_mm and h.time_per_view_s == g.time_per_view_s
    assert h.axial_center_mm == pytest.approx(g.axial_center_mm)
    assert q.start_time_after_injection_s == pytest.approx(p.start_time_after_injection_s, abs=1e-6)
    assert q.injected_activity_bq == pytest.approx(p.injected_activity_bq)
    assert q.radionuclide == "Tc-99m"


def test_non_integer_counts_scaled(tmp_path):
    p = _projections()
    p.counts = p.counts * 0.37
    q = read_nm_projections(write_nm_projections(p, tmp_path / "nm.dcm"))
    assert np.allclose(q.counts, p.counts, atol=p.counts.max() / 65535)


def test_patient_identifiers_carried(tmp_path):
    p = _projections()
    out = write_nm_projections(
        p, tmp_path / "nm.dcm", patient={"PatientID": "CASE-7", "PatientName": "Doe^J"}
    )
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert ds.PatientID == "CASE-7" and str(ds.PatientName) == "Doe^J"
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID


def _siemens_like(src, dst):
    """Re-write a file with frames ordered detector → window → view (other FrameIncrementPointer order)."""
    ds = pydicom.dcmread(src)
    n_w, n_h, n_v = (
        int(ds.NumberOfEnergyWindows),
        int(ds.NumberOfDetectors),
        int(ds.RotationInformationSequence[0].NumberOfFramesInRotation),
    )
    pix = ds.pixel_array.reshape(n_w, n_h, n_v, ds.Rows, ds.Columns).transpose(1, 0, 2, 3, 4)
    h, w, v = np.meshgrid(np.arange(n_h), np.arange(n_w), np.arange(n_v), indexing="ij")
    ds.FrameIncrementPointer = [0x00540020, 0x00540010, 0x00540050, 0x00540090]
    ds.DetectorVector = (h.ravel() + 1).tolist()
    ds.EnergyWindowVector = (w.ravel() + 1).tolist()
    ds.AngularViewVector = (v.ravel() + 1).tolist()
    ds.PixelData = np.ascontiguousarray(pix).astype("<u2").tobytes()
    ds.save_as(dst)


def test_frames_placed_by_vectors_not_order(tmp_path):
    p = _projections()
    src = write_nm_projections(p, tmp_path / "ge_order.dcm")
    _siemens_like(src, tmp_path / "other_order.dcm")
    q = read_nm_projections(tmp_path / "other_order.dcm")
    assert np.array_equal(q.counts, p.counts)


def test_start_angle_from_rotation_when_detectors_lack_it(tmp_path):
    """GE style: one Start Angle in the Rotation Information Sequence, heads 180° apart."""
    p = _projections("CCW")
    src = write_nm_projections(p, tmp_path / "nm.dcm")
    ds = pydicom.dcmread(src)
    for item in ds.DetectorInformationSequence:
        del item.StartAngle
    ds.save_as(tmp_path / "ge.dcm")
    q = read_nm_projections(tmp_path / "ge.dcm")
    assert np.allclose(q.geometry.angles_deg, p.geometry.angles_deg, atol=1e-9)


def test_uneven_angles_cannot_be_written(tmp_path):
    p = _projections()
    p.geometry.angles_deg[3] += 1.0
    with pytest.raises(GeometryError, match="evenly stepped"):
        write_nm_projections(p, tmp_path / "nm.dcm")
    assert not (tmp_path / "nm.dcm").exists()


@pytest.fixture
def written(tmp_path):
    return write_nm_projections(_projections(), tmp_path / "nm.dcm")


def test_inconsistent_frame_count_refused(written, tmp_path):
    ds = pydicom.dcmread(written)
    ds.AngularViewVector = list(ds.AngularViewVector)[:-1]
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(InputError, match=r"AngularViewVector.*inconsistent frame counts"):
        read_nm_projections(tmp_path / "bad.dcm")


def test_number_of_frames_mismatch_refused(written, tmp_path):
    ds = pydicom.dcmread(written)
    ds.RotationInformationSequence[0].NumberOfFramesInRotation = 7
    for item in ds.DetectorInformationSequence:
        item.RadialPosition = list(item.RadialPosition)[:7]
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(InputError, match="NumberOfFrames"):
        read_nm_projections(tmp_path / "bad.dcm")


@pytest.mark.parametrize(
    "keyword",
    [
        "EnergyWindowInformationSequence",
        "RotationInformationSequence",
        "PixelSpacing",
        "FrameIncrementPointer",
    ],
)
def test_missing_mandatory_tag_named(written, tmp_path, keyword):
    ds = pydicom.dcmread(written)
    delattr(ds, keyword)
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(InputError, match=f"bad.dcm.*{keyword}"):
        read_nm_projections(tmp_path / "bad.dcm")


def test_truncated_pixels_refused(written, tmp_path):
    raw = written.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(raw[: len(raw) - 5000])
    with pytest.raises(InputError, match="cut.dcm"):
        read_nm_projections(tmp_path / "cut.dcm")


def test_non_dicom_refused(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"\0" * 300)
    with pytest.raises(InputError, match="not a DICOM file"):
        read_nm_projections(tmp_path / "x.dcm")


def test_ct_file_is_not_projections(tmp_path):
    from spectct.io.dicom_out import write_ct_series
    from spectct.volume import Volume

    folder = write_ct_series(
        Volume(np.zeros((2, 4, 4), np.float32), spacing=(1, 1, 1), unit="HU"), tmp_path / "ct"
    )
    with pytest.raises(InputError, match="not NM Image Storage"):
        read_nm_projections(sorted(folder.glob("*.dcm"))[0])


def test_extra_metadata_and_single_head(tmp_path):
    g = SpectGeometry.from_dicom_angles(
        [0.0],
        3.0,
        "CC",
        120,
        [250.0],
        8,
        8,
        (4.0, 4.0),
        10.0,
        windows=(EnergyWindow("photopeak", 126.0, 154.0),),
    )
    p = Projections(np.ones((1, 120, 8, 8), np.float32), g)
    out = write_nm_projections(p, tmp_path / "nm.dcm")
    acq = read_nm_acquisition(out)
    assert acq.heads == 1 and acq.counts.shape == (1, 120, 8, 8)
    assert acq.extra["manufacturer"] == "spectct" and acq.extra["scan_arc_deg"] == pytest.approx(360.0)
    assert read_nm_projections(out).geometry.windows[0].name == "photopeak"
    assert len(tc99m_windows()) == 3
