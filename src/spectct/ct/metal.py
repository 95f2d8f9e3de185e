"""Metal in a CT image and its shadow in the sinogram.

Two steps every projection-completion MAR method shares (Kalender et al., Radiology 1987;
Meyer et al., Med Phys 2010):

1. :func:`metal_mask` segments metal in a reconstructed image with a fixed HU threshold followed by a
   morphological clean-up (drop specks, grow by the partial-volume rim).
2. :func:`metal_trace` forward projects that mask with the scanner's projector: every ray whose path
   through the mask is longer than a small tolerance belongs to the *metal trace*, the part of the
   sinogram that the inpainting methods of :mod:`spectct.ct.mar` replace.

The threshold default, 2500 HU, sits between dense cortical bone (about 1500–2000 HU at 100–140 kVp;
ICRP cortical bone is 1.92 g/cm³) and the implant alloys (titanium ≥ 3000 HU, steel and CoCr beyond the
3071 HU ceiling of 12-bit scanners), so that bone never counts as metal while a clipped implant still
does.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from spectct.device import resolve_device
from spectct.errors import InputError
from spectct.volume import Volume

#: HU above which a voxel is called metal (see the module docstring for the reasoning).
METAL_THRESHOLD_HU = 2500.0
#: Largest CT number a 12-bit scanner stores (HU = stored value − 1024, stored values 0–4095).
SCANNER_MAX_HU = 3071.0


def metal_mask(
    ct_hu: np.ndarray | Volume,
    threshold_hu: float = METAL_THRESHOLD_HU,
    pixel_mm: float | tuple[float, float] | None = None,
    min_area_mm2: float = 2.0,
    dilate_mm: float = 0.0,
) -> np.ndarray:
    """Segment metal in a CT image, slice by slice.

    Parameters
    ----------
    ct_hu : image in HU, a :class:`Volume` or an array ``[z, y, x]`` (or one ``[y, x]`` slice).
    threshold_hu : voxels strictly above this are metal candidates (default 2500 HU, see module notes).
    pixel_mm : in-plane pixel size ``(dy, dx)`` or one number; taken from the Volume when given one,
        1 mm for bare arrays.
    min_area_mm2 : connected in-plane regions smaller than this are dropped (noise and streak peaks; a
        2-mm wire has 3.1 mm²).
    dilate_mm : grow the mask by this distance (mm) to cover a partial-volume rim whose HU falls below
        the threshold.  Default 0: for dense implants (steel, CoCr, titanium) the reconstruction blur
        already carries 2500 HU beyond the true edge, so the thresholded mask is larger than the metal
        (in our 2-mm benchmark phantoms 1.8× the true area for steel rods), and growing it further
        only discards good rays (benchmarks/results/mar.md).

    Returns
    -------
    numpy.ndarray
        Boolean mask with the shape of the input array.

    Notes
    -----
    Slices are treated independently: in fan-beam CT each slice is its own 2-D problem, and a
    2-D clean-up keeps a thin slab (or a single slice) working the same as a full volume.
    """
    if isinstance(ct_hu, Volume):
        if ct_hu.unit not in ("HU", "1"):
            raise InputError(f"metal_mask needs an image in HU, got unit {ct_hu.unit!r}")
        data = np.asarray(ct_hu.data)
        if pixel_mm is None:
            pixel_mm = (ct_hu.spacing[1], ct_hu.spacing[2])
    else:
        data = np.asarray(ct_hu)
    if data.ndim not in (2, 3):
        raise InputError(f"metal_mask needs a 2-D slice or a 3-D [z, y, x] image, got shape {data.shape}")
    dy, dx = _pixel_pair(pixel_mm)
    single = data.ndim == 2
    slices = data[None] if single else data
    cand = slices > threshold_hu
    min_pixels = min_area_mm2 / (dy * dx)
    grow = float(dilate_mm)
    out = np.zeros(slices.shape, dtype=bool)
    for k in np.flatnonzero(cand.reshape(cand.shape[0], -1).any(axis=1)):
        labels, n = ndimage.label(cand[k])
        if n == 0:
            continue
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        keep = np.zeros(n + 1, dtype=bool)
        keep[1:] = sizes >= min_pixels
        m = keep[labels]
        if grow > 0 and m.any():
            # distance in mm from the mask, anisotropic pixels allowed
            dist = ndimage.distance_transform_edt(~m, sampling=(dy, dx))
            m = dist <= grow + 1e-6
        out[k] = m
    return out[0] if single else out


def metal_trace(mask: np.ndarray | torch.Tensor, projector, min_path_mm: float | None = None,
                widen_channels: int = 0) -> np.ndarray:
    """Rays of a sinogram that pass through metal.

    Parameters
    ----------
    mask : metal mask ``[z, y, x]`` (or ``[y, x]``) on the projector's image grid.
    projector : anything with ``forward(image [z, y, x] in 1/mm) -> [z, views, channels]`` (a
        :class:`spectct.ct.projector.FanBeamProjector`).
    min_path_mm : a ray is in the trace when its chord through the mask exceeds this; default a tenth
        of the projector's pixel (``projector.pixel_mm``), or 0.05 mm when it has none.
    widen_channels : grow the trace by this many channels on each side in every view (to absorb a
        segmentation that is too tight).  Default 0, since the mask of :func:`metal_mask` is already
        generous.

    Returns
    -------
    numpy.ndarray
        Boolean sinogram ``[z, views, channels]`` (``[views, channels]`` for a 2-D mask).
    """
    single = np.ndim(mask) == 2
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if single:
        m = m[None]
    if min_path_mm is None:
        pixel = getattr(projector, "pixel_mm", None)
        min_path_mm = 0.1 * float(pixel) if pixel is not None else 0.05
    dev = getattr(projector, "device", None)
    dev = resolve_device(dev) if dev is not None else torch.device("cpu")
    chord = projector.forward(m.to(device=dev, dtype=torch.float32))
    chord = torch.as_tensor(chord)
    trace = chord > min_path_mm
    if widen_channels > 0:
        trace = widen_trace(trace, widen_channels)
    trace_np = trace.cpu().numpy()
    return trace_np[0] if single else trace_np


def widen_trace(trace: torch.Tensor, channels: int) -> torch.Tensor:
    """Grow a boolean trace ``[..., views, channels]`` by ``channels`` detector elements on both sides."""
    if channels <= 0:
        return trace
    shape = trace.shape
    t = trace.reshape(-1, 1, shape[-1]).float()
    t = torch.nn.functional.max_pool1d(t, kernel_size=2 * channels + 1, stride=1, padding=channels)
    return t.reshape(shape) > 0.5


def _pixel_pair(pixel_mm: float | tuple[float, float] | None) -> tuple[float, float]:
    if pixel_mm is None:
        return 1.0, 1.0
    arr = np.broadcast_to(np.asarray(pixel_mm, dtype=float), (2,))
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(f"pixel size must be positive mm values, got {pixel_mm}")
    return float(arr[0]), float(arr[1])
