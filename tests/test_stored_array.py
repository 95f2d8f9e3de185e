"""Arrays read slice by slice from .npz archives, and the CT raw data that uses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectct.ct.geometry import CtGeometry
from spectct.ct.projector import FanBeamProjector, _cache_get, clear_matrix_cache
from spectct.ct.simulate import CtRaw
from spectct.ct.sinogram_io import load_raw, load_reference, save_raw
from spectct.errors import InputError
from spectct.io.stored_array import StoredArray, open_member


@pytest.fixture()
def stored(tmp_path):
    data = np.random.default_rng(3).random((7, 5, 4)).astype(np.float32)
    path = tmp_path / "a.npz"
    np.savez(path, data=data, small=np.arange(3))
    return open_member(path, "data"), data


def test_indexing_reads_the_same_values_as_numpy(stored):
    arr, data = stored
    assert isinstance(arr, StoredArray) and arr.shape == data.shape and arr.dtype == np.float32
    for key in (3, -1, slice(1, 5), slice(None, None, 3), slice(6, 0, -2), [4, 0, 5, 6], np.array([2, 2, 3]),
                data[:, 0, 0] > 0.5, (slice(2, 4), 1), (np.array([5, 1]), slice(None), 2)):
        assert np.array_equal(arr[key], data[key]), key
    assert np.array_equal(np.asarray(arr), data)
    assert np.array_equal(np.concatenate([blk for _, blk in arr.chunks(3)]), data)
    with pytest.raises(IndexError):
        arr[7]


def test_compressed_members_are_read_in_full(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.savez_compressed(tmp_path / "c.npz", data=data)
    got = open_member(tmp_path / "c.npz", "data")
    assert isinstance(got, np.ndarray) and np.array_equal(got, data)


def test_truncated_archive_is_refused(tmp_path, stored):
    arr, _ = stored
    cut = tmp_path / "cut.npz"
    cut.write_bytes(arr.path.read_bytes()[: arr.offset + 40])
    with pytest.raises(Exception):  # noqa: B017 - zipfile or our own check, whichever sees it first
        open_member(cut, "data")[:]


def _raw(nz: int = 3) -> CtRaw:
    g = CtGeometry().scaled(n_views=24, n_channels=40)
    rng = np.random.default_rng(5)
    sino = rng.random((nz, 24, 40)).astype(np.float32)
    return CtRaw(sinogram=sino, reference=sino * 0.5, metal_trace=sino > 0.9, geometry=g,
                 z_mm=np.arange(nz, dtype=float), mu_water=0.02, n_pixels=32, pixel_mm=500 / 32)


def test_raw_data_stays_on_disk_until_read(tmp_path):
    raw = _raw()
    path = save_raw(raw, tmp_path / "raw.npz")
    back = load_raw(path)
    assert isinstance(back.sinogram, StoredArray) and isinstance(back.reference, StoredArray)
    assert np.array_equal(back.sinogram[[2, 0]], raw.sinogram[[2, 0]])
    assert np.array_equal(load_reference(path, [1]), raw.reference[[1]])
    assert load_reference(path, None).shape == raw.reference.shape


def test_nan_in_a_stored_sinogram_names_file_and_slice(tmp_path):
    raw = _raw()
    raw.sinogram[1, 3, 4] = np.nan
    path = save_raw(raw, tmp_path / "nan.npz")
    with pytest.raises(InputError, match=r"nan\.npz.*NaN.*slice 1"):
        load_raw(path)


def test_thinner_slices_reuse_the_wider_inner_matrix():
    """A batch whose body is narrower projects on the inner grid already cached for a wider one (exactly)."""
    clear_matrix_cache()
    g = CtGeometry().scaled(n_views=40, n_channels=120)
    p = FanBeamProjector(g, 96, 500 / 96)
    wide = torch.zeros((1, 96, 96), dtype=torch.float64)
    wide[:, 20:76, 20:76] = 1.0
    narrow = torch.zeros_like(wide)
    narrow[:, 40:56, 40:56] = 2.0
    p.forward(wide)
    assert sorted(p._inners) == [60]
    got = p.forward(narrow)
    assert sorted(p._inners) == [60]  # no new inner grid was built for the narrow body
    full = FanBeamProjector(g, 96, 500 / 96)
    full._empty_border = lambda img: 0
    assert torch.allclose(got, full.forward(narrow), rtol=1e-12, atol=1e-12)
    assert not p._inners[60]._inners  # the inner grid does not crop again
    wider = torch.zeros_like(wide)
    wider[:, 8:88, 8:88] = 1.0
    p.forward(wider)  # needs a larger inner grid: the smaller one's matrix is dropped
    assert _cache_get(p._inners[60]._cache_key(torch.float64) + (False,)) is None
    clear_matrix_cache()
