"""The iMAR-like correction of a reconstructed image without raw data (the image path's own iteration).

:func:`spectct.ct.mar.mar_image` reprojects an image ``f`` (μ, 1/mm) into a virtual sinogram
``p_v = P f`` and completes its metal trace.  LI and NMAR then return ``f + R p_c − R p_v`` (``R`` the
virtual scanner's FBP): the original plus the change the completion makes.  Next to metal that formula
has two faults that raw data do not have.

1. *Blooming.*  The scanner's own blur has already spread the metal into the pixels around the 2500-HU
   mask (up to about 1000 HU above the tissue in the first 2 mm at 2-mm pixels).  Those pixels are
   outside the mask, so their rays are not in the trace and the completion keeps them.
2. *The virtual blur of the metal.*  ``R p_v − R p_c`` removes the clipped metal blurred by the virtual
   scanner (``R P``), which spreads farther than the scanner's blur already baked into ``f``: a bright
   residue on some sides of the mask and a dark ring 2–5 mm out (−100 to −140 HU mean bias on the
   benchmark phantoms, benchmarks/results/mar.md).

:func:`imar_image_correction` treats the mask *and* a zone :data:`BLOOM_ZONE_MM` wide around it as
unknown (its trace is the trace of that larger region) and changes the base image of the difference:

``g = f`` outside the zone, ``g = R p_c`` inside it;   ``f_out = g + R p_c − R P g``.

Outside the zone ``g − R P g`` is the original's detail and ``R (p_c − P g)`` the completion's change,
which no longer contains the removal of the metal's (clipped, virtually blurred) edge: the bloom is gone
because its pixels were replaced, not by subtracting a blur the image does not have.  Inside the zone
the output is the completed image plus its own high-pass, ``(2 − R P) R p_c``: one van Cittert step
that undoes the virtual scanner's blur to first order.

The prior of the first pass is classified (Meyer et al. 2010, three classes) from the original with its
bloom estimated and removed, ``f − R P (f − μ_w)·M`` outside the mask ``M`` (the virtual scanner's blur
of the metal's excess over water), or the LI image where that is brighter (as
:func:`spectct.ct.mar.first_prior_source`: LI keeps no bright rim but loses bone next to metal).  Each
later pass classifies its prior from the previous output after smoothing it along the iso-distance
contours of the metal 3–10 mm from it (:func:`smooth_along_metal_contours`: radial streaks average
out, anatomy that follows the metal's outline stays).  In every prior bone is capped at
:data:`PRIOR_BONE_MAX_HU` and the metal is filled with the surrounding tissue class rather than water
(:func:`fill_from_surroundings`).  A frequency split (Meyer et al., Med Phys 39 (2012) 1904;
:func:`spectct.ct.mar.frequency_split`) keeps the first pass's fine structure near metal and the last
pass's elsewhere, as on the raw path.

Measured (benchmarks/results/mar.md, band RMSE within 2 cm of metal): below NMAR on images on every
benchmark case and 60–62 % below the uncorrected image on the rod, the stems, the plate and the case
phantom.  Without the contour smoothing and the cap the case phantom's prior stayed 80–170 HU too
bright 3–9 mm from the plate (streaks and bloom kept as bone; 55 %).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from spectct.ct.mar import frequency_split, interpolate_trace, nmar_inpaint, nmar_prior
from spectct.progress import SILENT, Reporter

#: width (mm) of the zone around the metal mask that the image path rebuilds from the completion
#: instead of keeping: the extent of the blooming rim of the benchmark's 2-mm images (mean error of the
#: stored image +750…+1000 HU within 2 mm of the mask, +190…+400 HU at 2–3 mm).  Band RMSE, steel rod /
#: CoCr stems / Ti plate / case phantom (HU; benchmarks/results/mar.md): two passes, 2 mm
#: 85 / 75 / 144 / 185, 3 mm 85 / 82 / 139 / 182; three passes, 2 mm 90 / 74 / 142 / 179, 3 mm
#: 89 / 79 / 137 / 176; 1.5 mm (only the 4-neighbours of 2-mm pixels, one pass) leaves the rim,
#: 192 / 145 / 249 / 267; 4 mm (without the prior fill) loses the bone next to the stems, 107 HU on them.
#: A rim wider than the zone stays: a synthetic rod blurred with σ = 1.6 mm kept +400 HU within 2 mm
#: (σ = 0.8 mm: 5 HU), so an image much softer than the benchmark's would need a wider zone.
BLOOM_ZONE_MM = 3.0
#: highest value (HU) a bone pixel of the image path's prior may keep.  Cortical bone is the densest
#: tissue (about 1500 HU at the benchmark's 110 kV: the phantom's cortex peaks at 1517–1584 HU); brighter
#: "bone" next to metal is bloom or a bright streak, and a prior that keeps it reprojects it into the
#: completed rays.  Band RMSE of the case phantom (HU, contour smoothing σ 10 mm): no cap 159.1,
#: 1800 HU 158.3, 1500 HU 155.6; 1200 HU cuts the real cortex (steel rod 95 → 112 HU).
PRIOR_BONE_MAX_HU = 1500.0
#: Gaussian σ (mm) of the smoothing along the iso-distance contours of the metal
#: (:func:`smooth_along_metal_contours`) applied to the previous output before its prior is classified,
#: and the distances from metal (mm) between which it is applied.  Band RMSE, steel rod / CoCr stems /
#: Ti plate / case phantom (HU, bone cap 1500 HU, 3 passes): σ 6 mm 94 / 83 / 138 / 159, 10 mm
#: 95 / 85 / 140 / 156, 14 mm 96 / 85 / 141 / 155 (from 10 to 20 mm from metal: no change); from 0 mm
#: instead of 3 mm the rod lost (σ 4 mm, 4 passes: 112 HU, 100 HU from 3 mm), as did blurring the prior: a Gaussian
#: of 2 mm before classification 115 / 91 / 181 / 172.
TANGENTIAL_SMOOTH_MM = 14.0
TANGENTIAL_RANGE_MM = (3.0, 10.0)


def imar_image_correction(
    f: torch.Tensor,
    p_v: torch.Tensor,
    metal: torch.Tensor,
    zone: torch.Tensor,
    zone_trace: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    recon: Callable[[torch.Tensor], torch.Tensor],
    mu_water: float,
    pixel_mm: float,
    iterations: int = 3,
    frequency_split_mm: tuple[float, float] | None = None,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """iMAR-like correction of one batch of images without raw data; returns μ (1/mm), metal not reinserted.

    Parameters
    ----------
    f : original image, μ in 1/mm, ``[nz, n, n]`` (metal clipped as stored).
    p_v : its virtual sinogram ``forward(f)``.
    metal : boolean metal mask ``[nz, n, n]``.
    zone : boolean mask of the metal plus the bloom zone (:data:`BLOOM_ZONE_MM`) around it.
    zone_trace : boolean trace of ``zone`` in ``p_v``.
    forward, recon : the virtual projector and its FBP.
    mu_water : μ of water (1/mm) defining HU.
    pixel_mm : pixel size.
    iterations : NMAR passes (≥ 1); each after the first classifies its prior from the previous output,
        smoothed along the metal's contours (:func:`smooth_along_metal_contours`).
    frequency_split_mm : ``(sigma_mm, decay_mm)`` of the final split between the first and the last
        pass, ``None`` to skip (with one pass there is nothing to split).
    reporter : progress messages.

    Notes
    -----
    Per pass: prior ``π`` (three classes), ``p_c = NMAR(p_v, P π)`` on ``zone_trace``, ``g = f`` outside
    ``zone`` and ``R p_c`` inside, output ``g + R p_c − R P g`` (see the module docstring).
    """
    rep = reporter or SILENT
    base = recon(p_v)
    li = f + recon(interpolate_trace(p_v, zone_trace)) - base
    # the scanner's bloom, estimated as the virtual blur of the metal's excess over water
    bloom = recon(forward((f - mu_water) * metal))
    source = torch.where(metal, f, torch.maximum(f - bloom, li))
    prior = _prior(source, metal, mu_water, pixel_mm)
    passes = max(1, int(iterations))
    first = out = None
    for it in range(passes):
        rc = recon(nmar_inpaint(p_v, forward(prior), zone_trace))
        g = torch.where(zone, rc, f)
        out = g + rc - recon(forward(g))
        if first is None:
            first = out
        if it + 1 < passes:
            smooth = smooth_along_metal_contours(out, metal, pixel_mm, TANGENTIAL_SMOOTH_MM, *TANGENTIAL_RANGE_MM)
            prior = _prior(smooth, metal, mu_water, pixel_mm)
            rep.info(f"  NMAR pass {it + 1}/{passes}")
    if frequency_split_mm is not None and passes > 1:
        out = frequency_split(first, out, metal, pixel_mm, *frequency_split_mm)
    return out


def _prior(source: torch.Tensor, metal: torch.Tensor, mu_water: float, pixel_mm: float) -> torch.Tensor:
    """Three-class prior (:func:`spectct.ct.mar.nmar_prior`) with bone capped at :data:`PRIOR_BONE_MAX_HU`
    and the metal filled from the surrounding tissue (:func:`fill_from_surroundings`)."""
    prior = nmar_prior(source, metal, mu_water, pixel_mm)
    prior = torch.clamp(prior, max=mu_water * (1.0 + PRIOR_BONE_MAX_HU / 1000.0))
    return fill_from_surroundings(prior, metal)


def smooth_along_metal_contours(img: torch.Tensor, metal: torch.Tensor, pixel_mm: float, sigma_mm: float,
                                d_min_mm: float, d_max_mm: float, tolerance_px: float = 0.5) -> torch.Tensor:
    """Gaussian smoothing of ``img`` along the iso-distance contours of the metal, between ``d_min_mm``
    and ``d_max_mm`` from it; elsewhere (and in the metal) the input.

    Streaks run radially from metal (they lie along the rays through it), so along a curve at constant
    distance from the metal bright and dark streaks alternate and average out, while anatomy that
    follows the metal's outline (the cortex a plate lies on, the canal wall around a nail) lies along
    that curve and keeps its value.  It is the idea of smoothing across, not along, the streaks, as
    in the directional (polar-coordinate) streak filters of MAR; here the direction is the tangent of the
    distance map, so it holds for any metal shape.  Each pixel follows the tangent field (a line integral
    convolution, Cabral & Leedom 1993) in unit steps both ways until the distance to metal changes by more
    than ``tolerance_px`` (the path left its contour: a concave outline or the end of the metal); metal
    pixels carry no weight.  Pixels nearer than ``d_min_mm`` keep their detail, which the prior of the
    first millimetres needs (:data:`TANGENTIAL_RANGE_MM`).  On a pixel grid the distance along a curved
    contour wobbles, so with the default half-pixel tolerance the paths often end after a few steps
    and the smoothing is shorter than ``sigma_mm`` (radial streaks around a 4-mm rod: −62 % at 0.5 px,
    −95 % at 1 px, tests/test_mar_image.py); on the benchmark 0.5 px was chosen (1 px, σ 4 mm, 4 passes, from 0 mm:
    rod / stems / plate / case 123 / 89 / 165 / 156 HU against 112 / 84 / 160 / 155).
    """
    m = metal.cpu().numpy()
    nz, ny, nx = img.shape
    dev, dt = img.device, img.dtype
    if not m.any():
        return img.clone()
    dist = np.zeros(m.shape, np.float32)
    ty = np.zeros(m.shape, np.float32)
    tx = np.zeros(m.shape, np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    for k in range(nz):
        if m[k].any():
            d, (iy, ix) = ndimage.distance_transform_edt(~m[k], return_indices=True)
            vy, vx = yy - iy, xx - ix
            norm = np.maximum(np.hypot(vy, vx), 1e-6)
            dist[k], ty[k], tx[k] = d, vx / norm, -vy / norm
        else:
            dist[k] = np.inf
    D = torch.as_tensor(dist, device=dev)
    TY, TX = torch.as_tensor(ty, device=dev), torch.as_tensor(tx, device=dev)
    valid = (~metal).to(dt)
    stack = torch.stack([img * valid, valid], dim=1)  # [nz, 2, ny, nx]: weighted value and weight
    sp = sigma_mm / pixel_mm
    r = max(1, int(math.ceil(3.0 * sp)))
    acc, wsum = img * valid, valid.clone()
    gy0 = torch.as_tensor(yy, device=dev).expand(nz, ny, nx)
    gx0 = torch.as_tensor(xx, device=dev).expand(nz, ny, nx)
    kz = torch.arange(nz, device=dev).view(nz, 1, 1).expand(nz, ny, nx)
    for sign in (1.0, -1.0):
        py, px = gy0.clone(), gx0.clone()
        dy, dx = sign * TY, sign * TX
        alive = torch.ones(nz, ny, nx, dtype=torch.bool, device=dev)
        for j in range(1, r + 1):
            iy = py.round().clamp(0, ny - 1).long()
            ix = px.round().clamp(0, nx - 1).long()
            ny_, nx_ = TY[kz, iy, ix], TX[kz, iy, ix]
            flip = torch.where(ny_ * dy + nx_ * dx < 0, -1.0, 1.0).to(dt)
            dy, dx = ny_ * flip, nx_ * flip
            py, px = py + dy, px + dx
            iy = py.round().clamp(0, ny - 1).long()
            ix = px.round().clamp(0, nx - 1).long()
            alive = alive & ((D[kz, iy, ix] - D).abs() <= tolerance_px)
            if not bool(alive.any()):
                break
            grid = torch.stack([px / max(nx - 1, 1) * 2 - 1, py / max(ny - 1, 1) * 2 - 1], dim=-1)
            smp = torch.nn.functional.grid_sample(stack, grid, mode="bilinear", padding_mode="border",
                                                  align_corners=True)
            w = math.exp(-0.5 * (j / sp) ** 2) * alive.to(dt)
            acc = acc + w * smp[:, 0]
            wsum = wsum + w * smp[:, 1]
    dmm = D * pixel_mm
    sel = (dmm > d_min_mm) & (dmm <= d_max_mm) & ~metal & (wsum > 0)
    return torch.where(sel, acc / wsum.clamp_min(1e-6), img)


def fill_from_surroundings(prior: torch.Tensor, metal: torch.Tensor) -> torch.Tensor:
    """The prior with every metal pixel set to the value of the nearest non-metal pixel of its slice.

    Meyer et al. (2010) set the metal of the prior to soft tissue.  The 2500-HU mask of a reconstructed
    image is larger than the metal (its own bloom) and swallows the bone or tissue around it; a water
    fill then cuts a hole into the bone of the prior (a plate on a cortex, screws in bone), and the
    completed rays through that hole pull the pixels next to the mask down.  Extending the surrounding
    class into the mask keeps the cortex continuous; where metal lies in soft tissue nothing changes.
    Band RMSE with a 2-mm zone, water fill → this fill (steel rod / CoCr stems / Ti plate / case
    phantom, HU): 64 / 85 / 161 / 186 → 85 / 75 / 144 / 185: better where metal touches bone, worse for
    the rod in marrow.
    """
    m = metal.cpu().numpy()
    out = prior.clone()
    for k in range(m.shape[0]):
        if m[k].any() and not m[k].all():
            _, (iy, ix) = ndimage.distance_transform_edt(m[k], return_indices=True)
            out[k] = prior[k][torch.as_tensor(iy, device=prior.device), torch.as_tensor(ix, device=prior.device)]
    return out
