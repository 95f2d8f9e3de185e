"""How much metal artifact is left: errors against a metal-free reference, near and far from metal.

The regions follow the usual MAR evaluation (e.g. Meyer et al., Med Phys 37 (2010) 5482, who report
errors against a metal-free simulation; the 2-cm band is the near-metal region of the AAPM CT-MAR grand
challenge scoring): everything is measured inside the body (reference above −500 HU), metal excluded;
the *band* is the ring within ``band_mm`` of metal in the same slice; *outside* is the rest of the body.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from spectct.ct.mar import distance_to_metal
from spectct.errors import GeometryError
from spectct.volume import Volume

#: reference HU above which a pixel belongs to the body (air and lung lie below)
BODY_THRESHOLD_HU = -500.0
#: display window (HU) in which SSIM is computed: air to dense bone
SSIM_WINDOW_HU = (-1000.0, 2000.0)


def artifact_metrics(
    image_hu: np.ndarray | Volume,
    reference_hu: np.ndarray | Volume,
    metal_mask: np.ndarray | Volume,
    pixel_mm: float | tuple[float, float] | None = None,
    band_mm: float = 20.0,
    body_threshold_hu: float = BODY_THRESHOLD_HU,
) -> dict[str, float]:
    """Artifact measures of a CT image against a metal-free reference on the same grid.

    Parameters
    ----------
    image_hu : image to judge, ``[z, y, x]`` or ``[y, x]`` (HU).
    reference_hu : metal-free reference on the same grid (HU), e.g. the reconstruction of
        ``CtRaw.reference``.
    metal_mask : boolean metal mask (excluded from every measure).
    pixel_mm : in-plane pixel size (dy, dx) or one value; from the Volume when one is given, else 1 mm.
    band_mm : width of the near-metal band.
    body_threshold_hu : reference HU above which a pixel is inside the body.

    Returns
    -------
    dict
        ``rmse_body`` (HU, body minus metal), ``rmse_band`` (HU, within ``band_mm`` of metal),
        ``rmse_outside`` (HU, body beyond the band), ``bias_band`` (mean error in the band, HU),
        ``streak_std_band`` (standard deviation of the error in the band, HU: the streak index),
        ``max_abs_band`` (HU), ``ssim_body`` (SSIM in the window −1000…2000 HU averaged over the body
        pixels of slices that hold metal), and the pixel counts ``n_band`` and ``n_outside``.
        A region with no pixels gives NaN.
    """
    img, px = _array(image_hu, pixel_mm)
    ref, _ = _array(reference_hu, None)
    metal, _ = _array(metal_mask, None)
    metal = metal.astype(bool)
    if img.shape != ref.shape or img.shape != metal.shape:
        raise GeometryError(f"image {img.shape}, reference {ref.shape} and mask {metal.shape} "
                            "differ in shape")
    if img.ndim == 2:
        img, ref, metal = img[None], ref[None], metal[None]
    img = img.astype(np.float64)
    ref = ref.astype(np.float64)
    err = img - ref
    body = (ref > body_threshold_hu) & ~metal
    dist = distance_to_metal(metal, px)
    band = body & (dist <= band_mm)
    outside = body & ~band

    def rmse(region: np.ndarray) -> float:
        return float(np.sqrt(np.mean(err[region] ** 2))) if region.any() else float("nan")

    out = {
        "rmse_body": rmse(body),
        "rmse_band": rmse(band),
        "rmse_outside": rmse(outside),
        "bias_band": float(err[band].mean()) if band.any() else float("nan"),
        "streak_std_band": float(err[band].std()) if band.any() else float("nan"),
        "max_abs_band": float(np.abs(err[band]).max()) if band.any() else float("nan"),
        "ssim_body": _ssim(img, ref, metal, body),
        "n_band": int(band.sum()),
        "n_outside": int(outside.sum()),
    }
    return out


def _ssim(img: np.ndarray, ref: np.ndarray, metal: np.ndarray, body: np.ndarray) -> float:
    lo, hi = SSIM_WINDOW_HU
    values = []
    weights = []
    for k in range(img.shape[0]):
        if not metal[k].any() or not body[k].any() or min(img.shape[1:]) < 7:
            continue
        a = np.clip(np.where(metal[k], ref[k], img[k]), lo, hi)
        b = np.clip(ref[k], lo, hi)
        _, smap = structural_similarity(a, b, data_range=hi - lo, full=True)
        values.append(float(smap[body[k]].mean()))
        weights.append(int(body[k].sum()))
    if not values:
        return float("nan")
    return float(np.average(values, weights=weights))


def _array(x, pixel_mm):
    if isinstance(x, Volume):
        px = pixel_mm if pixel_mm is not None else (x.spacing[1], x.spacing[2])
        return np.asarray(x.data), px
    return np.asarray(x), (pixel_mm if pixel_mm is not None else 1.0)


# ----------------------------------------------------------------------------- evaluation phantoms
#: the standard metal configurations of the MAR tests and benchmark
MAR_CONFIGS = ("rod", "two_rods", "plate")
#: label → material of :func:`mar_phantom` (0 is air)
MAR_PHANTOM_MATERIALS = ("air", "water", "cortical_bone", "red_marrow", "steel_316l", "cocrmo", "ti6al4v")


def mar_phantom(config: str, n_pixels: int = 128, pixel_mm: float = 2.0, n_slices: int = 1) -> Volume:
    """A water body (210 × 150 mm ellipse) with two femur-like bones and one metal configuration.

    Parameters
    ----------
    config : ``"rod"`` — one 10-mm steel (316L) nail in the right femur's canal; ``"two_rods"`` — two
        13-mm CoCrMo stems, one per femur (the bilateral hip-prosthesis case); ``"plate"`` — a
        4 × 28 mm titanium (Ti-6Al-4V) plate on the lateral cortex of the right femur with two 4-mm
        screws through the bone.
    n_pixels, pixel_mm : square grid centred on (0, 0); sizes are in mm, so any pixel size works.
    n_slices : identical slices stacked along z (1-mm spacing).

    Returns
    -------
    Volume
        uint8 labels indexing :data:`MAR_PHANTOM_MATERIALS` (cortical ring 16 mm, canal 10 mm radius
        at x = ±50 mm; patient right is −x).
    """
    if config not in MAR_CONFIGS:
        raise ValueError(f"unknown MAR configuration {config!r}; choose one of {', '.join(MAR_CONFIGS)}")
    c = (np.arange(n_pixels) - (n_pixels - 1) / 2.0) * pixel_mm
    yy, xx = np.meshgrid(c, c, indexing="ij")

    def disc(cx, cy, r):
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r

    lab = np.zeros((n_pixels, n_pixels), np.uint8)
    lab[(xx / 105.0) ** 2 + (yy / 75.0) ** 2 <= 1.0] = 1
    for cx in (-50.0, 50.0):
        lab[disc(cx, 5.0, 16.0)] = 2
        lab[disc(cx, 5.0, 10.0)] = 3
    if config == "rod":
        lab[disc(-50.0, 5.0, 5.0)] = 4
    elif config == "two_rods":
        lab[disc(-50.0, 5.0, 6.5)] = 5
        lab[disc(50.0, 5.0, 6.5)] = 5
    else:
        lab[(np.abs(xx + 68.0) <= 2.0) & (np.abs(yy - 5.0) <= 14.0)] = 6
        for sy in (-3.0, 13.0):
            lab[(np.abs(yy - sy) <= 2.0) & (xx >= -68.0) & (xx <= -36.0)] = 6
    origin = (-(n_pixels - 1) / 2.0 * pixel_mm, -(n_pixels - 1) / 2.0 * pixel_mm, 0.0)
    return Volume(np.repeat(lab[None], n_slices, axis=0), spacing=(1.0, pixel_mm, pixel_mm), origin=origin,
                  unit="label")
