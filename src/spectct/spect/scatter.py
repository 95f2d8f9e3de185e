"""Scatter estimates from energy-window projections: triple- and dual-energy-window methods.

The estimate is the expected number of scattered photons in the photopeak window; it is used as the
additive term of the Poisson model in OSEM (``y ~ Poisson(A x + s)``), never subtracted from the data.

References
----------
Ogawa K, Harata Y, Ichihara T, Kubo A, Hashimoto S. A practical method for position-dependent
Compton-scatter correction in single photon emission CT. IEEE TMI 1991;10:408-412.  (TEW)
Jaszczak RJ, Greer KL, Floyd CE, Harris CC, Coleman RE. Improved SPECT quantification using compensation
for scattered photons. J Nucl Med 1984;25:893-900.  (DEW, k ≈ 0.5)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from spectct.errors import InputError


def _check_counts(name: str, c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise InputError(f"{name} window counts contain NaN or infinite values")
    if np.any(c < 0):
        raise InputError(f"{name} window counts contain negative values")
    return c


def _check_width(name: str, w: float) -> float:
    w = float(w)
    if not (math.isfinite(w) and w > 0):
        raise InputError(f"{name} window width must be a positive number of keV, got {w}")
    return w


def _smooth(estimate: np.ndarray, smooth_fwhm_px: float | None) -> np.ndarray:
    """Smooth each view in-plane (rows, cols); the window data are noisy and scatter is low-frequency."""
    if not smooth_fwhm_px:
        return estimate
    sigma = float(smooth_fwhm_px) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return gaussian_filter(
        estimate, sigma=(0.0, sigma, sigma), mode="reflect"
    )  # reflect keeps the total counts


def tew_estimate(
    lower_counts: np.ndarray,
    upper_counts: np.ndarray | None,
    width_lower_kev: float,
    width_upper_kev: float | None,
    width_peak_kev: float,
    smooth_fwhm_px: float | None = None,
    peak_counts: np.ndarray | None = None,
    primary_fraction_lower: float = 0.0,
    primary_fraction_upper: float = 0.0,
) -> np.ndarray:
    """Triple-energy-window scatter in the photopeak window (Ogawa et al. 1991).

    ``S = (C_lower / W_lower + C_upper / W_upper) · W_peak / 2``: the scatter spectrum under the photopeak
    approximated by a trapezoid whose sides are the count densities in two narrow windows beside the peak.
    With no upper window (``upper_counts=None``, common for Tc-99m) the upper density is taken as 0.

    Primary spill-over: with a finite energy resolution, unscattered photopeak photons also fall into the
    narrow side windows (≈ 3 % of the primaries in each 3 % window at 9.9 % FWHM), which classic TEW counts
    as scatter. Given the primaries' fractions ``f_l, f_u`` in the side windows (relative to the photopeak
    window, see :func:`primary_spill_fractions`) and the photopeak counts ``C_p = P + S``, the side-window
    scatter is ``C_l − f_l P`` and ``C_u − f_u P``; solving the TEW relation for ``S`` gives

        S = (A − B · C_p) / (1 − B),  A = (W_p/2)(C_l/W_l + C_u/W_u),  B = (W_p/2)(f_l/W_l + f_u/W_u),

    clipped to ``0 ≤ S ≤ C_p``. With ``f_l = f_u = 0`` (default) this is classic TEW.

    Parameters
    ----------
    lower_counts, upper_counts : counts ``[view, row, col]`` in the windows below and above the peak.
    width_lower_kev, width_upper_kev, width_peak_kev : window widths in keV.
    smooth_fwhm_px : optional in-plane Gaussian smoothing of the estimate (FWHM in detector pixels),
        applied before clipping.
    peak_counts : photopeak counts, needed when a primary fraction is non-zero.
    primary_fraction_lower, primary_fraction_upper : primaries in each side window per primary in the peak.

    Returns
    -------
    float32 array ``[view, row, col]`` of expected scatter counts in the photopeak window.
    """
    lo = _check_counts("lower", lower_counts)
    wl, wp = _check_width("lower", width_lower_kev), _check_width("photopeak", width_peak_kev)
    density = lo / wl
    b = primary_fraction_lower / wl
    if upper_counts is not None:
        up = _check_counts("upper", upper_counts)
        if up.shape != lo.shape:
            raise InputError(f"upper window shape {up.shape} differs from lower window {lo.shape}")
        wu = _check_width("upper", width_upper_kev)  # type: ignore[arg-type]
        density = density + up / wu
        b += primary_fraction_upper / wu
    a = density * wp / 2.0
    b *= wp / 2.0
    if b == 0.0:
        return np.clip(_smooth(a, smooth_fwhm_px), 0.0, None).astype(np.float32)
    if not 0.0 <= b < 1.0:
        raise InputError(f"primary spill-over fractions too large for TEW (B = {b:.3f} must be < 1)")
    if peak_counts is None:
        raise InputError("TEW with primary spill-over correction needs the photopeak counts")
    cp = _check_counts("photopeak", peak_counts)
    if cp.shape != lo.shape:
        raise InputError(f"photopeak shape {cp.shape} differs from lower window {lo.shape}")
    est = _smooth((a - b * cp) / (1.0 - b), smooth_fwhm_px)
    return np.clip(est, 0.0, _smooth(cp, smooth_fwhm_px)).astype(np.float32)


def primary_spill_fractions(
    peak: tuple[float, float],
    windows: list[tuple[float, float] | None],
    energy_kev: float,
    fwhm_fraction_at_140: float = 0.099,
) -> list[float]:
    """Fraction of photopeak primaries recorded in each of ``windows``, relative to the photopeak window.

    The detector's energy response is Gaussian with FWHM ``r · 140.5 keV · √(E/140.5)`` (``r`` = 9.9 % at
    140.5 keV for the Symbia, vendor data sheet; FWHM ∝ √E for NaI(Tl), Knoll, *Radiation Detection and
    Measurement*, ch. 10). ``None`` windows give 0.
    """
    from scipy.special import ndtr

    if not (0.0 < fwhm_fraction_at_140 < 0.5):
        raise InputError(
            f"energy resolution must be a fraction of the energy (0–0.5), got {fwhm_fraction_at_140}"
        )
    sigma = (
        fwhm_fraction_at_140 * 140.5 * math.sqrt(energy_kev / 140.5) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    )

    def frac(lo: float, hi: float) -> float:
        return float(ndtr((hi - energy_kev) / sigma) - ndtr((lo - energy_kev) / sigma))

    in_peak = frac(*peak)
    if in_peak <= 0:
        raise InputError(f"photopeak window {peak} does not contain {energy_kev} keV")
    return [0.0 if w is None else frac(*w) / in_peak for w in windows]


def dew_estimate(
    lower_counts: np.ndarray,
    width_lower_kev: float,
    width_peak_kev: float,
    k: float = 0.5,
    smooth_fwhm_px: float | None = None,
) -> np.ndarray:
    """Dual-energy-window scatter in the photopeak window (Jaszczak et al. 1984).

    ``S = k · C_lower · W_peak / W_lower`` with ``k ≈ 0.5`` for Tc-99m with a 127–153 keV Compton window
    (Jaszczak 1984). The width ratio rescales the lower window to the photopeak's width.

    Parameters
    ----------
    lower_counts : counts ``[view, row, col]`` in the Compton (lower) window.
    width_lower_kev, width_peak_kev : window widths in keV.
    k : scatter multiplier.
    smooth_fwhm_px : optional in-plane Gaussian smoothing (FWHM in pixels).
    """
    lo = _check_counts("lower", lower_counts)
    if not (math.isfinite(k) and k >= 0):
        raise InputError(f"DEW multiplier k must be a non-negative number, got {k}")
    est = k * lo * _check_width("photopeak", width_peak_kev) / _check_width("lower", width_lower_kev)
    return _smooth(est, smooth_fwhm_px).astype(np.float32)


# --------------------------------------------------------------------------------------------- windows
def _windows(projections) -> list:
    geom = getattr(projections, "geometry", None)
    wins = (
        getattr(projections, "windows", None)
        or getattr(geom, "energy_windows", None)
        or getattr(geom, "windows", None)
    )
    if not wins:
        raise InputError("projections carry no energy windows; scatter correction needs the window list")
    return list(wins)


def _win_name(w) -> str:
    return str(getattr(w, "name", ""))


def _win_bounds(w) -> tuple[float, float]:
    lo = getattr(w, "lower_kev", None)
    hi = getattr(w, "upper_kev", None)
    if lo is None or hi is None:
        raise InputError(f"energy window {_win_name(w)!r} has no lower/upper bounds")
    return float(lo), float(hi)


def _find(windows: list, key: str | int | float | None) -> int | None:
    """Index of a window given by name, index, or an energy (keV) it contains."""
    if key is None:
        return None
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        if not 0 <= int(key) < len(windows):
            raise InputError(f"energy window index {key} out of range (0..{len(windows) - 1})")
        return int(key)
    if isinstance(key, float):
        for i, w in enumerate(windows):
            lo, hi = _win_bounds(w)
            if lo <= key <= hi:
                return i
        raise InputError(f"no energy window contains {key} keV")
    names = [_win_name(w) for w in windows]
    for i, n in enumerate(names):
        if n.lower() == str(key).lower():
            return i
    raise InputError(f"no energy window named {key!r}; windows: {', '.join(names)}")


def adjacent_windows(
    projections, peak: str | int | float | None = None
) -> tuple[int, int | None, int | None]:
    """Indices of the photopeak window and of the windows just below and just above it.

    ``peak`` is a window name, index or an energy in keV; ``None`` picks the window named ``photopeak``
    (or else the first window). The lower/upper windows are those whose edges are nearest to the peak's
    edges without overlapping its centre; ``None`` where none exists.
    """
    wins = _windows(projections)
    if peak is None:
        names = [_win_name(w).lower() for w in wins]
        p = names.index("photopeak") if "photopeak" in names else 0
    else:
        p = _find(wins, peak)
    plo, phi = _win_bounds(wins[p])
    centre = 0.5 * (plo + phi)
    lower = upper = None
    best_lo = best_hi = math.inf
    for i, w in enumerate(wins):
        if i == p:
            continue
        lo, hi = _win_bounds(w)
        if hi <= centre and plo - hi < best_lo and hi <= plo + 1e-6 + 0.02 * centre:
            best_lo, lower = plo - hi, i
        if lo >= centre and lo - phi < best_hi and lo >= phi - 1e-6 - 0.02 * centre:
            best_hi, upper = lo - phi, i
    return p, lower, upper


def _counts(projections) -> np.ndarray:
    c = np.asarray(getattr(projections, "counts", projections))
    if c.ndim != 4:
        raise InputError(f"projections must hold counts [window, view, row, col], got shape {c.shape}")
    return c


def tew(
    projections,
    peak: str | int | float | None = None,
    lower: str | int | float | None = None,
    upper: str | int | float | None = None,
    smooth_fwhm_px: float | None = None,
    energy_resolution: float | None = None,
    energy_kev: float | None = None,
) -> np.ndarray:
    """TEW scatter estimate for the photopeak window of a :class:`~spectct.spect.geometry.Projections`.

    Windows are given by name, index or contained energy (keV); ``lower``/``upper`` default to the windows
    adjacent to the photopeak (see :func:`adjacent_windows`). Without an upper window the estimate uses
    the lower one only (its density ramps to 0 at the upper edge, Ogawa 1991).

    ``energy_resolution`` (FWHM fraction at 140.5 keV, e.g. 0.099) turns on the primary spill-over
    correction of :func:`tew_estimate` for photons of ``energy_kev`` (default the photopeak centre).

    Returns
    -------
    float32 ``[view, row, col]`` expected scatter counts in the photopeak.
    """
    wins = _windows(projections)
    counts = _counts(projections)
    p, lo_auto, up_auto = adjacent_windows(projections, peak)
    li = _find(wins, lower) if lower is not None else lo_auto
    ui = _find(wins, upper) if upper is not None else up_auto
    if li is None:
        raise InputError("TEW needs a scatter window below the photopeak; none found in the projections")
    pb = _win_bounds(wins[p])
    wp = pb[1] - pb[0]
    lb = _win_bounds(wins[li])
    ub = _win_bounds(wins[ui]) if ui is not None else None
    f_l = f_u = 0.0
    if energy_resolution is not None:
        e = energy_kev if energy_kev is not None else 0.5 * (pb[0] + pb[1])
        f_l, f_u = primary_spill_fractions(pb, [lb, ub], e, energy_resolution)
    return tew_estimate(
        counts[li],
        None if ui is None else counts[ui],
        lb[1] - lb[0],
        None if ub is None else ub[1] - ub[0],
        wp,
        smooth_fwhm_px,
        peak_counts=counts[p],
        primary_fraction_lower=f_l,
        primary_fraction_upper=f_u,
    )


def dew(
    projections,
    peak: str | int | float | None = None,
    lower: str | int | float | None = None,
    k: float = 0.5,
    smooth_fwhm_px: float | None = None,
) -> np.ndarray:
    """DEW scatter estimate (Jaszczak 1984) for the photopeak of a Projections object; see :func:`tew`."""
    wins = _windows(projections)
    counts = _counts(projections)
    p, lo_auto, _ = adjacent_windows(projections, peak)
    li = _find(wins, lower) if lower is not None else lo_auto
    if li is None:
        raise InputError("DEW needs a scatter window below the photopeak; none found in the projections")
    wp = np.subtract(*_win_bounds(wins[p])[::-1])
    wl = np.subtract(*_win_bounds(wins[li])[::-1])
    return dew_estimate(counts[li], wl, wp, k=k, smooth_fwhm_px=smooth_fwhm_px)
