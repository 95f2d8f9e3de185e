"""The digital patient: anatomy, implants, infection and the phantom command."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from spectct.errors import InputError
from spectct.phantom.case import FIELD_LOWER, FIELD_UPPER, build_case, case_phantom, label_points
from spectct.phantom.model import INFECTION_KINDS, Phantom
from spectct.volume import Volume

EXPECTED = [
    "skin",
    "fat",
    "muscle",
    "pelvis",
    "pelvis marrow",
    "right femur cortex",
    "right femur marrow",
    "left femur cortex",
    "left femur marrow",
    "right intramedullary nail",
    "right nail proximal locking screw 1",
    "right nail distal locking screw 1",
    "right nail distal locking screw 2",
    "right lateral plate",
    "left intramedullary nail",
    "left dynamic hip screw",
    "left dynamic hip screw plate",
    "infection along right lateral plate",
    "focus at right lateral plate screw 2",
    "infection along right nail",
    "collection at right nail tip",
    "soft-tissue collection at lower plate",
    "sinus tract to lateral skin",
] + [f"right lateral plate screw {k}" for k in range(1, 9)]


@pytest.fixture(scope="module")
def coarse() -> Phantom:
    """The full field at 4 mm (about 0.7 M voxels)."""
    return case_phantom(voxel_mm=4.0)


@pytest.fixture(scope="module")
def plate_slab() -> Phantom:
    """The right thigh around the lateral plate at 2 mm."""
    grid = Volume.from_bounds(
        (-170.0, -60.0, -392.0), (-50.0, 40.0, -156.0), 2.0, unit="label", dtype=np.int16
    )
    return case_phantom(grid=grid)


def _mask(ph: Phantom, name: str) -> np.ndarray:
    return ph.labels.data == ph.component(name).id


def _touches(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.any(ndimage.binary_dilation(a, structure=np.ones((3, 3, 3), bool)) & b))


def test_every_named_component_present_and_non_empty(coarse):
    names = {c.name for c in coarse.components}
    for name in EXPECTED:
        assert name in names, name
    for c in coarse.components:
        assert c.volume_ml and c.volume_ml > 0, f"{c.name} is empty at 4 mm"
        assert np.count_nonzero(coarse.labels.data == c.id) > 0


def test_component_ids_stable_across_grids_and_seeds(coarse, plate_slab):
    table = [(c.id, c.name, c.kind, c.material) for c in coarse.components]
    assert table == [(c.id, c.name, c.kind, c.material) for c in plate_slab.components]
    assert table == [(c.id, c.name, c.kind, c.material) for c in build_case(seed=5)[0]]


def test_screws_are_numbered_proximal_to_distal_with_carriers(coarse):
    screws = [coarse.component(f"right lateral plate screw {k}") for k in range(1, 9)]
    z = [s.centroid_lps[2] for s in screws]
    assert all(a > b for a, b in zip(z, z[1:], strict=False)), z
    assert all(s.carrier == "right lateral plate" and s.number == k for k, s in enumerate(screws, 1))
    assert any("extruded" in s.flags for s in screws) and any("bent" in s.flags for s in screws)
    assert "extruded" in screws[-1].flags and "extruded" not in screws[1].flags


def test_activity_zero_outside_body_and_metal_cold(coarse):
    lab, act = coarse.labels.data, coarse.activity.data
    assert np.all(act[lab == 0] == 0)
    assert np.all(act >= 0)
    assert np.count_nonzero(lab == 0) > 0.2 * lab.size  # air around the body
    metal = np.isin(lab, [c.id for c in coarse.by_kind("nail", "plate", "screw")])
    # metal voxels carry only what partial volume lends them from their neighbours
    assert act[metal].mean() < 0.3 * np.mean([c.activity for c in coarse.by_kind("focus", "collection")])
    # the body touches no face of the field except the top and bottom (trunk and knees are cut)
    assert not lab[:, :, 0].any() and not lab[:, :, -1].any()
    assert not lab[:, 0, :].any() and not lab[:, -1, :].any()


def test_activity_ordering_of_the_case(coarse):
    act = {c.name: c.activity for c in coarse.components}
    peak = max(act.values())
    assert act["focus at right lateral plate screw 2"] == peak
    assert act["infection along right lateral plate"] > act["infection along right nail"] > act["muscle"]
    assert act["infection along right nail"] > act["pelvis marrow"] > act["muscle"] > act["fat"]
    for c in coarse.by_kind("nail", "plate", "screw"):
        assert c.activity == 0.0
    # the measured activity maximum sits at plate screw 2
    k, j, i = np.unravel_index(np.argmax(coarse.activity.data), coarse.activity.shape)
    where = coarse.labels.index_to_world(np.array([k, j, i], float))
    assert np.linalg.norm(where - np.array(coarse.component("right lateral plate screw 2").centroid_lps)) < 25


def test_left_side_free_of_infection(coarse):
    infection = coarse.by_kind(*INFECTION_KINDS)
    assert infection and all(c.side == "right" for c in infection)
    ids = [c.id for c in infection]
    zc, yc, xc = coarse.labels.axis_coordinates()
    left_half = coarse.labels.data[:, :, xc > 0]
    assert not np.isin(left_half, ids).any()
    # no abnormal activity on the left: nothing above normal marrow
    marrow = coarse.component("left femur marrow").activity
    assert coarse.activity.data[:, :, xc > 0].max() <= marrow + 1e-4


def test_anatomy_sides_and_plate_lateral(coarse):
    c = {x.name: np.array(x.centroid_lps) for x in coarse.components}
    assert c["right femur cortex"][0] < -60 and c["left femur cortex"][0] > 60
    assert c["right lateral plate"][0] < c["right femur cortex"][0] - 15
    assert c["right intramedullary nail"][0] < 0 < c["left intramedullary nail"][0]
    assert c["left dynamic hip screw"][2] > c["left femur cortex"][2] + 80  # in the neck, not the shaft
    assert c["sinus tract to lateral skin"][0] < c["right lateral plate"][0]


def test_plate_displaced_laterally_at_lower_end():
    _, _, lm = build_case(0)
    fr = lm["right_femur"]
    gap = []
    for p in (lm["plate_top"], lm["plate_bottom"]):
        axis_pt = fr.at(float(p[2]))
        gap.append(float(np.linalg.norm((p - axis_pt)[:2])) - fr.radius(float(p[2])))
    assert gap[1] > gap[0] + 8.0, gap


def test_screws_intersect_plate_and_bone(plate_slab):
    plate = _mask(plate_slab, "right lateral plate")
    bone_ids = [
        plate_slab.component(n).id
        for n in (
            "right femur cortex",
            "right femur marrow",
            "right femur shaft marrow",
            "infection along right nail",
        )
    ]
    bone = np.isin(plate_slab.labels.data, bone_ids)
    for k in range(1, 9):
        screw = _mask(plate_slab, f"right lateral plate screw {k}")
        assert screw.any(), k
        assert _touches(screw, plate), f"screw {k} does not reach the plate"
        assert _touches(screw, bone), f"screw {k} does not reach the bone"


def test_plate_screws_miss_the_nail():
    """Plate screws pass beside the nail (as they must in a plate-nail construct): no shared points."""
    comps, steps, lm = build_case(0)
    nail = lm["right_nail"]
    ids = {c.id for c in comps if c.carrier == "right lateral plate"}
    rng = np.random.default_rng(4)
    for step in steps:
        if step.label not in ids:
            continue
        lo, hi = step.shape.bounds()
        pts = torch.as_tensor(rng.uniform(lo, hi, size=(20_000, 3)))
        inside = step.shape.inside(pts)
        assert inside.any()
        assert not nail.inside(pts[inside]).any(), step


def test_tract_connects_lower_plate_to_skin(plate_slab):
    lab = plate_slab.labels.data
    tract = _mask(plate_slab, "sinus tract to lateral skin")
    parts, n = ndimage.label(tract, structure=np.ones((3, 3, 3), bool))
    assert n == 1, f"tract in {n} pieces"
    lower = _mask(plate_slab, "soft-tissue collection at lower plate") | _mask(
        plate_slab, "right lateral plate"
    )
    assert _touches(tract, lower)
    assert _touches(tract, lab == 0), "tract does not reach the body surface"
    # and it opens through the skin: no skin voxels between its outer end and the air
    _, _, lm = build_case(0)
    assert lm["tract_end"][2] < lm["plate_bottom"][2] + 10 and lm["tract_end"][0] < lm["plate_bottom"][0]


def _tube_band_volume(f, z0: float, z1: float, r_outer, r_inner) -> float:
    """π ∫ (R² − r²) ds between horizontal planes z0 > z1 along the tilted shaft axis (mm³)."""
    zs = np.linspace(z1, z0, 401)
    ds = (z0 - z1) / abs(f.axis[2]) / (zs.size - 1)
    area = np.array([math.pi * (r_outer(z) ** 2 - r_inner(z) ** 2) for z in zs])
    return float(np.trapezoid(area, dx=ds))


def test_femur_cortex_volume_matches_analytic():
    _, _, lm = build_case(0)
    f = lm["left_femur"]
    z0, z1 = -240.0, -340.0
    lo, hi = f.at(z1) - 20.0, f.at(z0) + 20.0
    grid = Volume.from_bounds(
        (min(lo[0], hi[0]), -20.0, z1), (max(lo[0], hi[0]), 30.0, z0), 1.25, unit="label", dtype=np.int16
    )
    ph = case_phantom(grid=grid)
    measured = np.count_nonzero(_mask(ph, "left femur cortex")) * grid.voxel_volume_ml * 1000.0
    z_top, z_flare = f.z_shaft, f.z_flare

    def r_canal(z):  # the canal tapers from r_canal + 0.5 at the shaft top to r_canal at the flare
        return f.r_canal + 0.5 * (z - z_flare) / (z_top - z_flare)

    analytic = _tube_band_volume(f, z0, z1, f.radius, r_canal)
    assert abs(measured - analytic) / analytic < 0.10, (measured, analytic)


def test_nail_volume_matches_analytic():
    _, _, lm = build_case(0)
    nail = lm["right_nail"]
    lo, hi = nail.bounds()
    grid = Volume.from_bounds(tuple(lo - 2), tuple(hi + 2), 1.5, unit="label", dtype=np.int16)
    ph = case_phantom(grid=grid)
    measured = np.count_nonzero(_mask(ph, "right intramedullary nail")) * grid.voxel_volume_ml * 1000.0
    assert abs(measured - nail.volume_mm3) / nail.volume_mm3 < 0.10, (measured, nail.volume_mm3)


def test_grid_rasterisation_is_analytic_not_resampled():
    """A CT-like slab (0.98 mm in-plane, 1 mm slices) agrees with the point labels at its voxel centres."""
    grid = Volume.from_bounds(
        (-160.0, -50.0, -258.0),
        (-50.0, 50.0, -252.0),
        (0.9765625, 0.9765625, 1.0),
        unit="label",
        dtype=np.int16,
    )
    ph = case_phantom(grid=grid, supersample=1)
    idx = np.indices(grid.shape).reshape(3, -1).T
    pts = grid.index_to_world(idx)
    assert np.array_equal(label_points(pts).reshape(grid.shape), ph.labels.data)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), 50.0])
def test_invalid_voxel_size(bad):
    with pytest.raises(InputError, match="voxel size"):
        case_phantom(voxel_mm=bad)


def _cli(monkeypatch, *args: str) -> int:
    from spectct import cli

    monkeypatch.setattr(sys, "argv", ["spectct", *args])
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_writes_truth(tmp_path, monkeypatch):
    assert _cli(monkeypatch, "phantom", "--out", str(tmp_path / "study"), "--voxel-mm", "8", "--quiet") == 0
    truth = tmp_path / "study" / "truth"
    for name in (
        "labels.nii.gz",
        "activity.nii.gz",
        "materials.nii.gz",
        "components.json",
        "phantom_coronal.png",
        "phantom_axial.png",
    ):
        assert (truth / name).is_file(), name
    doc = json.loads((truth / "components.json").read_text())
    for c in doc["components"]:
        assert {"id", "name", "kind", "material", "activity", "centroid_lps"} <= set(c)
    back = Phantom.load(truth)
    assert back.labels.shape == (56, 32, 50)
    assert np.allclose(back.labels.extent_world, np.array([FIELD_LOWER, FIELD_UPPER]), atol=4.01)


def test_cli_bad_voxel_size_leaves_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    assert _cli(monkeypatch, "phantom", "--out", str(out), "--voxel-mm", "-2", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert "voxel size" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_unwritable_output(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _cli(monkeypatch, "phantom", "--out", str(blocker / "study"), "--voxel-mm", "8", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert str(blocker) in err and len(err.splitlines()) == 1


def test_same_seed_same_phantom_and_seed_varies_only_geometry():
    grid = Volume.from_bounds((-160.0, -40.0, -380.0), (-60.0, 40.0, -360.0), 2.0, unit="label")
    a, b = case_phantom(grid=grid, seed=3), case_phantom(grid=grid, seed=3)
    assert np.array_equal(a.labels.data, b.labels.data) and np.array_equal(a.activity.data, b.activity.data)
    c = case_phantom(grid=grid, seed=4)
    assert not np.array_equal(a.labels.data, c.labels.data)  # the lower plate's displacement differs
    assert [x.activity for x in a.components] == [x.activity for x in c.components]


def test_statistics_centroid_and_volume_of_a_component(coarse):
    nail = coarse.component("right intramedullary nail")
    mask = coarse.labels.data == nail.id
    assert nail.volume_ml == pytest.approx(mask.sum() * coarse.labels.voxel_volume_ml)
    centre = coarse.labels.index_to_world(np.argwhere(mask).mean(axis=0))
    assert np.allclose(nail.centroid_lps, centre, atol=1e-3)


def test_extruded_screws_left_the_far_cortex_and_intact_ones_cross_it():
    comps, _, lm = build_case(0)
    fr = lm["right_femur"]
    lateral = np.array([-1.0, 0.0, 0.0])
    for c in comps:
        if c.carrier != "right lateral plate":
            continue
        tip = lm["plate_screw_tips"][c.number]
        z = float(tip[2])
        rel = tip - fr.at(z)
        radial = np.linalg.norm(rel - np.dot(rel, fr.axis) * fr.axis)
        if "extruded" in c.flags:
            # backed out: the tip sits in the near (lateral) cortex, short of the canal
            assert fr.r_canal < radial < fr.radius(z) + 0.5 and np.dot(rel, lateral) > 0, c.name
        else:
            # bicortical: the tip stands just beyond the far (medial) cortex
            assert radial > fr.radius(z) and np.dot(rel, lateral) < 0, c.name


@pytest.mark.slow
def test_full_field_at_2mm():
    """The default 2-mm phantom: every component present, screws through plate and bone, tract to skin."""
    ph = case_phantom(voxel_mm=2.0)
    assert ph.labels.shape == (225, 130, 200)
    for c in ph.components:
        assert c.volume_ml and c.volume_ml > 0, c.name
    lab = ph.labels.data
    assert np.all(ph.activity.data[lab == 0] == 0)
    plate = _mask(ph, "right lateral plate")
    cortex = _mask(ph, "right femur cortex")
    for k in range(1, 9):
        screw = _mask(ph, f"right lateral plate screw {k}")
        assert _touches(screw, plate) and _touches(screw, cortex), k
    tract = _mask(ph, "sinus tract to lateral skin")
    assert ndimage.label(tract, structure=np.ones((3, 3, 3), bool))[1] == 1
    assert _touches(tract, lab == 0)
