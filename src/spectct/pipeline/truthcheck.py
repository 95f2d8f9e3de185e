"""Compare the reading (findings.json, from CT and SPECT only) with the digital patient's truth.

Only evaluation code reads the truth; it never feeds back into the reading.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from spectct.atomic import write_text
from spectct.io.study import Study


def _check(name: str, expected: str, found: str, passed: bool) -> dict[str, Any]:
    return {"name": name, "expected": expected, "found": found, "passed": None if passed is None else bool(passed)}


#: Thickest CT slice at which screws (≈ 5 mm across) can be told apart by the decomposition.
SCREW_RESOLVING_SLICE_MM = 2.5


def truth_checks(findings: dict, components: list[dict], ct_slice_mm: float = 1.0) -> list[dict[str, Any]]:
    """The checks of the case: hottest focus at plate screw 2, tract to skin, nail tip, left side clear,
    pelvic marrow physiological, plate screws recovered and numbered, extruded screws flagged, displaced
    plate flagged (when the truth lists plates).

    The screw checks (plate screws numbered, extruded plate screws, and the ``bent`` and ``extruded``
    flags of every screw, see :func:`_screw_flag_checks`) are *not assessed* (``passed`` None) when the
    CT's slices are thicker than :data:`SCREW_RESOLVING_SLICE_MM`: 5-mm screws 8–12 mm apart then merge in
    the CT itself.
    """
    by_name = {c["name"]: c for c in components}
    infected = [f for f in findings.get("findings", []) if f.get("classification") == "infection likely"]
    hottest = max(findings.get("findings", []), key=lambda f: f.get("peak_bq_ml", 0), default=None)
    checks = []

    focus = max((c for c in components if c["kind"] in ("focus", "tract", "collection")),
                key=lambda c: c.get("activity", 0), default=None)
    screw = "right lateral plate screw 2"
    found = "no finding" if hottest is None else f"{hottest.get('nearest_implant')} " \
                                                  f"({hottest.get('nearest_implant_mm') or 0:.0f} mm)"
    checks.append(_check("hottest focus attributed to the implant component", f"{screw} (truth: {focus['name']})"
                         if focus else screw, found, hottest is not None and hottest.get("nearest_implant") == screw))

    tracts = [f for f in infected if f.get("kind") == "tract" and (f.get("tract") or {}).get("reaches_skin")]
    checks.append(_check("sinus tract reaching the skin", "right thigh, from the plate's lower end",
                         ", ".join(f"{t['side']} ({t['tract'].get('start_near')})" for t in tracts) or "none",
                         any(t.get("side") == "right" for t in tracts)))

    tip = by_name.get("collection at right nail tip")
    if tip and tip.get("centroid_lps"):
        p = np.asarray(tip["centroid_lps"], float)
        dists = [float(np.linalg.norm(np.asarray(f["peak_lps"], float) - p)) for f in infected]
        best = min(dists, default=float("inf"))
        checks.append(_check("focus at the distal tip of the right nail", "within 20 mm of the tip collection",
                             f"nearest infection finding {best:.0f} mm away" if dists else "none", best <= 20.0))

    left = [f for f in infected if f.get("side") == "left"]
    checks.append(_check("left side free of infection findings", "no infection finding on the left",
                         f"{len(left)} on the left", not left))

    pelvis = [f for f in findings.get("findings", []) if f.get("structure") == "pelvis"]
    wrong = [f for f in pelvis if f.get("classification") == "infection likely"]
    checks.append(_check("pelvic marrow not called infection", "physiological or indeterminate",
                         f"{len(pelvis)} pelvic findings, {len(wrong)} called infection", not wrong))

    truth_screws = sorted((c for c in components if c["kind"] == "screw" and c.get("carrier") == "right lateral plate"),
                          key=lambda c: c["number"])
    found_screws = [c for c in findings.get("implants", []) if c.get("kind") == "screw"
                    and c.get("carrier") == "right lateral plate"]
    matched = 0
    for t in truth_screws:
        if not t.get("centroid_lps"):
            continue
        near = min(found_screws, key=lambda c: np.linalg.norm(np.subtract(c["centroid_lps"], t["centroid_lps"])),
                   default=None)
        if near is not None and near.get("number") == t["number"] and \
                np.linalg.norm(np.subtract(near["centroid_lps"], t["centroid_lps"])) < 15.0:
            matched += 1
    resolvable = ct_slice_mm <= SCREW_RESOLVING_SLICE_MM
    truth_ext = {t["number"] for t in truth_screws if "extruded" in (t.get("flags") or [])}
    found_ext = {c.get("number") for c in found_screws if "extruded" in (c.get("flags") or [])}
    implant_checks = [
        _check("lateral plate screws recovered and numbered from CT", f"{len(truth_screws)} screws",
               f"{len(found_screws)} found, {matched} matched with the right number",
               matched == len(truth_screws) and len(found_screws) == len(truth_screws)),
        _check("extruded plate screws flagged", f"screws {sorted(truth_ext)}", f"screws {sorted(found_ext)}",
               truth_ext == found_ext),
        *(_screw_flag_checks(flag, components, findings.get("implants", [])) for flag in ("bent", "extruded")),
    ]
    for c in implant_checks:
        if not resolvable:
            c["passed"] = None
            c["found"] += f" (not assessed: {ct_slice_mm:g}-mm CT slices do not resolve 5-mm screws)"
    return checks + implant_checks + _displaced_checks(components, findings.get("implants", []))


#: A found screw stands for the truth screw whose centroid is nearest, within this distance (mm).
SCREW_MATCH_MM = 15.0


def _screw_flag_checks(flag: str, components: list[dict], found: list[dict]) -> dict[str, Any]:
    """Every screw of the truth (plate, nail and hip screws) carrying ``flag`` is flagged so from the CT,
    and no other screw is.

    Found screws are matched to truth screws by centroid (the nearest truth screw within
    :data:`SCREW_MATCH_MM`), so a numbering slip elsewhere does not hide or fake a flag, else by name (a hip
    screw, whose barrel the truth counts with the plate, has its centroid 20 mm off); a flagged screw that
    matches no truth screw (a fragment) counts as a false flag.
    """
    truth = [c for c in components if c.get("kind") == "screw" and c.get("centroid_lps")]
    screws = [c for c in found if c.get("kind") == "screw"]
    expected = sorted(c["name"] for c in truth if flag in (c.get("flags") or []))
    hits, extra = set(), []
    for c in screws:
        if flag not in (c.get("flags") or []):
            continue
        near = min(truth, key=lambda t: np.linalg.norm(np.subtract(t["centroid_lps"], c["centroid_lps"])), default=None)
        if near is None or np.linalg.norm(np.subtract(near["centroid_lps"], c["centroid_lps"])) > SCREW_MATCH_MM:
            near = next((t for t in truth if t["name"] == c["name"]), None)
        if near is None:
            extra.append(f"{c['name']} (no truth screw within {SCREW_MATCH_MM:g} mm or of that name)")
        else:
            hits.add(near["name"])
    found_txt = ", ".join(sorted(hits) + extra) or "none flagged"
    return _check(f"{flag} screws flagged (all screws)", ", ".join(expected) or f"no {flag} screw", found_txt,
                  sorted(hits) == expected and not extra)


def _displaced_checks(components: list[dict], found: list[dict]) -> list[dict[str, Any]]:
    """Plates the truth marks ``displaced`` flagged so from the CT, and no other plate flagged (matched by
    name). No check when the truth has no plates."""
    truth_plates = [c for c in components if c.get("kind") == "plate"]
    if not truth_plates:
        return []
    truth_disp = sorted(c["name"] for c in truth_plates if "displaced" in (c.get("flags") or []))
    found_plates = [c for c in found if c.get("kind") == "plate"]
    found_disp = sorted(c["name"] for c in found_plates if "displaced" in (c.get("flags") or []))
    gaps = ", ".join(f"{c['name']} {c['standoff_mm']:.1f} mm" for c in found_plates if c.get("standoff_mm") is not None)
    return [_check("displaced plate flagged from CT", ", ".join(truth_disp) or "no displaced plate",
                   (", ".join(found_disp) or "none flagged") + (f" (gap to bone: {gaps})" if gaps else ""),
                   truth_disp == found_disp)]


def write_truth_check(study: Study) -> dict[str, Any]:
    findings = json.loads(study.path("findings.json").read_text())
    components = json.loads((study.truth / "components.json").read_text())["components"]
    ct = study.stage_parameters("ct_simulate") or {}
    slice_mm = float((ct.get("geometry") or {}).get("slice_mm", 1.0))
    checks = truth_checks(findings, components, ct_slice_mm=slice_mm)
    doc = {"checks": checks, "passed": all(c["passed"] is not False for c in checks)}
    write_text(study.path("truth_check.json"), json.dumps(doc, indent=1))
    return doc
