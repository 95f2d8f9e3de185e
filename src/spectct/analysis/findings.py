"""Findings: one record per focus, the findings document (findings.json), its JSON schema and a text table.

The schema is documented in docs/findings.md; :func:`validate_findings` checks a document against
:data:`FINDINGS_SCHEMA` with the ``jsonschema`` package.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spectct.atomic import write_text
from spectct.errors import InputError

SCHEMA_ID = "spectct-findings"
SCHEMA_VERSION = 1
CLASSES = ("infection likely", "physiological marrow", "indeterminate")
#: Classes of a study that is not a labelled-leukocyte scan (see spectct.analysis.tracer): no infection claim.
NEUTRAL_CLASSES = ("focal uptake", "symmetric uptake")


@dataclass
class TractInfo:
    """A tract: deep end first, skin end last, with the implant nearest to each end."""

    start_lps: tuple[float, float, float]
    end_lps: tuple[float, float, float]
    length_mm: float
    reaches_skin: bool
    start_near: str | None = None
    start_near_mm: float | None = None
    start_near_end: str | None = None  # "upper end" / "lower end" of the implant, when it is a carrier
    end_near: str | None = None
    end_near_mm: float | None = None


@dataclass
class Finding:
    """A focus of uptake read against the CT: where it is, what it touches, what it probably is."""

    id: int
    kind: str  # "focus" or "tract"
    peak_lps: tuple[float, float, float]
    peak_bq_ml: float
    mean_bq_ml: float
    volume_ml: float
    ratio_to_background: float | None
    ratio_to_contralateral: float | None
    side: str
    structure: str  # femur, pelvis, bone, soft tissue
    third: str | None
    tissue: str  # implant, bone, marrow, soft tissue, skin, outside body
    fraction_in_bone: float | None
    nearest_implant: str | None = None
    nearest_implant_mm: float | None = None
    nearest_implant_part: str | None = None  # "upper end" / "lower end" of a nail or plate
    along_implant: str | None = None  # the carrier an elongated focus runs along
    implants_nearby: list[str] = field(default_factory=list)
    tract: TractInfo | None = None
    classification: str = "indeterminate"
    reason: str = ""
    dual_time: dict | None = None
    description: str = ""

    def to_json(self) -> dict:
        return _clean(asdict(self))


def _clean(obj):
    """Round floats, turn tuples into lists and non-finite numbers into null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 4) if math.isfinite(obj) else None
    if hasattr(obj, "item"):  # numpy scalars
        return _clean(obj.item())
    return obj


_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_XYZ = {"type": "array", "items": _NUM, "minItems": 3, "maxItems": 3}

FINDINGS_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "spectct findings",
    "type": "object",
    "required": [
        "schema",
        "version",
        "software",
        "inputs",
        "background",
        "anatomy",
        "implants",
        "findings",
        "summary",
        "notes",
    ],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "version": {"const": SCHEMA_VERSION},
        "software": {
            "type": "object",
            "required": ["name", "version"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
        },
        "inputs": {
            "type": "object",
            "required": ["spect", "ct"],
            "properties": {
                k: {
                    "type": ["object", "null"],
                    "required": ["shape", "spacing_zyx_mm", "origin_lps_mm", "unit"],
                }
                for k in ("spect", "ct", "late_spect")
            },
        },
        "background": {
            "type": "object",
            "required": ["statistic", "region", "median_bq_ml", "mad_bq_ml", "k", "threshold_bq_ml"],
            "properties": {"median_bq_ml": _NUM, "mad_bq_ml": _NUM, "k": _NUM, "threshold_bq_ml": _NUM},
        },
        "anatomy": {
            "type": "object",
            "required": ["midline_x_mm", "femurs"],
            "properties": {
                "midline_x_mm": _NUM,
                "femurs": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["z_proximal_mm", "z_distal_mm"],
                        "properties": {"z_proximal_mm": _NUM, "z_distal_mm": _NUM},
                    },
                },
            },
        },
        "implants": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "id",
                    "name",
                    "kind",
                    "side",
                    "carrier",
                    "number",
                    "flags",
                    "centroid_lps",
                    "volume_ml",
                    "length_mm",
                    "end_points_lps",
                ],
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "kind": {"enum": ["nail", "plate", "screw"]},
                    "side": {"enum": ["right", "left"]},
                    "carrier": _STR_OR_NULL,
                    "number": {"type": ["integer", "null"]},
                    "flags": {"type": "array", "items": {"enum": ["extruded", "bent", "displaced"]}},
                    "standoff_mm": _NUM_OR_NULL,
                    "standoff_end": {"enum": ["upper end", "middle", "lower end", None]},
                    "centroid_lps": _XYZ,
                    "volume_ml": _NUM,
                    "length_mm": _NUM,
                    "end_points_lps": {"type": "array", "items": _XYZ, "minItems": 2, "maxItems": 2},
                },
            },
        },
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "id",
                    "kind",
                    "peak_lps",
                    "peak_bq_ml",
                    "mean_bq_ml",
                    "volume_ml",
                    "ratio_to_background",
                    "ratio_to_contralateral",
                    "side",
                    "structure",
                    "third",
                    "tissue",
                    "nearest_implant",
                    "nearest_implant_mm",
                    "nearest_implant_part",
                    "along_implant",
                    "implants_nearby",
                    "tract",
                    "classification",
                    "reason",
                    "dual_time",
                    "description",
                ],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "kind": {"enum": ["focus", "tract"]},
                    "peak_lps": _XYZ,
                    "peak_bq_ml": _NUM,
                    "mean_bq_ml": _NUM,
                    "volume_ml": {"type": "number", "minimum": 0},
                    "ratio_to_background": _NUM_OR_NULL,
                    "ratio_to_contralateral": _NUM_OR_NULL,
                    "side": {"enum": ["right", "left"]},
                    "structure": {"enum": ["femur", "pelvis", "bone", "soft tissue"]},
                    "third": {"enum": ["proximal", "middle", "distal", None]},
                    "tissue": {"enum": ["implant", "bone", "marrow", "soft tissue", "skin", "outside body"]},
                    "fraction_in_bone": _NUM_OR_NULL,
                    "nearest_implant": _STR_OR_NULL,
                    "nearest_implant_mm": _NUM_OR_NULL,
                    "nearest_implant_part": {"enum": ["upper end", "lower end", None]},
                    "along_implant": _STR_OR_NULL,
                    "implants_nearby": {"type": "array", "items": {"type": "string"}},
                    "tract": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": ["start_lps", "end_lps", "length_mm", "reaches_skin"],
                                "properties": {
                                    "start_lps": _XYZ,
                                    "end_lps": _XYZ,
                                    "length_mm": _NUM,
                                    "reaches_skin": {"type": "boolean"},
                                    "start_near": _STR_OR_NULL,
                                    "start_near_mm": _NUM_OR_NULL,
                                    "start_near_end": _STR_OR_NULL,
                                    "end_near": _STR_OR_NULL,
                                    "end_near_mm": _NUM_OR_NULL,
                                },
                            },
                        ]
                    },
                    "classification": {"enum": list(CLASSES + NEUTRAL_CLASSES)},
                    "reason": {"type": "string", "minLength": 1},
                    "dual_time": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": [
                                    "early_time_s",
                                    "late_time_s",
                                    "decay_factor",
                                    "intensity_change",
                                    "size_change",
                                    "trend",
                                ],
                                "properties": {
                                    "early_time_s": _NUM,
                                    "late_time_s": _NUM,
                                    "decay_factor": _NUM,
                                    "intensity_change": _NUM_OR_NULL,
                                    "size_change": _NUM_OR_NULL,
                                    "trend": {"enum": ["increasing", "stable", "decreasing"]},
                                },
                            },
                        ]
                    },
                    "description": {"type": "string"},
                },
            },
        },
        "dual_time": {"type": ["object", "null"]},
        "tracer": {
            "type": "object",
            "required": ["radiopharmaceutical", "radionuclide", "rules", "source", "reason"],
            "properties": {
                "radiopharmaceutical": _STR_OR_NULL,
                "radionuclide": _STR_OR_NULL,
                "rules": {"enum": ["leukocyte", "neutral"]},
                "source": {"enum": ["stated", "radionuclide", "default"]},
                "reason": {"type": "string"},
            },
        },
        "regions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "side",
                    "structure",
                    "third",
                    "mean_bq_ml",
                    "ratio_to_contralateral",
                    "asymmetric",
                ],
                "properties": {
                    "side": {"enum": ["right", "left"]},
                    "third": {"enum": ["proximal", "middle", "distal"]},
                    "mean_bq_ml": _NUM,
                    "ratio_to_contralateral": _NUM_OR_NULL,
                    "asymmetric": {"type": "boolean"},
                    "implants": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "summary": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}


def validate_findings(doc: dict) -> None:
    """Check a findings document against :data:`FINDINGS_SCHEMA`; raise :class:`InputError` naming the first
    problem."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dependency
        raise InputError("validating findings needs the 'jsonschema' package") from None
    validator = jsonschema.Draft202012Validator(FINDINGS_SCHEMA)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(document)"
        raise InputError(f"findings document invalid at {where}: {e.message}")


def write_findings(doc: dict, path: str | os.PathLike) -> Path:
    """Validate and write a findings document atomically as JSON."""
    validate_findings(doc)
    return write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def read_findings(path: str | os.PathLike) -> dict:
    """Read and validate a findings.json."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    validate_findings(doc)
    return doc


def findings_table(doc: dict) -> str:
    """A plain-text table of the findings, hottest first, followed by the summary sentences."""
    rows = [("#", "kind", "peak Bq/mL", "vol mL", "T/B", "T/contra", "where", "nearest implant (mm)", "class")]
    for f in doc["findings"]:
        where = f"{f['side']} {f['structure']}" + (f", {f['third']} third" if f.get("third") else "")
        where += f" ({f['tissue']})"
        near = "—" if f["nearest_implant"] is None else f"{f['nearest_implant']} ({f['nearest_implant_mm']:.0f})"
        rows.append(
            (
                str(f["id"]),
                f["kind"],
                f"{f['peak_bq_ml']:.4g}",
                f"{f['volume_ml']:.1f}",
                _fmt(f["ratio_to_background"]),
                _fmt(f["ratio_to_contralateral"]),
                where,
                near,
                f["classification"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not doc["findings"]:
        lines.append("(no focus above background)")
    lines.append("")
    lines += [f"- {s}" for s in doc["summary"]]
    if doc.get("notes"):
        lines += [f"  note: {n}" for n in doc["notes"]]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"
