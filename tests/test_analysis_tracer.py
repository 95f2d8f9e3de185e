"""Tracer-aware reading: infection rules for labelled leukocytes only, a neutral description otherwise."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from spectct.analysis import analyze_study
from spectct.analysis.findings import CLASSES, NEUTRAL_CLASSES, read_findings, validate_findings
from spectct.analysis.tracer import LEUKOCYTE, NEUTRAL, names_leukocytes, radiopharmaceutical_from_dicom, reading_rules
from spectct.cli import app
from spectct.io.nifti import write_nifti
from spectct.report.conclusion import conclusion_paragraphs
from test_analysis import make_scene  # tests/ is on sys.path (pytest rootdir conftest)


@pytest.mark.parametrize(
    ("tracer", "nuclide", "rules", "source"),
    [
        ("99mTc-HMPAO leukocytes", "Tc-99m", LEUKOCYTE, "stated"),
        ("HMPAO-WBC", None, LEUKOCYTE, "stated"),
        ("In-111 oxine", None, LEUKOCYTE, "stated"),
        ("111In-oxine labelled leucocytes", "In-111", LEUKOCYTE, "stated"),
        ("Tc-99m besilesomab (Scintimun)", None, LEUKOCYTE, "stated"),
        ("177Lu-PSMA-617", "Lu-177", NEUTRAL, "stated"),
        ("Tc-99m HMPAO", None, NEUTRAL, "stated"),  # the brain-perfusion agent, no labelled cells
        ("99mTc-MDP", None, NEUTRAL, "stated"),
        (None, "Lu-177", NEUTRAL, "radionuclide"),
        (None, "I-131", NEUTRAL, "radionuclide"),
        ("Lu177", None, NEUTRAL, "radionuclide"),  # a bare radionuclide in the radiopharmaceutical field
        ("Tc-99m", None, LEUKOCYTE, "default"),
        (None, "In-111", LEUKOCYTE, "default"),
        (None, None, LEUKOCYTE, "default"),
        ("  ", None, LEUKOCYTE, "default"),
    ],
)
def test_reading_rules(tracer, nuclide, rules, source):
    r = reading_rules(tracer, nuclide)
    assert (r.rules, r.source) == (rules, source), r
    assert r.infection_rules == (rules == LEUKOCYTE)
    assert r.reason


def test_names_leukocytes_ignores_punctuation_and_case():
    assert names_leukocytes("W.B.C.") and names_leukocytes("White Blood Cells") and names_leukocytes("LEUKOCYTE")
    assert not names_leukocytes("exametazime") and not names_leukocytes("PSMA")


@pytest.fixture(scope="module")
def screw2_scene():
    ct, spect, _ = make_scene(infected_screw=2)
    return ct, spect


def _sentences(doc: dict) -> str:
    return " ".join(doc["summary"] + [f["reason"] for f in doc["findings"]])


def test_lu177_study_is_described_without_infection_claims(screw2_scene):
    ct, spect = screw2_scene
    doc = analyze_study(spect, ct, tracer="177Lu-PSMA-617", radionuclide="Lu-177", figures=False)
    validate_findings(doc)
    assert doc["tracer"]["rules"] == NEUTRAL and doc["tracer"]["radiopharmaceutical"] == "177Lu-PSMA-617"
    classes = {f["classification"] for f in doc["findings"]}
    assert classes and classes <= set(NEUTRAL_CLASSES)
    hottest = max(doc["findings"], key=lambda f: f["peak_bq_ml"])
    assert hottest["classification"] == "focal uptake"
    assert hottest["nearest_implant"] == "right lateral plate screw 2"  # localisation does not depend on the tracer
    assert "no infection reading" in hottest["reason"]
    # symmetric pelvic marrow is called symmetric, not physiological marrow or infection
    assert any(f["classification"] == "symmetric uptake" for f in doc["findings"] if f["structure"] == "pelvis")
    text = _sentences(doc).lower()
    assert "infection likely" not in text and "infection uptake" not in text and "(infection)" not in text
    assert doc["summary"][0].startswith("Read without infection rules")
    assert any(n.startswith("177Lu-PSMA-617 is not a labelled-leukocyte tracer") for n in doc["notes"])
    conclusion = " ".join(conclusion_paragraphs(doc))
    assert "not interpreted as infection" in conclusion and "leukocyte accumulation" not in conclusion
    assert "right lateral plate screw 2" in conclusion


def test_radionuclide_alone_switches_the_rules(screw2_scene):
    ct, spect = screw2_scene
    doc = analyze_study(spect, ct, radionuclide="Lu-177", figures=False)
    assert doc["tracer"]["rules"] == NEUTRAL and doc["tracer"]["source"] == "radionuclide"
    assert {f["classification"] for f in doc["findings"]} <= set(NEUTRAL_CLASSES)


def test_leukocyte_study_keeps_the_infection_reading(screw2_scene):
    ct, spect = screw2_scene
    doc = analyze_study(spect, ct, tracer="99mTc-HMPAO leukocytes", figures=False)
    validate_findings(doc)
    assert doc["tracer"]["rules"] == LEUKOCYTE and doc["tracer"]["source"] == "stated"
    assert {f["classification"] for f in doc["findings"]} <= set(CLASSES)
    hottest = max(doc["findings"], key=lambda f: f["peak_bq_ml"])
    assert hottest["classification"] == "infection likely"
    assert not doc["notes"] or not any("not stated" in n for n in doc["notes"])
    unstated = analyze_study(spect, ct, figures=False)  # nothing stated: read as leukocytes, and said so
    assert unstated["tracer"]["source"] == "default"
    assert any("not stated" in n for n in unstated["notes"])
    assert [f["classification"] for f in unstated["findings"]] == [f["classification"] for f in doc["findings"]]


def _nm_file(path, radiopharmaceutical: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.20"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "NM"
    item = Dataset()
    item.Radiopharmaceutical = radiopharmaceutical
    ds.RadiopharmaceuticalInformationSequence = Sequence([item])
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def test_radiopharmaceutical_read_from_dicom(tmp_path):
    _nm_file(tmp_path / "nm.dcm", "In-111 oxine leukocytes")
    assert radiopharmaceutical_from_dicom(tmp_path / "nm.dcm") == "In-111 oxine leukocytes"
    assert radiopharmaceutical_from_dicom(tmp_path) == "In-111 oxine leukocytes"  # a folder: its first DICOM
    (tmp_path / "plain.txt").write_text("not dicom")
    assert radiopharmaceutical_from_dicom(tmp_path / "plain.txt") is None
    _nm_file(tmp_path / "empty.dcm", "")
    assert radiopharmaceutical_from_dicom(tmp_path / "empty.dcm") is None


def test_analyze_cli_tracer_override(tmp_path, screw2_scene):
    ct, spect = screw2_scene
    write_nifti(ct, tmp_path / "ct.nii.gz")
    write_nifti(spect, tmp_path / "spect.nii.gz")
    base = ["analyze", "--spect", str(tmp_path / "spect.nii.gz"), "--ct", str(tmp_path / "ct.nii.gz"), "--no-figures"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "lu"), "--tracer", "177Lu-DOTATATE",
                                   "--radionuclide", "Lu-177", "--quiet"])
    assert res.exit_code == 0, res.output
    doc = read_findings(tmp_path / "lu" / "findings.json")
    assert doc["tracer"]["rules"] == NEUTRAL and "focal uptake" in res.output and "infection likely" not in res.output
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "wbc"), "--tracer", "In-111 oxine WBC", "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "wbc" / "findings.json").read_text())
    assert doc["tracer"]["rules"] == LEUKOCYTE and "infection likely" in res.output
    assert np.isclose(max(f["peak_bq_ml"] for f in doc["findings"]),
                      max(f["peak_bq_ml"] for f in read_findings(tmp_path / "lu" / "findings.json")["findings"]))
