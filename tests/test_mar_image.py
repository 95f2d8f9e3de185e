"""The iMAR-like image path (spectct.ct.mar_image): bloom removal next to metal, the pass structure."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from spectct.ct.mar import distance_to_metal, frequency_split, mar_image
from spectct.ct.mar_image import imar_image_correction
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
