"""MAR end to end on a small polyenergetic simulation: error against the metal-free truth, both paths."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from spectct.ct.geometry import CtGeometry
from spectct.ct.mar import distance_to_metal, mar_image, mar_sinogram
from spectct.ct.mar_metrics import MAR_PHANTOM_MATERIALS, artifact_metrics, mar_phantom
from spectct.ct.metal import SCANNER_MAX_HU, metal_mask
from spectct.ct.simulate import reconstruct_ct, simulate_ct
from spectct.errors import GeometryError, InputError
from spectct.volume import Volume

N, H = 128, 2.0


def _geometry(n_views=240):
    return CtGeometry(n_views=n_views, n_channels=282, channel_pitch_rad=H * 0.85 / 595.0, fov_mm=N * H)


@pytest.fixture(scope="module")
def two_rods():
    """Two CoCr stems in a water body with two femurs: one noisy 110-kV slice plus an empty slice."""
    lab = mar_phantom("two_rods", N, H, n_slices=2)
    lab.data[1][lab.data[1] == 5] = 3  # second slice: no metal (marrow instead)
    raw = simulate_ct(lab, list(MAR_PHANTOM_MATERIALS), _geometry(), seed=3)
    unc = reconstruct_ct(raw, N, H)
    ref = reconstruct_ct(raw, N, H, sinogram=raw.reference)
    out = {m: mar_sinogram(raw, m, N, H, return_mask=True) for m in ("li", "nmar", "imar")}
    return raw, unc, ref, out


def test_raw_path_orders_methods_and_meets_targets(two_rods):
    raw, unc, ref, out = two_rods
    mask = out["imar"][1].data.astype(bool)
    assert mask[0].any() and not mask[1].any()
    band = {"unc": artifact_metrics(unc, ref, mask)}
    band.update({m: artifact_metrics(v[0], ref, mask) for m, v in out.items()})
    r = {k: v["rmse_band"] for k, v in band.items()}
    assert r["unc"] > r["li"] > r["nmar"] >= r["imar"], r
    assert r["imar"] <= 0.4 * r["unc"], r  # ≥ 60 % less error within 2 cm of metal
    # no new streaks away from metal
    assert band["imar"]["rmse_outside"] <= band["unc"]["rmse_outside"] + 1.0
    assert band["imar"]["ssim_body"] > band["unc"]["ssim_body"]


def test_raw_path_keeps_metal_and_untouched_slices(two_rods):
    raw, unc, ref, out = two_rods
    img, mask = out["imar"]
    m = mask.data.astype(bool)
    assert img.same_grid(unc) and img.unit == "HU"
    np.testing.assert_array_equal(img.data[1], unc.data[1])  # no metal: plain FBP
    np.testing.assert_allclose(img.data[m], np.minimum(unc.data[m], SCANNER_MAX_HU))
    assert img.data.max() <= SCANNER_MAX_HU + 1e-3 or unc.data.max() <= SCANNER_MAX_HU


def test_raw_path_rejects_grid_that_does_not_fit(two_rods):
    raw = two_rods[0]
    with pytest.raises(GeometryError):
        mar_sinogram(raw, "li", n_pixels=2000, pixel_mm=1.0)
    with pytest.raises(InputError):
        mar_sinogram(raw, "bogus")


def test_image_path_reduces_error_and_keeps_far_pixels(two_rods):
    raw, unc, ref, out = two_rods
    ct = unc.with_data(np.clip(unc.data, -1024.0, SCANNER_MAX_HU))  # what a scanner stores
    mask = metal_mask(ct)
    base = artifact_metrics(ct, ref, mask)
    far = distance_to_metal(mask, H) > 60.0
    body = ref.data > -500
    bands = {}
    for method in ("li", "nmar", "imar"):
        res = mar_image(ct, method)
        assert res.same_grid(ct) and res.unit == "HU"
        r = artifact_metrics(res, ref, mask)
        bands[method] = r["rmse_band"]
        # no new streaks away from metal (the input is 2-mm FBP, so the band is 10 pixels wide)
        assert r["rmse_outside"] <= base["rmse_outside"] + 1.0, (method, r, base)
        np.testing.assert_array_equal(res.data[1], ct.data[1])  # slice without metal untouched
        # far from metal the error does not grow beyond the noise
        e_res = np.sqrt(np.mean((res.data - ref.data)[far & body] ** 2))
        e_unc = np.sqrt(np.mean((ct.data - ref.data)[far & body] ** 2))
        assert e_res <= e_unc + 1.0, (method, e_res, e_unc)
        assert np.all(res.data[mask] <= SCANNER_MAX_HU)
    # without raw data LI and NMAR gain less than from the sinogram (46 and 58 % here); the iMAR-like
    # image path (bloom zone rebuilt, three passes, frequency split) reaches the 60 % (64 % here)
    assert max(bands.values()) < 0.6 * base["rmse_band"], (bands, base["rmse_band"])
    assert bands["li"] > bands["nmar"] >= bands["imar"], bands
    assert bands["imar"] <= 0.4 * base["rmse_band"], (bands, base["rmse_band"])


def test_image_path_any_slice_shape_and_pixel_size():
    """A single non-square slice with 0.9-mm pixels: same grid back, metal clipped, far pixels kept."""
    n_y, n_x, h = 70, 90, 0.9
    c_y, c_x = (np.arange(n_y) - (n_y - 1) / 2) * h, (np.arange(n_x) - (n_x - 1) / 2) * h
    yy, xx = np.meshgrid(c_y, c_x, indexing="ij")
    img = np.full((n_y, n_x), -1000.0, np.float32)
    img[(xx / 38) ** 2 + (yy / 29) ** 2 <= 1] = 40.0
    rod = (xx - 20) ** 2 + yy**2 <= 3.0**2
    img[rod] = 3500.0  # above the scanner's ceiling: must come back clipped
    img[0, :4] = -3024.0  # outside the scanner's field
    ct = Volume(img[None], spacing=(1.0, h, h), origin=(0, 0, 0), unit="HU")
    res = mar_image(ct, "imar")
    assert res.shape == ct.shape and res.spacing == ct.spacing and res.unit == "HU"
    assert np.all(res.data[0][rod] == SCANNER_MAX_HU)
    assert np.all(res.data[0, 0, :4] == -3024.0)
    far = (np.hypot(xx - 20, yy) > 25.0) & (img > -500)
    assert far.sum() > 500
    assert np.abs(res.data[0][far] - img[far]).mean() < 5.0


def test_image_path_bad_input():
    with pytest.raises(InputError):  # a μ map is not HU
        mar_image(Volume(np.full((1, 32, 32), 0.019, np.float32), spacing=(1, 1, 1), unit="1"), "li")
    with pytest.raises(InputError):
        mar_image(Volume(np.zeros((1, 32, 32), np.float32), spacing=(1, 1, 1), unit="Bq/mL"), "li")
    no_metal = Volume(np.where(np.eye(32, dtype=bool), 500.0, -1000.0)[None].astype(np.float32),
                      spacing=(1, 1, 1), unit="HU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = mar_image(no_metal, "nmar")
    assert any("no metal" in str(w.message) for w in caught)
    np.testing.assert_array_equal(res.data, no_metal.data)


def test_cli_nifti_roundtrip_and_errors(tmp_path):
    from typer.testing import CliRunner

    from spectct.cli import app
    from spectct.io.nifti import read_nifti, write_nifti

    n = 48
    c = np.arange(n) - (n - 1) / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    img = np.where(xx**2 + yy**2 < 20**2, 30.0, -1000.0).astype(np.float32)
    img[(xx - 5) ** 2 + yy**2 < 9] = 3071.0
    src = write_nifti(Volume(img[None], spacing=(1, 1, 1), unit="HU"), tmp_path / "ct.nii.gz")
    out, mask = tmp_path / "mar.nii.gz", tmp_path / "mask.nii.gz"
    args = ["mar", str(src), "--method", "li", "--out", str(out), "--mask-out", str(mask), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_nifti(out).shape == (1, n, n) and read_nifti(mask).data.sum() == (img == 3071.0).sum()
    mu_map = Volume(np.full((1, n, n), 0.02, np.float32), spacing=(1, 1, 1), unit="1")
    bad = write_nifti(mu_map, tmp_path / "mu.nii")
    out2 = tmp_path / "bad.nii.gz"
    result = CliRunner().invoke(app, ["mar", str(bad), "--out", str(out2), "--quiet"])
    assert isinstance(result.exception, InputError) and "Hounsfield" in str(result.exception)
    assert not out2.exists()


def test_cli_raw_input(two_rods, tmp_path):
    from typer.testing import CliRunner

    from spectct.cli import app
    from spectct.ct.sinogram_io import save_raw
    from spectct.io.nifti import read_nifti

    raw, unc, ref, out = two_rods
    src = save_raw(raw, tmp_path / "sinogram.npz")
    dst = tmp_path / "ct_mar.nii.gz"
    result = CliRunner().invoke(app, ["mar", str(src), "--method", "li", "--out", str(dst), "--quiet"])
    assert result.exit_code == 0, result.output
    got = read_nifti(dst)
    assert got.same_grid(unc) and got.unit == "HU"
    np.testing.assert_allclose(got.data, out["li"][0].data, atol=1e-3)


def test_raw_path_plate_imar_beats_nmar():
    """Titanium plate with screws through bone (the configuration where one NMAR pass used to win): the
    iMAR-like method has the lowest near-metal error, ≥ 60 % below uncorrected, no new streaks far away."""
    raw = simulate_ct(mar_phantom("plate", N, H), list(MAR_PHANTOM_MATERIALS), _geometry(), seed=5)
    unc = reconstruct_ct(raw, N, H)
    ref = reconstruct_ct(raw, N, H, sinogram=raw.reference)
    out = {m: mar_sinogram(raw, m, N, H, return_mask=True) for m in ("li", "nmar", "imar")}
    mask = out["imar"][1].data.astype(bool)
    res = {"unc": artifact_metrics(unc, ref, mask)}
    res.update({m: artifact_metrics(v[0], ref, mask) for m, v in out.items()})
    r = {k: v["rmse_band"] for k, v in res.items()}
    assert r["unc"] > r["li"] > r["nmar"] >= r["imar"], r
    assert r["imar"] <= 0.4 * r["unc"], r
    assert res["imar"]["rmse_outside"] <= res["unc"]["rmse_outside"] + 1.0
