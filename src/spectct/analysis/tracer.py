"""Which reading rules apply to a study: those of a labelled-leukocyte scan, or neutral description.

The marrow-versus-infection rules of :mod:`spectct.analysis.classify` hold for radiolabelled white blood
cells (99mTc-HMPAO or 111In-oxine leukocytes, anti-granulocyte antibodies): in such a scan, uptake above
marrow that grows over time means infection (EANM guideline, Signore et al., Eur J Nucl Med Mol Imaging
2018; 45:1816). With any other radiopharmaceutical (a 177Lu therapy agent, a bone or perfusion agent)
focal uptake means something else, so the foci are described ("focal uptake", "symmetric uptake") and no
infection is claimed.

Decision, first that applies:

1. A radiopharmaceutical is stated (``--tracer``, the DICOM Radiopharmaceutical text, the protocol):
   leukocyte rules when it names labelled leukocytes or granulocytes (:data:`LEUKOCYTE_WORDS`), else
   neutral. "HMPAO" or "exametazime" alone is the brain-perfusion agent, not labelled cells.
2. Only the radionuclide is known and it is not one used to label leukocytes (:data:`LEUKOCYTE_NUCLIDES`:
   Tc-99m, In-111): neutral (e.g. Lu-177).
3. Otherwise the study is read as a leukocyte scan, the reading this package implements, and the document
   says that the radiopharmaceutical was not stated.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

LEUKOCYTE = "leukocyte"
NEUTRAL = "neutral"

#: Words that name a labelled white-cell study (lower case, matched as substrings after removing
#: punctuation): leukocytes/leucocytes, WBC, white (blood) cells, granulocytes, oxine (the 111In label of
#: leukocytes), and the anti-granulocyte antibodies besilesomab (Scintimun) and sulesomab (LeukoScan).
LEUKOCYTE_WORDS = (
    "leukocyte",
    "leucocyte",
    "wbc",
    "whitebloodcell",
    "whitecell",
    "granulocyte",
    "oxine",
    "besilesomab",
    "scintimun",
    "sulesomab",
    "leukoscan",
)
#: Radionuclides used to label leukocytes.
LEUKOCYTE_NUCLIDES = ("Tc-99m", "In-111")


@dataclass
class TracerReading:
    """The reading rules chosen for a study, and why."""

    radiopharmaceutical: str | None
    radionuclide: str | None
    rules: str  # LEUKOCYTE or NEUTRAL
    source: str  # "stated" (option, DICOM or protocol), "radionuclide" or "default"
    reason: str

    @property
    def infection_rules(self) -> bool:
        return self.rules == LEUKOCYTE

    @property
    def label(self) -> str:
        """Short name for sentences: the radiopharmaceutical, else the radionuclide, else "this tracer"."""
        return self.radiopharmaceutical or self.radionuclide or "this tracer"

    def to_json(self) -> dict:
        return asdict(self)


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def names_leukocytes(text: str) -> bool:
    """Whether a radiopharmaceutical name denotes labelled white cells (see :data:`LEUKOCYTE_WORDS`)."""
    flat = _squash(text)
    return any(w in flat for w in LEUKOCYTE_WORDS)


def reading_rules(radiopharmaceutical: str | None = None, radionuclide: str | None = None) -> TracerReading:
    """Choose leukocyte (infection) rules or neutral description for a study (see the module notes).

    Parameters
    ----------
    radiopharmaceutical : the stated radiopharmaceutical (free text, e.g. "99mTc-HMPAO leukocytes",
        "In-111 oxine WBC", "177Lu-PSMA-617"), or None when not stated.
    radionuclide : the radionuclide (e.g. "Tc-99m", "Lu-177"), or None when unknown.
    """
    name = (radiopharmaceutical or "").strip() or None
    nuclide = (radionuclide or "").strip() or None
    if name is not None and _as_radionuclide(name) is not None:
        # a bare radionuclide in the radiopharmaceutical field (as some writers, this package's included,
        # fill it) states no compound
        nuclide, name = nuclide or _as_radionuclide(name), None
    if name is not None:
        if names_leukocytes(name):
            return TracerReading(name, nuclide, LEUKOCYTE, "stated",
                                 f"{name}: labelled leukocytes, read with the marrow-versus-infection rules")
        return TracerReading(name, nuclide, NEUTRAL, "stated",
                             f"{name} is not a labelled-leukocyte tracer: foci are described, infection is not "
                             "read from uptake")
    if nuclide is not None and _squash(nuclide) not in {_squash(n) for n in LEUKOCYTE_NUCLIDES}:
        return TracerReading(None, nuclide, NEUTRAL, "radionuclide",
                             f"{nuclide} is not used to label leukocytes: foci are described, infection is not "
                             "read from uptake")
    return TracerReading(None, nuclide, LEUKOCYTE, "default",
                         "radiopharmaceutical not stated: read as a labelled-leukocyte study (give the tracer to "
                         "change this)")


def _as_radionuclide(text: str) -> str | None:
    """The radionuclide's name when ``text`` is only a radionuclide ("Tc-99m", "99mTc", "Lu177"), else None."""
    from spectct.physics.radionuclide import get_radionuclide

    cleaned = re.sub(r"[\^\s]", "", text).lower().replace("technetium", "tc").replace("lutetium", "lu")
    cleaned = cleaned.replace("indium", "in").replace("iodine", "i")
    for guess in (cleaned, re.sub(r"^(\d+m?)-?([a-z]+)$", r"\2\1", cleaned)):
        try:
            return get_radionuclide(guess).name
        except Exception:  # noqa: BLE001 - not a radionuclide this package models
            continue
    # other nuclides (In-111, I-123, Ga-67 ...): element symbol and mass number, either order
    m = re.fullmatch(r"([a-z]{1,2})-?(\d{1,3}m?)", cleaned) or re.fullmatch(r"(\d{1,3}m?)-?([a-z]{1,2})", cleaned)
    if m is None:
        return None
    element, mass = (m.group(1), m.group(2)) if m.group(1).isalpha() else (m.group(2), m.group(1))
    return f"{element.capitalize()}-{mass}"


def radiopharmaceutical_from_dicom(path: str | os.PathLike) -> str | None:
    """The Radiopharmaceutical text (0018,0031) of a DICOM NM file (or the first DICOM file of a folder),
    else the Radiopharmaceutical Code Sequence meaning; None when absent or not DICOM."""
    from spectct.io.dicom_common import is_dicom_file

    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
    for f in files[:50]:
        if not is_dicom_file(f):
            continue
        import pydicom

        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for item in ds.get("RadiopharmaceuticalInformationSequence", []) or []:
            text = str(item.get("Radiopharmaceutical", "") or "").strip()
            if text:
                return text
            for code in item.get("RadiopharmaceuticalCodeSequence", []) or []:
                meaning = str(code.get("CodeMeaning", "") or "").strip()
                if meaning:
                    return meaning
        return None
    return None
