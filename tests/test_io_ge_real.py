"""Real GE Discovery 670 SPECT/CT data (../shared/data/ge-lu177-spectct): NM projections and CT series."""

from __future__ import annotations

import lzma
import shutil
import tarfile

import numpy as np
import pydicom
import pytest

from spectct.io.dicom_ct import read_ct_series
from spectct.io.dicom_nm import read_nm_acquisition, read_nm_projections
from spectct.io.dicom_out import write_nm_projections


@pytest.fixture(scope="session")
def _ge_cache(tmp_path_factory):
    """Session cache: each archive is unpacked once per test session."""
    return {"dir": tmp_path_factory.mktemp("ge-lu177")}


@pytest.fixture
def ge_nm_file(shared_data, _ge_cache):
    if "nm" not in _ge_cache:
        out = _ge_cache["dir"] / "bed1_projections.dcm"
        with (
            lzma.open(shared_data / "ge-lu177-spectct" / "bed1_projections.dcm.xz") as src,
            open(out, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        _ge_cache["nm"] = out
    return _ge_cache["nm"]


@pytest.fixture
def ge_ct(shared_data, _ge_cache):
    """(folder, Volume) of the GE CT series, read once per session."""
    if "ct" not in _ge_cache:
        folder = _ge_cache["dir"] / "ct"
        with tarfile.open(shared_data / "ge-lu177-spectct" / "ct_series.tar.xz") as tar:
            tar.extractall(folder, filter="data")
        _ge_cache["ct"] = (folder, read_ct_series(folder))
    return _ge_cache["ct"]


def test_ge_projections_header_values(ge_nm_file):
    p = read_nm_projections(ge_nm_file)
    g = p.geometry
    assert p.counts.shape == (6, 60, 128, 128)
    assert g.n_views == 60 and g.heads == 1 and g.stops_per_head == 60
    assert g.pixel_mm == pytest.approx((4.4196, 4.4196))
    assert g.time_per_view_s == pytest.approx(25.0)
    assert np.allclose(g.radii_mm, 253.7)
    # DICOM: start 180.16°, CC, 6° step; the detector row direction (+x) makes that internal 0.16°
    assert read_nm_acquisition(ge_nm_file).angles_deg[0] == pytest.approx(180.16)
    assert g.start_angle_deg == pytest.approx(0.16) and g.direction == "CCW"
    assert np.allclose(np.diff(np.unwrap(np.radians(g.angles_deg))), np.radians(6.0))
    lows = [w.lower_kev for w in g.windows]
    assert lows == pytest.approx([101.7, 187.2, 229.63, 166.89, 124.32, 91.2])
    assert g.windows[1].upper_kev == pytest.approx(228.8)
    assert p.radionuclide == "Lu-177"
    # every count is kept: the total equals CountsAccumulated, and the pixel data reshaped as the README says
    ds = pydicom.dcmread(ge_nm_file)
    assert p.counts.sum() == pytest.approx(float(ds.CountsAccumulated))
    assert np.array_equal(p.counts, ds.pixel_array.reshape(6, 60, 128, 128))


def test_ge_projections_survive_our_writer(ge_nm_file, tmp_path):
    p = read_nm_projections(ge_nm_file)
    out = write_nm_projections(
        p, tmp_path / "nm.dcm", reference=pydicom.dcmread(ge_nm_file, stop_before_pixels=True)
    )
    q = read_nm_projections(out)
    assert np.array_equal(p.counts, q.counts)
    assert np.allclose(p.geometry.angles_deg, q.geometry.angles_deg, atol=1e-9)
    assert np.allclose(p.geometry.radii_mm, q.geometry.radii_mm)
    assert q.geometry.windows == p.geometry.windows
    a = read_nm_acquisition(out)
    assert a.extra["identifiers"]["StudyInstanceUID"] == pydicom.dcmread(ge_nm_file).StudyInstanceUID


def test_ge_ct_series_geometry(ge_ct):
    folder, ct = ge_ct
    files = sorted(folder.rglob("*.dcm"))
    assert ct.shape == (303, 512, 512) and ct.unit == "HU"
    assert ct.spacing == pytest.approx((2.5, 0.976562, 0.976562))
    assert np.allclose(ct.direction, np.eye(3))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files[::50]]
    z_all = np.array(
        [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    )
    assert ct.origin[2] == pytest.approx(z_all.min())
    assert ct.index_to_world(np.array([302, 0, 0]))[2] == pytest.approx(z_all.max())
    assert ct.frame_of_reference == headers[0].FrameOfReferenceUID
    # air outside the patient, bone-ish maximum: HU scaling applied
    assert np.median(ct.data[:, :20, :20]) < -900
    assert ct.data.max() > 1000


def test_ge_ct_and_nm_share_frame_and_overlap_axially(ge_ct, ge_nm_file):
    _, ct = ge_ct
    acq = read_nm_acquisition(ge_nm_file)
    assert acq.extra["frame_of_reference"] == ct.frame_of_reference
    p = read_nm_projections(ge_nm_file)
    z = p.geometry.row_z_mm()
    z_ct = ct.axis_coordinates()[0]
    assert z_ct.min() < z.mean() < z_ct.max()


@pytest.mark.slow
def test_ge_reconstruction_lies_inside_the_ct_body(ge_ct, ge_nm_file):
    """Orientation on real data: an unattenuated OSEM of the Lu-177 peaks must put most of its activity
    inside the CT's body outline, and more than the same data read without the 180° detector offset."""
    import dataclasses

    import torch
    from scipy import ndimage

    from spectct.spect.projector import SpectModel
    from spectct.spect.recon import osem

    _, ct = ge_ct
    p = read_nm_projections(ge_nm_file)
    grid = p.geometry.image_grid(unit="counts")
    body = ct.resample_to(grid, fill=-1000.0).data > -500
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    z = grid.axis_coordinates()[0]
    keep = (z > ct.axis_coordinates()[0].min()) & (z < ct.axis_coordinates()[0].max())
    y = torch.as_tensor(p.counts[0] + p.counts[1])
    fractions = []
    for geometry in (
        p.geometry,
        dataclasses.replace(p.geometry, angles_deg=np.mod(p.geometry.angles_deg + 180, 360)),
    ):
        x = osem(y, SpectModel(geometry, grid, psf=False), iterations=2, subsets=10)
        x = np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x)[keep]
        fractions.append(x[body[keep]].sum() / x.sum())
    assert fractions[0] > 0.7 and fractions[0] > fractions[1] + 0.2
