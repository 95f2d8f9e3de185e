"""Hot-spot detection and segmentation in a SPECT volume (Bq/mL).

Background
----------
Detection works on the SPECT smoothed by a Gaussian of σ = ``SMOOTH_MM`` (10 mm, at least one voxel per
axis; :func:`detection_image`). The background is summarised by the median and the median absolute
deviation (MAD) of that detection image inside the body (body from the CT when given, else from the SPECT
itself). Both ignore the few hot voxels that would drag a mean and standard deviation; σ̂ = 1.4826 · MAD is
the normal-consistent scale (Rousseeuw & Croux, J Am Stat Assoc 1993; 88:1273). A voxel is *hot* where the
detection image exceeds median + k·σ̂.

Why the kernel is fixed in mm and the statistics are taken after it: the noise of a reconstructed voxel
grows as the voxel shrinks (about 2.2 × from 9.6-mm to 4.8-mm voxels in the case: 1.0 → 2.1 standard
deviations per mean in muscle), and OSEM noise leaves many body voxels near zero. Measured on the raw
4.8-mm voxels the body median fell to 115 Bq/mL and the threshold to 964 Bq/mL, about the muscle level
(≈ 800 Bq/mL), and a one-voxel (4.8-mm) kernel left noise peaks of muscle and marrow as 30 "foci"; the
same statistics on the 10-mm detection image give 2600 Bq/mL on both grids (2582 on 9.6-mm voxels). The
thresholds of the reading (k, the prominence, the 45 % level, 0.5 mL, 30 mm) were set on the 9.6-mm grid
with a one-voxel kernel (σ = 9.6 mm); 10 mm keeps that scale on any grid. On the case's 4.8-mm SPECT
every truth check passes with σ from 9 to 11 mm; at 8 mm the sinus tract is read as a focus, at 12 mm
the nail-tip focus is no longer found on its own (docs/findings.md).

Foci
----
The hot voxels of the detection image are split into watershed basins (Beucher & Meyer 1993), one per
regional maximum of prominence h (an h-maximum: it rises at least h above the saddle joining it to a
hotter one), so uptake along a plate, a collection below it and its tract separate into foci. In its
basin each focus is the connected region above max(``fraction`` × its peak, hot threshold) — the 40–50 %
of local maximum used for SPECT lesion volumes (Erdi et al., Cancer 1997; 80:2505).

Each focus gets peak and mean (Bq/mL), volume (mL), the refined position of its maximum (centroid of
the voxels ≥ 90 % of the peak), its ratio to the background median, and its ratio to the mirror
region across the body midline (the contralateral reference, e.g. the other femur's marrow).
A focus whose principal length is ≥ 2.5 × its width and ≥ 30 mm is *elongated*. A focus less than
:data:`SINUS_MAX_BONE_FRACTION` in bone that reaches the skin (within 8 mm of the body surface plus half a
voxel) at least 30 mm from its maximum is a *sinus tract* from its maximum to that skin point (it may start
in the bone it drains); an elongated one whose maximum lies at the opening runs from its far end instead.
Other elongated foci mostly outside bone are tracts between the ends of their principal axis (deep end
first). (Localization turns a tract that runs
along a nail or plate without reaching the skin back into uptake along that implant.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy import ndimage

from spectct.analysis.anatomy import SKIN_DEPTH_MM, Anatomy
from spectct.device import resolve_device
from spectct.errors import InputError
from spectct.volume import Volume

MAD_TO_SIGMA = 1.4826  # σ = 1.4826 MAD for normally distributed data
SMOOTH_MM = 10.0
#: A focus reaching the skin is read as a sinus tract while less than this fraction of it lies in bone. A
#: sinus tract starts at infected bone or metal and runs through soft tissue, and at SPECT resolution its
#: segmented focus takes in the bone it starts from: the case's tract reads 0.27–0.33 in bone on 9.6-mm
#: voxels and 0.50–0.52 on 4.8-mm voxels (its deep end lies on the plate and cortex), while foci of marrow
#: and of bone read ≥ 0.94 on the demo studies (2026-11-25) and 0.75 for the pelvic marrow of the synthetic
#: scene in tests/test_analysis.py that reaches its skin. Elongated foci must still be mostly (> 50 %)
#: outside bone to be called tracts between their ends.
SINUS_MAX_BONE_FRACTION = 0.65


@dataclass
class Background:
    """Robust background of the body: median, MAD, σ̂ = 1.4826 MAD and the hot threshold median + k σ̂."""

    median_bq_ml: float
    mad_bq_ml: float
    sigma_bq_ml: float
    k: float
    threshold_bq_ml: float
    n_voxels: int
    region: str

    def to_json(self) -> dict:
        return {
            "statistic": "median + k * 1.4826 * MAD",
            "region": self.region,
            "median_bq_ml": self.median_bq_ml,
            "mad_bq_ml": self.mad_bq_ml,
            "sigma_bq_ml": self.sigma_bq_ml,
            "k": self.k,
            "threshold_bq_ml": self.threshold_bq_ml,
            "n_voxels": self.n_voxels,
        }


@dataclass
class Hotspot:
    """One focus of uptake on the SPECT grid (positions in LPS mm)."""

    id: int
    peak_lps: tuple[float, float, float]
    peak_bq_ml: float
    mean_bq_ml: float
    volume_ml: float
    centroid_lps: tuple[float, float, float]
    length_mm: float
    width_mm: float
    axis: tuple[float, float, float]
    elongated: bool
    shape: str  # "focus" or "tract"
    ratio_to_background: float | None
    fraction_in_bone: float | None = None
    min_depth_mm: float | None = None
    reaches_skin: bool = False
    end_points_lps: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    contralateral_mean_bq_ml: float | None = None
    ratio_to_contralateral: float | None = None
    near_midline: bool = False
    indices: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int32), repr=False)
    points_lps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)


def body_mask_on(spect: Volume, anatomy: Anatomy | None, device: str = "cpu") -> np.ndarray:
    """Body mask on the SPECT grid: the CT body sampled there (when given) or the SPECT above 5 % of its
    99th percentile, smoothed and hole-filled."""
    if anatomy is not None:
        return anatomy.on_grid(spect, "body")
    data = ndimage.gaussian_filter(spect.data.astype(np.float32), 1.0)
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(spect.shape, bool)
    return ndimage.binary_fill_holes(data > 0.05 * np.percentile(positive, 99))


def detection_image(spect: Volume, smooth_mm: float = SMOOTH_MM, device: str = "cpu") -> np.ndarray:
    """The SPECT smoothed for detection: a Gaussian of σ = ``smooth_mm`` along each axis, at least one voxel.

    The kernel is fixed in mm so that the noise left in the detection image, and the threshold and
    prominences measured on it, mean the same on any reconstruction grid (see the module notes).
    """
    sigma_vox = tuple(max(1.0, smooth_mm / float(s)) for s in spect.spacing)
    return _gaussian(spect.data.astype(np.float32), sigma_vox, device)


def background_statistics(
    spect: Volume,
    body: np.ndarray,
    k: float = 5.0,
    region: str = "body",
    smooth_mm: float = SMOOTH_MM,
    device: str = "cpu",
    smooth: np.ndarray | None = None,
) -> Background:
    """Median, MAD and hot threshold of the detection image (:func:`detection_image`) inside ``body``.

    The statistics are those of the image the threshold is applied to: the smoothed SPECT, not the raw
    voxels, whose noise grows as the voxels shrink (see the module notes). ``smooth`` is that image when
    already computed.
    """
    smooth = detection_image(spect, smooth_mm, device) if smooth is None else smooth
    values = smooth[body].astype(np.float64)
    if values.size < 10:
        raise InputError("SPECT and CT share too little body to estimate a background (fewer than 10 voxels)")
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med)))
    sigma = MAD_TO_SIGMA * mad
    if sigma <= 0:  # piecewise-constant images: fall back to a fraction of the median
        sigma = 0.1 * abs(med) if med != 0 else float(values.std())
    return Background(med, mad, sigma, k, med + k * sigma, int(values.size), region)


def detect_hotspots(
    spect: Volume,
    ct: Volume | None = None,
    anatomy: Anatomy | None = None,
    k: float = 5.0,
    fraction: float = 0.45,
    min_volume_ml: float = 0.5,
    max_foci: int = 30,
    background: Background | None = None,
    prominence_sigma: float = 3.0,
    prominence_fraction: float = 0.05,
    smooth_mm: float = SMOOTH_MM,
    device: str = "cpu",
) -> list[Hotspot]:
    """Find and segment foci of uptake (see the module notes).

    Parameters
    ----------
    spect : activity concentration in Bq/mL (any grid in patient coordinates).
    ct : CT in HU on its own grid; used through ``anatomy`` (computed from it when ``anatomy`` is None).
    anatomy : body, bone and skin from the CT.
    k : the hot threshold is median + k σ̂ of the body background.
    fraction : segmentation level as a fraction of each focus' peak.
    min_volume_ml : smaller regions are dropped as noise.
    max_foci : at most this many foci, hottest first.
    background : precomputed background (else computed here).
    prominence_sigma, prominence_fraction : a maximum starts its own focus when it stands
        max(``prominence_sigma`` σ̂, ``prominence_fraction`` × hottest) above the saddle to a hotter one.
    smooth_mm : σ (mm) of the Gaussian detection filter (:func:`detection_image`).
    device : torch device of the resampling and smoothing.

    Returns
    -------
    list of Hotspot, hottest first, numbered from 1.
    """
    _check_spect(spect)
    if anatomy is None and ct is not None:
        from spectct.analysis.anatomy import segment_anatomy

        anatomy = segment_anatomy(ct, device=device)
    body = body_mask_on(spect, anatomy, device=device)
    data = spect.data.astype(np.float32)
    smooth = detection_image(spect, smooth_mm, device)
    if background is None:
        background = background_statistics(spect, body, k=k, smooth=smooth)
    hot = (smooth > background.threshold_bq_ml) & body
    if not hot.any():
        return []
    h = max(prominence_sigma * background.sigma_bq_ml, prominence_fraction * float(smooth[hot].max()))
    basins = _basins(smooth, hot, h)
    min_vox = max(1, int(np.ceil(min_volume_ml / spect.voxel_volume_ml)))
    depth = _depth_on(spect, anatomy, device)
    in_bone = _bone_on(spect, anatomy, device)
    seeds = []
    for lab, sl in enumerate(ndimage.find_objects(basins), start=1):
        if sl is None:
            continue
        local = np.where(basins[sl] == lab, smooth[sl], -np.inf)
        k = np.unravel_index(int(np.argmax(local)), local.shape)
        seeds.append((float(local[k]), lab, tuple(int(i + s.start) for i, s in zip(k, sl, strict=True))))
    seeds.sort(key=lambda t: -t[0])
    spots: list[Hotspot] = []
    for peak, lab, kji in seeds:
        if len(spots) >= max_foci:
            break
        level = max(fraction * peak, background.threshold_bq_ml)
        region = _grow((smooth >= level) & (basins == lab), kji, np.zeros_like(hot))
        if region.sum() < min_vox:
            continue
        spots.append(_describe(len(spots) + 1, region, data, spect, background, anatomy, depth, in_bone))
    # found in order of the smoothed peak; numbered hottest first by the measured peak, as they are reported
    spots.sort(key=lambda f: -f.peak_bq_ml)
    return [replace(f, id=i) for i, f in enumerate(spots, start=1)]


# --------------------------------------------------------------------------- helpers
def _check_spect(spect: Volume) -> None:
    if spect.unit not in ("Bq/mL", "counts", "relative", "1"):
        raise InputError(f"SPECT must be an activity image (Bq/mL), got unit {spect.unit!r}")
    if not np.all(np.isfinite(spect.data)):
        raise InputError("SPECT contains NaN or infinite values")
    if float(np.max(spect.data)) <= 0:
        raise InputError("SPECT is empty (no positive voxel): nothing to read")


def _gaussian(data: np.ndarray, sigma_vox: float | tuple[float, float, float], device: str) -> np.ndarray:
    """Separable Gaussian smoothing in torch (3 passes of a 1-D kernel; σ in voxels, one per axis or one)."""
    dev = resolve_device(device)
    sigmas = (sigma_vox,) * 3 if np.isscalar(sigma_vox) else tuple(sigma_vox)
    t = torch.as_tensor(data, dtype=torch.float32, device=dev)[None, None]
    for dim, sig in enumerate(sigmas):
        r = int(np.ceil(3 * sig))
        x = torch.arange(-r, r + 1, dtype=torch.float32, device=dev)
        kern = torch.exp(-0.5 * (x / sig) ** 2)
        kern = kern / kern.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = 2 * r + 1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - dim)] = pad[2 * (2 - dim) + 1] = r
        t = torch.nn.functional.conv3d(torch.nn.functional.pad(t, pad, mode="replicate"), kern.view(shape))
    return t[0, 0].cpu().numpy()


def _basins(smooth: np.ndarray, hot: np.ndarray, h: float) -> np.ndarray:
    """Watershed basins of the hot voxels, one per maximum at least ``h`` above its surroundings."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    peaks = h_maxima(np.where(hot, smooth, 0.0).astype(np.float64), h) & hot
    markers, _ = ndimage.label(peaks, structure=np.ones((3, 3, 3), bool))
    return watershed(-smooth, markers=markers, mask=hot)


def _grow(mask: np.ndarray, seed: tuple[int, int, int], claimed: np.ndarray) -> np.ndarray:
    free = mask & ~claimed
    if not free[seed]:
        return np.zeros_like(mask)
    labels, _ = ndimage.label(free)
    return labels == labels[seed]


def _depth_on(spect: Volume, anatomy: Anatomy | None, device: str) -> np.ndarray | None:
    if anatomy is None:
        return None
    return anatomy.on_grid(spect, "depth_mm")


def _bone_on(spect: Volume, anatomy: Anatomy | None, device: str) -> np.ndarray | None:
    if anatomy is None:
        return None
    return anatomy.on_grid(spect, "filled")


def _describe(
    hid: int,
    region: np.ndarray,
    data: np.ndarray,
    spect: Volume,
    bg: Background,
    anatomy: Anatomy | None,
    depth: np.ndarray | None,
    in_bone: np.ndarray | None,
) -> Hotspot:
    idx = np.argwhere(region)
    vals = data[region]
    pts = spect.index_to_world(idx)
    peak = float(vals.max())
    top = vals >= 0.9 * peak
    w = vals[top] - 0.0
    peak_xyz = (pts[top] * w[:, None]).sum(0) / max(w.sum(), 1e-12)
    center = pts.mean(axis=0)
    length, width, axis = _elongation(pts, spect)
    elongated = length >= 30.0 and length >= 2.5 * width
    frac_bone = float(in_bone[region].mean()) if in_bone is not None else None
    min_depth = float(depth[region].min()) if depth is not None else None
    reaches_skin = bool(min_depth is not None and min_depth <= SKIN_DEPTH_MM + 0.5 * max(spect.spacing))
    soft = frac_bone is None or frac_bone < 0.5
    draining = reaches_skin and (frac_bone is None or frac_bone < SINUS_MAX_BONE_FRACTION)
    shape, ends = "focus", None
    if draining and depth is not None:
        # a sinus tract: from the deep end of the focus to where it meets the skin. The deep end is its
        # maximum when that lies ≥ 30 mm from the skin point; a tract whose hottest part is the collection
        # at its opening runs from the focus's far end instead (the 10 % of voxels farthest from the skin).
        d = depth[region]
        skin_pt = pts[d <= d.min() + 0.5 * max(spect.spacing)].mean(0)
        reach = np.linalg.norm(pts - skin_pt, axis=1)
        if np.linalg.norm(skin_pt - peak_xyz) >= 30.0:
            shape, ends = "tract", (peak_xyz, skin_pt)
        elif elongated and reach.max() >= 30.0:
            shape, ends = "tract", (pts[reach >= np.quantile(reach, 0.9)].mean(0), skin_pt)
    if shape == "focus" and elongated and soft:
        t = (pts - center) @ axis
        span = t.max() - t.min()
        e1 = pts[t <= t.min() + 0.1 * span].mean(0)
        e2 = pts[t >= t.max() - 0.1 * span].mean(0)
        if depth is not None and _sample_nearest(depth, spect, e1) < _sample_nearest(depth, spect, e2):
            e1, e2 = e2, e1  # deep end first
        shape, ends = "tract", (e1, e2)
    if ends is not None:
        ends = tuple(tuple(float(v) for v in e) for e in ends)
    contra_mean, ratio_c, near_mid = _contralateral(pts, vals, spect, data, anatomy)
    return Hotspot(
        id=hid,
        peak_lps=tuple(float(v) for v in peak_xyz),
        peak_bq_ml=peak,
        mean_bq_ml=float(vals.mean()),
        volume_ml=float(region.sum() * spect.voxel_volume_ml),
        centroid_lps=tuple(float(v) for v in center),
        length_mm=length,
        width_mm=width,
        axis=tuple(float(v) for v in axis),
        elongated=bool(elongated),
        shape=shape,
        ratio_to_background=peak / bg.median_bq_ml if bg.median_bq_ml > 0 else None,
        fraction_in_bone=frac_bone,
        min_depth_mm=min_depth,
        reaches_skin=reaches_skin,
        end_points_lps=ends,
        contralateral_mean_bq_ml=contra_mean,
        ratio_to_contralateral=ratio_c,
        near_midline=near_mid,
        indices=idx.astype(np.int32),
        points_lps=pts,
    )


def _elongation(pts: np.ndarray, spect: Volume) -> tuple[float, float, np.ndarray]:
    """Length along the first principal axis (extent + one voxel), width √(12 λ₂) and the axis."""
    if len(pts) < 3:
        return float(max(spect.spacing)), float(max(spect.spacing)), np.array([0.0, 0.0, 1.0])
    c = pts - pts.mean(0)
    lam, vec = np.linalg.eigh(np.cov(c.T))
    axis = vec[:, -1]
    t = c @ axis
    vox = float(np.mean(spect.spacing))
    return float(t.max() - t.min() + vox), float(np.sqrt(12.0 * max(lam[1], 0.0)) + 0.0), axis


def _sample_nearest(arr: np.ndarray, vol: Volume, xyz: np.ndarray) -> float:
    idx = np.clip(np.rint(vol.world_to_index(xyz)).astype(int), 0, np.array(vol.shape) - 1)
    return float(arr[tuple(idx)])


def _contralateral(
    pts: np.ndarray, vals: np.ndarray, spect: Volume, data: np.ndarray, anatomy: Anatomy | None
) -> tuple[float | None, float | None, bool]:
    """Mean of the SPECT in the region mirrored across the body midline, and the focus/mirror ratio."""
    mid = anatomy.midline_x if anatomy is not None else float(spect.center_world[0])
    near_mid = bool(abs(np.mean(pts[:, 0]) - mid) < 20.0)
    mirror = pts.copy()
    mirror[:, 0] = 2.0 * mid - mirror[:, 0]
    idx = spect.world_to_index(mirror)
    inside = np.all((idx >= -0.5) & (idx <= np.array(spect.shape) - 0.5), axis=1)
    if inside.mean() < 0.5:
        return None, None, near_mid
    mvals = ndimage.map_coordinates(data, idx[inside].T, order=1, mode="nearest")
    mean_m = float(mvals.mean())
    mean_f = float(vals[inside].mean())
    ratio = mean_f / mean_m if mean_m > 0 else None
    return mean_m, ratio, near_mid
