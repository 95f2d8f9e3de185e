"""Hot-spot detection reads the same activity the same way on a coarse and a fine SPECT grid.

The same body (800 Bq/mL) with one 12-mm sphere (8000 Bq/mL) is sampled on 8-mm and 4-mm voxels with
reconstruction-like noise: non-negative, skewed (gamma) and spatially white, so that a voxel's variance
grows as its volume shrinks (relative standard deviation 1 at 8 mm, 2.8 at 4 mm, as when 8 small voxels
share the counts of one large one). Only the sphere may be found, on either grid, and the hot threshold must
not depend on the grid.
"""

from __future__ import annotations

import numpy as np
import pytest

from spectct.analysis.hotspots import background_statistics, detect_hotspots, detection_image
from spectct.volume import Volume

BODY_BQ_ML = 800.0
SPHERE_BQ_ML = 8000.0
SPHERE_MM = 12.0
CENTRE = np.array([20.0, -10.0, 15.0])  # LPS x, y, z


def _spect(voxel_mm: float, seed: int = 3) -> Volume:
    vol = Volume.from_bounds((-96.0, -96.0, -96.0), (96.0, 96.0, 96.0), voxel_mm, unit="Bq/mL")
    Z, Y, X = np.meshgrid(*vol.axis_coordinates(), indexing="ij")
    body = np.hypot(X, Y) <= 80.0
    sphere = (X - CENTRE[0]) ** 2 + (Y - CENTRE[1]) ** 2 + (Z - CENTRE[2]) ** 2 <= SPHERE_MM**2
    mean = np.where(sphere, SPHERE_BQ_ML, np.where(body, BODY_BQ_ML, 0.0))
    shape = (voxel_mm / 8.0) ** 3  # gamma shape: relative sd 1/sqrt(shape)
    rng = np.random.default_rng(seed)
    data = np.where(mean > 0, rng.gamma(shape, np.maximum(mean, 1e-6) / shape), 0.0)
    return vol.with_data(data.astype(np.float32))


@pytest.fixture(scope="module")
def grids():
    return {v: _spect(v) for v in (8.0, 4.0)}


def test_hot_threshold_does_not_depend_on_the_grid(grids):
    thresholds = {}
    for v, spect in grids.items():
        Z, Y, X = np.meshgrid(*spect.axis_coordinates(), indexing="ij")
        bg = background_statistics(spect, np.hypot(X, Y) <= 70.0)  # the body, 10 mm in from its edge
        thresholds[v] = bg.threshold_bq_ml
        assert bg.median_bq_ml == pytest.approx(BODY_BQ_ML, rel=0.1)  # the level of the body, not of the noise
    assert thresholds[4.0] == pytest.approx(thresholds[8.0], rel=0.15)


@pytest.mark.parametrize("voxel_mm", [8.0, 4.0])
def test_only_the_sphere_is_found(grids, voxel_mm):
    spots = detect_hotspots(grids[voxel_mm])
    assert len(spots) == 1
    assert np.linalg.norm(np.asarray(spots[0].peak_lps) - CENTRE) <= SPHERE_MM  # its maximum lies in the sphere


def test_detection_kernel_is_in_mm():
    # a point source spreads over the same width in mm on both grids (σ = 10 mm, never under one voxel)
    widths = {}
    for v in (8.0, 4.0, 16.0):
        vol = Volume.from_bounds((-96.0, -96.0, -96.0), (96.0, 96.0, 96.0), v, unit="Bq/mL")
        data = np.zeros(vol.shape, np.float32)
        data[tuple(s // 2 for s in vol.shape)] = 1.0
        profile = detection_image(vol.with_data(data), smooth_mm=10.0)[vol.shape[0] // 2, vol.shape[1] // 2]
        x = vol.axis_coordinates()[2]
        widths[v] = float(np.sqrt((profile * (x - x[len(x) // 2]) ** 2).sum() / profile.sum()))
    assert widths[4.0] == pytest.approx(10.0, rel=0.05)
    assert widths[8.0] == pytest.approx(10.0, rel=0.05)
    assert widths[16.0] == pytest.approx(16.0, rel=0.05)  # one voxel at least
