"""Fusion: SPECT on the CT grid in patient coordinates, and rigid registration by mutual information."""

from __future__ import annotations

import numpy as np
import pytest

from spectct.errors import GeometryError
from spectct.fusion import RigidTransform, apply_rigid, register_rigid, spect_to_ct
from spectct.volume import Volume


def _linear_field(vol: Volume, coef=(0.7, -0.3, 0.45), offset=100.0) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij")
    xyz = vol.index_to_world(np.stack([k, j, i], axis=-1).astype(float))
    return (xyz @ np.asarray(coef) + offset).astype(np.float32)


def test_spect_to_ct_places_values_at_the_same_lps():
    # SPECT: 4 mm, axis-aligned; CT: 1.5 mm, flipped x and y, shifted origin. Trilinear interpolation is
    # exact for a linear field, so every CT voxel inside the SPECT field must carry f(its LPS position).
    spect = Volume(np.zeros((16, 16, 16), np.float32), spacing=(4, 4, 4), origin=(-30, -30, -30),
                   unit="Bq/mL")
    spect = spect.with_data(_linear_field(spect))
    ct = Volume(np.zeros((20, 24, 24), np.float32), spacing=(1.5, 1.5, 1.5), origin=(12.3, 14.1, -11.2),
                direction=np.diag([-1.0, -1.0, 1.0]), unit="HU")
    fused = spect_to_ct(spect, ct)
    assert fused.same_grid(ct) and fused.unit == "Bq/mL"
    np.testing.assert_allclose(fused.data, _linear_field(ct), rtol=0, atol=2e-3)


def test_spect_to_ct_hot_ball_centroid():
    spect = Volume.from_bounds((-40, -40, -40), (40, 40, 40), 4.0, unit="Bq/mL")
    zc, yc, xc = np.meshgrid(*spect.axis_coordinates(), indexing="ij")
    centre = np.array([9.0, -6.0, 13.0])
    spect = spect.with_data(np.exp(-((xc - centre[0]) ** 2 + (yc - centre[1]) ** 2 + (zc - centre[2]) ** 2)
                                   / (2 * 6.0**2)).astype(np.float32))
    ct = Volume.from_bounds((-30, -35, -25), (35, 30, 38), 1.0, unit="HU")
    fused = spect_to_ct(spect, ct)
    w = fused.data.astype(float)
    k, j, i = np.meshgrid(*[np.arange(n) for n in ct.shape], indexing="ij")
    idx = np.stack([(w * a).sum() / w.sum() for a in (k, j, i)])
    np.testing.assert_allclose(ct.index_to_world(idx), centre, atol=0.3)


def test_spect_to_ct_no_overlap_and_frames():
    spect = Volume(np.ones((4, 4, 4), np.float32), spacing=(4, 4, 4), origin=(0, 0, 0), unit="Bq/mL")
    far = Volume(np.zeros((4, 4, 4), np.float32), spacing=(1, 1, 1), origin=(500, 0, 0), unit="HU")
    with pytest.raises(GeometryError, match="do not overlap"):
        spect_to_ct(spect, far)
    spect.frame_of_reference = "1.2.3"
    ct = Volume(np.zeros((4, 4, 4), np.float32), spacing=(2, 2, 2), origin=(2, 2, 2), unit="HU",
                frame_of_reference="1.2.4")
    with pytest.raises(GeometryError, match="frames of reference"):
        spect_to_ct(spect, ct)
    out = spect_to_ct(spect, ct, transform=RigidTransform())
    assert out.frame_of_reference == "1.2.4"
    assert out.data[0, 0, 0] == pytest.approx(1.0)


def _ct_scene(shape=(40, 48, 48), sp=2.0) -> np.ndarray:
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * sp for n in shape], indexing="ij")
    d = np.full(shape, -1000, np.float32)
    d[(x / 40) ** 2 + (y / 30) ** 2 + (z / 45) ** 2 < 1] = 40  # body: an ellipsoid, closed in z
    d[((x - 15) ** 2 + (y - 3) ** 2 < 64) & (np.abs(z + 5) < 25)] = 1000
    d[((x + 14) ** 2 + (y + 2) ** 2 < 49) & (z < 20) & (z > -28)] = 900
    d[(x - 5) ** 2 + (y - 12) ** 2 + (z - 10) ** 2 < 36] = 2500
    d[(x + 8) ** 2 + (y + 14) ** 2 + (z + 18) ** 2 < 25] = 2000
    return d


def test_register_rigid_recovers_known_shift_and_rotation():
    d = _ct_scene()
    fixed = Volume(d, (2, 2, 2), origin=(-47, -47, -39), unit="HU")
    shift = np.array([3.0, -2.0, 4.5])
    angle = np.radians(3.0)
    rz = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    # moving grid = fixed grid carried by p -> rz p + shift, so a fixed point p sits at rz p + shift in moving
    moving = Volume(d, (2, 2, 2), origin=tuple(rz @ np.asarray(fixed.origin) + shift), direction=rz,
                    unit="HU")
    tr = register_rigid(fixed, moving)
    probe = np.array([[0.0, 0.0, 0.0], [30.0, 20.0, -20.0], [-25.0, 10.0, 25.0]])
    np.testing.assert_allclose(tr.apply(probe), probe @ rz.T + shift, atol=0.5)
    assert tr.rotation_deg == pytest.approx(3.0, abs=0.5)
    back = apply_rigid(moving, tr, fixed)
    inner = (slice(8, -8),) * 3
    assert np.median(np.abs(back.data[inner] - d[inner])) < 5.0
    assert set(tr.to_dict()) >= {"rotation", "translation_mm", "metric_mattes_mi"}


def test_register_rejects_disjoint_volumes():
    d = _ct_scene((8, 8, 8))
    a = Volume(d, (2, 2, 2), unit="HU")
    b = Volume(d, (2, 2, 2), origin=(400, 0, 0), unit="HU")
    with pytest.raises(GeometryError):
        register_rigid(a, b)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]),
                                       np.array([[0, 1.0, 0], [1.0, 0, 0], [0, 0, -1.0]]),
                                       np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]])])
def test_separable_path_equals_generic_trilinear(direction):
    from spectct.fusion.resample import separable_resample
    from spectct.volume import resample

    rng = np.random.default_rng(5)
    src = Volume(rng.random((11, 13, 17)).astype(np.float32), (4.0, 3.5, 4.2), origin=(-30, -20, -25),
                 unit="Bq/mL")
    sp, n = np.array([1.7, 1.3, 1.1]), np.array([33, 37, 40])
    origin = src.center_world - direction @ (sp * (n - 1) / 2) + 3.3
    ref = Volume(np.zeros(tuple(n[::-1]), np.float32), tuple(sp[::-1]), origin=tuple(origin),
                 direction=direction)
    fast = separable_resample(src, ref)
    generic = resample(src, ref)
    assert fast is not None and (generic.data != 0).mean() > 0.5
    np.testing.assert_allclose(fast.data, generic.data, atol=1e-5)
    oblique = Volume(ref.data, ref.spacing, ref.origin,
                     direction=np.array([[0.8, -0.6, 0], [0.6, 0.8, 0], [0, 0, 1.0]]))
    assert separable_resample(src, oblique) is None
