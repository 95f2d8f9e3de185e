import numpy as np
import pytest

from spectct.errors import GeometryError, InputError
from spectct.io.nifti import read_nifti, write_nifti
from spectct.volume import Volume


def _oblique() -> np.ndarray:
    a = np.deg2rad(30)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def test_index_world_round_trip():
    v = Volume(np.zeros((4, 5, 6)), spacing=(2.5, 0.75, 1.25), origin=(-10, 20, 30), direction=_oblique())
    idx = np.array([[1, 2, 3], [0, 0, 0], [3.5, 4, 5]])
    assert np.allclose(v.world_to_index(v.index_to_world(idx)), idx)
    assert np.allclose(v.index_to_world([0, 0, 0]), (-10, 20, 30))
    # axis-aligned: x follows the column index
    w = Volume(np.zeros((2, 2, 2)), spacing=(3, 2, 1), origin=(1, 2, 3))
    assert np.allclose(w.index_to_world([1, 1, 1]), (2, 4, 6))


def test_nifti_round_trip_keeps_geometry(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 6, 5)).astype(np.float32)
    v = Volume(data, spacing=(2.5, 0.976562, 0.976562), origin=(-249.51171875, -180.2, 1012.3),
               direction=_oblique(), unit="HU", frame_of_reference="1.2.3.4")
    path = write_nifti(v, tmp_path / "v.nii.gz")
    r = read_nifti(path)
    assert np.array_equal(r.data, data)
    assert r.spacing == v.spacing and r.origin == v.origin
    assert np.array_equal(r.direction, v.direction)
    assert r.unit == "HU" and r.frame_of_reference == "1.2.3.4"


def test_nifti_affine_is_ras(tmp_path):
    import nibabel as nib

    v = Volume(np.zeros((3, 4, 5), np.float32), spacing=(3, 2, 1), origin=(10, 20, 30))
    write_nifti(v, tmp_path / "a.nii")
    aff = nib.load(str(tmp_path / "a.nii")).affine
    # LPS (10, 20, 30) is RAS (-10, -20, 30); i runs to L = -R
    assert np.allclose(aff[:3, 3], (-10, -20, 30))
    assert np.allclose(aff[:3, 0], (-1, 0, 0))


def test_nifti_rejects_nan_and_shear(tmp_path):
    import nibabel as nib

    bad = np.zeros((3, 3, 3), np.float32)
    bad[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "nan.nii"))
    with pytest.raises(InputError, match="NaN"):
        read_nifti(tmp_path / "nan.nii")
    shear = np.eye(4)
    shear[0, 1] = 0.5
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), shear), str(tmp_path / "shear.nii"))
    with pytest.raises(InputError, match="shear"):
        read_nifti(tmp_path / "shear.nii")


def test_resample_identity_and_known_shift():
    rng = np.random.default_rng(1)
    data = rng.random((6, 7, 8)).astype(np.float32)
    v = Volume(data, spacing=(2, 2, 2), origin=(0, 0, 0))
    same = v.resample_to(v)
    assert np.allclose(same.data, data, atol=1e-6)
    # a grid shifted by one voxel in x samples the next column
    shifted = Volume(np.zeros_like(data), spacing=(2, 2, 2), origin=(2, 0, 0))
    r = v.resample_to(shifted, fill=-1)
    assert np.allclose(r.data[:, :, :-1], data[:, :, 1:], atol=1e-6)
    assert np.all(r.data[:, :, -1] == -1)
    # half a voxel in y: linear interpolation gives the mean of neighbours
    half = Volume(np.zeros_like(data), spacing=(2, 2, 2), origin=(0, 1, 0))
    h = v.resample_to(half)
    assert np.allclose(h.data[:, :-1], 0.5 * (data[:, :-1] + data[:, 1:]), atol=1e-6)


def test_resample_nearest_keeps_labels_and_coarse_grid():
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:6, 2:6, 2:6] = 7
    v = Volume(labels, spacing=(1, 1, 1), unit="label")
    coarse = Volume(np.zeros((4, 4, 4)), spacing=(2, 2, 2), origin=(0.5, 0.5, 0.5))
    r = v.resample_to(coarse, order="nearest")
    assert r.data.dtype == np.int16
    assert set(np.unique(r.data)) == {0, 7}
    assert r.data[2, 2, 2] == 7 and r.data[0, 0, 0] == 0


def test_volume_validates():
    with pytest.raises(GeometryError):
        Volume(np.zeros((2, 2)), spacing=(1, 1, 1))
    with pytest.raises(GeometryError):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    with pytest.raises(InputError):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 1, 1), unit="furlongs")


def test_atomic_write_leaves_no_partial_file_and_normal_mode(tmp_path):
    import os

    from spectct.atomic import atomic_path, write_text

    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and not list(tmp_path.iterdir())
    write_text(target, "whole")
    assert target.read_text() == "whole"
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
