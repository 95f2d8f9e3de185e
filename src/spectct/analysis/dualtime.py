"""Dual time point comparison of leukocyte SPECT (EANM guideline).

The EANM guideline for radiolabelled WBC scintigraphy (Signore et al., Eur J Nucl Med Mol Imaging 2018;
45:1816) reads delayed (3–4 h) and late (20–24 h) images with the late image corrected for decay and
displayed on the same absolute scale: uptake that increases in intensity or size over time means
infection; uptake that decreases or stays is marrow (or another non-infectious cause).

Per focus found on the early image, the late image (resampled onto the early grid, decay-corrected to the
early time: × exp(λ (t_late − t_early))) is compared in the focus region grown by one FWHM:
- intensity change = late peak / early peak;
- size change = volume above the early segmentation level (``fraction`` × early peak, one absolute
  level for both) late / early.
A trend is *increasing* when intensity grows by ≥ ``increase`` (10 %) or size by ≥ ``size_increase``
(20 %), *decreasing* when intensity falls by ≥ 10 % with no size increase, else *stable*. These margins
are our choice, chosen above the count noise of a 4.8-mm leukocyte SPECT, not values from the guideline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from spectct.analysis.hotspots import Hotspot
from spectct.errors import GeometryError, InputError
from spectct.physics.radionuclide import Radionuclide, get_radionuclide
from spectct.volume import Volume


@dataclass
class DualTimeChange:
    """Change of one focus between the early and the late (decay-corrected) image."""

    hotspot_id: int
    early_time_s: float
    late_time_s: float
    decay_factor: float
    early_peak_bq_ml: float
    late_peak_bq_ml: float
    early_volume_ml: float
    late_volume_ml: float
    intensity_change: float | None
    size_change: float | None
    trend: str
    infection: bool

    def to_json(self) -> dict:
        return asdict(self)


def compare_dual_time(
    early: list[Hotspot],
    early_spect: Volume,
    late_spect: Volume,
    early_time_s: float,
    late_time_s: float,
    radionuclide: str | Radionuclide = "Tc-99m",
    late_decay_corrected: bool = False,
    fraction: float = 0.45,
    grow_mm: float = 12.0,
    increase: float = 0.10,
    size_increase: float = 0.20,
    device: str = "cpu",
) -> list[DualTimeChange]:
    """Compare each early focus with the late image (see the module notes).

    Parameters
    ----------
    early : foci found on ``early_spect``.
    early_spect, late_spect : activity concentration images in Bq/mL, any grids in one frame of reference.
    early_time_s, late_time_s : acquisition times after injection (s), used for decay correction.
    radionuclide : name or :class:`Radionuclide` (default Tc-99m).
    late_decay_corrected : True when the late image is already decay-corrected to the early time.
    fraction : segmentation level as a fraction of the early peak.
    grow_mm : the comparison region is the focus dilated by this distance (a size increase can show).
    increase, size_increase : relative changes that count as an increase.
    device : torch device of the resampling.
    """
    if late_time_s <= early_time_s:
        raise InputError(f"late time ({late_time_s} s) must come after the early time ({early_time_s} s)")
    if not early_spect.overlaps(late_spect):
        raise GeometryError("early and late SPECT do not overlap in patient coordinates")
    if float(np.max(late_spect.data)) <= 0:
        raise InputError("late SPECT is empty (no positive voxel)")
    nuc = radionuclide if isinstance(radionuclide, Radionuclide) else get_radionuclide(radionuclide)
    decay = 1.0 if late_decay_corrected else nuc.decay_factor(late_time_s - early_time_s)
    late = late_spect if late_spect.same_grid(early_spect) else late_spect.resample_to(early_spect, device=device)
    late_data = late.data.astype(np.float64) / decay
    early_data = early_spect.data.astype(np.float64)
    r = max(1, int(round(grow_mm / min(early_spect.spacing))))
    ball = _ball(r, early_spect.spacing, grow_mm)
    out = []
    for h in early:
        region = np.zeros(early_spect.shape, bool)
        region[tuple(h.indices.T)] = True
        grown = ndimage.binary_dilation(region, structure=ball)
        e_peak = float(early_data[region].max())
        l_peak = float(late_data[grown].max())
        level = fraction * e_peak
        e_vol = _component_volume(early_data >= level, region, grown) * early_spect.voxel_volume_ml
        l_vol = _component_volume(late_data >= level, region, grown) * early_spect.voxel_volume_ml
        ic = l_peak / e_peak if e_peak > 0 else None
        sc = l_vol / e_vol if e_vol > 0 else None
        if (ic is not None and ic >= 1.0 + increase) or (sc is not None and sc >= 1.0 + size_increase):
            trend = "increasing"
        elif ic is not None and ic <= 1.0 - increase:
            trend = "decreasing"
        else:
            trend = "stable"
        out.append(
            DualTimeChange(
                h.id,
                float(early_time_s),
                float(late_time_s),
                float(decay),
                e_peak,
                l_peak,
                float(e_vol),
                float(l_vol),
                ic,
                sc,
                trend,
                trend == "increasing",
            )
        )
    return out


def _ball(r: int, spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    rz, ry, rx = (max(1, int(round(radius_mm / s))) for s in spacing)
    z, y, x = np.ogrid[-rz : rz + 1, -ry : ry + 1, -rx : rx + 1]
    return (z * spacing[0]) ** 2 + (y * spacing[1]) ** 2 + (x * spacing[2]) ** 2 <= radius_mm**2


def _component_volume(above: np.ndarray, seed: np.ndarray, grown: np.ndarray) -> int:
    """Voxels above the level, inside the grown region, connected to the focus' own voxels."""
    labels, _ = ndimage.label(above & grown)
    ids = np.unique(labels[seed & above])
    ids = ids[ids > 0]
    return int(np.isin(labels, ids).sum()) if ids.size else 0


def new_late_foci(
    early: list[Hotspot],
    early_spect: Volume,
    late_spect: Volume,
    early_time_s: float,
    late_time_s: float,
    radionuclide: str | Radionuclide = "Tc-99m",
    late_decay_corrected: bool = False,
    anatomy=None,
    background=None,
    grow_mm: float = 12.0,
    device: str = "cpu",
    smooth_mm: float | None = None,
) -> tuple[list[Hotspot], float]:
    """Foci of the late image (decay-corrected, on the early grid) whose maximum lies outside every early focus
    grown by ``grow_mm``: uptake that appeared over time (EANM: increasing → infection).

    The early background threshold is used, so both images are read on one absolute scale. Returns the
    new foci (numbered from 1, on the early grid) and the decay factor used. ``smooth_mm`` is the detection
    filter of the early reading (None: the default of :func:`spectct.analysis.hotspots.detect_hotspots`).
    """
    from spectct.analysis.hotspots import detect_hotspots

    nuc = radionuclide if isinstance(radionuclide, Radionuclide) else get_radionuclide(radionuclide)
    decay = 1.0 if late_decay_corrected else nuc.decay_factor(late_time_s - early_time_s)
    late = late_spect if late_spect.same_grid(early_spect) else late_spect.resample_to(early_spect, device=device)
    late = late.with_data((late.data.astype(np.float64) / decay).astype(np.float32))
    covered = np.zeros(early_spect.shape, bool)
    for h in early:
        covered[tuple(h.indices.T)] = True
    covered = ndimage.binary_dilation(covered, structure=_ball(1, early_spect.spacing, grow_mm))
    kw = {} if smooth_mm is None else {"smooth_mm": smooth_mm}  # the early image's detection filter
    found = detect_hotspots(late, anatomy=anatomy, background=background, device=device, **kw)
    new = []
    for h in found:
        idx = np.clip(
            np.rint(early_spect.world_to_index(np.asarray(h.peak_lps))).astype(int), 0, np.array(early_spect.shape) - 1
        )
        if not covered[tuple(idx)]:
            new.append(h)
    return new, float(decay)
