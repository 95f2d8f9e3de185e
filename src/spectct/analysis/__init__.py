"""Reading the study: anatomy and implants from CT, hot spots from SPECT, their localization and meaning.

:func:`analyze_study` is the stage the pipeline calls; it reads only the CT and SPECT volumes (never the
phantom's truth) and returns the findings document (also written as ``findings.json``).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from spectct.analysis.anatomy import METAL_HU, Anatomy, segment_anatomy
from spectct.analysis.classify import classify
from spectct.analysis.dualtime import compare_dual_time, new_late_foci
from spectct.analysis.findings import (
    SCHEMA_ID,
    SCHEMA_VERSION,
    Finding,
    findings_table,
    validate_findings,
    write_findings,
)
from spectct.analysis.hotspots import SMOOTH_MM, background_statistics, body_mask_on, detect_hotspots
from spectct.analysis.implants import ImplantComponent, decompose_implants, implants_to_json
from spectct.analysis.localize import localize
from spectct.analysis.tracer import TracerReading, reading_rules
from spectct.errors import GeometryError, InputError
from spectct.progress import SILENT, Reporter
from spectct.volume import Volume

__all__ = [
    "analyze_study",
    "findings_table",
    "validate_findings",
    "decompose_implants",
    "detect_hotspots",
    "localize",
    "classify",
    "compare_dual_time",
    "segment_anatomy",
    "reading_rules",
]

HOUR_S = 3600.0


def screw_preference_mm(spect: Volume, floor_mm: float = 4.0) -> float:
    """How much farther than the nearest carrier a screw may be and still take a focus's attribution.

    A maximum found on the SPECT grid is uncertain by up to half a voxel diagonal, so a focus at a screw
    head can land that much nearer the plate than the screw: half the SPECT voxel diagonal, at least
    ``floor_mm`` (4.2 mm on the case's 4.8-mm grid, 8.3 mm on 9.6-mm voxels).
    """
    return max(floor_mm, 0.5 * float(np.linalg.norm(spect.spacing)))


def analyze_study(
    spect: Volume,
    ct: Volume,
    late_spect: Volume | None = None,
    out_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    reporter: Reporter | None = None,
    early_time_s: float = 3 * HOUR_S,
    late_time_s: float = 20 * HOUR_S,
    radionuclide: str | None = None,
    late_decay_corrected: bool = False,
    metal_threshold_hu: float = METAL_HU,
    k: float = 5.0,
    figures: bool = True,
    tracer: str | None = None,
    smooth_mm: float = SMOOTH_MM,
) -> dict:
    """Read a SPECT/CT study: implants, foci, their localization, classification and dual-time change.

    Parameters
    ----------
    spect : activity concentration (Bq/mL) in patient coordinates (any grid).
    ct : CT in HU in the same frame of reference (any grid).
    late_spect : optional late acquisition (e.g. 20 h) for the EANM dual-time comparison.
    out_dir : when given, ``findings.json`` is written there atomically (after everything succeeded).
    device : torch device.
    reporter : progress messages.
    early_time_s, late_time_s : acquisition times after injection for the decay correction.
    radionuclide : tracer radionuclide (decay correction of the late image; Tc-99m when None). A known
        radionuclide that does not label leukocytes (e.g. Lu-177) turns the infection rules off.
    late_decay_corrected : the late image is already decay-corrected to the early time.
    metal_threshold_hu : metal threshold of the implant decomposition.
    k : hot threshold = background median + k · 1.4826 · MAD.
    figures : with ``out_dir``, also write ``figures/`` (SPECT MIP, fused planes through each finding).
    tracer : the study's radiopharmaceutical as stated (DICOM, protocol or the user), e.g. "99mTc-HMPAO
        leukocytes" or "177Lu-PSMA-617". Labelled leukocytes (or not stated, with a leukocyte radionuclide)
        → marrow-versus-infection rules; anything else → neutral "focal uptake" / "symmetric uptake"
        classes without an infection claim (:func:`spectct.analysis.tracer.reading_rules`).
    smooth_mm : σ (mm) of the Gaussian detection filter of the hot-spot search (at least one voxel;
        :func:`spectct.analysis.hotspots.detection_image`). The default suits count-poor leukocyte SPECT on
        any grid; a low-noise image may be read with a smaller one (down to its voxel) to keep thin tracts.

    Returns
    -------
    dict : the findings document (schema in docs/findings.md).

    Raises
    ------
    GeometryError : SPECT and CT do not overlap, or share no body.
    InputError : empty SPECT, wrong units.
    """
    reporter = reporter or SILENT
    _check_inputs(spect, ct, late_spect)
    notes: list[str] = []
    rules = reading_rules(tracer, radionuclide)
    nuclide = radionuclide or "Tc-99m"
    if not rules.infection_rules or rules.source == "default":
        notes.append(rules.reason)
    if spect.frame_of_reference and ct.frame_of_reference and spect.frame_of_reference != ct.frame_of_reference:
        notes.append("SPECT and CT carry different frames of reference; read as if registered (register first)")
    reporter.info("segmenting anatomy from CT")
    anatomy = segment_anatomy(ct, metal_threshold_hu=metal_threshold_hu, device=device)
    reporter.info("decomposing implants")
    implants = decompose_implants(
        ct, metal_threshold_hu=metal_threshold_hu, anatomy=anatomy, reporter=reporter, device=device
    )
    if not implants:
        notes.append("no metal in the CT: foci are not attributed to implants")
    body = body_mask_on(spect, anatomy, device=device)
    if body.sum() < 10:
        raise GeometryError("SPECT field of view contains no body of the CT: the two volumes do not overlap")
    background = background_statistics(spect, body, k=k, smooth_mm=smooth_mm, device=device)
    reporter.info("detecting hot spots")
    hotspots = detect_hotspots(spect, anatomy=anatomy, background=background, smooth_mm=smooth_mm, device=device)
    prefer_screw_mm = screw_preference_mm(spect)
    findings = localize(hotspots, implants, anatomy, prefer_screw_mm=prefer_screw_mm)
    dual_doc = None
    if late_spect is not None:
        reporter.info("comparing early and late SPECT")
        changes = compare_dual_time(
            hotspots,
            spect,
            late_spect,
            early_time_s,
            late_time_s,
            nuclide,
            late_decay_corrected=late_decay_corrected,
            device=device,
        )
        by_id = {c.hotspot_id: c for c in changes}
        for f in findings:
            if f.id in by_id:
                f.dual_time = by_id[f.id].to_json()
                if not rules.infection_rules:
                    f.dual_time["infection"] = None  # the EANM reading of a trend holds for leukocytes only
        new, decay = new_late_foci(
            hotspots,
            spect,
            late_spect,
            early_time_s,
            late_time_s,
            nuclide,
            late_decay_corrected=late_decay_corrected,
            anatomy=anatomy,
            background=background,
            smooth_mm=smooth_mm,
            device=device,
        )
        for h in new:
            h.id = len(findings) + 1
            f = localize([h], implants, anatomy, prefer_screw_mm=prefer_screw_mm)[0]
            f.dual_time = {
                "early_time_s": early_time_s,
                "late_time_s": late_time_s,
                "decay_factor": decay,
                "early_peak_bq_ml": 0.0,
                "late_peak_bq_ml": h.peak_bq_ml,
                "early_volume_ml": 0.0,
                "late_volume_ml": h.volume_ml,
                "intensity_change": None,
                "size_change": None,
                "trend": "increasing",
                "infection": True if rules.infection_rules else None,
                "new_on_late": True,
            }
            f.description = "new on the late image: " + f.description
            findings.append(f)
        dual_doc = {
            "early_time_s": early_time_s,
            "late_time_s": late_time_s,
            "radionuclide": nuclide,
            "late_decay_corrected": late_decay_corrected,
            "method": "EANM WBC guideline: increase in intensity or size over time means infection"
            if rules.infection_rules
            else "trend reported only: the EANM rule applies to labelled leukocytes",
        }
    for f in findings:
        classify(f, tracer=rules)
    if not hotspots:
        notes.append("no focus above the background threshold")
    regions = femur_regions(spect, anatomy, implants)
    doc = build_document(
        findings, implants, anatomy, background.to_json(), spect, ct, late_spect, dual_doc, notes, tracer=rules
    )
    doc["regions"] = regions
    doc["summary"] += summarize_regions(regions, findings)
    validate_findings(doc)
    if out_dir is not None:
        out = Path(out_dir)
        if figures:
            before = len(notes)
            _write_figures(out, spect, ct, findings, reporter, notes, device)
            if len(notes) != before:
                doc["notes"] = list(notes)
        write_findings(doc, out / "findings.json")
    return doc


def build_document(
    findings: list[Finding],
    implants: list[ImplantComponent],
    anatomy: Anatomy | None,
    background: dict,
    spect: Volume,
    ct: Volume | None,
    late_spect: Volume | None,
    dual_time: dict | None,
    notes: list[str],
    tracer: TracerReading | None = None,
) -> dict:
    """Assemble the findings document (see docs/findings.md); ``tracer`` defaults to the leukocyte reading of
    a study whose radiopharmaceutical was not stated."""
    tracer = tracer or reading_rules()
    from spectct import __version__

    femurs = (
        {}
        if anatomy is None
        else {s: {"z_proximal_mm": f.z_proximal, "z_distal_mm": f.z_distal} for s, f in anatomy.femurs.items()}
    )
    doc = {
        "schema": SCHEMA_ID,
        "version": SCHEMA_VERSION,
        "software": {"name": "spectct", "version": str(__version__)},
        "inputs": {"spect": _grid(spect), "ct": _grid(ct), "late_spect": _grid(late_spect)},
        "background": background,
        "anatomy": {
            "midline_x_mm": anatomy.midline_x if anatomy is not None else float(spect.center_world[0]),
            "femurs": femurs,
        },
        "implants": implants_to_json(implants)["components"],
        "findings": [f.to_json() for f in findings],
        "dual_time": dual_time,
        "tracer": tracer.to_json(),
        "summary": summarize(findings, implants, tracer=tracer),
        "notes": list(notes),
    }
    from spectct.analysis.findings import _clean

    return _clean(doc)


def summarize(
    findings: list[Finding],
    implants: list[ImplantComponent],
    implant_mm: float = 15.0,
    tracer: TracerReading | None = None,
) -> list[str]:
    """Reader's sentences: the hottest infection focus, tracts, other implant foci, sides without infection,
    marrow, implant flags (for a study that is not a leukocyte scan: the focal uptake, without infection
    words)."""
    if tracer is not None and not tracer.infection_rules:
        return _summarize_neutral(findings, implants, implant_mm, tracer)
    out = []
    infected = [f for f in findings if f.classification == "infection likely"]
    foci = sorted((f for f in infected if f.kind == "focus"), key=lambda f: -f.peak_bq_ml)

    def at(f: Finding) -> str:
        if f.nearest_implant is None or f.nearest_implant_mm is None or f.nearest_implant_mm > implant_mm:
            return f"in the {f.side} {f.structure}" + (f" ({f.third} third)" if f.third else "")
        part = f"the {f.nearest_implant_part} of the " if f.nearest_implant_part else ""
        return f"at {part}{f.nearest_implant}"

    for rank, f in enumerate(foci):
        along = f"uptake along the {f.along_implant}, " if f.along_implant else ""
        lead = "Maximum infection uptake" if rank == 0 else "Infection uptake"
        out.append(f"{lead}: {along}maximum {at(f)} (finding {f.id}, {f.peak_bq_ml:.3g} Bq/mL).")
    for f in infected:
        if f.kind == "tract":
            out.append(f"Finding {f.id}: {f.description}.")
    for side in ("right", "left"):
        if not any(f.side == side for f in infected):
            out.append(f"No abnormal (infection) uptake on the {side}.")
    marrow = [f for f in findings if f.classification == "physiological marrow"]
    if marrow:
        where = sorted({f"{f.side} {f.structure}" for f in marrow})
        out.append(f"Physiological marrow uptake: {', '.join(where)}.")
    for f in findings:
        if f.classification == "indeterminate":
            out.append(f"Finding {f.id} indeterminate: {f.reason}.")
    out += _implant_sentences(implants)
    return out


def _implant_sentences(implants: list[ImplantComponent]) -> list[str]:
    out = []
    for c in implants:
        if c.flags:
            gap = ""
            if "displaced" in c.flags and c.standoff_mm is not None:
                gap = f" ({c.standoff_mm:.0f} mm off the bone" + (f" at its {c.standoff_end}" if c.standoff_end else "")
                gap += ")"
            out.append(f"{c.name}: {', '.join(c.flags)}{gap}.")
    return out


def _summarize_neutral(
    findings: list[Finding], implants: list[ImplantComponent], implant_mm: float, tracer: TracerReading
) -> list[str]:
    out = [f"Read without infection rules: {tracer.reason}."]

    def at(f: Finding) -> str:
        where = f"the {f.side} {f.structure}" + (f" ({f.third} third)" if f.third else "")
        if f.nearest_implant is not None and f.nearest_implant_mm is not None and f.nearest_implant_mm <= implant_mm:
            return f"{where}, at the {f.nearest_implant}"
        return where

    focal = sorted((f for f in findings if f.classification == "focal uptake"), key=lambda f: -f.peak_bq_ml)
    for rank, f in enumerate(focal):
        lead = "Most intense focal uptake" if rank == 0 else "Focal uptake"
        kind = "tract" if f.kind == "tract" else "focus"
        out.append(f"{lead}: {kind} in {at(f)} (finding {f.id}, {f.peak_bq_ml:.3g} Bq/mL).")
    sym = [f for f in findings if f.classification == "symmetric uptake"]
    if sym:
        out.append(f"Symmetric uptake: {', '.join(sorted({f'{f.side} {f.structure}' for f in sym}))}.")
    out += _implant_sentences(implants)
    return out


def femur_regions(spect: Volume, anatomy: Anatomy, implants: list[ImplantComponent], asymmetry: float = 1.5) -> list[dict]:
    """Mean SPECT in each third of each femur (bone and marrow cavity, as found in the CT) and its ratio to
    the same third of the other femur: diffuse uptake along a nail shows here even without a focus."""
    if not anatomy.femurs:
        return []
    labels = anatomy.on_grid(spect, "bone_labels")
    z = spect.index_to_world(np.indices(spect.shape).reshape(3, -1).T)[:, 2].reshape(spect.shape)
    means: dict[tuple[str, str], float] = {}
    for side, femur in anatomy.femurs.items():
        mask = labels == femur.label
        thirds = np.array([femur.third(v) or "" for v in z[mask]])
        values = spect.data[mask]
        for third in ("proximal", "middle", "distal"):
            sel = thirds == third
            if sel.sum() >= 3:
                means[(side, third)] = float(values[sel].mean())
    nails = [c for c in implants if c.kind in ("nail", "plate")]
    out = []
    for (side, third), mean in means.items():
        other = means.get(("left" if side == "right" else "right", third))
        ratio = mean / other if other else None
        femur = anatomy.femurs[side]
        inside = [
            c.name
            for c in nails
            if c.side == side and femur.third(c.centroid_lps[2]) is not None and _spans_third(c, femur, third)
        ]
        out.append(
            {
                "side": side,
                "structure": "femur",
                "third": third,
                "mean_bq_ml": mean,
                "ratio_to_contralateral": ratio,
                "implants": inside,
                "asymmetric": bool(ratio is not None and ratio >= asymmetry),
            }
        )
    return out


def _spans_third(c: ImplantComponent, femur, third: str) -> bool:
    zs = [p[2] for p in c.end_points_lps]
    lo, hi = min(zs), max(zs)
    return any(femur.third(z) == third for z in np.linspace(lo, hi, 9))


def summarize_regions(regions: list[dict], findings: list[Finding]) -> list[str]:
    """A sentence per femur third whose uptake exceeds the other side's (diffuse uptake along implants)."""
    out = []
    for r in regions:
        if r["asymmetric"]:
            other = "left" if r["side"] == "right" else "right"
            along = f" (around the {', '.join(r['implants'])})" if r["implants"] else ""
            out.append(
                f"Uptake in the {r['side']} femur, {r['third']} third, is {r['ratio_to_contralateral']:.1f}× "
                f"the {other}{along}."
            )
    return out


def _grid(v: Volume | None) -> dict | None:
    if v is None:
        return None
    return {
        "shape": list(v.shape),
        "spacing_zyx_mm": list(v.spacing),
        "origin_lps_mm": list(v.origin),
        "unit": v.unit,
        "frame_of_reference": v.frame_of_reference,
    }


def _check_inputs(spect: Volume, ct: Volume, late_spect: Volume | None) -> None:
    if ct.unit not in ("HU", "1"):
        raise InputError(f"CT must be in HU, got unit {ct.unit!r}")
    for name, v in (("SPECT", spect), ("late SPECT", late_spect)):
        if v is None:
            continue
        if v.unit not in ("Bq/mL", "counts", "relative", "1"):
            raise InputError(f"{name} must be an activity image in Bq/mL, got unit {v.unit!r}")
        if not np.all(np.isfinite(v.data)):
            raise InputError(f"{name} contains NaN or infinite values")
        if float(np.max(v.data)) <= 0:
            raise InputError(f"{name} is empty (no positive voxel): nothing to read")
        if not v.overlaps(ct):
            a, b = v.extent_world, ct.extent_world
            raise GeometryError(
                f"{name} and CT do not overlap in patient coordinates ({name} "
                f"{np.round(a[0]).tolist()}..{np.round(a[1]).tolist()} mm, CT "
                f"{np.round(b[0]).tolist()}..{np.round(b[1]).tolist()} mm)"
            )


def _write_figures(
    out: Path,
    spect: Volume,
    ct: Volume,
    findings: list[Finding],
    reporter: Reporter,
    notes: list[str],
    device: str,
    max_figures: int = 8,
) -> None:
    """DIR/figures: a SPECT MIP and fused planes through each finding's maximum, written all or nothing
    (a temporary folder renamed at the end). Needs the rendering package; without it a note is added."""
    try:
        from spectct.render.fuse import fused_figure
        from spectct.render.mip import mip_figure
    except ImportError as exc:  # rendering is an optional part of the tree
        notes.append(f"figures not written: rendering unavailable ({exc})")
        return
    from spectct.atomic import atomic_dir

    with atomic_dir(out / "figures") as tmp:
        reporter.info("rendering figures")
        mip_figure(spect, tmp / "mip_spect.png", angles=(0.0, 90.0), cmap="hot", title="SPECT MIP", device=device)
        markers = [(f.peak_lps, str(f.id)) for f in findings]
        vmax = max((f.peak_bq_ml for f in findings), default=None)
        for f in findings[:max_figures]:
            title = textwrap.shorten(f"Finding {f.id}: {f.classification} — {f.description}", 150)
            fused_figure(
                ct,
                spect,
                point_lps=f.peak_lps,
                path=tmp / f"finding_{f.id:02d}.png",
                title=textwrap.fill(title, 110),
                markers=markers,
                spect_max=vmax,
                device=device,
            )
