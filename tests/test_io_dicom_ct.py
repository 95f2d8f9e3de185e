"""CT series reader: geometry round trips through our writer and refusal of bad series."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from spectct.errors import InputError
from spectct.io.dicom_ct import ct_series_headers, read_ct_series
from spectct.io.dicom_out import write_ct_series
from spectct.volume import Volume


def _ct(shape=(6, 12, 10), direction=None, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    data = rng.integers(-1024, 3000, size=shape).astype(np.float32)
    return Volume(
        data,
        spacing=(2.5, 0.9765625, 0.9765625),
        origin=(-123.456789, -45.5, 377.25),
        direction=np.eye(3) if direction is None else direction,
        unit="HU",
    )


@pytest.fixture
def series(tmp_path):
    vol = _ct()
    folder = write_ct_series(vol, tmp_path / "ct")
    return vol, folder


def test_round_trip_exact_geometry_and_values(series):
    vol, folder = series
    back = read_ct_series(folder)
    assert np.array_equal(back.data, vol.data)
    assert np.abs(back.affine - vol.affine).max() < 1e-4
    assert back.unit == "HU" and back.frame_of_reference


def test_oblique_grid_round_trip(tmp_path):
    rot = Rotation.from_euler("xyz", [12.0, -7.0, 25.0], degrees=True).as_matrix()
    vol = _ct(direction=rot)
    back = read_ct_series(write_ct_series(vol, tmp_path / "oblique"))
    assert np.abs(back.affine - vol.affine).max() < 1e-4
    assert np.array_equal(back.data, vol.data)


def test_sorting_uses_position_not_instance_number(series, tmp_path):
    vol, folder = series
    files = sorted(folder.glob("*.dcm"))
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    rng = np.random.default_rng(3)
    for new_number, f in zip(rng.permutation(len(files)) + 1, files, strict=True):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(new_number)
        ds.save_as(shuffled / f"img{new_number:03d}.dcm")
    back = read_ct_series(shuffled)
    assert np.array_equal(back.data, vol.data)


def test_rescale_slope_intercept_applied(series, tmp_path):
    vol, folder = series
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        raw = ds.pixel_array.astype(np.int32) + 1024
        ds.PixelData = raw.astype(np.uint16).tobytes()
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.save_as(f)
    assert np.array_equal(read_ct_series(folder).data, vol.data)


def test_missing_slice_is_named(series):
    _, folder = series
    files = sorted(folder.glob("*.dcm"))
    files[3].unlink()
    with pytest.raises(InputError, match=r"gap.*ImagePositionPatient"):
        read_ct_series(folder)


def test_two_series_need_a_choice(series, tmp_path):
    vol, folder = series
    other = write_ct_series(_ct(seed=1), tmp_path / "ct" / "second")
    with pytest.raises(InputError, match="2 CT series"):
        read_ct_series(folder)
    uid = ct_series_headers(other)[0].SeriesInstanceUID
    chosen = read_ct_series(folder, series_uid=uid)
    assert np.array_equal(chosen.data, _ct(seed=1).data)
    with pytest.raises(InputError, match="no CT series"):
        read_ct_series(folder, series_uid="1.2.3")


def test_non_dicom_with_dcm_name_refused(series):
    _, folder = series
    (folder / "notes.dcm").write_text("this is not DICOM")
    with pytest.raises(InputError, match=r"notes\.dcm: not a DICOM file"):
        read_ct_series(folder)


def test_other_files_and_non_image_objects_are_skipped(series):
    vol, folder = series
    (folder / "README.txt").write_text("scanner export")
    assert np.array_equal(read_ct_series(folder).data, vol.data)


def test_truncated_file_refused(series):
    _, folder = series
    f = sorted(folder.glob("*.dcm"))[2]
    f.write_bytes(f.read_bytes()[:1500])
    with pytest.raises(InputError, match=f.name):
        read_ct_series(folder)


def test_missing_geometry_tag_refused(series):
    _, folder = series
    f = sorted(folder.glob("*.dcm"))[1]
    ds = pydicom.dcmread(f)
    del ds.ImagePositionPatient
    ds.save_as(f)
    with pytest.raises(InputError, match=r"\(0020,0032\) ImagePositionPatient"):
        read_ct_series(folder)


def test_gantry_tilt_refused(series):
    _, folder = series
    for k, f in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.4 * k, z]  # ~9° tilt for 2.5 mm slices
        ds.save_as(f)
    with pytest.raises(InputError, match="gantry tilt"):
        read_ct_series(folder)


def test_empty_folder_and_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no CT images"):
        read_ct_series(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        read_ct_series(tmp_path / "nope")


def test_copied_identifiers_and_derived_type(series, tmp_path):
    vol, folder = series
    src = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
    mar = write_ct_series(vol, tmp_path / "mar", derived_from=folder, description="MAR CT")
    ds = pydicom.dcmread(sorted(mar.glob("*.dcm"))[0])
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    shutil.rmtree(mar)
