"""The reading on the case phantom: a synthetic CT (nominal HU per material) and a synthetic SPECT
(activity blurred to 12 mm FWHM on a 4.8-mm grid, with noise). The phantom's truth is read here only to
build the inputs and to check the answers; the analysis sees the two volumes alone."""

from __future__ import annotations

import numpy as np
import pytest

from spectct.analysis import analyze_study
from spectct.analysis.anatomy import segment_anatomy
from spectct.analysis.implants import decompose_implants
from spectct.phantom.synthetic import blurred_spect, nominal_ct

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def case():
    from spectct.phantom.case import FIELD_LOWER, FIELD_UPPER, case_phantom

    ph = case_phantom(voxel_mm=2.0, seed=0)
    ct = nominal_ct(ph)
    spect = blurred_spect(ph, FIELD_LOWER, FIELD_UPPER)
    return ph, ct, spect


def test_decomposition_recovers_the_plate_screws(case):
    ph, ct, _ = case
    comps = decompose_implants(ct, anatomy=segment_anatomy(ct))
    found = {c.name: c for c in comps}
    truth = {c.name: c for c in ph.by_kind("nail", "plate", "screw")}
    for name in (
        "right intramedullary nail",
        "left intramedullary nail",
        "right lateral plate",
        "left dynamic hip screw",
        "left dynamic hip screw plate",
    ):
        assert name in found, name
        assert np.linalg.norm(np.subtract(found[name].centroid_lps, truth[name].centroid_lps)) < 10.0, name
    for k in range(1, 9):
        name = f"right lateral plate screw {k}"
        f, t = found[name], truth[name]
        assert f.carrier == "right lateral plate" and f.number == k
        assert abs(f.centroid_lps[2] - t.centroid_lps[2]) < 6.0, (
            name
        )  # the numbering follows the truth's order
        assert ("extruded" in f.flags) == ("extruded" in t.flags), name
    assert "right lateral plate screw 9" not in found
    for c in comps:
        assert c.side == ("right" if c.centroid_lps[0] < 0 else "left")


def test_reading_the_case(case):
    ph, ct, spect = case
    doc = analyze_study(spect, ct)
    findings = doc["findings"]
    top = max(findings, key=lambda f: f["peak_bq_ml"])
    assert top["nearest_implant"] == "right lateral plate screw 2"
    assert top["classification"] == "infection likely"
    tracts = [f for f in findings if f["kind"] == "tract"]
    assert any(
        t["tract"]["reaches_skin"]
        and t["tract"]["start_near"] == "right lateral plate"
        and t["tract"]["start_near_end"] == "lower end"
        for t in tracts
    )
    assert any(
        f["nearest_implant"] == "right intramedullary nail"
        and f["nearest_implant_part"] == "lower end"
        and f["classification"] == "infection likely"
        for f in findings
    )
    assert not [f for f in findings if f["side"] == "left" and f["classification"] == "infection likely"]
    pelvis = [f for f in findings if f["structure"] == "pelvis"]
    assert pelvis and all(f["classification"] == "physiological marrow" for f in pelvis)


def test_decomposition_matches_every_screw_and_flag(case):
    """Issue 7: every screw of the case found under its truth name (the touching plate screw 8 and right
    nail distal locking screw 1 split apart, so the nail's distal numbering holds), with extruded and bent
    flags as in the truth."""
    ph, ct, _ = case
    found = {c.name: c for c in decompose_implants(ct, anatomy=segment_anatomy(ct))}
    truth = {c.name: c for c in ph.by_kind("screw")}
    assert set(truth) <= set(found), sorted(set(truth) - set(found))
    for name, t in truth.items():
        f = found[name]
        assert np.linalg.norm(np.subtract(f.centroid_lps, t.centroid_lps)) < 10.0, name
        for flag in ("extruded", "bent"):
            assert (flag in f.flags) == (flag in t.flags), (name, flag, f.flags, t.flags)
    for name, t in {c.name: c for c in ph.by_kind("plate")}.items():  # the lateral plate stands off its lower end
        assert ("displaced" in found[name].flags) == ("displaced" in t.flags), (name, found[name].standoff_mm)
    assert found["right lateral plate"].standoff_end == "lower end"
    assert found["right lateral plate"].standoff_mm >= 7.0 and found["left dynamic hip screw plate"].standoff_mm <= 2.0
    assert found["right nail distal locking screw 1"].carrier == "right intramedullary nail"
