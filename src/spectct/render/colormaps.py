"""Colour maps and CT windows for fused display.

CT window presets are the customary clinical level/width pairs in HU (bone L 400/W 1800, soft tissue
L 40/W 400; see e.g. Radiopaedia, "Windowing (CT)"); the metal preset (L 1000/W 4000) spans air to the
3071 HU ceiling of 12-bit CT so that implants and their artefacts stay visible.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.colors import Colormap, LinearSegmentedColormap

from spectct.errors import InputError

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "bone": (400.0, 1800.0),
    "soft": (40.0, 400.0),
    "metal": (1000.0, 4000.0),
}


def resolve_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """``(level, width)`` in HU from a preset name or a pair."""
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise InputError(f"unknown CT window {window!r}; use one of {', '.join(WINDOW_PRESETS)} "
                             "or (level, width)")
        return WINDOW_PRESETS[window]
    try:
        level, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"CT window must be a preset name or (level, width), got {window!r}") from None
    if not width > 0:
        raise InputError(f"CT window width must be positive, got {width}")
    return level, width


def window_limits(window: str | tuple[float, float]) -> tuple[float, float]:
    """Display limits ``(vmin, vmax)`` of a window."""
    level, width = resolve_window(window)
    return level - width / 2.0, level + width / 2.0


def spect_cmap(name: str = "hot") -> Colormap:
    """A copy of a matplotlib map whose under-range and masked values are transparent (for overlays)."""
    return matplotlib.colormaps[name].with_extremes(under=(0, 0, 0, 0), bad=(0, 0, 0, 0))


def hot_metal() -> Colormap:
    """The nuclear-medicine 'hot metal' ramp: black → dark red → orange → yellow → white."""
    cmap = LinearSegmentedColormap.from_list(
        "hot_metal", [(0.0, (0.0, 0.0, 0.0)), (0.3, (0.55, 0.0, 0.0)), (0.6, (0.95, 0.35, 0.0)),
                      (0.85, (1.0, 0.85, 0.1)), (1.0, (1.0, 1.0, 1.0))])
    return cmap


def normalise(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Map ``values`` linearly to [0, 1] between ``vmin`` and ``vmax`` (clipped)."""
    if not vmax > vmin:
        raise InputError(f"display range must have vmax > vmin, got {vmin}..{vmax}")
    return np.clip((np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
