"""`spectct demo --size small` end to end: the case read from simulated CT and SPECT, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spectct.report.figures import CASE_FIGURES

SPECTCT = [sys.executable, "-m", "spectct"]


def _run(args, timeout=900):
    env = dict(os.environ, COLUMNS="160")
    return subprocess.run(SPECTCT + args, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "study"
    # start a run, kill it once the first stage has finished, then resume
    proc = subprocess.Popen(SPECTCT + ["demo", "--size", "small", "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300

    def phantom_recorded() -> bool:  # the runner notes a stage in protocol.json once all its outputs exist
        try:
            return "phantom" in json.loads((out / "protocol.json").read_text()).get("pipeline", {})
        except (OSError, ValueError):
            return False

    while not phantom_recorded() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert phantom_recorded(), "the first stage never finished"
    resumed = _run(["demo", "--size", "small", "--out", str(out)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return out, resumed


def test_resumed_run_kept_the_finished_stage(demo_study):
    _, resumed = demo_study
    assert "up to date phantom" in " ".join(resumed.stderr.split())


def test_report_references_every_figure(demo_study):
    out, _ = demo_study
    html = (out / "report.html").read_text()
    for spec in CASE_FIGURES:
        assert (out / spec.path).exists(), spec.path
        assert f'id="{spec.key}"' in html and "data:image/png;base64," in html
    assert "not available" not in html
    assert "Truth check" in html


def test_findings_read_the_case(demo_study):
    out, _ = demo_study
    doc = json.loads((out / "findings.json").read_text())
    findings = doc["findings"]
    hottest = max(findings, key=lambda f: f["peak_bq_ml"])
    assert hottest["nearest_implant"] == "right lateral plate screw 2"
    assert any(f["kind"] == "tract" and f["tract"]["reaches_skin"] and f["side"] == "right" for f in findings)
    assert not [f for f in findings if f["side"] == "left" and f["classification"] == "infection likely"]


def test_truth_check_passes(demo_study):
    out, _ = demo_study
    doc = json.loads((out / "truth_check.json").read_text())
    failed = [c for c in doc["checks"] if c["passed"] is not True]  # small's 2-mm CT slices resolve the screws
    assert not failed, failed


def test_second_run_is_up_to_date_and_fast(demo_study):
    out, _ = demo_study
    t0 = time.perf_counter()
    again = _run(["demo", "--size", "small", "--out", str(out)])
    seconds = time.perf_counter() - t0
    assert again.returncode == 0
    text = " ".join(again.stderr.split())
    assert text.count("up to date") >= 9, text
    assert seconds < 5.0 + 3.0  # 5 s for the stages, plus interpreter and torch import of this process


def test_unwritable_output_is_a_clean_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = _run(["demo", "--size", "small", "--out", str(blocker / "study"), "--quiet"])
    assert res.returncode == 2
    assert "not writable" in res.stderr and "Traceback" not in res.stderr
