"""SPECT geometry: the case's orbit, subsets, grids, body-contour orbits and DICOM angle round trips."""

from __future__ import annotations

import numpy as np
import pytest

from spectct.errors import GeometryError, InputError
from spectct.spect.geometry import EnergyWindow, Projections, SpectGeometry, tc99m_windows
from spectct.volume import Volume


def test_dual_head_case_orbit():
    g = SpectGeometry.dual_head()
    assert g.n_views == 120 and g.heads == 2 and g.stops_per_head == 60
    assert np.allclose(np.sort(g.angles_deg), np.arange(120) * 3.0)  # 360° in 3° steps
    assert np.allclose(np.mod(g.angles_deg[1::2] - g.angles_deg[0::2], 360.0), 180.0)  # opposed heads
    assert g.angles_deg[2] == pytest.approx(3.0)  # CCW steps of 3°
    assert SpectGeometry.dual_head(direction="CW").angles_deg[2] == pytest.approx(357.0)
    t = g.view_start_times_s()
    assert t[0] == t[1] == 0.0 and t[2] == pytest.approx(20.0)  # both heads acquire simultaneously
    assert g.duration_s == pytest.approx(60 * 20.0)


def test_tc99m_windows():
    peak, lower, upper = tc99m_windows()
    assert peak.lower_kev == pytest.approx(140.5 * 0.925) and peak.upper_kev == pytest.approx(140.5 * 1.075)
    assert peak.width_kev == pytest.approx(0.15 * 140.5) and peak.center_kev == pytest.approx(140.5)
    assert lower.upper_kev == pytest.approx(peak.lower_kev)
    assert upper.lower_kev == pytest.approx(peak.upper_kev)
    with pytest.raises(InputError):
        EnergyWindow("bad", 150.0, 140.0)


def test_subset_and_grid():
    g = SpectGeometry.dual_head(stops_per_head=6, matrix=32, pixel_mm=4.0, axial_center_mm=100.0)
    s = g.subset([1, 4, 7])
    assert s.n_views == 3 and np.allclose(s.angles_deg, g.angles_deg[[1, 4, 7]])
    grid = g.image_grid()
    assert grid.shape == (32, 32, 32) and grid.spacing == (4.0, 4.0, 4.0)
    assert np.allclose(grid.center_world, [0.0, 0.0, 100.0])
    fine = g.image_grid(oversample=2, n_slices=8)
    assert fine.shape == (16, 64, 64) and np.allclose(fine.center_world, [0.0, 0.0, 100.0])
    z = g.row_z_mm()
    assert z[0] > z[-1]  # row 0 is the most superior
    with pytest.raises(GeometryError):
        g.subset([99])


def _ellipse_body(grid: Volume, a: float, b: float, cx: float = 0.0) -> Volume:
    zz, yy, xx = np.meshgrid(*grid.axis_coordinates(), indexing="ij")
    inside = ((xx - cx) / a) ** 2 + (yy / b) ** 2 <= 1.0
    return grid.with_data((inside * 0.0154).astype(np.float32), unit="1/mm")


def test_body_contour_orbit_never_inside_body():
    g = SpectGeometry.dual_head(stops_per_head=30, matrix=64, pixel_mm=4.0)
    grid = g.image_grid()
    body = _ellipse_body(grid, 90.0, 60.0, cx=20.0)
    radii = g.body_contour_radii(body, clearance_mm=15.0)
    # every body voxel corner stays behind the collimator face of every view
    pts = grid.index_to_world(np.argwhere(body.data > 0).astype(float))[:, :2]
    corners = np.concatenate([pts + np.array([sx, sy]) * 2.0 for sx in (-1, 1) for sy in (-1, 1)])
    reach = (corners @ g.detector_normals().T).max(axis=0)
    assert np.all(radii >= reach + 15.0 - 1e-6)
    assert np.all(radii <= reach + 15.0 + 3.0)  # and it hugs the body (within a voxel)
    assert radii.min() < radii.max() - 40  # non-circular: wide laterally, close AP
    contoured = SpectGeometry.dual_head(stops_per_head=30, matrix=64, pixel_mm=4.0, radii_mm=radii)
    contoured.check_orbit_clears(body)
    tight = SpectGeometry.dual_head(stops_per_head=30, matrix=64, pixel_mm=4.0, radius_mm=80.0)
    with pytest.raises(GeometryError, match="inside the body"):
        tight.check_orbit_clears(body)


def test_dicom_round_trip():
    g = SpectGeometry.dual_head(stops_per_head=60, start_angle_deg=10.0, direction="CW",
                                radii_mm=np.linspace(200, 260, 120))
    d = g.to_dicom()
    assert d["rotation_direction"] == "CW" and d["angular_step_deg"] == pytest.approx(3.0)
    assert d["start_angles_deg"] == pytest.approx([10.0, 190.0])
    back = SpectGeometry.from_dicom_angles(d["start_angles_deg"], d["angular_step_deg"],
                                           d["rotation_direction"], d["stops_per_head"],
                                           d["radial_positions_mm"], 128, 128, (4.7952, 4.7952), 20.0)
    assert np.allclose(back.angles_deg, g.angles_deg) and np.allclose(back.radii_mm, g.radii_mm)
    assert back.direction == "CW"
    flipped = SpectGeometry.from_dicom_angles([0.0, 180.0], 3.0, "CW", 60, 250.0, 128, 128, (4.8, 4.8), 20.0,
                                              vendor_flip=True)
    assert np.allclose(flipped.angles_deg, SpectGeometry.dual_head().angles_deg)
    assert SpectGeometry.from_dict(g.to_dict()).to_dict() == g.to_dict()


def test_projections_container():
    g = SpectGeometry.dual_head(stops_per_head=2, matrix=8)
    counts = np.arange(3 * 4 * 8 * 8).reshape(3, 4, 8, 8)
    p = Projections(counts, g, start_time_after_injection_s=10800.0, injected_activity_bq=330e6)
    assert np.array_equal(p.window("lower"), counts[1]) and np.array_equal(p.photopeak, counts[0])
    with pytest.raises(InputError):
        p.window("nope")
    with pytest.raises(GeometryError):
        Projections(counts[:, :3], g)
