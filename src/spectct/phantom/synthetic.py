"""Quick synthetic CT and SPECT of a phantom, without the scanners: for tests and benchmarks of the reading.

The CT holds nominal CT numbers per material (no artifacts); the SPECT is the activity blurred by a
Gaussian of the camera's resolution on a SPECT-sized grid, with Poisson-like noise. Use the simulators
(:mod:`spectct.ct.simulate`, :mod:`spectct.spect.simulate`) for physics; this is only the shortcut.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spectct.phantom.model import Phantom
from spectct.volume import Volume

#: Typical CT numbers (HU) of the phantom's materials at 110–120 kV; metal at the scanner's 3071 HU cap.
NOMINAL_HU = {
    "air": -1000.0, "water": 0.0, "adipose": -100.0, "soft_tissue": 40.0, "muscle": 45.0, "skin": 40.0,
    "red_marrow": 30.0, "yellow_marrow": -50.0, "trabecular_bone": 300.0, "cortical_bone": 1500.0,
    "ti6al4v": 3071.0, "steel_316l": 3071.0, "cocrmo": 3071.0,
}


def nominal_ct(phantom: Phantom) -> Volume:
    """The phantom as a CT in HU, one nominal value per material, on the phantom's grid."""
    index, names = phantom.material_map()
    lut = np.array([NOMINAL_HU[n] for n in names], np.float32)
    return phantom.labels.with_data(lut[index.data], unit="HU")


def blurred_spect(phantom: Phantom, lower_xyz, upper_xyz, voxel_mm: float = 4.8, fwhm_mm: float = 12.0,
                  scale_bq_ml: float = 1000.0, counts_per_unit: float = 20.0, seed: int = 1) -> Volume:
    """The phantom's activity (× ``scale_bq_ml``) blurred to ``fwhm_mm``, on a ``voxel_mm`` grid over the box,
    with Gaussian noise of Poisson variance at ``counts_per_unit`` counts per Bq/mL."""
    sigma_vox = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / np.asarray(phantom.activity.spacing)
    blurred = ndimage.gaussian_filter(phantom.activity.data.astype(np.float32), sigma_vox) * scale_bq_ml
    grid = Volume.from_bounds(lower_xyz, upper_xyz, voxel_mm, unit="Bq/mL")
    sp = phantom.activity.with_data(blurred, unit="Bq/mL").resample_to(grid)
    rng = np.random.default_rng(seed)
    noisy = sp.data + rng.normal(0.0, 1.0, sp.shape) * np.sqrt(np.maximum(sp.data, 0.0) * counts_per_unit)
    return sp.with_data(np.maximum(noisy, 0.0).astype(np.float32))
