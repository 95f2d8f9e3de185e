"""Time the case's SPECT reconstruction: 128³, 120 views, OSEM 5 × 15 with AC + PSF + TEW (issue 4).

Usage::

    .venv/bin/python benchmarks/bench_recon_case.py [--voxel-mm 2] [--repeats 1] [--threads 2] \
        [--device cpu] [--out benchmarks/results/recon_case.md]

The 2-mm case phantom is built and acquired once as the pipeline does (``spectct simulate-spect``: the
protocol of case-study.txt, 330 MBq, 3 h, dual head 2 × 60 stops of 20 s, 128² × 4.7952 mm, body-contour
orbit, three windows with scatter, Poisson noise), then only :func:`spectct.spect.recon.reconstruct_spect`
with the phantom's own μ-map is timed (model build, OSEM, scatter estimate, quantification). The result
row (machine, date, load, seconds, and two quick image checks) is appended to the markdown file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from spectct.phantom.case import case_phantom
from spectct.spect.geometry import SpectGeometry
from spectct.spect.recon import reconstruct_spect
from spectct.spect.simulate import StudyAcquisition, activity_from_relative, simulate_spect

HEADER = """# Case SPECT reconstruction benchmark (issue 4)

Script: `benchmarks/bench_recon_case.py`. The 2-mm case phantom (`case_phantom(voxel_mm=2)`) is acquired
once as `spectct simulate-spect` does (330 MBq, 3 h, 5 % in the field; dual head 2 × 60 stops × 20 s,
128 × 128 × 4.7952 mm, body-contour orbit, 3 windows, Poisson; forward model without oversampling), then
`reconstruct_spect` is timed: **128³ voxels, 120 views, OSEM 5 × 15, AC with the phantom's true
μ-map at 140.5 keV (not via CT HU → μ), PSF (LEHR), TEW scatter as additive term**, quantified to Bq/mL. "recon s" is the
wall time of the whole call; "OSEM s" is the part the function reports as ``seconds_reconstruction``
(scatter estimate, model build and OSEM, i.e. without the sensitivity calibration and quantification).
With ``--repeats N`` the fastest of N calls is kept. Checks: hottest voxel's distance to the truth centroid of
the focus at plate screw 2 (voxel diagonal 8.3 mm) and the focus's recovered mean / truth.

No PyTomography run here: the machine (2 cores shared with other engineers' jobs) is too busy for a fair
peer timing; see `osem.md` for the PyTomography comparison on a cylinder at 64³.

"""
TABLE = ("| date (UTC) | machine | torch, threads, device | load avg (1/5/15 min) before | simulate s | recon s "
         "| OSEM s | hottest voxel → focus mm | focus mean / truth |\n|---|---|---|---|---|---|---|---|---|\n")


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        model = ""
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def run(voxel_mm: float, device: str, repeats: int) -> dict:
    t0 = time.perf_counter()
    phantom = case_phantom(voxel_mm=voxel_mm, device=device)
    mu = phantom.mu_map(140.511)
    acq = StudyAcquisition()
    activity = activity_from_relative(phantom.activity, acq.injected_activity_bq, acq.delay_s,
                                      acq.fraction_in_fov, acq.radionuclide)
    z = mu.index_to_world(np.argwhere(mu.data > 0.0077).astype(float))[:, 2]
    geometry = SpectGeometry.dual_head(stops_per_head=acq.stops_per_head, matrix=acq.matrix, pixel_mm=acq.pixel_mm,
                                       time_per_stop_s=acq.time_per_stop_s, start_angle_deg=acq.start_angle_deg,
                                       direction=acq.direction, axial_center_mm=float(0.5 * (z.min() + z.max())),
                                       step_time_s=acq.step_time_s)
    geometry.radii_mm = geometry.body_contour_radii(mu, clearance_mm=acq.clearance_mm)
    projections = simulate_spect(activity, mu, geometry, acq.collimator_model(), rng=acq.seed,
                                 device=device, scatter=acq.scatter, oversample=1, radionuclide=acq.radionuclide,
                                 start_time_after_injection_s=acq.delay_s,
                                 injected_activity_bq=acq.injected_activity_bq)
    t_sim = time.perf_counter() - t0
    load = os.getloadavg()
    times, osem_s = [], []
    image = None
    for _ in range(repeats):
        meta: dict = {}
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        image = reconstruct_spect(projections, mu, iterations=5, subsets=15, psf=True, scatter="tew",
                                  device=device, metadata=meta)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t1)
        osem_s.append(float(meta["seconds_reconstruction"]))
    assert image is not None
    focus = phantom.component("focus at right lateral plate screw 2")
    k = np.unravel_index(int(np.argmax(image.data)), image.shape)
    hottest = image.index_to_world(np.asarray(k, dtype=float))
    labels = phantom.labels.resample_to(image, order="nearest").data
    m = labels == focus.id
    # truth is the activity at the scan; the image is decay-corrected to injection
    truth = float(activity.data[phantom.labels.data == focus.id].mean()) * float(meta["decay_correction_factor"])
    return {
        "grid": image.shape, "views": geometry.n_views, "simulate_s": t_sim, "load": load,
        "recon_s": float(np.min(times)), "osem_s": float(np.min(osem_s)),
        "hottest_to_focus_mm": float(np.linalg.norm(hottest - np.asarray(focus.centroid_lps))),
        "focus_recovery": float(image.data[m].mean() / truth) if m.any() else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxel-mm", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "recon_case.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = run(args.voxel_mm, args.device, max(1, args.repeats))
    print(r)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    row = (f"| {now} | {machine()} | {torch.__version__}, {torch.get_num_threads()}, {args.device} | "
           f"{r['load'][0]:.2f} / {r['load'][1]:.2f} / {r['load'][2]:.2f} | {r['simulate_s']:.1f} | "
           f"**{r['recon_s']:.1f}** | {r['osem_s']:.1f} | {r['hottest_to_focus_mm']:.1f} | "
           f"{r['focus_recovery']:.2f} |\n")
    if args.voxel_mm != 2.0 or r["grid"] != (128, 128, 128) or r["views"] != 120:
        row = row.rstrip("\n") + f" (voxel {args.voxel_mm} mm, grid {r['grid']}, {r['views']} views)\n"
    text = args.out.read_text() if args.out.exists() else HEADER + TABLE
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + row)
    print(row, end="")


if __name__ == "__main__":
    main()
