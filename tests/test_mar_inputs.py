"""MAR from images the user has: non-square pixels (resampled and back) and a DICOM CT series via the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from spectct.ct.geometry import CtGeometry
from spectct.ct.mar import _resampling_matrix, mar_image
from spectct.ct.mar_metrics import MAR_PHANTOM_MATERIALS, artifact_metrics, mar_phantom
from spectct.ct.metal import SCANNER_MAX_HU, metal_mask
from spectct.ct.simulate import reconstruct_ct, simulate_ct
from spectct.volume import Volume

N, H = 128, 2.0


def test_resampling_matrix_is_linear_interpolation_on_centred_grids():
    # 4 samples of 2 mm → 8 of 1 mm: centres at ±0.5, ±1.5, … mm map between the coarse centres ±1, ±3 mm
    m = _resampling_matrix(8, 1.0, 4, 2.0)
    np.testing.assert_allclose(m.sum(1), 1.0)
    ramp = np.array([-3.0, -1.0, 1.0, 3.0])  # coarse centres (mm)
    fine = (np.arange(8) - 3.5) * 1.0
    np.testing.assert_allclose(m @ ramp, np.clip(fine, -3.0, 3.0), atol=1e-12)  # edges replicated
    # identity on equal grids
    np.testing.assert_allclose(_resampling_matrix(5, 0.7, 5, 0.7), np.eye(5), atol=1e-12)


@pytest.fixture(scope="module")
def plate_scan():
    """The titanium plate configuration, 2-mm FBP as a scanner stores it, and its metal-free reference."""
    geom = CtGeometry(n_views=240, n_channels=282, channel_pitch_rad=H * 0.85 / 595.0, fov_mm=N * H)
    raw = simulate_ct(mar_phantom("plate", N, H), list(MAR_PHANTOM_MATERIALS), geom, seed=5)
    unc = reconstruct_ct(raw, N, H)
    ref = reconstruct_ct(raw, N, H, sinogram=raw.reference)
    return unc.with_data(np.clip(unc.data, -1024.0, SCANNER_MAX_HU)), ref


def _stretch_x(vol: Volume, factor: int) -> Volume:
    """The same image on pixels ``factor`` times narrower in x (linear interpolation): dy ≠ dx."""
    dz, dy, dx = vol.spacing
    nx = vol.shape[2]
    w = _resampling_matrix(nx * factor, dx / factor, nx, dx)
    data = np.einsum("zyk,lk->zyl", np.asarray(vol.data, np.float64), w).astype(np.float32)
    return Volume(data, spacing=(dz, dy, dx / factor), origin=vol.origin, unit=vol.unit)


def test_image_path_non_square_pixels(plate_scan):
    """2 × 1 mm pixels: corrected on a square grid, the change brought back; the same gain as square."""
    ct_sq, ref_sq = plate_scan
    ct = _stretch_x(ct_sq, 2)
    assert ct.spacing[1] == 2.0 and ct.spacing[2] == 1.0
    res = mar_image(ct, "nmar")
    assert res.same_grid(ct) and res.unit == "HU"
    mask = metal_mask(ct)
    np.testing.assert_array_equal(res.data[mask], np.minimum(ct.data[mask], SCANNER_MAX_HU))
    # judged on the 2-mm grid of the reference: the 1-mm columns 2i and 2i+1 straddle the 2-mm column i
    back = 0.5 * (res.data[..., 0::2] + res.data[..., 1::2])
    mask_sq = metal_mask(ct_sq)
    before = artifact_metrics(ct_sq, ref_sq, mask_sq, pixel_mm=H)
    after = artifact_metrics(back, ref_sq.data, mask_sq, pixel_mm=H)
    square = artifact_metrics(mar_image(ct_sq, "nmar"), ref_sq, mask_sq)
    assert after["rmse_band"] < 0.6 * before["rmse_band"], (after, before)
    assert after["rmse_band"] < 1.15 * square["rmse_band"], (after["rmse_band"], square["rmse_band"])
    assert after["rmse_outside"] <= before["rmse_outside"] + 1.0


def test_image_path_non_square_keeps_untouched_pixels():
    """Far from metal, outside the scanner's field and in a slice without metal, nothing changes."""
    ny, nx, dy, dx = 60, 90, 1.5, 1.0
    c_y, c_x = (np.arange(ny) - (ny - 1) / 2) * dy, (np.arange(nx) - (nx - 1) / 2) * dx
    yy, xx = np.meshgrid(c_y, c_x, indexing="ij")
    img = np.full((2, ny, nx), -1000.0, np.float32)
    img[:, (xx / 40) ** 2 + (yy / 38) ** 2 <= 1] = 40.0
    rod = (xx - 15) ** 2 + yy**2 <= 3.5**2
    img[0][rod] = 3500.0
    img[:, 0, :5] = -3024.0
    ct = Volume(img, spacing=(2.0, dy, dx), unit="HU")
    res = mar_image(ct, "imar")
    assert res.shape == ct.shape and res.spacing == ct.spacing
    np.testing.assert_array_equal(res.data[1], img[1])
    assert np.all(res.data[0][rod] == SCANNER_MAX_HU)
    assert np.all(res.data[:, 0, :5] == -3024.0)
    far = (np.hypot(xx - 15, yy) > 25.0) & (img[0] > -500)
    assert far.sum() > 400
    assert np.abs(res.data[0][far] - img[0][far]).mean() < 5.0


def test_cli_dicom_series(plate_scan, tmp_path, spectct_cli):
    """`spectct mar DICOM_FOLDER`: a CT series written by our own writer, corrected, NIfTI in HU out."""
    from spectct.io.dicom_out import write_ct_series
    from spectct.io.nifti import read_nifti

    ct, ref = plate_scan
    two = np.concatenate([ct.data, ref.data])  # slice 2: no metal
    vol = Volume(two, spacing=(2.0, H, H), origin=(-127.0, -127.0, 10.0), unit="HU")
    folder = write_ct_series(vol, tmp_path / "CT")
    out = tmp_path / "ct_mar.nii.gz"
    code, _, err = spectct_cli("mar", folder, "--method", "nmar", "--out", out, "--quiet")
    assert code == 0, err
    got = read_nifti(out)
    assert got.unit == "HU" and got.shape == vol.shape
    stored = np.round(two)  # the series holds integers
    mask = metal_mask(stored, pixel_mm=H)
    assert mask[0].any() and not mask[1].any()
    np.testing.assert_allclose(got.data[1], stored[1])
    assert got.data.max() <= SCANNER_MAX_HU and got.data.min() >= -1024.0
    before = artifact_metrics(stored[:1], ref.data, mask[:1], pixel_mm=H)["rmse_band"]
    after = artifact_metrics(got.data[:1], ref.data, mask[:1], pixel_mm=H)["rmse_band"]
    assert after < 0.6 * before, (after, before)


def test_cli_dicom_not_hu_exits_2(tmp_path, spectct_cli):
    """A series whose values span 0…100 (a rescaled or parametric image, not CT numbers): exit 2, no output."""
    from spectct.io.dicom_out import write_ct_series

    data = np.tile(np.linspace(0.0, 100.0, 32, dtype=np.float32), (2, 32, 1))
    folder = write_ct_series(Volume(data, spacing=(2.0, 1.0, 1.0), unit="HU"), tmp_path / "CT")
    out = tmp_path / "mar.nii.gz"
    code, _, err = spectct_cli("mar", folder, "--out", out, "--quiet")
    assert code == 2
    assert "Hounsfield" in err
    assert not out.exists()


def test_batching_does_not_change_the_result():
    """Slices corrected one by one or together give the same image; the batch size follows the budget."""
    from spectct.ct.mar import slices_per_batch_for, virtual_geometry

    n = 48
    c = np.arange(n) - (n - 1) / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    img = np.full((3, n, n), -1000.0, np.float32)
    img[:, xx**2 + yy**2 < 20**2] = 40.0
    for k, dx in enumerate((-6.0, 0.0, 7.0)):  # the rod moves from slice to slice
        img[k][(xx - dx) ** 2 + yy**2 < 9] = 3071.0
    ct = Volume(img, spacing=(1.0, 1.0, 1.0), unit="HU")
    one = mar_image(ct, "imar", slices_per_batch=1)
    together = mar_image(ct, "imar")
    np.testing.assert_allclose(together.data, one.data, atol=0.05)
    assert not np.allclose(one.data, img)  # the correction did something
    geom = virtual_geometry(512, 0.98)
    small, large = (slices_per_batch_for(geom, 512, "cpu", budget) for budget in (1 << 28, 1 << 31))
    assert 1 <= small < large <= 64
