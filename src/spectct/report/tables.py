"""Rows of the report's tables, from protocol.json and findings.json (schema: docs/findings.md)."""

from __future__ import annotations

from typing import Any

_CSS = {"infection likely": "infection", "physiological marrow": "marrow", "indeterminate": "indeterminate",
        "focal uptake": "indeterminate", "symmetric uptake": "marrow"}


def _stage(protocol: dict, name: str) -> dict[str, Any]:
    return (protocol.get("stages", {}).get(name) or {}).get("parameters", {}) or {}


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = f"{value:.{digits}g}"
    return f"{value} {unit}".strip()


def protocol_rows(protocol: dict) -> dict[str, list[tuple[str, str]]]:
    """The examination protocol as (label, value) rows for SPECT and CT, from what the stages recorded."""
    acq = _stage(protocol, "spect_simulate") or _stage(protocol, "spect_input")
    rec = _stage(protocol, "spect_recon")
    ct = _stage(protocol, "ct_simulate") or _stage(protocol, "ct_input")
    mar = _stage(protocol, "ct_mar")
    spect = [
        ("Radiopharmaceutical", _fmt(acq.get("radiopharmaceutical"))),
        ("Injected activity", _fmt(acq.get("injected_activity_mbq"), "MBq")),
        ("Delay after injection", _fmt(acq.get("delay_h"), "h")),
        ("Detectors × stops", f"{_fmt(acq.get('heads'))} × {_fmt(acq.get('stops_per_head'))}"),
        ("Time per stop", _fmt(acq.get("time_per_stop_s"), "s")),
        ("Matrix / pixel", f"{_fmt(acq.get('matrix'))} × {_fmt(acq.get('matrix'))} / {_fmt(acq.get('pixel_mm'), 'mm')}"),
        ("Collimator", _fmt(acq.get("collimator"))),
        ("Energy windows", _fmt(acq.get("windows"))),
        ("Reconstruction", f"OSEM3D {_fmt(rec.get('iterations'))} iterations × {_fmt(rec.get('subsets'))} subsets"),
        ("Corrections", _fmt(rec.get("corrections"))),
        ("Post-filter", _fmt(rec.get("postfilter_fwhm_mm"), "mm FWHM")),
    ]
    geo = ct.get("geometry") or ct
    ct_rows = [
        ("Tube voltage", _fmt(geo.get("kvp"), "kV")),
        ("Tube current–time", _fmt(geo.get("mas"), "mAs")),
        ("Collimation", _fmt(ct.get("collimation") or ("32 × 0.7 mm (modelled as axial slices)" if geo else None))),
        ("Slice thickness", _fmt(geo.get("slice_mm"), "mm")),
        ("Matrix / pixel", f"{_fmt(ct.get('n_pixels'))} / {_fmt(ct.get('pixel_mm'), 'mm')}"),
        ("Views per rotation × channels", f"{_fmt(geo.get('n_views'))} × {_fmt(geo.get('n_channels'))}"),
        ("Reconstruction kernel", _fmt(ct.get("filter"))),
        ("Metal artifact reduction", _mar_label(mar.get("method"))),
    ]
    return {"spect": spect, "ct": ct_rows}


#: How the report names each MAR method (images are always given with and without MAR).
MAR_LABELS = {"li": "linear interpolation (LI-MAR)", "nmar": "normalized MAR (NMAR, Meyer 2010)",
              "imar": "iMAR-like: iterative NMAR + frequency split (Meyer 2010, 2012)", "none": "none"}


def _mar_label(method) -> str:
    if not method:
        return "—"
    return f"{MAR_LABELS.get(str(method), str(method))}; images shown with and without MAR"


def _location(f: dict) -> str:
    text = f"{f.get('side', '')} {f.get('structure', '')}".strip()
    if f.get("third"):
        text += f", {f['third']} third"
    if f.get("tissue"):
        text += f" ({f['tissue']})"
    return text


def finding_rows(doc: dict) -> list[dict[str, Any]]:
    """One row per finding, hottest first (the order of findings.json)."""
    rows = []
    for f in sorted(doc.get("findings", []) or [], key=lambda f: -(f.get("peak_bq_ml") or 0.0)):
        kind = f.get("kind", "focus")
        tract = f.get("tract")
        if kind == "tract" and tract:
            kind = f"tract {tract.get('length_mm', 0):.0f} mm" + (", reaches skin" if tract.get("reaches_skin") else "")
        rows.append({
            "id": f.get("id"),
            "location": _location(f),
            "component": f.get("nearest_implant") or "—",
            "distance": "—" if f.get("nearest_implant_mm") is None else f"{f['nearest_implant_mm']:.0f}",
            "peak": "—" if f.get("peak_bq_ml") is None else f"{f['peak_bq_ml'] / 1000:.1f}",
            "ratio": "—" if f.get("ratio_to_background") is None else f"{f['ratio_to_background']:.0f}",
            "volume": _fmt(f.get("volume_ml"), digits=3),
            "kind": kind,
            "classification": f.get("classification", "indeterminate"),
            "css": _CSS.get(f.get("classification", ""), "indeterminate"),
            "reason": f.get("reason", ""),
        })
    return rows


def implant_rows(doc: dict) -> list[dict[str, str]]:
    return [{"name": c.get("name", "?"), "kind": c.get("kind", "?"), "length": _fmt(c.get("length_mm"), digits=3),
             "flags": ", ".join(c.get("flags") or []) or "—"} for c in doc.get("implants", []) or []]
