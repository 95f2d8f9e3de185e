"""A plate standing off the bone is flagged "displaced" from the CT alone; the truth check compares the flag.

The scene: one femur (cortex and marrow cavity) along z on a 2-mm CT, a 5-mm thick plate on its lateral
(patient right, −x) surface, fixed by three screws, either flush or lifted off the bone at one end.
"""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest

from spectct.analysis.anatomy import segment_anatomy
from spectct.analysis.findings import FINDINGS_SCHEMA
from spectct.analysis.implant_shape import principal_shape as _shape
from spectct.analysis.implant_shape import standoff_profile
from spectct.analysis.implants import decompose_implants, implants_to_json
from spectct.pipeline.truthcheck import truth_checks
from spectct.volume import Volume

BONE_R = 13.0
PLATE_Z = 70.0  # the plate spans z ∈ [−70, 70] mm


def plate_scene(lift_lower_mm: float = 0.0, lift_upper_mm: float = 0.0, ct_mm: float = 2.0) -> Volume:
    """CT in HU: femur along z at x = y = 0, plate on its −x side whose gap to the cortex grows linearly from
    ``lift_upper_mm`` at z = +70 to ``lift_lower_mm`` at z = −70, three screws from the plate into the bone."""
    ct = Volume.from_bounds((-70.0, -40.0, -90.0), (40.0, 40.0, 90.0), ct_mm, unit="HU")
    Z, Y, X = np.meshgrid(*ct.axis_coordinates(), indexing="ij")
    hu = np.where((X + 10.0) ** 2 / 55.0**2 + Y**2 / 38.0**2 <= 1.0, 40.0, -1000.0).astype(np.float32)
    r = np.hypot(X, Y)
    hu[(r <= BONE_R) & (np.abs(Z) < 85.0)] = 1500.0
    hu[(r <= 8.0) & (np.abs(Z) < 85.0)] = 30.0

    def inner(z):  # x of the plate's inner face
        return -BONE_R - (lift_lower_mm * (PLATE_Z - z) + lift_upper_mm * (PLATE_Z + z)) / (2.0 * PLATE_Z)

    metal = (X <= inner(Z)) & (X >= inner(Z) - 5.0) & (np.abs(Y) <= 8.0) & (np.abs(Z) <= PLATE_Z)
    for z0, y0 in ((50.0, 4.0), (10.0, -4.0), (-30.0, 4.0)):
        metal |= (X >= inner(z0) - 5.0) & (X <= 15.0) & ((Y - y0) ** 2 + (Z - z0) ** 2 <= 2.25**2)
    hu[metal] = 3071.0
    return ct.with_data(hu)


def _plate(ct: Volume):
    comps = decompose_implants(ct, anatomy=segment_anatomy(ct, midline_x=100.0))
    plates = [c for c in comps if c.kind == "plate"]
    assert len(plates) == 1 and len([c for c in comps if c.kind == "screw"]) == 3
    return plates[0], comps


def test_flush_plate_is_not_displaced():
    plate, _ = _plate(plate_scene())
    assert plate.name == "right lateral plate"
    assert "displaced" not in plate.flags
    assert plate.standoff_mm == pytest.approx(0.0, abs=1.0)


def test_locking_plate_two_mm_off_is_not_displaced():
    plate, _ = _plate(plate_scene(lift_lower_mm=2.0, lift_upper_mm=2.0))
    assert "displaced" not in plate.flags and plate.standoff_mm <= 3.0


@pytest.mark.parametrize("lift", [10.0, 14.0])
def test_plate_lifted_at_its_lower_end_is_displaced(lift):
    plate, comps = _plate(plate_scene(lift_lower_mm=lift))
    assert "displaced" in plate.flags
    assert plate.standoff_end == "lower end"
    assert plate.standoff_mm == pytest.approx(lift, abs=2.5)  # partial volume hides about a voxel
    doc = implants_to_json(comps)
    item = next(c for c in doc["components"] if c["kind"] == "plate")
    assert item["flags"] == ["displaced"] and item["standoff_end"] == "lower end"
    jsonschema.validate(item, FINDINGS_SCHEMA["properties"]["implants"]["items"])


def test_plate_lifted_at_its_upper_end_says_so():
    plate, _ = _plate(plate_scene(lift_upper_mm=10.0))
    assert "displaced" in plate.flags and plate.standoff_end == "upper end"


def test_standoff_profile_grows_along_a_tilted_plate():
    ct = plate_scene(lift_lower_mm=12.0)
    plate, _ = _plate(ct)
    centres, gaps = standoff_profile(plate.points_lps, ct)
    ok = np.isfinite(gaps)
    assert ok.sum() >= 10
    centre, axes, _, _ = _shape(plate.points_lps)  # the profile runs along the first principal axis
    z = centre[2] + centres[ok] * axes[0][2]
    # the gap rises towards the lower end (true gap 0 mm at z = +70, 12 mm at z = −70)
    upper, lower = gaps[ok][z > 25.0], gaps[ok][z < -25.0]
    assert np.median(upper) <= 3.5 and np.median(lower) >= 7.0
    assert np.corrcoef(z, gaps[ok])[0, 1] < -0.7


def test_displaced_threshold_is_a_parameter():
    ct = plate_scene(lift_lower_mm=10.0)
    comps = decompose_implants(ct, anatomy=segment_anatomy(ct, midline_x=100.0), displaced_mm=12.0)
    assert not any("displaced" in c.flags for c in comps)


def test_truth_check_compares_the_displaced_flag():
    components = [
        {"name": "right lateral plate", "kind": "plate", "flags": ["displaced"], "centroid_lps": [-120, 0, -260]},
        {"name": "left dynamic hip screw plate", "kind": "plate", "flags": [], "centroid_lps": [124, 0, -170]},
    ]
    found = {"findings": [], "implants": [
        {"name": "right lateral plate", "kind": "plate", "flags": ["displaced"], "standoff_mm": 8.0},
        {"name": "left dynamic hip screw plate", "kind": "plate", "flags": [], "standoff_mm": 0.0},
    ]}
    by = {c["name"]: c for c in truth_checks(found, components)}
    check = by["displaced plate flagged from CT"]
    assert check["passed"] is True and "8.0 mm" in check["found"]
    found["implants"][0]["flags"] = []
    assert {c["name"]: c for c in truth_checks(found, components)}["displaced plate flagged from CT"]["passed"] is False
    found["implants"][0]["flags"] = ["displaced"]
    found["implants"][1]["flags"] = ["displaced"]
    assert {c["name"]: c for c in truth_checks(found, components)}["displaced plate flagged from CT"]["passed"] is False
