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
:func:`spectct.ct.mar.first_prior_source`: LI keeps no bright rim but loses bone next to metal).  The
second pass classifies its prior from the first output.  In both priors the metal is filled with the
surrounding tissue class rather than water (:func:`fill_from_surroundings`).  A frequency split (Meyer
et al., Med Phys 39 (2012) 1904; :func:`spectct.ct.mar.frequency_split`) keeps the first pass's fine
structure near metal and the second pass's elsewhere, as on the raw path.

Measured (benchmarks/results/mar.md, band RMSE within 2 cm of metal): below NMAR on images on every
benchmark case and 62–65 % below the uncorrected image on the rod, the stems and the plate, 55 % on
the case phantom, whose prior stays 80–170 HU too bright 3–9 mm from the plate (streaks kept
as bone).
"""

from __future__ import annotations

from collections.abc import Callable

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
    iterations : NMAR passes (≥ 1); each after the first classifies its prior from the previous output.
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
    prior = fill_from_surroundings(nmar_prior(source, metal, mu_water, pixel_mm), metal)
    passes = max(1, int(iterations))
    first = out = None
    for it in range(passes):
        rc = recon(nmar_inpaint(p_v, forward(prior), zone_trace))
        g = torch.where(zone, rc, f)
        out = g + rc - recon(forward(g))
        if first is None:
            first = out
        if it + 1 < passes:
            prior = fill_from_surroundings(nmar_prior(out, metal, mu_water, pixel_mm), metal)
            rep.info(f"  NMAR pass {it + 1}/{passes}")
    if frequency_split_mm is not None and passes > 1:
        out = frequency_split(first, out, metal, pixel_mm, *frequency_split_mm)
    return out


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
