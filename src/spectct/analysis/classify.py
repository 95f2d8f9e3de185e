"""Physiological marrow versus infection, one focus at a time, with the reason given.

Rules (in this order; the first that applies decides)
-----------------------------------------------------
1. Dual time point available (EANM guideline for radiolabelled WBC scintigraphy, Signore et al., Eur J
   Nucl Med Mol Imaging 2018; 45:1816): uptake increasing in intensity or size between the early and
   the late, decay-corrected image → infection likely; decreasing or stable uptake in marrow that is
   symmetric with the other side → physiological marrow.
2. A tract (elongated focus outside bone) → infection likely (sinus tract, more so when it reaches skin).
3. Uptake at an implant (maximum within ``implant_mm``) that is asymmetric (focus/mirror ratio ≥
   ``asymmetry``) → infection likely.
4. Uptake mostly outside bone (soft tissue, skin) that is asymmetric → infection likely.
5. Uptake in bone/marrow not exceeding its mirror image by ``asymmetry`` → physiological marrow
   (normal marrow is bilateral and symmetric: location + symmetry).
6. Otherwise indeterminate (e.g. asymmetric bone uptake away from implants: marrow imaging advised).

The thresholds are reading conventions chosen here, not constants from a paper: ``asymmetry`` = 1.5
(50 % more than the mirror region), ``implant_mm`` = 15 mm (about one SPECT FWHM plus the peak's voxel
uncertainty).

These rules are those of a labelled-leukocyte study. For any other radiopharmaceutical
(:mod:`spectct.analysis.tracer`), :func:`classify` only describes: ``"focal uptake"`` for a tract or for
uptake at or above ``asymmetry`` × its mirror region (or without one), ``"symmetric uptake"`` otherwise;
the reason names the tracer and says that no infection is read, and a dual-time trend is reported, not used.
"""

from __future__ import annotations

from spectct.analysis.findings import Finding
from spectct.analysis.tracer import TracerReading

ASYMMETRY = 1.5
IMPLANT_MM = 15.0


def classify(
    finding: Finding,
    dual_time: dict | None = None,
    asymmetry: float = ASYMMETRY,
    implant_mm: float = IMPLANT_MM,
    tracer: TracerReading | None = None,
) -> tuple[str, str]:
    """Classify one finding; sets and returns ``(classification, reason)``.

    Parameters
    ----------
    finding : a localized finding.
    dual_time : the focus' dual-time comparison (``trend``, ``intensity_change``, ``size_change``) or None;
        defaults to ``finding.dual_time``.
    asymmetry : focus/mirror ratio at or above which uptake counts as asymmetric.
    implant_mm : a maximum this close to an implant component counts as implant-related.
    tracer : the study's reading rules; None or leukocyte rules: the rules above, else neutral description.
    """
    if tracer is not None and not tracer.infection_rules:
        return _describe(finding, dual_time if dual_time is not None else finding.dual_time, asymmetry, implant_mm,
                         tracer)
    dual_time = dual_time if dual_time is not None else finding.dual_time
    ratio = finding.ratio_to_contralateral
    asym = ratio is None or ratio >= asymmetry
    sym_text = "no contralateral reference" if ratio is None else f"{ratio:.1f}× the mirror region"
    in_bone = (finding.fraction_in_bone or 0.0) >= 0.5 or finding.tissue in ("bone", "marrow")
    at_implant = (
        finding.nearest_implant is not None
        and finding.nearest_implant_mm is not None
        and finding.nearest_implant_mm <= implant_mm
    )
    label, reason = "indeterminate", ""
    if dual_time is not None and dual_time.get("trend") == "increasing":
        label, reason = (
            "infection likely",
            (
                f"uptake increases from early to late image (decay-corrected intensity ×"
                f"{_f(dual_time.get('intensity_change'))}, size ×{_f(dual_time.get('size_change'))})"
            ),
        )
    elif dual_time is not None and in_bone and not asym:
        label, reason = (
            "physiological marrow",
            (f"{dual_time.get('trend')} uptake over time in marrow, symmetric ({sym_text})"),
        )
    elif finding.kind == "tract":
        reach = "reaching the skin" if finding.tract is not None and finding.tract.reaches_skin else "in the soft tissue"
        label, reason = "infection likely", f"elongated uptake (tract) {reach}"
    elif at_implant and asym:
        at = (
            f"the {finding.nearest_implant_part} of the {finding.nearest_implant}"
            if finding.nearest_implant_part
            else finding.nearest_implant
        )
        along = f" along the {finding.along_implant}" if finding.along_implant else ""
        label, reason = (
            "infection likely",
            (f"asymmetric uptake ({sym_text}){along} with its maximum at {at} ({finding.nearest_implant_mm:.0f} mm)"),
        )
    elif not in_bone and asym:
        label, reason = "infection likely", f"asymmetric uptake in {finding.tissue} ({sym_text})"
    elif in_bone and not asym:
        where = "pelvis" if finding.structure == "pelvis" else f"{finding.structure} marrow"
        label, reason = (
            "physiological marrow",
            f"uptake in {where}, symmetric with the other side ({sym_text})",
        )
    elif in_bone:
        label, reason = (
            "indeterminate",
            (f"asymmetric bone uptake ({sym_text}) away from implants; marrow imaging would separate marrow from infection"),
        )
    else:
        label, reason = "indeterminate", f"soft-tissue uptake symmetric with the other side ({sym_text})"
    finding.classification, finding.reason = label, reason
    return label, reason


def _describe(
    finding: Finding, dual_time: dict | None, asymmetry: float, implant_mm: float, tracer: TracerReading
) -> tuple[str, str]:
    """Neutral classification for a study that is not a leukocyte scan: focal or symmetric uptake."""
    ratio = finding.ratio_to_contralateral
    sym_text = "no contralateral reference" if ratio is None else f"{ratio:.1f}× the mirror region"
    where = f"{finding.side} {finding.structure}" + (f", {finding.third} third" if finding.third else "")
    at = ""
    if finding.nearest_implant is not None and (finding.nearest_implant_mm or 1e9) <= implant_mm:
        at = f", at the {finding.nearest_implant} ({finding.nearest_implant_mm:.0f} mm)"
    trend = f"; {dual_time.get('trend')} from early to late image" if dual_time and dual_time.get("trend") else ""
    no_claim = f" ({tracer.label} study: not a leukocyte scan, no infection reading)"
    if finding.kind == "tract":
        reach = "reaching the skin" if finding.tract is not None and finding.tract.reaches_skin else "in soft tissue"
        label, reason = "focal uptake", f"elongated uptake {reach} ({where}){at}{trend}{no_claim}"
    elif ratio is None or ratio >= asymmetry:
        label, reason = "focal uptake", f"uptake in {finding.tissue} ({where}), {sym_text}{at}{trend}{no_claim}"
    else:
        label, reason = (
            "symmetric uptake",
            f"uptake in {finding.tissue} ({where}) symmetric with the other side ({sym_text}){trend}{no_claim}",
        )
    finding.classification, finding.reason = label, reason
    return label, reason


def _f(v: float | None) -> str:
    return "?" if v is None else f"{v:.2f}"
