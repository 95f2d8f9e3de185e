"""MAR building blocks on synthetic arrays: segmentation, trace interpolation, NMAR normalisation,
frequency split, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectct.ct.mar import (
    check_hu_range,
    correct_sinogram,
    distance_to_metal,
    frequency_split,
    gaussian_2d,
    interpolate_trace,
    nmar_inpaint,
    nmar_prior,
)
from spectct.ct.mar_metrics import artifact_metrics
from spectct.ct.metal import metal_mask, widen_trace
from spectct.errors import InputError
from spectct.volume import Volume


def _disc(n, cy, cx, r, pixel=1.0):
    c = (np.arange(n) - (n - 1) / 2) * pixel
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ----------------------------------------------------------------------------- segmentation
def test_metal_mask_threshold_specks_and_rim():
    n = 64
    img = np.zeros((2, n, n), np.float32)
    rod = _disc(n, 0, 0, 5.0)
    img[0][rod] = 3071.0
    img[0][3, 3] = 3000.0  # one-pixel speck: noise, not metal
    img[0][_disc(n, 20, 20, 6)] = 1800.0  # dense cortical bone, below the threshold
    img[1] = 100.0  # second slice without metal
    m = metal_mask(img, pixel_mm=1.0, dilate_mm=0.0)
    assert m.dtype == bool and m.shape == img.shape
    np.testing.assert_array_equal(m[0], rod)
    assert not m[1].any()
    assert np.array_equal(metal_mask(img, pixel_mm=1.0), m)  # no rim by default
    grown = metal_mask(img, pixel_mm=1.0, dilate_mm=1.0)
    assert grown[0].sum() > rod.sum()
    assert (grown[0] & ~rod).sum() == (_disc(n, 0, 0, 6.0) & ~rod).sum()


def test_metal_mask_volume_and_slice_and_units():
    n = 32
    data = np.full((1, n, n), 40.0, np.float32)
    data[0][_disc(n, 0, 0, 4, pixel=0.5)] = 3071.0
    vol = Volume(data, spacing=(1.0, 0.5, 0.5), unit="HU")
    m_vol = metal_mask(vol, dilate_mm=0.0)
    assert m_vol.sum() == _disc(n, 0, 0, 4, pixel=0.5).sum()
    # min_area uses mm²: with 0.5-mm pixels a 2-mm² speck is 8 pixels
    assert metal_mask(data[0], pixel_mm=0.5, dilate_mm=0.0).shape == (n, n)
    with pytest.raises(InputError):
        metal_mask(Volume(data, spacing=(1, 1, 1), unit="Bq/mL"))


def test_check_hu_range_rejects_mu_maps():
    check_hu_range(np.array([-1024.0, 0.0, 3071.0]), "ok")
    with pytest.raises(InputError):
        check_hu_range(np.array([0.0, 0.019, 0.05]), "mu map")
    with pytest.raises(InputError):
        check_hu_range(np.array([-5000.0, 0.0]), "too low")


# ----------------------------------------------------------------------------- interpolation
def test_interpolate_trace_recovers_linear_data_and_edges():
    g = torch.Generator().manual_seed(1)
    views, ch = 7, 40
    a, b = torch.rand(views, 1, generator=g), torch.rand(views, 1, generator=g)
    line = a + b * torch.arange(ch, dtype=torch.float32)
    sino = line.clone()[None]
    trace = torch.zeros_like(sino, dtype=torch.bool)
    trace[0, :, 10:17] = True
    trace[0, 3, 20:30] = True
    sino[trace] = 1e3  # corrupted
    out = interpolate_trace(sino, trace)
    torch.testing.assert_close(out[0], line, rtol=1e-5, atol=1e-4)
    # at the detector's edge the nearest valid value is carried
    t2 = torch.zeros(1, 1, ch, dtype=torch.bool)
    t2[..., :5] = True
    out2 = interpolate_trace(line[:1][None], t2)
    assert torch.allclose(out2[0, 0, :5], line[0, 5].expand(5))
    # nothing to do: returned unchanged
    nothing = torch.zeros_like(line[None], dtype=torch.bool)
    assert torch.equal(interpolate_trace(line[None], nothing), line[None])


def test_widen_trace():
    t = torch.zeros(1, 2, 10, dtype=torch.bool)
    t[0, 0, 5] = True
    w = widen_trace(t, 2)
    assert w[0, 0].tolist() == [False] * 3 + [True] * 5 + [False] * 2
    assert not w[0, 1].any()


def test_nmar_is_exact_when_the_prior_explains_the_data():
    """If the sinogram is the prior's sinogram times a smooth factor, NMAR restores it inside the trace."""
    g = torch.Generator().manual_seed(2)
    views, ch = 5, 64
    prior = 2.0 + torch.rand(1, views, ch, generator=g) * 4.0  # rough: edges LI cannot bridge
    factor = 1.0 + 0.01 * torch.arange(ch, dtype=torch.float32)  # smooth across channels
    truth = prior * factor
    trace = torch.zeros_like(truth, dtype=torch.bool)
    trace[..., 20:35] = True
    corrupted = truth.masked_fill(trace, 50.0)
    nm = nmar_inpaint(corrupted, prior - 0.01, trace)  # the ε of NMAR is added back inside
    torch.testing.assert_close(nm, truth, rtol=1e-4, atol=1e-4)
    li_err = (interpolate_trace(corrupted, trace) - truth).abs().max()
    assert li_err > 0.3  # LI cannot do that: the check is not trivial
    assert torch.equal(nm[~trace], corrupted[~trace])


def test_nmar_prior_classes():
    n, mu_w = 48, 0.02
    hu = np.full((1, n, n), -1000.0, np.float32)
    body = _disc(n, 0, 0, 20)
    hu[0][body] = 60.0  # soft tissue → water
    bone = _disc(n, 0, 8, 6)
    hu[0][bone] = 1200.0
    metal = _disc(n, 0, -8, 3)
    hu[0][metal] = 8000.0
    mu = torch.as_tensor(mu_w * (1 + hu / 1000))
    prior = nmar_prior(mu, torch.as_tensor(metal[None]), mu_w, pixel_mm=1.0, smooth_mm=0.0).numpy()[0]
    assert np.all(prior[~body] == 0.0)
    inner = body & ~_disc(n, 0, 8, 7) & ~_disc(n, 0, -8, 3)
    assert np.allclose(prior[inner], mu_w)
    np.testing.assert_allclose(prior[_disc(n, 0, 8, 4)], mu_w * 2.2, rtol=1e-5)
    assert np.allclose(prior[metal], mu_w)  # metal becomes tissue


# ----------------------------------------------------------------------------- frequency split
def test_gaussian_preserves_constants_and_mean():
    x = torch.full((2, 20, 30), 3.0)
    torch.testing.assert_close(gaussian_2d(x, 1.5), x)
    y = torch.zeros(1, 41, 41)
    y[0, 20, 20] = 1.0
    assert abs(float(gaussian_2d(y, 2.0).sum()) - 1.0) < 1e-5


def test_frequency_split_limits():
    g = torch.Generator().manual_seed(3)
    n = 64
    metal = torch.as_tensor(_disc(n, 0, 0, 4)[None])
    unc = torch.rand(1, n, n, generator=g)
    cor = torch.rand(1, n, n, generator=g)
    # equal inputs pass through
    torch.testing.assert_close(frequency_split(cor, cor, metal, 1.0), cor, atol=1e-6, rtol=0)
    out = frequency_split(unc, cor, metal, 1.0, sigma_mm=1.0, decay_mm=2.0)
    # far from metal: the corrected image; at the metal edge: low of corrected + high of uncorrected
    far = torch.as_tensor(distance_to_metal(metal.numpy(), 1.0) > 25)
    torch.testing.assert_close(out[far], cor[far], atol=1e-4, rtol=0)
    edge = metal
    expect = gaussian_2d(cor, 1.0) + unc - gaussian_2d(unc, 1.0)
    torch.testing.assert_close(out[edge], expect[edge], atol=1e-5, rtol=0)


def test_imar_splits_first_and_last_nmar_pass():
    """The iMAR-like method is NMAR with a refined prior, then the frequency split whose detail comes
    from the first NMAR image; one pass is plain NMAR.  Identity 'projector' (sinogram = image) so that
    every step can be recomputed by hand."""
    n, mu_w = 40, 0.02
    metal = torch.as_tensor(_disc(n, 0, 0, 3)[None])
    truth = np.full((1, n, n), mu_w, np.float32)
    truth[0][_disc(n, 0, 6, 4)] = 1.8 * mu_w  # bone next to the metal
    unc = torch.as_tensor(truth.copy())
    unc[metal] = 10 * mu_w
    unc[0, :, 22] += 0.5 * mu_w  # a streak

    def fwd(x):
        return x.clone()

    sino, trace = unc.clone(), metal.clone()
    args = (sino, unc, metal, trace, fwd, fwd)
    nmar = correct_sinogram(*args, "nmar", mu_w, 1.0)
    torch.testing.assert_close(correct_sinogram(*args, "imar", mu_w, 1.0, iterations=1), nmar)
    second = nmar_inpaint(sino, nmar_prior(nmar, metal, mu_w, 1.0), trace)
    torch.testing.assert_close(correct_sinogram(*args, "imar", mu_w, 1.0, iterations=2, frequency_split_mm=None),
                               second)
    two = correct_sinogram(*args, "imar", mu_w, 1.0, iterations=2, frequency_split_mm=(2.0, 4.0))
    torch.testing.assert_close(two, frequency_split(nmar, second, metal, 1.0, 2.0, 4.0))


# ----------------------------------------------------------------------------- metrics
def test_artifact_metrics_known_errors():
    n = 80
    ref = np.full((1, n, n), -1000.0)
    body = _disc(n, 0, 0, 35)
    ref[0][body] = 0.0
    metal = _disc(n, 0, 0, 3)[None]
    dist = distance_to_metal(metal, 1.0)
    img = ref.copy()
    img[0][metal[0]] = 9999.0  # ignored
    band = body[None] & ~metal & (dist <= 10.0)
    img[band] += 30.0
    m = artifact_metrics(img, ref, metal, pixel_mm=1.0, band_mm=10.0)
    assert m["rmse_band"] == pytest.approx(30.0)
    assert m["rmse_outside"] == pytest.approx(0.0)
    assert m["bias_band"] == pytest.approx(30.0) and m["streak_std_band"] == pytest.approx(0.0, abs=1e-9)
    assert m["rmse_body"] == pytest.approx(30.0 * np.sqrt(band.sum() / (body.sum() - metal.sum())))
    assert m["n_band"] == band.sum()
    assert m["ssim_body"] < 1.0
    assert artifact_metrics(ref, ref, metal, 1.0)["ssim_body"] == pytest.approx(1.0)
