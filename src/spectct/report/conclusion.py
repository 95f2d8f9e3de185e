"""The conclusion paragraph, written from the findings (not from the phantom's truth)."""

from __future__ import annotations


def _join(items: list[str]) -> str:
    items = list(dict.fromkeys(items))
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _foci(n: int) -> str:
    return f"{n} focus" if n == 1 else f"{n} foci"


def _neutral_paragraphs(doc: dict) -> list[str]:
    """A study that is not a labelled-leukocyte scan: where the uptake is, no infection reading."""
    tracer = doc.get("tracer") or {}
    name = tracer.get("radiopharmaceutical") or tracer.get("radionuclide") or "this tracer"
    findings = doc.get("findings") or []
    focal = sorted((f for f in findings if f.get("classification") == "focal uptake"),
                   key=lambda f: -f.get("peak_bq_ml", 0.0))
    out = [f"Study read as a {name} scan, not a labelled-leukocyte scan: uptake is described and not "
           "interpreted as infection."]
    if not findings:
        return out + ["No focus above background was found."]
    if focal:
        top = focal[0]
        where = top.get("nearest_implant") if (top.get("nearest_implant_mm") or 1e9) <= 15 else None
        where = where or f"{top.get('side')} {top.get('structure')}"
        out.append(f"Focal uptake at {len(focal)} site{'s' if len(focal) > 1 else ''}, the most intense at the {where} "
                   f"(peak {top.get('peak_bq_ml', 0) / 1000:.1f} kBq/mL, {top.get('ratio_to_background') or 0:.0f}× "
                   "background).")
    sym = [f for f in findings if f.get("classification") == "symmetric uptake"]
    if sym:
        out.append(f"{_foci(len(sym))} symmetric with the other side.")
    return out


def conclusion_paragraphs(doc: dict) -> list[str]:
    """Sentences a reader would write: the hottest site, the involved components, tracts, the other side
    (for a study that is not a leukocyte scan, a neutral description: see docs/findings.md)."""
    if (doc.get("tracer") or {}).get("rules") == "neutral":
        return _neutral_paragraphs(doc)
    findings = doc.get("findings") or []
    infected = [f for f in findings if f.get("classification") == "infection likely"]
    marrow = [f for f in findings if f.get("classification") == "physiological marrow"]
    unsure = [f for f in findings if f.get("classification") == "indeterminate"]
    out: list[str] = []
    if not findings:
        return ["No focus of leukocyte accumulation above background was found."]
    if infected:
        hottest = max(infected, key=lambda f: f.get("peak_bq_ml", 0.0))
        where = hottest.get("nearest_implant") or f"{hottest.get('side')} {hottest.get('structure')}"
        out.append(
            f"Abnormal accumulation of labelled leukocytes in {len(infected)} site{'s' if len(infected) > 1 else ''} "
            "suggests active infection, "
            f"with the maximum uptake localising to the {where} "
            f"(peak {hottest.get('peak_bq_ml', 0) / 1000:.1f} kBq/mL, {hottest.get('ratio_to_background') or 0:.0f}× "
            "background).")
        parts = [f["nearest_implant"] for f in infected if f.get("nearest_implant") and
                 (f.get("nearest_implant_mm") or 0) <= 15]
        if parts:
            out.append(f"Implant components involved: {_join(parts)}.")
        tracts = [f for f in infected if f.get("kind") == "tract" and (f.get("tract") or {}).get("reaches_skin")]
        for t in tracts:
            start = t["tract"].get("start_near") or "the deep collection"
            end = t["tract"].get("start_near_end")
            start = f"the {end} of the {start}" if end else f"the {start}"
            out.append(f"A sinus tract runs from {start} to the skin of the {t.get('side')} thigh "
                       f"({t['tract'].get('length_mm', 0):.0f} mm), consistent with draining exudate.")
    sides = {f.get("side") for f in infected}
    for side in ("left", "right"):
        if side not in sides:
            out.append(f"No abnormal leukocyte accumulation in the {side} femur or hip.")
    if marrow:
        out.append(f"{_foci(len(marrow))} read as physiological marrow uptake (location and symmetry).")
    if unsure:
        verb = "remains" if len(unsure) == 1 else "remain"
        out.append(f"{_foci(len(unsure))} {verb} indeterminate; a late (20–24 h) acquisition or bone-marrow "
                   "imaging would separate marrow from infection (EANM guideline, Signore et al. 2018).")
    return out
