"""The conclusion paragraph, written from the findings (not from the phantom's truth)."""

from __future__ import annotations


def _join(items: list[str]) -> str:
    items = list(dict.fromkeys(items))
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _foci(n: int) -> str:
    return f"{n} focus" if n == 1 else f"{n} foci"


def conclusion_paragraphs(doc: dict) -> list[str]:
    """Sentences a reader would write: the hottest site, the involved components, tracts, the other side."""
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
