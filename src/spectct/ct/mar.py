"""Metal artifact reduction by projection completion: LI, NMAR and an iMAR-like iterated NMAR + FSMAR.

All three methods treat the rays through metal (the *metal trace*, :func:`spectct.ct.metal.metal_trace`)
as missing data and fill them in from their neighbours in the same view, then reconstruct:

- **LI** — linear interpolation across the trace in every view and slice (Kalender, Hebel & Ebersberger,
  Radiology 164 (1987) 576–577).
- **NMAR** — normalised MAR (Meyer, Raupach, Lell, Schmidt & Kachelrieß, Med Phys 37 (2010) 5482–5493):
  a prior image made of three tissue classes (air, soft tissue, bone) is forward projected; the
  measured sinogram is divided by the prior's, interpolated across the trace, multiplied back, and
  reconstructed.  Dividing by the prior removes the edges of bone and body from the sinogram, so the
  interpolation no longer has to bridge them and introduces fewer new streaks.  The first prior is
  classified from the brighter of the uncorrected and the LI image (:func:`first_prior_source`).
- **iMAR-like** — NMAR repeated with the prior re-derived from the previous corrected image, followed by
  a frequency split after FSMAR (Meyer, Raupach, Lell, Schmidt & Kachelrieß, Med Phys 39 (2012)
  1904–1916): the low spatial frequencies come from the last NMAR image; the high frequencies close to
  metal come from the first NMAR image, which keeps the bone next to metal that the refined prior loses
  (FSMAR itself takes them from the uncorrected image; see :func:`correct_sinogram` for why not here);
  far from metal everything comes from the last image.  The weight falls off with the distance to
  metal.  Siemens' iMAR itself is not published in full: this is our reading of the two papers it
  builds on, hence "-like".

Two entry points share the machinery:

- :func:`mar_sinogram` — the scanner's path, from raw line integrals (:class:`spectct.ct.simulate.CtRaw`).
- :func:`mar_image` — the user's path, from a reconstructed image in HU without raw data: the image is
  reprojected into a virtual sinogram on a grid matching its own, corrected, and the *change* the
  correction makes is added to the original, so the original resolution, noise and HU scale are kept
  wherever the metal trace does not reach.

Metal itself is written back from the uncorrected image, clipped at 3071 HU.

Measured performance (benchmarks/results/mar.md): on the raw path every method lowers the RMSE within 2
cm of metal, and the iMAR-like method has the lowest error there on every benchmark case (steel rod, two
CoCr stems, Ti plate with screws, the case phantom's steel plate and the 1-mm patient scan), 65–71 %
below the uncorrected image, and the lowest error away from metal.  The metal mask (2500 HU) is larger
than the metal (1.6× on the plate at 2-mm pixels) and swallows the bone it touches; the prior, as in
Meyer et al. (2010), fills it with soft tissue, and bone missing from the prior does not come back next
to the mask.  That is why a refined prior alone lost to one NMAR pass on the plate (its first prior's
blooming rim stands in for the lost bone) and why the final split takes the fine structure next to
metal from the first pass.  Checked and not adopted (all measured on the benchmark): keeping the first
prior's bone next to the mask in the refined prior, filling the mask's rim in the refined prior from the
surrounding tissue, a tighter trace from half of each metal component's peak in the refinement, and
the FSMAR split with the uncorrected image (each won on some cases and lost on others).  On images LI
and NMAR gain less (about half the near-metal error removed): the input's blooming rim lies outside the
metal trace.  The iMAR-like method on images (:mod:`spectct.ct.mar_image`) rebuilds that rim too and
iterates; it is below NMAR on every benchmark case, 62–65 % below uncorrected on the three standard
configurations and 55 % on the case phantom.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from spectct.ct.fbp import fbp, hu_to_mu, mu_to_hu
from spectct.ct.geometry import CtGeometry
from spectct.ct.metal import METAL_THRESHOLD_HU, SCANNER_MAX_HU, metal_mask, metal_trace
from spectct.ct.projector import FanBeamProjector
from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError
from spectct.progress import SILENT, Reporter
from spectct.volume import Volume

METHODS = ("li", "nmar", "imar")
#: default number of NMAR passes of the iMAR-like method (the first prior from the uncorrected and LI
#: images, the second from the first NMAR image).  A third pass (split between the first and the third
#: image) lowered the band RMSE of the steel rod and the case phantom (72 → 68, 136 → 130 HU) but raised
#: it on the CoCr stems and the Ti plate (73 → 76, 121 → 134 HU): each refined prior loses more of the
#: bone the mask swallowed.
IMAR_ITERATIONS = 2
#: default NMAR passes of the iMAR-like method on the image path (:func:`mar_image`,
#: :func:`spectct.ct.mar_image.imar_image_correction`), each after the first with its prior classified
#: from the previous output, then the frequency split between the first and the last.  Band RMSE
#: (steel rod / CoCr stems / Ti plate / case phantom, HU): 1 pass 87 / 87 / 143 / 194, 2 passes
#: 85 / 82 / 139 / 182, 3 passes 89 / 79 / 137 / 176, 4 passes 93 / 78 / 141 / 172, 6 passes
#: 100 / 76 / 157 / 168: each pass removes more streaks (the case phantom) and, next to the mask, echoes
#: its own prior (the rod and the plate lose from the fourth pass on).  Measured before the later
#: priors were smoothed along the metal's contours (spectct.ct.mar_image.smooth_along_metal_contours);
#: with it, 3 passes 95 / 85 / 141 / 155 HU, 4 passes (σ 4 mm) 100 / 82 / 144 / 157 HU.
IMAR_IMAGE_ITERATIONS = 3
#: tissue-class thresholds of the NMAR prior (Meyer et al. 2010 segment the smoothed image into air,
#: soft tissue and bone with thresholds chosen between the class peaks of the histogram)
PRIOR_AIR_HU = -500.0
PRIOR_BONE_HU = 300.0
#: Gaussian smoothing of the image before classification, mm (Meyer et al. 2010 smooth first so that
#: noise and thin streaks do not flip classes)
PRIOR_SMOOTH_MM = 1.0
#: frequency split of the iMAR-like method (:func:`frequency_split`): the Gaussian (σ, mm) that separates
#: low from high spatial frequencies, and the distance from metal (mm) over which the weight of the first
#: NMAR image's high frequencies falls from 1 to 1/e.  σ = 5 mm is wider than the blooming rim and the
#: bone cortex next to metal (the detail the first pass keeps) and narrower than the streak bands the
#: second pass removes; 10 mm is half the 2-cm band of the evaluation (benchmarks/results/mar.md: with
#: σ = 3–6 mm and 6–30 mm the Ti plate's band RMSE ranged 129–119 HU, the steel rod's 66–77 HU).
FS_SIGMA_MM = 5.0
FS_DECAY_MM = 10.0
#: HU range a CT image must fall in (below −1024: scanners' padding outside the field, −2048 or −3024;
#: above 3071: extended-range reconstructions)
HU_VALID_RANGE = (-3100.0, 32767.0)
_EPS_PRIOR = 1e-2  # added to prior line integrals before dividing (dimensionless; body rays are ≫ 1)


# ============================================================================ sinogram building blocks
def interpolate_trace(sino: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    """Linear interpolation across the trace along the channels of every view (LI-MAR).

    Parameters
    ----------
    sino : sinogram ``[..., views, channels]`` (any leading axes, e.g. slices).
    trace : boolean mask of the same shape; ``True`` marks samples to replace.

    Returns
    -------
    torch.Tensor
        A copy of ``sino`` whose trace samples lie on the straight line between the nearest valid
        channels on either side; at the detector's ends the nearest valid value is extended; a view with
        no valid channel is set to 0.

    References
    ----------
    W. A. Kalender, R. Hebel, J. Ebersberger, "Reduction of CT artifacts caused by metallic implants",
    Radiology 164 (1987) 576–577.
    """
    sino = torch.as_tensor(sino)
    trace = torch.as_tensor(trace, device=sino.device).bool()
    if trace.shape != sino.shape:
        raise GeometryError(f"metal trace shape {tuple(trace.shape)} differs from sinogram "
                            f"{tuple(sino.shape)}")
    if not bool(trace.any()):
        return sino.clone()
    n = sino.shape[-1]
    idx = torch.arange(n, device=sino.device).expand_as(trace)
    valid = ~trace
    # index of the nearest valid channel at or before / at or after every channel
    prev = torch.where(valid, idx, torch.full_like(idx, -1)).cummax(dim=-1).values
    nxt = torch.where(valid, idx, torch.full_like(idx, n)).flip(-1).cummin(dim=-1).values.flip(-1)
    left = torch.gather(sino, -1, prev.clamp(0, n - 1))
    right = torch.gather(sino, -1, nxt.clamp(0, n - 1))
    has_l, has_r = prev >= 0, nxt < n
    span = (nxt - prev).clamp(min=1).to(sino.dtype)
    w = (idx - prev).to(sino.dtype) / span
    both = left + w * (right - left)
    one_side = torch.where(has_l, left, torch.where(has_r, right, torch.zeros_like(sino)))
    fill = torch.where(has_l & has_r, both, one_side)
    return torch.where(trace, fill, sino)


def nmar_inpaint(sino: torch.Tensor, prior_sino: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    """NMAR's sinogram completion: normalise by the prior, interpolate, denormalise.

    ``p_corr = LI(p / (p_prior + ε)) · (p_prior + ε)`` inside the trace, ``p`` outside (Meyer et al.,
    Med Phys 37 (2010) 5482, eqs. 3–5).  ε = 0.01 keeps air rays (``p_prior ≈ 0``) finite; it cancels
    exactly outside the trace and is negligible against body rays (line integrals ≫ 1).
    """
    prior = torch.as_tensor(prior_sino, device=sino.device, dtype=sino.dtype).clamp(min=0) + _EPS_PRIOR
    return torch.where(trace, interpolate_trace(sino / prior, trace) * prior, sino)


def nmar_prior(image_mu: torch.Tensor, metal: torch.Tensor, mu_water: float, pixel_mm: float,
               air_hu: float = PRIOR_AIR_HU, bone_hu: float = PRIOR_BONE_HU,
               smooth_mm: float = PRIOR_SMOOTH_MM) -> torch.Tensor:
    """Tissue-class prior image of NMAR (Meyer et al., Med Phys 37 (2010) 5482, section II.B).

    The image (:func:`first_prior_source` for the first pass, the previous NMAR image afterwards) has
    its metal replaced by water, is smoothed with a Gaussian, and classified: below ``air_hu`` → air (μ = 0);
    between → soft tissue (μ = μ_water); at or above ``bone_hu`` → bone, which keeps its smoothed value.

    Parameters
    ----------
    image_mu : ``[nz, ny, nx]`` in 1/mm.
    metal : boolean ``[nz, ny, nx]``.
    mu_water : μ of water in 1/mm at the image's effective energy (defines HU).
    pixel_mm : pixel size, for the smoothing width.
    """
    img = torch.where(metal, torch.full_like(image_mu, mu_water), image_mu)
    img = gaussian_2d(img, smooth_mm / pixel_mm)
    hu = (img / mu_water - 1.0) * 1000.0
    prior = torch.where(hu < air_hu, torch.zeros_like(img), torch.full_like(img, mu_water))
    return torch.where(hu >= bone_hu, img, prior)


def gaussian_2d(img: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """In-plane Gaussian blur of ``[nz, ny, nx]`` (separable, reflecting edges); σ in pixels."""
    if sigma_px <= 0.05:
        return img.clone()
    r = max(1, int(math.ceil(3.0 * sigma_px)))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / k.sum()
    nz, ny, nx = img.shape
    t = img.reshape(nz, 1, ny, nx)
    pad_y, pad_x = min(r, ny - 1), min(r, nx - 1)
    if pad_y < r or pad_x < r:  # reflect padding needs the image larger than the kernel
        t = torch.nn.functional.pad(t, (r, r, r, r), mode="replicate")
    else:
        t = torch.nn.functional.pad(t, (r, r, r, r), mode="reflect")
    t = torch.nn.functional.conv2d(t, k.view(1, 1, 1, -1))
    t = torch.nn.functional.conv2d(t, k.view(1, 1, -1, 1))
    return t.reshape(nz, ny, nx)


def frequency_split(detail: torch.Tensor, corrected: torch.Tensor, metal: torch.Tensor, pixel_mm: float,
                    sigma_mm: float = FS_SIGMA_MM, decay_mm: float = FS_DECAY_MM) -> torch.Tensor:
    """Frequency-split combination of two MAR images (after FSMAR, Meyer et al., Med Phys 39 (2012) 1904).

    ``f = G_σ * f_corr + w · (f_det − G_σ * f_det) + (1 − w) · (f_corr − G_σ * f_corr)`` with
    ``w = exp(−d / decay)``, ``d`` the in-plane distance (mm) to the nearest metal pixel.

    Meyer et al. take the low spatial frequencies from the MAR-corrected image (reliable: no streaks)
    and the high frequencies close to metal from the uncorrected one (complete: every measured ray
    contributed), with a weight that favours those high frequencies near metal, where interpolation loses
    the most detail.  The iMAR-like method (:func:`correct_sinogram`) passes the *first* NMAR image as
    ``detail`` and the last one as ``corrected``: see :func:`correct_sinogram` for why.

    Parameters
    ----------
    detail : image whose high frequencies are kept near metal, ``[nz, ny, nx]``.
    corrected : image that gives the low frequencies everywhere and the high ones far from metal.
    metal : boolean mask ``[nz, ny, nx]``.
    pixel_mm : pixel size in mm.
    sigma_mm : standard deviation of the Gaussian low-pass.
    decay_mm : distance over which the weight of ``detail``'s high frequencies falls to 1/e.
    """
    low_c = gaussian_2d(corrected, sigma_mm / pixel_mm)
    high_c = corrected - low_c
    high_d = detail - gaussian_2d(detail, sigma_mm / pixel_mm)
    dist = distance_to_metal(metal.cpu().numpy(), pixel_mm)
    w = torch.exp(-torch.as_tensor(dist, device=corrected.device, dtype=corrected.dtype) / decay_mm)
    return low_c + w * high_d + (1.0 - w) * high_c


def distance_to_metal(metal: np.ndarray, pixel_mm: float | tuple[float, float]) -> np.ndarray:
    """In-plane Euclidean distance (mm) of every pixel to the nearest metal pixel of its slice.

    Slices without metal get +inf.  ``metal`` is ``[nz, ny, nx]`` (or one ``[ny, nx]`` slice).
    """
    m = np.asarray(metal, dtype=bool)
    single = m.ndim == 2
    m3 = m[None] if single else m
    sampling = np.broadcast_to(np.asarray(pixel_mm, dtype=float), (2,))
    out = np.full(m3.shape, np.inf, dtype=np.float32)
    for k in range(m3.shape[0]):
        if m3[k].any():
            out[k] = ndimage.distance_transform_edt(~m3[k], sampling=sampling)
    return out[0] if single else out


# ============================================================================ the correction proper
def correct_sinogram(
    sino: torch.Tensor,
    uncorrected_mu: torch.Tensor,
    metal: torch.Tensor,
    trace: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    method: str,
    mu_water: float,
    pixel_mm: float,
    iterations: int = IMAR_ITERATIONS,
    frequency_split_mm: tuple[float, float] | None = (FS_SIGMA_MM, FS_DECAY_MM),
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """Run LI, NMAR or the iMAR-like method on one batch of slices; returns the corrected μ image.

    Works against any pair of operators (``forward``: image → sinogram, ``reconstruct``: sinogram →
    image), so the same code serves the scanner's raw data and the virtual sinogram of an image.
    Metal is *not* reinserted here (the image holds the interpolated values inside the metal).

    Parameters
    ----------
    sino : line integrals ``[nz, views, channels]``.
    uncorrected_mu : reconstruction of ``sino`` (1/mm), ``[nz, ny, nx]``.
    metal : boolean metal mask ``[nz, ny, nx]``.
    trace : boolean metal trace ``[nz, views, channels]``.
    forward, reconstruct : the projector and the reconstruction of this geometry.
    method : ``"li"``, ``"nmar"`` or ``"imar"``.
    mu_water : μ of water (1/mm) that defines HU for the prior's classes.
    pixel_mm : image pixel size.
    iterations : NMAR passes of ``"imar"`` (≥ 1); ignored by the others.
    frequency_split_mm : ``(sigma_mm, decay_mm)`` of the final :func:`frequency_split` of ``"imar"``;
        ``None`` skips it (the result is then iterated NMAR).  With one pass there is nothing to split
        and ``"imar"`` equals ``"nmar"``.
    reporter : progress messages.

    Notes
    -----
    The iMAR-like method runs NMAR ``iterations`` times, each pass classifying its prior from the
    previous pass's image (Meyer et al. 2010 already suggest the NMAR image as a better prior source
    than the uncorrected one), and ends with a frequency split (Meyer et al. 2012) whose high
    frequencies near metal come from the *first* NMAR image, the low frequencies and everything far
    from metal from the last one.  The two passes fail in complementary ways.  The first prior is
    classified from the uncorrected (or LI) image, whose blooming rim around the metal counts as bone;
    the metal mask (2500 HU) is larger than the metal and swallows the bone it touches, which the prior
    fills with soft tissue, so that rim stands in for the lost bone, and the first NMAR image keeps the
    bone edges next to metal (where the metal lies in bone, e.g. a plate's screws) — but also a bright
    ring where the metal lies in soft tissue or marrow, and residual streaks, which are broad.  The
    refined prior removes most of those streaks and the false ring, and with them part of the true bone
    next to the mask.  Taking the fine structure (below σ = :data:`FS_SIGMA_MM`) within about
    :data:`FS_DECAY_MM` of metal from the first image and the rest from the second keeps the better
    half of each.  The uncorrected image, FSMAR's own high-frequency source, was worse here: next to
    metal its high frequencies hold the metal's own edge (thousands of HU), whose negative lobe
    darkened the 2-mm ring by 300–500 HU in the Ti plate and the 1-mm patient scan
    (benchmarks/results/mar.md).
    """
    rep = reporter or SILENT
    method = _check_method(method)
    sino_li = interpolate_trace(sino, trace)
    image = reconstruct(sino_li)
    if method == "li":
        return image
    image = first_prior_source(uncorrected_mu, image, pixel_mm)
    passes = max(1, int(iterations)) if method == "imar" else 1
    first = None
    for it in range(passes):
        prior = nmar_prior(image, metal, mu_water, pixel_mm)
        sino_c = nmar_inpaint(sino, forward(prior), trace)
        image = reconstruct(sino_c)
        if first is None:
            first = image
        if passes > 1:
            rep.info(f"  NMAR pass {it + 1}/{passes}")
    if method == "imar" and frequency_split_mm is not None and passes > 1:
        image = frequency_split(first, image, metal, pixel_mm, *frequency_split_mm)
    return image


def first_prior_source(uncorrected_mu: torch.Tensor, li_mu: torch.Tensor, pixel_mm: float,
                       smooth_mm: float = PRIOR_SMOOTH_MM) -> torch.Tensor:
    """Image the first NMAR prior is classified from: per pixel the brighter of the uncorrected and the
    LI image (compared after smoothing).

    Meyer et al. (2010) classify the uncorrected image; the LI image is a common alternative with fewer
    streaks.  LI, however, erases bone right next to metal (every ray through it was interpolated), and
    bone missing from the prior cannot come back; the uncorrected image keeps that bone but also its
    dark streaks.  Taking the brighter of the two keeps the bone and drops the dark streaks.  On the
    benchmark phantoms (steel rod / CoCr stems / Ti plate, raw path, iMAR-like) the band RMSE was
    44 / 67 / 237 HU with the LI prior, 56 / 49 / 159 HU with the uncorrected one and 48 / 52 / 159 HU
    with this choice.
    """
    sigma = smooth_mm / pixel_mm
    take_unc = gaussian_2d(uncorrected_mu, sigma) > gaussian_2d(li_mu, sigma)
    return torch.where(take_unc, uncorrected_mu, li_mu)


def _check_method(method: str) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise InputError(f"unknown MAR method {method!r}; choose one of {', '.join(METHODS)}")
    return m


def _warn_no_metal(rep: Reporter, what: str, threshold_hu: float) -> None:
    msg = f"no metal above {threshold_hu:g} HU found in {what}; returned unchanged"
    warnings.warn(msg, stacklevel=3)
    rep.info(f"[yellow]warning:[/] {msg}")




# ============================================================================ the user's path: an image
#: μ of water used to turn HU into 1/mm for the virtual sinogram. Any positive value gives the same
#: result (the virtual data are linear in μ and the prior's classes are defined in HU); this one is
#: water at 70 keV, a typical effective energy of a 110–120 kVp beam.
VIRTUAL_MU_WATER = 0.01946
#: FBP kernel of the correction image.  The change ``FBP(p_c − p_v)`` contains the removal of the metal's
#: own, blurred edge (the blooming rim of the input); with a sharp ramp (Ram-Lak) that 3071-HU edge rings
#: into the whole slice (10 HU mean change 25 mm away in an artifact-free test image), with the
#: Hann-apodised ramp 1.4 HU, at the price of a softer correction next to metal (benchmarks/results/mar.md).
VIRTUAL_FILTER = "hann"
#: lowest CT number a scanner writes inside its field (values below, e.g. −2048 or −3024, mark
#: pixels outside the reconstruction circle and are kept as they are)
SCANNER_MIN_HU = -1024.0


def virtual_geometry(n_pixels: int, pixel_mm: float, n_views: int | None = None) -> CtGeometry:
    """A fan-beam scanner whose field covers an ``n × n`` image of ``pixel_mm`` pixels, corners included.

    The channel pitch gives one channel per pixel at the isocentre; the number of views is
    ``π/2 · n`` rounded to a multiple of 4 (at least 180), the usual angular sampling for an ``n``-pixel
    field (Kak & Slaney ch. 5), unless ``n_views`` is given.  A multiple of 4 puts a view at every
    quarter turn, so the views map onto each other by 90° rotations of the pixel grid.
    """
    half_diag = 0.5 * n_pixels * pixel_mm * math.sqrt(2.0) * 1.02
    sid = max(595.0, 2.0 * half_diag)
    pitch = pixel_mm / sid
    n_channels = int(2 * math.ceil(math.asin(half_diag / sid) / pitch + 2))
    nv = int(n_views) if n_views else max(180, 4 * int(round(math.pi / 8.0 * n_pixels)))
    return CtGeometry(sid_mm=sid, sdd_mm=2.0 * sid, n_channels=n_channels, channel_pitch_rad=pitch,
                      n_views=nv, fov_mm=2.0 * half_diag, detector_offset_channels=0.0)


def mar_image(
    ct: Volume,
    method: str = "imar",
    device: str | torch.device = "cpu",
    reporter: Reporter | None = None,
    iterations: int | None = None,
    threshold_hu: float = METAL_THRESHOLD_HU,
    n_views: int | None = None,
    slices_per_batch: int | None = None,
    frequency_split_mm: tuple[float, float] | None = (FS_SIGMA_MM, FS_DECAY_MM),
) -> Volume:
    """Metal artifact reduction of a reconstructed CT image (HU) without raw data.

    Parameters
    ----------
    ct : CT volume in HU, any pixel size (non-square pixels are resampled, see Notes), any number of
        slices (one included).
    method : ``"li"``, ``"nmar"`` or ``"imar"`` (see the module docstring).
    device : torch device.
    reporter : progress and warnings.
    iterations : NMAR passes of the iMAR-like method (default :data:`IMAR_IMAGE_ITERATIONS`).
    threshold_hu : metal threshold (:func:`spectct.ct.metal.metal_mask`).
    n_views : views of the virtual scanner (default from :func:`virtual_geometry`).
    slices_per_batch : slices corrected together; default as many as :func:`slices_per_batch_for`
        allows (each projection and reconstruction then serves the whole batch at once).
    frequency_split_mm : ``(sigma_mm, decay_mm)`` of the iMAR-like frequency split, ``None`` to skip.

    Returns
    -------
    Volume
        The corrected image on the input's grid, HU; metal pixels hold the input's values clipped at
        3071 HU; slices without metal are returned unchanged.

    Notes
    -----
    Each slice (padded to a square with air) is reprojected by a :class:`FanBeamProjector` on a grid
    equal to its own into a virtual sinogram ``p_v``; the metal trace of ``p_v`` is completed by the
    chosen method into ``p_c``; the output is ``f + FBP(p_c) − FBP(p_v)``: the original image plus the
    change the completion makes, so that reprojection and reconstruction blur cancel and pixels whose
    rays avoid the metal keep their original values (up to the Hann kernel's tails,
    :data:`VIRTUAL_FILTER`).  That is how LI and NMAR work on images.  The iMAR-like method
    (:func:`spectct.ct.mar_image.imar_image_correction`) also rebuilds a zone of
    :data:`spectct.ct.mar_image.BLOOM_ZONE_MM` around the mask, where the input's own blur spread the
    metal, and iterates with the frequency split.

    Pixels that are not square (``dy ≠ dx``) are first resampled in-plane by linear interpolation to
    square pixels of the larger size, corrected there, and only the *change* is interpolated back and
    added to the input, so pixels the correction does not touch keep their values exactly.  The larger
    size, because the virtual scanner must not be sharper than the image: its reprojection and
    reconstruction remove the metal's own blurred edge, and a narrower blur than the image's leaves a
    bright rim (a 2-mm image of the titanium plate upsampled to 1-mm pixels lost 33 % of its band
    error instead of 52 % on its own grid).
    """
    rep = reporter or SILENT
    method = _check_method(method)
    if not isinstance(ct, Volume):
        raise InputError("mar_image needs a Volume in HU")
    if ct.unit not in ("HU", "1"):
        raise InputError(f"mar_image needs a CT image in HU, got unit {ct.unit!r}")
    data = np.asarray(ct.data, dtype=np.float32)
    if data.ndim != 3:
        raise InputError(f"mar_image needs a [z, y, x] volume, got shape {data.shape}")
    check_hu_range(data, "CT image")
    iterations = IMAR_IMAGE_ITERATIONS if iterations is None else int(iterations)
    mask = metal_mask(ct, threshold_hu=threshold_hu)
    metal_slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if metal_slices.size == 0:
        _warn_no_metal(rep, "the CT image", threshold_hu)
        return ct.with_data(np.asarray(ct.data).copy())
    dy, dx = ct.spacing[1], ct.spacing[2]
    options = dict(method=method, device=device, reporter=rep, iterations=iterations,
                   n_views=n_views, slices_per_batch=slices_per_batch, frequency_split_mm=frequency_split_mm)
    if abs(dy - dx) <= 1e-3 * max(dy, dx):
        return ct.with_data(_mar_square(data, mask, metal_slices, dx, **options), unit="HU")
    # non-square pixels: correct on a square grid of the coarser pixel, bring back only the change
    h = max(dy, dx)
    ny, nx = data.shape[1:]
    my, mx = int(math.ceil(ny * dy / h - 1e-6)), int(math.ceil(nx * dx / h - 1e-6))
    to_sq_y, to_sq_x = _resampling_matrix(my, h, ny, dy), _resampling_matrix(mx, h, nx, dx)
    back_y, back_x = _resampling_matrix(ny, dy, my, h), _resampling_matrix(nx, dx, mx, h)
    rep.info(f"non-square pixels ({dy:g} × {dx:g} mm): corrected on {my}×{mx} pixels of {h:g} mm")
    sub = np.clip(data[metal_slices], SCANNER_MIN_HU, None)  # scanner padding (−2048, −3024) counts as air
    sq = np.einsum("ij,zjk,lk->zil", to_sq_y, sub, to_sq_x).astype(np.float32)
    sq_mask = metal_mask(sq, threshold_hu=threshold_hu, pixel_mm=h)
    sq_slices = np.flatnonzero(sq_mask.reshape(sq_mask.shape[0], -1).any(axis=1))
    out = data.copy()
    if sq_slices.size == 0:  # metal too thin to survive the resampling
        _warn_no_metal(rep, "the resampled CT image", threshold_hu)
        return ct.with_data(out)
    corrected = _mar_square(sq, sq_mask, sq_slices, h, **options)
    change = np.einsum("ij,zjk,lk->zil", back_y, corrected - sq, back_x)
    orig = data[metal_slices]
    res = np.clip(orig + change, SCANNER_MIN_HU, SCANNER_MAX_HU)
    res = np.where(mask[metal_slices], np.minimum(orig, SCANNER_MAX_HU), res)
    out[metal_slices] = np.where(orig < SCANNER_MIN_HU, orig, res)
    return ct.with_data(out.astype(np.float32), unit="HU")


def _resampling_matrix(n_out: int, h_out: float, n_in: int, h_in: float) -> np.ndarray:
    """``[n_out, n_in]`` linear interpolation between two centred 1-D grids (pitches in mm); samples
    beyond the input's first or last centre take that edge value."""
    pos = (np.arange(n_out) - (n_out - 1) / 2.0) * (h_out / h_in) + (n_in - 1) / 2.0
    pos = np.clip(pos, 0.0, n_in - 1.0)
    i0 = np.minimum(np.floor(pos).astype(int), max(n_in - 2, 0))
    frac = pos - i0
    mat = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(mat, (rows, i0), 1.0 - frac)
    if n_in > 1:
        np.add.at(mat, (rows, i0 + 1), frac)
    return mat


def slices_per_batch_for(geometry: CtGeometry, n_pixels: int, device: str | torch.device,
                         budget_bytes: int | None = None) -> int:
    """How many slices one MAR batch holds: about a dozen float32 sinograms and images per slice
    (measured, trace, prior sinogram, interpolated copies, images) within ``budget_bytes``
    (default 256 MiB on a CPU — a few slices already fill the projector's products — and 8 GiB on a GPU);
    at least 1, at most 64."""
    if budget_bytes is None:
        budget_bytes = (8 << 30) if torch.device(device).type == "cuda" else (256 << 20)
    per_slice = 12 * 4 * (geometry.n_views * geometry.n_channels + n_pixels * n_pixels)
    return int(min(64, max(1, budget_bytes // per_slice)))


def _mar_square(data: np.ndarray, mask: np.ndarray, metal_slices: np.ndarray, pixel_mm: float, *, method: str,
                device, reporter: Reporter, iterations: int, n_views: int | None,
                slices_per_batch: int | None, frequency_split_mm) -> np.ndarray:
    """:func:`mar_image` on square pixels: the corrected array (HU) with the input's shape."""
    rep = reporter
    dev = resolve_device(device)
    nz, ny, nx = data.shape
    dx = float(pixel_mm)
    n = max(ny, nx)
    oy, ox = (n - ny) // 2, (n - nx) // 2
    geom = virtual_geometry(n, dx, n_views)
    proj = FanBeamProjector(geom, n, dx, device=dev)
    mu_w = VIRTUAL_MU_WATER
    per_batch = int(slices_per_batch) if slices_per_batch else slices_per_batch_for(geom, n, dev)

    def recon(s: torch.Tensor) -> torch.Tensor:
        return fbp(s, geom, n, dx, filter=VIRTUAL_FILTER, device=dev)

    out = data.copy()
    batches = [metal_slices[i:i + per_batch] for i in range(0, metal_slices.size, per_batch)]
    rep.info(f"MAR ({method}) of {metal_slices.size} slice(s) with metal, {n}×{n} pixels of {dx:g} mm, "
             f"{geom.n_views} virtual views, {per_batch} slice(s) per batch")
    for ks in rep.track(batches, f"MAR {method}"):
        hu = np.full((len(ks), n, n), SCANNER_MIN_HU, dtype=np.float32)
        hu[:, oy:oy + ny, ox:ox + nx] = np.clip(data[ks], SCANNER_MIN_HU, SCANNER_MAX_HU)
        m = np.zeros((len(ks), n, n), dtype=bool)
        m[:, oy:oy + ny, ox:ox + nx] = mask[ks]
        f = torch.as_tensor(hu_to_mu(hu, mu_w), device=dev)
        metal_t = torch.as_tensor(m, device=dev)
        p_v = proj.forward(f)
        if method == "imar":  # the image path's own iteration (spectct.ct.mar_image)
            from spectct.ct.mar_image import BLOOM_ZONE_MM, imar_image_correction  # imports this module

            zone = distance_to_metal(m, dx) <= BLOOM_ZONE_MM + 1e-6
            corrected = imar_image_correction(
                f, p_v, metal_t, torch.as_tensor(zone, device=dev),
                torch.as_tensor(metal_trace(zone, proj), device=dev), proj.forward, recon, mu_w, dx,
                iterations=iterations, frequency_split_mm=frequency_split_mm, reporter=rep)
            _write_back(out, data, mask, ks, corrected, mu_w, (oy, ox))
            continue
        trace = torch.as_tensor(metal_trace(m, proj), device=dev)
        base = recon(p_v)

        def reconstruct(s: torch.Tensor, f=f, base=base) -> torch.Tensor:
            return f + (recon(s) - base)

        corrected = correct_sinogram(p_v, f, metal_t, trace, proj.forward, reconstruct, method, mu_w, dx,
                                     iterations=iterations, frequency_split_mm=frequency_split_mm,
                                     reporter=rep)
        _write_back(out, data, mask, ks, corrected, mu_w, (oy, ox))
    return out.astype(np.float32)


def _write_back(out: np.ndarray, data: np.ndarray, mask: np.ndarray, ks: np.ndarray, corrected: torch.Tensor,
                mu_w: float, offset: tuple[int, int]) -> None:
    """Store a corrected batch (μ on the padded square) into ``out[ks]`` in HU: clipped to the scanner's
    range, metal from the input (≤ 3071 HU), pixels outside the scanner's circle untouched."""
    ny, nx = data.shape[1:]
    oy, ox = offset
    corr_hu = mu_to_hu(corrected, mu_w).cpu().numpy()[:, oy:oy + ny, ox:ox + nx]
    corr_hu = np.clip(corr_hu, SCANNER_MIN_HU, SCANNER_MAX_HU)
    orig = data[ks]
    res = np.where(mask[ks], np.minimum(orig, SCANNER_MAX_HU), corr_hu)
    out[ks] = np.where(orig < SCANNER_MIN_HU, orig, res)  # outside the scanner's circle: untouched


def check_hu_range(data: np.ndarray, what: str) -> None:
    """Raise :class:`InputError` unless ``data`` looks like CT numbers (HU).

    Accepted: values within −3100…32767 HU (scanners mark pixels outside the field with −2048 or
    −3024) spanning more than 200 HU.  A μ map (0…0.1 /mm), an activity map or a rescaled image
    fails one of the two.
    """
    if data.size == 0 or not np.all(np.isfinite(data)):
        raise InputError(f"{what}: empty or non-finite values")
    lo, hi = float(data.min()), float(data.max())
    if lo < HU_VALID_RANGE[0] or hi > HU_VALID_RANGE[1] or hi - lo < 200.0:
        raise InputError(f"{what}: values {lo:.4g}…{hi:.4g} do not look like Hounsfield units "
                         "(expected about −1024…3071)")


# ============================================================================ the scanner's path: raw data
def mar_sinogram(
    raw,
    method: str = "imar",
    n_pixels: int | None = None,
    pixel_mm: float | None = None,
    iterations: int = IMAR_ITERATIONS,
    device: str | torch.device = "cpu",
    reporter: Reporter | None = None,
    filter: str = "hann",
    threshold_hu: float = METAL_THRESHOLD_HU,
    slices_per_batch: int | None = None,
    frequency_split_mm: tuple[float, float] | None = (FS_SIGMA_MM, FS_DECAY_MM),
    return_mask: bool = False,
) -> Volume | tuple[Volume, Volume]:
    """Metal artifact reduction from raw CT data (the scanner's path).

    Parameters
    ----------
    raw : :class:`spectct.ct.simulate.CtRaw` (line integrals after log and water correction).
    method : ``"li"``, ``"nmar"`` or ``"imar"`` (see the module docstring).
    n_pixels, pixel_mm : reconstruction grid (square, centred on the isocentre); default the raw
        data's own grid (``raw.n_pixels``, ``raw.pixel_mm``).
    iterations : NMAR passes of the iMAR-like method (default :data:`IMAR_ITERATIONS`).
    device : torch device.
    reporter : progress and warnings.
    filter : FBP apodisation (as :func:`spectct.ct.simulate.reconstruct_ct`).
    threshold_hu : metal threshold for the segmentation of the uncorrected image.
    slices_per_batch : slices corrected together (default :func:`slices_per_batch_for`).
    frequency_split_mm : ``(sigma_mm, decay_mm)`` of the iMAR-like frequency split, ``None`` to skip.
    return_mask : also return the metal mask (a ``label`` Volume on the same grid).

    Returns
    -------
    Volume
        Corrected CT in HU on the grid of :func:`spectct.ct.simulate.reconstruct_ct`; metal holds the
        uncorrected values clipped at 3071 HU; slices without metal are the plain FBP.

    Notes
    -----
    The metal is segmented in the uncorrected FBP (:func:`spectct.ct.metal.metal_mask`) and its trace
    found by forward projection with the scan's own projector; ``raw.metal_trace`` (the simulator's
    truth) is not used.
    """
    from spectct.ct.simulate import reconstruct_ct  # local: simulate imports the physics stack

    rep = reporter or SILENT
    method = _check_method(method)
    n = int(n_pixels or raw.n_pixels)
    h = float(pixel_mm or raw.pixel_mm)
    dev = resolve_device(device)
    sino_all = raw.sinogram  # float32 in memory, or a StoredArray (checked when loaded; read batch by batch)
    raw.geometry.check_sinogram(sino_all.shape, "raw CT sinogram")
    if isinstance(sino_all, np.ndarray) and not np.all(np.isfinite(sino_all)):
        raise InputError("raw CT sinogram contains NaN or infinite values")
    proj = FanBeamProjector(raw.geometry, n, h, device=dev)  # raises for grids that do not fit
    unc = reconstruct_ct(raw, n_pixels=n, pixel_mm=h, filter=filter, device=dev, reporter=rep)
    mask = metal_mask(unc, threshold_hu=threshold_hu)
    metal_slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    out = unc.data.astype(np.float32, copy=False)  # corrected in place, batch by batch (each reads its own first)
    if metal_slices.size == 0:
        _warn_no_metal(rep, "the reconstructed CT", threshold_hu)
    mu_w = float(raw.mu_water)

    def recon(s: torch.Tensor) -> torch.Tensor:
        return fbp(s, raw.geometry, n, h, filter=filter, device=dev)

    per_batch = int(slices_per_batch) if slices_per_batch else slices_per_batch_for(raw.geometry, n, dev)
    batches = [metal_slices[i:i + per_batch] for i in range(0, metal_slices.size, per_batch)]
    if batches:
        rep.info(f"MAR ({method}) of {metal_slices.size} slice(s) with metal, {n}×{n} pixels of {h:g} mm")
    for ks in rep.track(batches, f"MAR {method}"):
        m = mask[ks]
        sino = torch.as_tensor(sino_all[ks], device=dev)
        unc_mu = torch.as_tensor(hu_to_mu(unc.data[ks].astype(np.float32), mu_w), device=dev)
        trace = torch.as_tensor(metal_trace(m, proj), device=dev)
        corrected = correct_sinogram(sino, unc_mu, torch.as_tensor(m, device=dev), trace, proj.forward, recon,
                                     method, mu_w, h, iterations=iterations,
                                     frequency_split_mm=frequency_split_mm, reporter=rep)
        hu = mu_to_hu(corrected, mu_w).cpu().numpy()
        out[ks] = np.where(m, np.minimum(unc.data[ks], SCANNER_MAX_HU), hu)
    result = unc.with_data(out, unit="HU")
    if return_mask:
        return result, unc.with_data(mask.astype(np.uint8), unit="label")
    return result
