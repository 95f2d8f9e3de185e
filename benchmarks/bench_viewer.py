"""Viewer timings: study scan (with DICOM conversion, cold and warm cache) and time until the page in headless
Chromium (SwiftShader WebGL, no GPU) reports its volumes loaded.

    .venv/bin/python benchmarks/bench_viewer.py [--ge ../shared/data/ge-lu177-spectct] [--out PATH]

Studies: the synthetic test study (48³ CT, 24³ SPECT), a demo-sized synthetic study (256×256×160 CT at
2 mm, 64³ SPECT) and, when given, the real GE Discovery 670 CT (512×512×303, DICOM converted on the way in).
No peer: there is no other offline browser viewer launched from one command to compare against.
"""

from __future__ import annotations

import argparse
import datetime as dt
import lzma
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _time_page(url: str, profile: Path) -> tuple[float, dict]:
    from spectct.viewer.headless import HeadlessChromium

    with HeadlessChromium(profile) as b:
        t0 = time.perf_counter()
        b.goto(url)
        b.wait_for("(document.querySelector('#status') || {dataset: {}}).dataset.state === 'ready'"
                   " || (document.querySelector('#status') || {dataset: {}}).dataset.state === 'error'",
                   timeout_s=300)
        state = b.js("document.querySelector('#status').dataset.state")
        if state != "ready":
            raise RuntimeError(b.js("document.querySelector('#status').innerText"))
        # the page is interactive once the first frame with the volumes has been drawn
        b.js("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
        seconds = time.perf_counter() - t0
        timings = b.js("window.spectctViewer.state.timings")
        timings["ready_s"] += timings["script_s"]
        timings["loaded_s"] += timings["script_s"]
        b.screenshot(profile.parent / "page.png")
    return seconds, timings


def _run(name: str, study: Path, tmp: Path, cache: Path | None = None) -> dict:
    from spectct.viewer.server import make_server, scan_study

    t0 = time.perf_counter()
    content = scan_study(study, cache_dir=cache)
    scan_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    content = scan_study(study, cache_dir=cache)
    scan_warm = time.perf_counter() - t0
    server = make_server(content, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page, timings = _time_page(server.url, tmp / f"{name}-profile")
    finally:
        server.shutdown()
        server.server_close()
    mb = sum(p.stat().st_size for p in content.files.values()) / 1e6
    shapes = []
    for key in ("ct_nomar.nii.gz", "ct_mar.nii.gz", "spect.nii.gz"):
        if key in content.files:
            import nibabel as nib

            shapes.append(f"{key.split('.')[0]} {'×'.join(map(str, nib.load(str(content.files[key])).shape))}")
    return {"name": name, "volumes": "; ".join(shapes), "mb": mb, "scan_cold": scan_cold, "scan_warm": scan_warm,
            "page": page, "loaded": timings["loaded_s"], "ready": timings["ready_s"]}


def _demo_study(root: Path) -> Path:
    from spectct.io.nifti import write_nifti
    from spectct.volume import Volume
    from test_viewer import make_study

    make_study(root)  # findings, figures, small CT; then replace the volumes by demo-sized ones
    rng = np.random.default_rng(1)
    ct = Volume((rng.normal(40, 20, (160, 256, 256))).astype(np.float32), (2.0, 1.5, 1.5),
                (-191.25, -191.25, -159.0), unit="HU")
    write_nifti(ct, root / "ct" / "ct_nomar.nii.gz")
    write_nifti(ct, root / "ct" / "ct_mar.nii.gz")
    spect = Volume(rng.gamma(2.0, 1e3, (64, 64, 64)).astype(np.float32), (4.8,) * 3, (-151.2, -151.2, -151.2),
                   unit="Bq/mL")
    write_nifti(spect, root / "spect" / "spect.nii.gz")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ge", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
                    / "ge-lu177-spectct")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "viewer.md")
    args = ap.parse_args()
    from test_viewer import make_study

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmpdir:
        tmp = Path(tmpdir)
        rows.append(_run("synthetic test study", make_study(tmp / "small"), tmp))
        rows.append(_run("demo-sized synthetic", _demo_study(tmp / "demo"), tmp))
        if args.ge.is_dir():
            ge = tmp / "ge"
            ge.mkdir()
            with tarfile.open(args.ge / "ct_series.tar.xz") as tar:
                tar.extractall(ge, filter="data")
            with lzma.open(args.ge / "bed1_projections.dcm.xz") as src:
                (ge / "bed1_projections.dcm").write_bytes(src.read())
            rows.append(_run("GE D670 CT (DICOM-only folder)", ge, tmp, cache=tmp / "ge-cache"))
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    chrome = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Viewer (`spectct view`) timings", "",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Browser: {chrome}, headless, SwiftShader "
        "WebGL (software; a desktop GPU is faster). Scan = `scan_study` (DICOM → NIfTI conversion on the cold "
        "run); page times count from navigation: volumes fetched and uploaded to WebGL, controls ready, "
        "and the first frame drawn (when the page answers again). No peer.", "",
        "| study | volumes served | MB | scan cold s | scan warm s | volumes loaded s | controls ready s |"
        " first frame drawn s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['volumes']} | {r['mb']:.2f} | {r['scan_cold']:.2f} | "
                     f"{r['scan_warm']:.2f} | {r['loaded']:.2f} | {r['ready']:.2f} | {r['page']:.2f} |")
    lines += ["", "Machine (`lscpu | head`):", "", "```", *cpu, "```", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
