"""Report pieces: findings rows, conclusion, truth check and the HTML builder, on a hand-made study."""

from __future__ import annotations

import json

from spectct.io.study import Study
from spectct.pipeline.truthcheck import truth_checks
from spectct.report.conclusion import conclusion_paragraphs
from spectct.report.html import build_report
from spectct.report.tables import finding_rows, protocol_rows


def _finding(fid, peak, side="right", kind="focus", cls="infection likely", implant=None, mm=None, tract=None,
             structure="femur", peak_lps=(-120.0, 0.0, -200.0)):
    return {"id": fid, "kind": kind, "peak_lps": list(peak_lps), "peak_bq_ml": peak, "mean_bq_ml": peak / 2,
            "volume_ml": 5.0, "ratio_to_background": peak / 400, "ratio_to_contralateral": None, "side": side,
            "structure": structure, "third": "proximal", "tissue": "bone", "fraction_in_bone": 0.5,
            "nearest_implant": implant, "nearest_implant_mm": mm, "implants_nearby": [], "tract": tract,
            "classification": cls, "reason": "because", "dual_time": None, "description": ""}


DOC = {"findings": [
    _finding(1, 30000.0, kind="tract", implant="right lateral plate screw 8", mm=4.0,
             tract={"start_lps": [0, 0, 0], "end_lps": [0, 0, 1], "length_mm": 67.0, "reaches_skin": True,
                    "start_near": "right lateral plate", "start_near_end": "lower end"}),
    _finding(2, 50000.0, implant="right lateral plate screw 2", mm=5.9),
    _finding(3, 12000.0, side="left", cls="physiological marrow", structure="pelvis", implant="left dynamic hip screw",
             mm=134.0),
], "implants": [{"name": "right lateral plate screw 2", "kind": "screw", "carrier": "right lateral plate", "number": 2,
                 "flags": [], "centroid_lps": [-120.0, 0.0, -200.0], "length_mm": 25.0}]}


def test_rows_are_hottest_first_in_kbq():
    rows = finding_rows(DOC)
    assert [r["id"] for r in rows] == [2, 1, 3]
    assert rows[0]["peak"] == "50.0" and rows[0]["component"] == "right lateral plate screw 2"
    assert rows[2]["distance"] == "134"
    assert "reaches skin" in rows[1]["kind"]


def test_conclusion_names_the_hottest_component_the_tract_and_the_clear_side():
    text = " ".join(conclusion_paragraphs(DOC))
    assert "maximum uptake localising to the right lateral plate screw 2" in text
    assert "sinus tract runs from the lower end of the right lateral plate to the skin" in text
    assert "No abnormal leukocyte accumulation in the left femur or hip." in text
    assert "No abnormal leukocyte accumulation in the right" not in text
    assert conclusion_paragraphs({"findings": []})[0].startswith("No focus")


def test_truth_checks_pass_and_fail_on_the_right_things():
    components = [
        {"name": "focus at right lateral plate screw 2", "kind": "focus", "activity": 70.0,
         "centroid_lps": [-121.0, 0.0, -200.0]},
        {"name": "collection at right nail tip", "kind": "collection", "activity": 16.0,
         "centroid_lps": [-120.0, 0.0, -201.0]},
        {"name": "right lateral plate screw 2", "kind": "screw", "carrier": "right lateral plate", "number": 2,
         "flags": [], "centroid_lps": [-121.0, 0.0, -199.0]},
    ]
    checks = {c["name"]: c["passed"] for c in truth_checks(DOC, components)}
    assert checks["hottest focus attributed to the implant component"] is True
    assert checks["sinus tract reaching the skin"] is True
    assert checks["left side free of infection findings"] is True
    assert checks["lateral plate screws recovered and numbered from CT"] is True
    wrong = json.loads(json.dumps(DOC))
    wrong["findings"][1]["nearest_implant"] = "right lateral plate screw 3"
    wrong["findings"][2]["classification"] = "infection likely"
    checks = {c["name"]: c["passed"] for c in truth_checks(wrong, components, ct_slice_mm=4.0)}
    assert checks["hottest focus attributed to the implant component"] is False
    assert checks["left side free of infection findings"] is False
    assert checks["lateral plate screws recovered and numbered from CT"] is None  # not assessed at 4 mm


def test_html_report_escapes_identifiers_and_marks_missing_figures(tmp_path):
    study = Study.open(tmp_path / "s")
    (study.root / "findings.json").write_text(json.dumps(DOC))
    study.record_stage("spect_simulate", {"injected_activity_mbq": 330.0, "matrix": 128, "pixel_mm": 4.7952})
    rows = protocol_rows(study.read_protocol())
    assert ("Injected activity", "330 MBq") in rows["spect"]
    path = build_report(study, patient={"name": "<script>alert(1)</script>", "id": "X&Y", "sex": "F"}, pdf=False)
    html = path.read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "X&amp;Y" in html
    assert "figures/planar.png was not produced" in html
