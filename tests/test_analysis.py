"""Reading the study on small synthetic SPECT/CT scenes with known answers.

The scene: two thighs with femurs (cortex + marrow) below a pelvic bar; on the right an intramedullary
nail and a lateral plate with four screws through the femur (numbered proximal→distal = larger z first),
optionally the lowest screw backed out; marrow uptake is bilateral and symmetric. Foci are placed at a
chosen screw, in soft tissue, or nowhere. CT on a 2-mm grid, SPECT on a 4.8-mm grid blurred to 12 mm FWHM
with Poisson-like noise, as a reconstructed study would be.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from spectct.analysis import analyze_study
from spectct.analysis.anatomy import segment_anatomy
from spectct.analysis.classify import classify
from spectct.analysis.dualtime import compare_dual_time
from spectct.analysis.findings import FINDINGS_SCHEMA, findings_table, read_findings, validate_findings
from spectct.analysis.hotspots import detect_hotspots
from spectct.analysis.implants import decompose_implants, implant_label_volume, implants_to_json
from spectct.errors import GeometryError, InputError
from spectct.physics.radionuclide import TC99M
from spectct.volume import Volume

LOWER, UPPER = (-140.0, -70.0, -262.0), (140.0, 70.0, 0.0)
SCREW_Z = (-95.0, -125.0, -155.0, -185.0)
FEMUR_X = 70.0
BONE_R, CANAL_R = 13.0, 8.0
PLATE_X = (-FEMUR_X - BONE_R - 5.0, -FEMUR_X - BONE_R)  # lateral surface of the right femur
SOFT_FOCUS = (-100.0, -28.0, -150.0)  # lateral-anterior thigh soft tissue, away from metal


def _world(grid: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = grid.axis_coordinates()
    return np.meshgrid(z, y, x, indexing="ij")


def _cyl_z(x, y, cx, cy, r):
    return (x - cx) ** 2 + (y - cy) ** 2 <= r**2


def _screw_mask(X, Y, Z, z0, y0, x_head, x_tip, r=2.25):
    lo, hi = min(x_head, x_tip), max(x_head, x_tip)
    return (X >= lo) & (X <= hi) & ((Y - y0) ** 2 + (Z - z0) ** 2 <= r**2)


def make_scene(
    metal=True,
    infected_screw=None,
    soft_focus=False,
    extruded=False,
    left_nail=True,
    seed=0,
    marrow=6.0,
    focus_activity=40.0,
):
    """(ct, spect, activity on the CT grid)."""
    ct = Volume.from_bounds(LOWER, UPPER, 2.0, unit="HU")
    Z, Y, X = _world(ct)
    legs = (Z < -40) & (_cyl_z(X, Y, -FEMUR_X, 0, 55) | _cyl_z(X, Y, FEMUR_X, 0, 55))
    pelvis_body = (Z >= -40) & ((X / 130.0) ** 2 + (Y / 65.0) ** 2 <= 1)
    body = legs | pelvis_body
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    act = np.where(body, 1.0, 0.0).astype(np.float32)
    shaft = (Z > -252) & (Z < -50)
    for sx in (-FEMUR_X, FEMUR_X):
        bone = shaft & _cyl_z(X, Y, sx, 0, BONE_R)
        canal = shaft & _cyl_z(X, Y, sx, 0, CANAL_R)
        hu[bone] = 1500.0
        hu[canal] = 30.0
        act[bone] = 0.5
        act[canal] = marrow
    pelvis = (Z > -30) & (Z < -10) & (np.abs(X) < 110) & (np.abs(Y) < 15)
    hu[pelvis] = 400.0
    act[pelvis] = marrow
    if metal:
        metal_mask = (Z > -230) & (Z < -60) & _cyl_z(X, Y, -FEMUR_X, 0, 5.0)
        if left_nail:
            metal_mask |= (Z > -230) & (Z < -60) & _cyl_z(X, Y, FEMUR_X, 0, 5.0)
        metal_mask |= (X >= PLATE_X[0]) & (X <= PLATE_X[1]) & (np.abs(Y) <= 8) & (Z > -200) & (Z < -80)
        for k, z0 in enumerate(SCREW_Z, start=1):
            y0 = 8.0 if k % 2 else -8.0  # beside the nail, as plate screws are aimed past it
            if extruded and k == len(SCREW_Z):
                metal_mask |= _screw_mask(X, Y, Z, z0, y0, PLATE_X[0] - 20.0, PLATE_X[1] + 5.0)
            else:
                metal_mask |= _screw_mask(X, Y, Z, z0, y0, PLATE_X[0] - 2.0, FEMUR_X * -1 + BONE_R + 2.0)
        hu[metal_mask] = 3071.0
        act[metal_mask] = 0.0
    if infected_screw is not None:
        z0 = SCREW_Z[infected_screw - 1]
        y0 = 8.0 if infected_screw % 2 else -8.0
        act[(X - PLATE_X[0]) ** 2 + (Y - y0) ** 2 + (Z - z0) ** 2 <= 8.0**2] = focus_activity
    if soft_focus:
        fx, fy, fz = SOFT_FOCUS
        act[(X - fx) ** 2 + (Y - fy) ** 2 + (Z - fz) ** 2 <= 8.0**2] = focus_activity
    ct = ct.with_data(hu)
    spect = _spect_from(ct.with_data(act, unit="relative"), seed)
    return ct, spect, act


def _spect_from(activity: Volume, seed: int, bq_per_unit: float = 1000.0) -> Volume:
    sigma_vox = 12.0 / 2.3548 / 2.0
    blurred = ndimage.gaussian_filter(activity.data.astype(np.float32), sigma_vox) * bq_per_unit
    grid = Volume.from_bounds(LOWER, UPPER, 4.8, unit="Bq/mL")
    sp = activity.with_data(blurred, unit="Bq/mL").resample_to(grid)
    rng = np.random.default_rng(seed)
    noisy = sp.data + rng.normal(0.0, 1.0, sp.shape) * np.sqrt(np.maximum(sp.data, 0.0) * 5.0)
    return sp.with_data(np.maximum(noisy, 0.0).astype(np.float32))


@pytest.fixture(scope="module")
def scene_screw2():
    ct, spect, _ = make_scene(infected_screw=2)
    return ct, spect, analyze_study(spect, ct)


@pytest.fixture(scope="module")
def anatomy_scene():
    ct, spect, _ = make_scene(extruded=True)
    return ct, segment_anatomy(ct)


# --------------------------------------------------------------------------- anatomy and implants
def test_anatomy_sides_and_femurs(anatomy_scene):
    ct, an = anatomy_scene
    assert abs(an.midline_x) < 3.0
    assert set(an.femurs) == {"right", "left"}
    right = an.femurs["right"]
    assert right.z_proximal == pytest.approx(-51.0, abs=3.0) and right.z_distal == pytest.approx(-251.0, abs=3.0)
    assert right.third(-60.0) == "proximal" and right.third(-150.0) == "middle" and right.third(-240.0) == "distal"
    assert an.side_of(-70.0) == "right" and an.side_of(70.0) == "left"
    tissues = an.tissue_at(
        np.array(
            [
                [-70.0, 0.0, -150.0],
                [-70.0, 11.0, -150.0],
                [-100.0, 30.0, -150.0],
                [-70.0, -53.0, -150.0],
                [0.0, 0.0, -150.0],
            ]
        )
    )
    assert list(tissues) == ["implant", "bone", "soft tissue", "skin", "outside body"]
    assert an.tissue_at(np.array([-70.0, 6.5, -240.0]))[0] == "marrow"
    assert an.structure_at(np.array([50.0, 0.0, -20.0]))[0] == "pelvis"


def test_decomposition_numbers_screws_and_flags_extruded(anatomy_scene):
    ct, an = anatomy_scene
    comps = decompose_implants(ct, anatomy=an)
    by_name = {c.name: c for c in comps}
    assert {"right intramedullary nail", "left intramedullary nail", "right lateral plate"} <= set(by_name)
    screws = [c for c in comps if c.kind == "screw"]
    assert [c.name for c in screws] == [f"right lateral plate screw {k}" for k in range(1, 5)]
    for c, z in zip(screws, SCREW_Z, strict=True):
        assert c.carrier == "right lateral plate" and c.side == "right"
        assert c.centroid_lps[2] == pytest.approx(z, abs=2.5)
        head, tip = np.array(c.end_points_lps)
        assert head[0] < tip[0]  # the head sits laterally (patient right = −x), the tip medially
    assert [("extruded" in c.flags) for c in screws] == [False, False, False, True]
    assert not any("bent" in c.flags for c in comps)
    nail = by_name["right intramedullary nail"]
    assert nail.length_mm == pytest.approx(170.0, abs=6.0)
    assert nail.end_points_lps[0][2] > nail.end_points_lps[1][2]  # proximal end first
    plate = by_name["right lateral plate"]
    assert plate.volume_ml == pytest.approx(5 * 16 * 120 / 1000.0, rel=0.25)
    labels = implant_label_volume(comps, ct)
    assert set(np.unique(labels.data)) == {0, *[c.id for c in comps]}
    doc = implants_to_json(comps)
    assert json.loads(json.dumps(doc))["components"][0]["name"] == comps[0].name


def test_decomposition_follows_lps_not_array_order():
    """Mirror the array along x and flip the direction: the same patient, so the same names."""
    ct, _, _ = make_scene(left_nail=False)
    flipped_dir = np.diag([-1.0, 1.0, 1.0])
    hi_x = ct.index_to_world(np.array([0, 0, ct.shape[2] - 1]))[0]
    origin = (hi_x, ct.origin[1], ct.origin[2])
    ct_f = Volume(ct.data[:, :, ::-1].copy(), spacing=ct.spacing, origin=origin, direction=flipped_dir, unit="HU")
    names = sorted(c.name for c in decompose_implants(ct))
    names_f = sorted(c.name for c in decompose_implants(ct_f))
    assert names == names_f
    assert all(n.startswith("right") for n in names)


def test_bent_screw_flagged():
    ct = Volume.from_bounds((-40.0, -40.0, -40.0), (40.0, 40.0, 40.0), 1.0, unit="HU")
    Z, Y, X = _world(ct)
    hu = np.full(ct.shape, 40.0, np.float32)
    hu[X**2 + Y**2 <= 25**2] = 1500.0
    straight = (X >= -30) & (X <= 20) & (Y**2 + (Z - 15) ** 2 <= 2.5**2)
    # a screw bent by 25° at its middle
    t = X + 30.0
    y_c = np.where(t > 25.0, (t - 25.0) * np.tan(np.radians(25.0)), 0.0)
    bent = (X >= -30) & (X <= 20) & ((Y - y_c) ** 2 + (Z + 15) ** 2 <= 2.5**2)
    hu[straight | bent] = 3071.0
    ct = ct.with_data(hu)
    comps = decompose_implants(ct, anatomy=segment_anatomy(ct, midline_x=-100.0))
    flags = {round(c.centroid_lps[2]): c.flags for c in comps}
    assert "bent" not in flags[15] and "bent" in flags[-15]


def test_no_metal_gives_no_components():
    ct, _, _ = make_scene(metal=False)
    assert decompose_implants(ct) == []


# --------------------------------------------------------------------------- reading
@pytest.mark.parametrize("screw", [3])
def test_focus_attributed_to_the_infected_screw(screw):
    ct, spect, _ = make_scene(infected_screw=screw, seed=screw)
    doc = analyze_study(spect, ct)
    top = max(doc["findings"], key=lambda f: f["peak_bq_ml"])
    assert top["nearest_implant"] == f"right lateral plate screw {screw}"
    assert top["classification"] == "infection likely"
    assert top["side"] == "right" and top["structure"] == "femur" and top["third"] in ("proximal", "middle")
    assert top["ratio_to_contralateral"] > 2.0
    assert not [f for f in doc["findings"] if f["side"] == "left" and f["classification"] == "infection likely"]
    assert any(s.startswith("Maximum infection uptake") and f"screw {screw}" in s for s in doc["summary"])
    validate_findings(doc)


def test_screw2_case_document(scene_screw2, tmp_path):
    ct, spect, doc = scene_screw2
    top = doc["findings"][0]
    assert top["nearest_implant"] == "right lateral plate screw 2" and top["nearest_implant_mm"] < 10
    peak = np.array(top["peak_lps"])
    assert np.linalg.norm(peak - np.array([PLATE_X[0], -8.0, SCREW_Z[1]])) < 6.0
    # the marrow is symmetric: whatever is found in marrow is physiological
    for f in doc["findings"][1:]:
        assert f["classification"] == "physiological marrow", f
    table = findings_table(doc)
    assert "right lateral plate screw 2" in table and "No abnormal (infection) uptake on the left." in table
    assert [c["name"] for c in doc["implants"] if c["kind"] == "screw"] == [
        f"right lateral plate screw {k}" for k in range(1, 5)
    ]


def test_soft_tissue_focus():
    ct, spect, _ = make_scene(soft_focus=True, seed=3)
    doc = analyze_study(spect, ct)
    top = doc["findings"][0]
    assert np.linalg.norm(np.array(top["peak_lps"]) - np.array(SOFT_FOCUS)) < 8.0
    assert top["tissue"] in ("soft tissue", "skin") and top["structure"] == "soft tissue"
    assert top["nearest_implant_mm"] > 15.0
    assert top["classification"] == "infection likely" and "soft tissue" in top["reason"]


#: The synthetic scenes carry little noise (σ = √(5 · value) Bq/mL on 4.8-mm voxels, 7 % at the body
#: level, against 200 % in the standard demo's reconstruction), so the scenes that look at thin structures
#: (8-mm femoral canals, a 4-mm-radius tract) are read with a one-voxel detection filter; the default
#: 10-mm filter, set for count-poor leukocyte SPECT, merges them below the threshold (docs/findings.md).
LOW_NOISE_SMOOTH_MM = 4.8


@pytest.fixture(scope="module")
def marrow_scene():
    ct, spect, _ = make_scene(seed=4)
    return ct, spect, analyze_study(spect, ct, smooth_mm=LOW_NOISE_SMOOTH_MM)


def test_symmetric_marrow_only(marrow_scene):
    _, _, doc = marrow_scene
    assert doc["findings"], "marrow uptake is above the body background"
    assert all(f["classification"] == "physiological marrow" for f in doc["findings"])
    assert {f["side"] for f in doc["findings"]} == {"right", "left"}
    assert "No abnormal (infection) uptake on the right." in doc["summary"]
    assert "No abnormal (infection) uptake on the left." in doc["summary"]
    assert not any(r["asymmetric"] for r in doc["regions"])


def test_dual_time_new_focus_on_late_image(marrow_scene):
    ct, early, doc_early = marrow_scene
    _, late, _ = make_scene(soft_focus=True, seed=7)
    late = late.with_data((late.data * TC99M.decay_factor(17 * 3600.0)).astype(np.float32))
    doc = analyze_study(early, ct, late_spect=late, smooth_mm=LOW_NOISE_SMOOTH_MM)  # read as doc_early was
    new = [f for f in doc["findings"] if f["dual_time"] and f["dual_time"].get("new_on_late")]
    assert len(new) == 1
    assert np.linalg.norm(np.array(new[0]["peak_lps"]) - np.array(SOFT_FOCUS)) < 8.0
    assert new[0]["classification"] == "infection likely" and "increases" in new[0]["reason"]
    assert len(doc["findings"]) == len(doc_early["findings"]) + 1


def test_no_metal_runs_without_attribution():
    ct, spect, _ = make_scene(metal=False, soft_focus=True, seed=5)
    doc = analyze_study(spect, ct)
    assert doc["implants"] == []
    assert all(f["nearest_implant"] is None for f in doc["findings"])
    assert any("no metal" in n for n in doc["notes"])
    assert doc["findings"][0]["classification"] == "infection likely"


def test_tract_reaching_skin():
    ct, _, act = make_scene(seed=6)
    grid = ct
    Z, Y, X = _world(grid)
    start, end = np.array([PLATE_X[0] - 3.0, 0.0, -200.0]), np.array([-126.0, 0.0, -225.0])
    d = end - start
    t = np.clip(((X - start[0]) * d[0] + (Y - start[1]) * d[1] + (Z - start[2]) * d[2]) / (d @ d), 0, 1)
    dist2 = (X - start[0] - t * d[0]) ** 2 + (Y - start[1] - t * d[1]) ** 2 + (Z - start[2] - t * d[2]) ** 2
    act = act.copy()
    act[(dist2 <= 4.0**2) & (ct.data > -500)] = 30.0
    spect = _spect_from(ct.with_data(act, unit="relative"), seed=6)
    doc = analyze_study(spect, ct, smooth_mm=LOW_NOISE_SMOOTH_MM)
    tracts = [f for f in doc["findings"] if f["kind"] == "tract"]
    assert len(tracts) == 1
    tr = tracts[0]
    assert tr["tract"]["reaches_skin"] and tr["classification"] == "infection likely"
    assert tr["tract"]["start_near"] == "right lateral plate" and tr["tract"]["start_near_end"] == "lower end"
    assert np.linalg.norm(np.array(tr["tract"]["end_lps"]) - end) < 15.0
    assert "to the skin" in tr["description"]


@pytest.mark.parametrize("bone_fraction, is_tract", [(0.0, True), (0.6, True), (0.9, False)])
def test_sinus_tract_may_start_in_bone(bone_fraction, is_tract):
    """A focus reaching the skin 60 mm from its maximum is a sinus tract while less than
    SINUS_MAX_BONE_FRACTION of it is bone (it drains the infected bone it starts from); mostly bone, it is not."""
    from spectct.analysis.hotspots import SINUS_MAX_BONE_FRACTION, Background, _describe

    spect = Volume.from_bounds((-100.0, -20.0, -20.0), (0.0, 20.0, 20.0), 2.0, unit="Bq/mL")
    Z, Y, X = _world(spect)
    region = (np.abs(Y) <= 3) & (np.abs(Z) <= 3) & (X >= -80) & (X <= -4)
    data = np.where(region, 2000.0 - 10.0 * (X + 100.0), 0.0).astype(np.float32)  # hottest at the deep end
    depth = np.clip(-X, 0.0, None).astype(np.float32)  # the skin is the plane x = 0
    xs = np.unique(X[region])
    in_bone = region & (X <= xs[int(round(bone_fraction * len(xs))) - 1]) if bone_fraction else region & False
    bg = Background(100.0, 10.0, 14.8, 5.0, 174.0, 1000, "body")
    spot = _describe(1, region, data, spect, bg, None, depth, in_bone)
    assert spot.fraction_in_bone == pytest.approx(bone_fraction, abs=0.05)
    assert (bone_fraction < SINUS_MAX_BONE_FRACTION) == is_tract
    assert (spot.shape == "tract" and spot.reaches_skin) == is_tract


# --------------------------------------------------------------------------- dual time point
def test_dual_time_decay_correction_and_trend(scene_screw2):
    ct, spect, _ = scene_screw2
    spots = detect_hotspots(spect, ct=ct)
    t_early, t_late = 3 * 3600.0, 20 * 3600.0
    decay = TC99M.decay_factor(t_late - t_early)
    # same distribution, only decayed: decay-corrected, nothing changes
    same = compare_dual_time(spots, spect, spect.with_data(spect.data * decay), t_early, t_late, "Tc-99m")
    assert all(c.trend == "stable" and c.intensity_change == pytest.approx(1.0, abs=1e-4) for c in same)
    # the infection grows by 40 % while marrow falls by 30 % (decay on top)
    data = spect.data.astype(np.float64) * 0.7
    focus = np.zeros(spect.shape, bool)
    focus[tuple(spots[0].indices.T)] = True
    data[focus] = spect.data[focus] * 1.4
    late = spect.with_data((data * decay).astype(np.float32))
    changes = compare_dual_time(spots, spect, late, t_early, t_late, "Tc-99m")
    assert changes[0].trend == "increasing" and changes[0].intensity_change == pytest.approx(1.4, rel=0.02)
    assert all(c.trend == "decreasing" for c in changes[1:])
    with pytest.raises(InputError):
        compare_dual_time(spots, spect, late, t_late, t_early)


def test_dual_time_in_document(scene_screw2):
    ct, spect, _ = scene_screw2
    decay = TC99M.decay_factor(17 * 3600.0)
    late = spect.with_data((spect.data * 0.6 * decay).astype(np.float32))
    doc = analyze_study(spect, ct, late_spect=late)
    assert doc["dual_time"]["late_time_s"] == 20 * 3600.0
    for f in doc["findings"]:
        assert f["dual_time"]["trend"] == "decreasing"
    marrow = [f for f in doc["findings"] if f["classification"] == "physiological marrow"]
    assert marrow and all("decreasing" in f["reason"] for f in marrow)


def test_classify_rules():
    from spectct.analysis.findings import Finding

    base = dict(
        id=1,
        kind="focus",
        peak_lps=(0.0, 0.0, 0.0),
        peak_bq_ml=1.0,
        mean_bq_ml=1.0,
        volume_ml=1.0,
        ratio_to_background=5.0,
        side="right",
        third=None,
    )
    marrow = Finding(**base, ratio_to_contralateral=1.05, structure="pelvis", tissue="marrow", fraction_in_bone=0.9)
    assert classify(marrow)[0] == "physiological marrow"
    near = Finding(
        **base,
        ratio_to_contralateral=3.0,
        structure="femur",
        tissue="soft tissue",
        fraction_in_bone=0.3,
        nearest_implant="right lateral plate screw 2",
        nearest_implant_mm=3.0,
    )
    assert classify(near)[0] == "infection likely" and "screw 2" in near.reason
    odd = Finding(**base, ratio_to_contralateral=3.0, structure="femur", tissue="marrow", fraction_in_bone=1.0)
    assert classify(odd)[0] == "indeterminate"
    assert (
        classify(odd, dual_time={"trend": "increasing", "intensity_change": 1.3, "size_change": 1.0})[0]
        == "infection likely"
    )


# --------------------------------------------------------------------------- bad input, schema, files
def test_no_overlap_is_a_geometry_error(scene_screw2, tmp_path):
    ct, spect, _ = scene_screw2
    far = Volume(spect.data, spacing=spect.spacing, origin=(1000.0, 0.0, 0.0), unit="Bq/mL")
    with pytest.raises(GeometryError, match="do not overlap"):
        analyze_study(far, ct, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_empty_spect_is_an_input_error(scene_screw2, tmp_path):
    ct, spect, _ = scene_screw2
    with pytest.raises(InputError, match="empty"):
        analyze_study(spect.with_data(np.zeros_like(spect.data)), ct, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_schema_accepts_documents_and_rejects_broken_ones(scene_screw2):
    pytest.importorskip("jsonschema")
    _, _, doc = scene_screw2
    validate_findings(doc)
    assert FINDINGS_SCHEMA["properties"]["schema"]["const"] == doc["schema"]
    broken = json.loads(json.dumps(doc))
    broken["findings"][0]["classification"] = "probably fine"
    with pytest.raises(InputError, match="classification"):
        validate_findings(broken)
    broken = json.loads(json.dumps(doc))
    del broken["findings"][0]["peak_lps"]
    with pytest.raises(InputError, match="peak_lps"):
        validate_findings(broken)


def test_analyze_writes_findings_json(scene_screw2, tmp_path):
    ct, spect, _ = scene_screw2
    doc = analyze_study(spect, ct, out_dir=tmp_path, figures=False)
    back = read_findings(tmp_path / "findings.json")
    assert back == json.loads(json.dumps(doc))
    assert not list(tmp_path.glob(".*partial*"))


def test_cli_analyze(scene_screw2, tmp_path):
    from typer.testing import CliRunner

    from spectct.cli import app
    from spectct.io.nifti import write_nifti

    ct, spect, _ = scene_screw2
    write_nifti(ct, tmp_path / "ct.nii.gz")
    write_nifti(spect, tmp_path / "spect.nii.gz")
    runner = CliRunner()
    args = [
        "analyze",
        "--spect",
        str(tmp_path / "spect.nii.gz"),
        "--ct",
        str(tmp_path / "ct.nii.gz"),
        "--out",
        str(tmp_path / "out"),
        "--no-figures",
        "--quiet",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "right lateral plate screw 2" in result.output and "infection likely" in result.output
    assert read_findings(tmp_path / "out" / "findings.json")["findings"]
    far = Volume(spect.data, spacing=spect.spacing, origin=(2000.0, 0.0, 0.0), unit="Bq/mL")
    write_nifti(far, tmp_path / "far.nii.gz")
    args[2], args[6] = str(tmp_path / "far.nii.gz"), str(tmp_path / "out2")
    result = runner.invoke(app, args)
    assert isinstance(result.exception, GeometryError)
    assert not (tmp_path / "out2").exists()


# --------------------------------------------------------------------------- bend test and touching screws
def _capsule(X, Y, Z, a, b, r):
    """Voxels within ``r`` of the segment a→b (LPS mm)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((X - a[0]) * d[0] + (Y - a[1]) * d[1] + (Z - a[2]) * d[2]) / (d @ d), 0.0, 1.0)
    return (X - a[0] - t * d[0]) ** 2 + (Y - a[1] - t * d[1]) ** 2 + (Z - a[2] - t * d[2]) ** 2 <= r**2


def _screw_capsules(X, Y, Z, head, direction, length, bend_deg=0.0, bend_at=12.0):
    """A 40-mm cortical screw (shank r 2.25 mm, head r 4 mm) bent about z by ``bend_deg`` at ``bend_at``."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    head = np.asarray(head, float)
    m = _capsule(X, Y, Z, head - 3.0 * d, head, 4.0)
    knee = head + bend_at * d
    c, s = np.cos(np.radians(bend_deg)), np.sin(np.radians(bend_deg))
    d2 = np.array([c * d[0] - s * d[1], s * d[0] + c * d[1], d[2]])
    return m | _capsule(X, Y, Z, head, knee, 2.25) | _capsule(X, Y, Z, knee, knee + (length - bend_at) * d2, 2.25)


def test_bend_flag_robust_to_voxelisation_at_2mm():
    """Straight screws at oblique angles on a 2-mm grid stay unflagged; 15° and 20° bends are flagged."""
    ct = Volume.from_bounds((-40.0, -40.0, -70.0), (40.0, 40.0, 70.0), 2.0, unit="HU")
    Z, Y, X = _world(ct)
    hu = np.full(ct.shape, 40.0, np.float32)
    hu[X**2 + Y**2 <= 25**2] = 1500.0
    cases = {  # z level: (in-plane angle of the axis in degrees, tilt in z, bend in degrees)
        60.0: (0.0, 0.0, 0.0),
        44.0: (17.0, 0.1, 0.0),
        28.0: (33.0, -0.2, 0.0),
        12.0: (45.0, 0.15, 0.0),
        -4.0: (8.0, 0.0, 15.0),
        -20.0: (25.0, 0.1, 20.0),
        -36.0: (40.0, 0.0, 18.0),
        -52.0: (-20.0, 0.0, 0.0),
    }
    for z0, (ang, tilt, bend) in cases.items():
        d = np.array([np.cos(np.radians(ang)), np.sin(np.radians(ang)), tilt])
        head = np.array([0.0, 0.0, z0]) - 20.0 * d / np.linalg.norm(d)
        hu[_screw_capsules(X, Y, Z, head, d, 40.0, bend_deg=bend)] = 3071.0
    ct = ct.with_data(hu)
    comps = decompose_implants(ct, anatomy=segment_anatomy(ct, midline_x=-100.0))
    assert len(comps) == len(cases)
    for c in comps:
        z0 = min(cases, key=lambda z: abs(z - c.centroid_lps[2]))
        assert ("bent" in c.flags) == (cases[z0][2] > 0), (z0, c.flags)


def _touching_scene():
    """A nail with a distal locking screw and a lateral plate whose lowest screw touches that screw's head."""
    ct = Volume.from_bounds((-50.0, -40.0, -80.0), (40.0, 40.0, 80.0), 2.0, unit="HU")
    Z, Y, X = _world(ct)
    hu = np.where(X**2 + Y**2 <= 45**2, 40.0, -1000.0).astype(np.float32)
    hu[X**2 + Y**2 <= 13**2] = 1500.0
    metal = (X**2 + Y**2 <= 5.5**2) & (np.abs(Z) <= 70)  # nail
    metal |= (X >= -30) & (X <= -26) & (np.abs(Y) <= 8) & (Z >= -40) & (Z <= 60)  # plate, displaced laterally
    for z0 in (45.0, 20.0, -5.0):  # plate screws 1-3 beside the nail
        metal |= _screw_capsules(X, Y, Z, (-26.0, 8.0, z0), (1.0, -0.1, 0.0), 26.0)
    # plate screw 4: backed out and tilted, its shank touching the locking screw's head below
    metal |= _screw_capsules(X, Y, Z, (-32.0, -6.0, -33.0), (18.0, 8.0, -3.0), 20.0)
    # the nail's distal locking screw (lateral → medial through the nail)
    metal |= _screw_capsules(X, Y, Z, (-20.0, 0.0, -40.0), (1.0, 0.0, 0.0), 38.0)
    hu[metal] = 3071.0
    return ct.with_data(hu)


def test_touching_screws_are_split_and_numbered():
    ct = _touching_scene()
    comps = decompose_implants(ct, anatomy=segment_anatomy(ct, midline_x=100.0))
    by_name = {c.name: c for c in comps}
    plate = next(c.name for c in comps if c.kind == "plate")
    screws = [c for c in comps if c.kind == "screw"]
    assert len(screws) == 5, [c.name for c in screws]
    on_plate = sorted((c for c in screws if c.carrier == plate), key=lambda c: c.number)
    assert [c.number for c in on_plate] == [1, 2, 3, 4]
    assert [round(c.centroid_lps[2] / 5) * 5 for c in on_plate[:3]] == [45, 20, -5]
    lock = by_name["right nail distal locking screw 1"]
    assert lock.carrier == "right intramedullary nail"
    assert lock.length_mm == pytest.approx(41.0, abs=6.0)
    assert lock.centroid_lps[2] == pytest.approx(-40.0, abs=1.5)
    assert on_plate[3].centroid_lps[2] == pytest.approx(-35.0, abs=3.0)
