"""Localization: each hot spot against the CT anatomy and the implant components.

The maximum of a focus is attributed to the implant component nearest to it (distance from the
refined maximum to the component's voxels, in mm). When the nearest is a plate or nail, a screw wins
if it is within ``prefer_screw_mm`` of that distance — measured to the screw's voxels or to its axis
extended 12 mm beyond the head through the plate hole — because the screw is the more specific
answer at a SPECT resolution of ≈ 10 mm (a focus at a screw head is as near the plate as the screw).

A maximum that the CT anatomy places in the pelvis but that lies within ``at_mm`` of a femoral implant
(an intramedullary nail and its locking screws, a dynamic hip screw and its plate) is in the femur: those implants sit in
the femur's canal, neck and head, which the anatomy's femur extent (cut at the lowest bone crossing the
midline, see :mod:`spectct.analysis.anatomy`) leaves to the pelvis when the femur touches it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from spectct.analysis.anatomy import Anatomy
from spectct.analysis.findings import Finding, TractInfo
from spectct.analysis.hotspots import Hotspot
from spectct.analysis.implants import ImplantComponent


class _ImplantIndex:
    """KD-trees of the implant components' voxel positions."""

    def __init__(self, implants: list[ImplantComponent], max_points: int = 20000):
        self.items = []
        for c in implants:
            pts = c.points_lps
            if len(pts) == 0:
                continue
            step = max(1, len(pts) // max_points)
            self.items.append((c, cKDTree(pts[::step])))

    def distances(self, xyz: np.ndarray) -> list[tuple[float, ImplantComponent]]:
        """(distance in mm from the nearest of ``xyz`` points, component), nearest first."""
        xyz = np.atleast_2d(xyz)
        out = [(float(tree.query(xyz, k=1)[0].min()), c) for c, tree in self.items]
        return sorted(out, key=lambda t: t[0])

    def nearest(self, xyz: np.ndarray, prefer_screw_mm: float) -> tuple[ImplantComponent | None, float | None]:
        ranked = self.distances(xyz)
        if not ranked:
            return None, None
        d0, c0 = ranked[0]
        if c0.kind != "screw":
            best = None
            for d, c in ranked[1:]:
                if c.kind != "screw":
                    continue
                track = _screw_track_distance(np.asarray(xyz, float).reshape(3), c)
                score = min(d, track)
                if score <= d0 + prefer_screw_mm and (best is None or score < best[0]):
                    best = (score, d, c)
            if best is not None:
                return best[2], best[1]
        return c0, d0


def _screw_track_distance(p: np.ndarray, screw: ImplantComponent, head_extension_mm: float = 12.0) -> float:
    """Distance from ``p`` to a screw's axis segment, extended beyond its head through the plate it holds
    (the part of a screw inside its plate's hole is counted with the plate by the decomposition)."""
    head, tip = (np.asarray(e, float) for e in screw.end_points_lps)
    axis = tip - head
    n = np.linalg.norm(axis)
    if n == 0:
        return float(np.linalg.norm(p - head))
    axis /= n
    start = head - axis * head_extension_mm
    t = np.clip((p - start) @ axis, 0.0, n + head_extension_mm)
    return float(np.linalg.norm(p - (start + t * axis)))


def localize(
    hotspots: list[Hotspot],
    implants: list[ImplantComponent],
    anatomy: Anatomy | None,
    nearby_mm: float = 10.0,
    prefer_screw_mm: float = 4.0,
    end_mm: float = 20.0,
    at_mm: float = 15.0,
    along_deg: float = 30.0,
) -> list[Finding]:
    """Turn hot spots into findings: anatomy label, nearest implant with its distance, tract end points.

    Parameters
    ----------
    hotspots : foci from :func:`spectct.analysis.hotspots.detect_hotspots`.
    implants : components from :func:`spectct.analysis.implants.decompose_implants` (may be empty).
    anatomy : anatomy from the CT (None: sides from the SPECT centre, no tissue labels).
    nearby_mm : components within this distance of any voxel of the focus are listed as nearby.
    prefer_screw_mm : a screw this much farther than the nearest carrier still gets the attribution.
    end_mm : a maximum this close to an end of a nail or plate (and within ``at_mm`` of it) is "at its
        upper/lower end".
    along_deg : an elongated focus within ``nearby_mm`` of a nail or plate and this parallel to it is uptake
        along that implant (a focus), not a tract.

    Returns
    -------
    list of Finding (classification left "indeterminate"; see :mod:`spectct.analysis.classify`).
    """
    index = _ImplantIndex(implants)
    findings = []
    for h in hotspots:
        peak = np.asarray(h.peak_lps)
        if anatomy is not None:
            side = anatomy.side_of(peak[0])
            structure, third = anatomy.structure_at(peak)
            tissue = str(anatomy.tissue_at(peak)[0])
        else:
            side, structure, third, tissue = (
                ("right" if peak[0] < 0 else "left"),
                "soft tissue",
                None,
                "soft tissue",
            )
        comp, dist = index.nearest(peak, prefer_screw_mm)
        if structure == "pelvis" and dist is not None and dist <= at_mm and _femoral(comp):
            structure = "femur"
        nearby = [c.name for d, c in index.distances(h.points_lps) if d <= nearby_mm] if index.items else []
        tract, along = None, None
        if h.elongated and not (h.shape == "tract" and h.reaches_skin):
            along = _along_carrier(h, index, nearby_mm, along_deg)
        kind = "focus" if along is not None else h.shape
        if kind == "tract" and h.end_points_lps is not None:
            tract = _tract_info(h, index)
        part = None
        if comp is not None and comp.kind != "screw" and dist is not None and dist <= at_mm:
            prox, distal = (np.asarray(p) for p in comp.end_points_lps)
            if np.linalg.norm(peak - distal) <= end_mm:
                part = "lower end"
            elif np.linalg.norm(peak - prox) <= end_mm:
                part = "upper end"
        f = Finding(
            id=h.id,
            kind=kind,
            peak_lps=h.peak_lps,
            peak_bq_ml=h.peak_bq_ml,
            mean_bq_ml=h.mean_bq_ml,
            volume_ml=h.volume_ml,
            ratio_to_background=h.ratio_to_background,
            ratio_to_contralateral=h.ratio_to_contralateral,
            side=side,
            structure=structure,
            third=third,
            tissue=tissue,
            fraction_in_bone=h.fraction_in_bone,
            nearest_implant=comp.name if comp is not None else None,
            nearest_implant_mm=dist,
            nearest_implant_part=part,
            along_implant=along,
            implants_nearby=nearby,
            tract=tract,
        )
        f.description = describe(f)
        findings.append(f)
    return findings


def _femoral(c: ImplantComponent) -> bool:
    """An implant anchored in the femur (names from :mod:`spectct.analysis.implants`): an intramedullary
    nail and its locking screws, a dynamic hip screw and its plate."""
    names = (c.name, c.carrier or "")
    return any("intramedullary nail" in n or "dynamic hip screw" in n for n in names) or (
        c.kind == "screw" and " nail " in f" {c.name} "
    )


def _along_carrier(h: Hotspot, index: _ImplantIndex, nearby_mm: float, along_deg: float) -> str | None:
    """The nail or plate an elongated focus lies along (near it and parallel to it), if any."""
    axis = np.asarray(h.axis)
    cos_min = np.cos(np.radians(along_deg))
    for d, c in index.distances(h.points_lps):
        if d > nearby_mm:
            break
        if c.kind in ("nail", "plate") and abs(float(np.dot(axis, c.axis))) >= cos_min:
            return c.name
    return None


def _tract_info(h: Hotspot, index: _ImplantIndex) -> TractInfo:
    start, end = (np.asarray(p) for p in h.end_points_lps)
    info = TractInfo(
        start_lps=h.end_points_lps[0],
        end_lps=h.end_points_lps[1],
        length_mm=float(np.linalg.norm(end - start)),
        reaches_skin=h.reaches_skin,
    )
    if index.items:
        d, c = index.distances(start)[0]
        info.start_near, info.start_near_mm = c.name, d
        if c.kind != "screw":
            prox, dist = (np.asarray(p) for p in c.end_points_lps)
            info.start_near_end = "upper end" if np.linalg.norm(start - prox) < np.linalg.norm(start - dist) else "lower end"
        d, c = index.distances(end)[0]
        info.end_near, info.end_near_mm = c.name, d
    return info


def describe(f: Finding) -> str:
    """One sentence in the reader's words, e.g. "focus, maximum at right lateral plate screw 2 (1 mm)"."""
    where = f"{f.side} {f.structure}" + (f", {f.third} third" if f.third else "")
    if f.kind == "tract" and f.tract is not None:
        t = f.tract
        if t.start_near is not None and t.start_near_mm is not None and t.start_near_mm <= 20.0:
            origin = f"from the {t.start_near_end + ' of the ' if t.start_near_end else ''}{t.start_near}"
        else:
            origin = f"from the {where}"
        goal = "to the skin" if t.reaches_skin else "into the soft tissue"
        return f"tract {origin} {goal} ({t.length_mm:.0f} mm)"
    text = f"focus in the {where} ({f.tissue})"
    if f.along_implant is not None:
        text = f"uptake along the {f.along_implant} ({where})"
    if f.nearest_implant is not None and f.nearest_implant_mm is not None and f.nearest_implant_mm <= 15.0:
        at = f"the {f.nearest_implant_part} of the {f.nearest_implant}" if f.nearest_implant_part else f.nearest_implant
        text += f", maximum at {at} ({f.nearest_implant_mm:.0f} mm)"
    others = [n for n in f.implants_nearby if n not in (f.nearest_implant, f.along_implant)]
    if others:
        text += f"; extends along {', '.join(others[:4])}" + (" …" if len(others) > 4 else "")
    return text
