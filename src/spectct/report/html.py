"""Build the self-contained HTML report of a study folder (jinja2, images embedded as base64)."""

from __future__ import annotations

import base64
import json
import mimetypes
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from spectct import __version__
from spectct.atomic import atomic_path, write_text
from spectct.errors import InputError
from spectct.io.study import Study
from spectct.report.conclusion import conclusion_paragraphs
from spectct.report.figures import CASE_FIGURES, MAX_FOCUS_FIGURES, focus_figure
from spectct.report.tables import finding_rows, implant_rows, protocol_rows


def _env() -> Environment:
    return Environment(loader=PackageLoader("spectct.report", "templates"),
                       autoescape=select_autoescape(["html", "j2"]))


def _read_json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def _embed(path: Path) -> tuple[str | None, str]:
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return base64.b64encode(path.read_bytes()).decode("ascii"), mime


def figure_entries(study: Study, n_findings: int) -> list[dict[str, Any]]:
    """The figures of the report in order, each embedded or marked missing with a reason."""
    specs = list(CASE_FIGURES) + [focus_figure(i) for i in range(2, min(n_findings, MAX_FOCUS_FIGURES) + 1)]
    entries = []
    for number, spec in enumerate(specs, start=1):
        path = study.path(spec.path)
        entry = {"key": spec.key, "caption": spec.caption, "number": number, "path": spec.path}
        if path.exists():
            entry["data"], entry["mime"] = _embed(path)
        else:
            entry["data"], entry["reason"] = None, f"{spec.path} was not produced"
        entries.append(entry)
    return entries


CASE_TITLE = "SPECT/CT with 99mTc-HMPAO labelled leukocytes — right femoral fixation"


def build_report(study: Study, patient: dict[str, str] | None = None, pdf: bool = True,
                 title: str | None = None) -> Path:
    """Write ``report.html`` (and ``report.pdf`` when Chromium is installed) into the study folder."""
    protocol = study.read_protocol()
    findings_doc = _read_json(study.path("findings.json")) or {}
    truth_doc = _read_json(study.path("truth_check.json"))
    rows = finding_rows(findings_doc)
    patient = patient or protocol.get("patient") or {
        "name": "SIMULATED^FEMORAL_CASE", "id": "SPECTCT-DEMO", "sex": "F"}
    html = _env().get_template("report.html.j2").render(
        title=title or CASE_TITLE,
        patient=patient,
        study_date=protocol.get("study_date", datetime.now(UTC).date().isoformat()),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        simulated=(study.truth / "components.json").exists(),
        protocol=protocol_rows(protocol),
        conclusion=conclusion_paragraphs(findings_doc),
        findings=rows,
        implants=implant_rows(findings_doc),
        figures=figure_entries(study, len(rows)),
        truth_checks=(truth_doc or {}).get("checks", []),
    )
    out = write_text(study.path("report.html"), html)
    if pdf:
        html_to_pdf(out, study.path("report.pdf"))
    return out


def html_to_pdf(html_path: Path, pdf_path: Path, timeout_s: float = 120) -> Path | None:
    """Print the report to PDF with headless Chromium when it is installed; otherwise do nothing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return None
    try:
        with atomic_path(pdf_path) as tmp:
            cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--no-pdf-header-footer",
                   f"--print-to-pdf={tmp}", html_path.resolve().as_uri()]
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout_s)
            if tmp.stat().st_size == 0:
                raise OSError("empty PDF")
    except (subprocess.SubprocessError, OSError):
        return None
    return pdf_path
