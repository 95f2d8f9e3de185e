"""The iMAR-like image path (spectct.ct.mar_image): bloom removal next to metal, the pass structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from spectct.ct.mar import distance_to_metal, frequency_split, mar_image
from spectct.ct.mar_image import PRIOR_BONE_MAX_HU, _prior, imar_image_correction, smooth_along_metal_contours
from spectct.ct.metal import metal_mask
from spectct.volume import Volume


def _blurred_rod(sigma_mm: float, n: int = 96, h: float = 1.0):
    """A 12000-HU rod (r 3.5 mm) in a 40-HU body, blurred by a Gaussian PSF and clipped as a scanner
    stores it; returns the stored image and the blurred metal-free truth."""
    c = (np.arange(n) - (n - 1) / 2) * h
    yy, xx = np.meshgrid(c, c, indexing="ij")
    truth = np.where(xx**2 / 40**2 + yy**2 / 32**2 <= 1, 40.0, -1000.0)
    obj = truth.copy()
    obj[np.hypot(xx - 10, yy) <= 3.5] = 12000.0
    img = np.clip(ndimage.gaussian_filter(obj, sigma_mm / h), -1024, 3071).astype(np.float32)
    ref = ndimage.gaussian_filter(truth, sigma_mm / h)
    return Volume(img[None], spacing=(1.0, h, h), origin=(0, 0, 0), unit="HU"), ref


def test_imar_image_removes_the_bloom_that_nmar_keeps():
    """The scanner's blur spreads the rod into a +580-HU rim outside the 2500-HU mask; its rays miss the
    metal trace, so LI and NMAR keep most of it.  The iMAR-like image path rebuilds that zone and the
    rim goes, while pixels farther out keep their values."""
    ct, ref = _blurred_rod(0.8)
    mask = metal_mask(ct)[0]
    d = distance_to_metal(mask, 1.0)
    rim, beyond = (d > 0) & (d <= 2.0), (d > 4.0) & (ref > -500)

    def rmse(img, region):
        return float(np.sqrt(np.mean((img - ref)[region] ** 2)))

    unc = rmse(ct.data[0], rim)
    nmar = rmse(mar_image(ct, "nmar").data[0], rim)
    out = mar_image(ct, "imar").data[0]
    assert unc > 400.0 and nmar > 300.0, (unc, nmar)
    assert rmse(out, rim) < 0.05 * nmar, (rmse(out, rim), nmar)
    assert rmse(out, beyond) < 5.0
    assert np.abs(out - ct.data[0])[d > 25.0].max() < 15.0  # far pixels: the input, up to the kernel's tails


def test_imar_image_correction_passes_and_split():
    """Identity 'projector' and 'reconstruction': each pass is ``g + p_c − g`` = the completion, the
    zone is rebuilt, and two passes end in the frequency split of the first and the last."""
    n, mu_w = 40, 0.02
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    metal = torch.as_tensor((np.hypot(yy, xx) <= 3)[None])
    zone = torch.as_tensor((np.hypot(yy, xx) <= 5)[None])
    f = torch.full((1, n, n), mu_w)
    f[metal] = 10 * mu_w
    f[zone & ~metal] = 3 * mu_w  # the bloom
    f[0, :, 30] += 0.5 * mu_w  # a streak far away, outside the trace

    def ident(x):
        return x.clone()

    args = (f, f.clone(), metal, zone, zone.clone(), ident, ident, mu_w, 1.0)
    one = imar_image_correction(*args, iterations=1)
    # outside the zone (its trace) the data are kept: the image is unchanged there
    torch.testing.assert_close(one[~zone], f[~zone])
    # inside the zone the bloom is replaced by the completion, far below the bloom's 3 μ_w
    assert float(one[zone & ~metal].max()) < 2.0 * mu_w
    two = imar_image_correction(*args, iterations=2, frequency_split_mm=None)
    split = imar_image_correction(*args, iterations=2, frequency_split_mm=(2.0, 4.0))
    torch.testing.assert_close(split, frequency_split(one, two, metal, 1.0, 2.0, 4.0))


def test_contour_smoothing_removes_radial_streaks_and_keeps_a_ring():
    """Around a round rod, radial bright/dark streaks (cos 8θ) average out along the circles of constant
    distance, while a ring of bone concentric with the rod keeps its value; pixels nearer than d_min,
    beyond d_max and in the metal are the input."""
    n, h = 64, 1.0
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r, th = np.hypot(yy, xx), np.arctan2(yy, xx)
    metal = r <= 4.0
    ring = (r > 9.0) & (r <= 11.0)
    base = np.where(ring, 1000.0, 40.0)
    img = torch.as_tensor((base + 300.0 * np.cos(8 * th))[None].astype(np.float32))
    d = distance_to_metal(metal, h)
    inner = (d > 3.0) & (d <= 14.0) & ~ring
    streak_in = np.abs(img[0].numpy() - base)[inner].mean()
    assert streak_in > 150.0
    # a loose tolerance follows the pixelated circles all the way round; the default 0.5 px stops sooner
    for tol, kept in ((1.0, 0.2), (0.5, 0.45)):
        res = smooth_along_metal_contours(img, torch.as_tensor(metal[None]), h, 6.0, 2.0, 20.0, tol)[0].numpy()
        assert np.abs(res - base)[inner].mean() < kept * streak_in, (tol, np.abs(res - base)[inner].mean())
    out = smooth_along_metal_contours(img, torch.as_tensor(metal[None]), h, 6.0, 2.0, 20.0)[0].numpy()
    ring_core = (r > 9.5) & (r <= 10.5)
    assert abs(float(out[ring_core].mean()) - 1000.0) < 60.0
    keep = metal | (d <= 2.0) | (d > 20.0)
    np.testing.assert_array_equal(out[keep], img[0].numpy()[keep])


def test_prior_caps_bone_and_fills_metal():
    """Bone brighter than cortex (bloom next to metal) is capped in the image path's prior; the metal
    takes the class of its surroundings."""
    mu_w, n = 0.02, 32
    f = torch.full((1, n, n), mu_w)
    f[0, 10:20, 10:20] = mu_w * 3.0  # +2000 HU "bone"
    metal = torch.zeros((1, n, n), dtype=torch.bool)
    metal[0, 14:16, 14:16] = True
    p = _prior(f, metal, mu_w, 1.0)
    cap = mu_w * (1 + PRIOR_BONE_MAX_HU / 1000)
    assert float(p.max()) <= cap * (1 + 1e-6)
    assert float(p[0, 14, 14]) == pytest.approx(cap, rel=1e-5)  # metal filled with the (capped) bone around it
    assert float(p[0, 2, 2]) == pytest.approx(mu_w)
