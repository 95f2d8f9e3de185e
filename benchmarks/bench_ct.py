"""CT benchmark: fan-beam FBP and projector on 512² slices from 1152 views × 736 channels, and the
projector / FBP at the demo's CT size (256², 360 views × 368 channels).

Peers in the same run: scikit-image ``iradon`` (and ASTRA's CPU FBP when importable) on the
parallel-beam-equivalent data (our fan sinogram re-sorted to 576 parallel views over 180°).
Writes a Markdown table to benchmarks/results/ct.md.

Usage: ``python benchmarks/bench_ct.py [--slices 8] [--device cpu] [--out benchmarks/results/ct.md]``
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

from spectct.ct.fbp import fbp, rebin_to_parallel
from spectct.ct.geometry import CtGeometry
from spectct.ct.projector import FanBeamProjector


def _phantom(n: int, h: float, nz: int) -> np.ndarray:
    """Water ellipse with bone and small inserts (μ in 1/mm), the same for every slice."""
    c = (np.arange(n) - (n - 1) / 2) * h
    yy, xx = np.meshgrid(c, c, indexing="ij")
    img = ((xx / 180) ** 2 + (yy / 120) ** 2 < 1).astype(np.float32) * 0.02
    img[((xx - 80) ** 2 + yy**2) < 25**2] = 0.04
    img[((xx + 60) ** 2 + (yy - 30) ** 2) < 10**2] = 0.021
    return np.repeat(img[None], nz, axis=0)


def _time(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


_ASTRA_SCRIPT = """
import sys, time, numpy as np, astra
sino = np.load(sys.argv[1]); theta = np.load(sys.argv[2])
dt, n, h = float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
vol = astra.create_vol_geom(n, n, -n * h / 2, n * h / 2, -n * h / 2, n * h / 2)
pg = astra.create_proj_geom("parallel", dt, sino.shape[1], theta)
sid = astra.data2d.create("-sino", pg, sino)
rid = astra.data2d.create("-vol", vol)
cfg = astra.astra_dict("FBP")
cfg["ProjectorId"] = astra.create_projector("linear", pg, vol)
cfg["ProjectionDataId"] = sid; cfg["ReconstructionDataId"] = rid
cfg["option"] = {"FilterType": "hann"}
alg = astra.algorithm.create(cfg)
t = time.perf_counter(); astra.algorithm.run(alg); print(time.perf_counter() - t)
"""


_ASTRA_FP_SCRIPT = """
import sys, time, numpy as np, astra
img = np.load(sys.argv[1]); gam = np.load(sys.argv[2]); ang = np.load(sys.argv[3])
sid, sdd, h = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
n = img.shape[-1]
vol = astra.create_vol_geom(n, n, -n * h / 2, n * h / 2, -n * h / 2, n * h / 2)
# flat detector with as many cells as our arc, spanning the same fan
width = 2 * sdd * np.tan(np.abs(gam).max()) / (gam.size - 1)
pg = astra.create_proj_geom("fanflat", width, gam.size, ang, sid, sdd - sid)
pid = astra.create_projector("line_fanflat", pg, vol)
t = time.perf_counter()
for sl in img:
    sino_id, _ = astra.create_sino(sl, pid)
    astra.data2d.delete(sino_id)
print((time.perf_counter() - t) / img.shape[0])
"""


def _astra_fp(python: str, img: np.ndarray, g: CtGeometry, h: float):
    """Time ASTRA's CPU fan-beam forward projection per slice in its own venv; (note, seconds or None)."""
    if not Path(python).exists():
        return "ASTRA FP: no venv with astra-toolbox", None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/i.npy", np.ascontiguousarray(img, dtype=np.float32))
        np.save(f"{tmp}/g.npy", g.fan_angles_rad())
        np.save(f"{tmp}/a.npy", g.angles_rad())
        res = subprocess.run([python, "-c", _ASTRA_FP_SCRIPT, f"{tmp}/i.npy", f"{tmp}/g.npy", f"{tmp}/a.npy",
                              str(g.sid_mm), str(g.sdd_mm), str(h)], capture_output=True, text=True, timeout=1200)
    if res.returncode != 0:
        why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        return f"ASTRA FP: failed ({why})", None
    return ("ASTRA CPU forward projection (`line_fanflat`, a flat detector with our channel count and fan) "
            "timed in a subprocess of the same run"), float(res.stdout.split()[-1])


def _astra_fbp(python: str, par: np.ndarray, theta: np.ndarray, dt_mm: float, n: int, h: float):
    """Time ASTRA's CPU FBP in its own venv (a subprocess); returns (note, seconds or None)."""
    if not Path(python).exists():
        return "ASTRA: no venv with astra-toolbox given (--astra-python)", None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/s.npy", np.ascontiguousarray(par.T, dtype=np.float32))  # [angles, t]
        np.save(f"{tmp}/t.npy", theta)
        res = subprocess.run([python, "-c", _ASTRA_SCRIPT, f"{tmp}/s.npy", f"{tmp}/t.npy", str(dt_mm), str(n),
                              str(h)], capture_output=True, text=True, timeout=1200)
    if res.returncode != 0:
        why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        return f"ASTRA: failed ({why})", None
    return "ASTRA CPU FBP timed in a subprocess of the same run (own venv)", float(res.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slices", type=int, default=8, help="slices per FBP batch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fbp-only", action="store_true", help="time FBP and the peers only (plus one projection)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ct.md"))
    ap.add_argument("--astra-python", default="/tmp/ct_eng/astra-venv/bin/python",
                    help="python of a separate venv with astra-toolbox (skipped when absent)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = args.device
    g = CtGeometry()
    n, h, nz = 512, 500 / 512, args.slices
    img = torch.as_tensor(_phantom(n, h, nz), device=dev)
    proj = FanBeamProjector(g, n, h, device=dev)
    rows = []

    # the demo's CT size (256², 360 views × 368 channels): its Joseph matrix is built once and cached
    gs, ns = g.scaled(n_views=360, n_channels=368), 256
    small = FanBeamProjector(gs, ns, 500 / ns, device=dev)
    xs = torch.as_tensor(_phantom(ns, 500 / ns, 32), device=dev)
    t_build = _time(lambda: small.forward(xs[:1]))
    rows.append(("demo size 256², 360 × 368: first forward (builds + caches the matrix)", "1 slice", t_build, None))
    t_sf = _time(lambda: small.forward(xs), repeats=2)
    rows.append(("demo size: forward projection (Joseph, cached sparse matrix)", "32 slices", t_sf / 32, None))
    ys = small.forward(xs)
    small.adjoint(ys[:1])  # builds the transpose
    t_sa = _time(lambda: small.adjoint(ys), repeats=2)
    rows.append(("demo size: adjoint (cached transpose)", "32 slices", t_sa / 32, None))
    t_sr = _time(lambda: fbp(ys, gs, ns, 500 / ns, device=dev), repeats=2)
    rows.append(("demo size: spectct fbp (rebin → parallel, Hann)", "32 slices", t_sr / 32, None))

    t0 = time.perf_counter()
    one = proj.forward(img[:1])
    rows.append(("forward projection, full size, first call (builds + caches the quarter-rotation matrix of "
                 "the body's inner grid)", "1 slice", time.perf_counter() - t0, None))
    if args.fbp_only:
        sino = one.expand(nz, -1, -1).contiguous()
        fp_note = "ASTRA FP: not run (--fbp-only)"
    else:
        t_fp = _time(lambda: proj.forward(img), repeats=2)
        sino = proj.forward(img)
        rows.append(("forward projection, full size (Joseph, cached quarter-rotation matrix)", f"{nz} slices",
                     t_fp / nz, None))
        fp_note, t_astra_fp = _astra_fp(args.astra_python, img[:2].cpu().numpy(), g, h)
        if t_astra_fp is not None:
            rows.append(("ASTRA CPU forward projection (fan, line model)", "2 slices", t_astra_fp,
                         t_astra_fp / (t_fp / nz)))
        t_ad = _time(lambda: proj.adjoint(sino[:1]))
        rows.append(("adjoint (exact transpose; first call builds it)", "1 slice", t_ad, None))

    t_first = _time(lambda: fbp(sino[:1], g, n, h, device=dev))
    rows.append(("spectct fbp, first call (builds + caches the back-projection matrix)", "1 slice", t_first,
                 None))
    t_fbp1 = _time(lambda: fbp(sino[:1], g, n, h, device=dev), repeats=2)
    t_fbp = _time(lambda: fbp(sino, g, n, h, device=dev), repeats=2)
    rows.append(("spectct fbp (rebin → parallel, Hann)", "1 slice", t_fbp1, None))
    rows.append(("spectct fbp (rebin → parallel, Hann)", f"{nz} slices", t_fbp / nz, None))
    if not args.fbp_only:
        t_fan = _time(lambda: fbp(sino[:1], g, n, h, device=dev, method="fan"))
        rows.append(("spectct fbp (direct fan-beam, Hann)", "1 slice", t_fan, None))
    rec = fbp(sino[:1], g, n, h, device=dev).cpu().numpy()[0]

    # parallel-beam-equivalent data for the peers
    par, theta, dt_mm = rebin_to_parallel(sino[:1].cpu(), g)
    par_np = par[0].numpy().T  # [t, angles] as scikit-image wants
    theta_deg = np.degrees(theta)
    peers = {}
    try:
        from skimage.transform import iradon

        t_sk = _time(lambda: iradon(par_np, theta=theta_deg, output_size=n, filter_name="hann",
                                    interpolation="linear", circle=False))
        sk = iradon(par_np, theta=theta_deg, output_size=n, filter_name="hann", circle=False) / dt_mm
        peers["scikit-image iradon (parallel, Hann, linear)"] = (t_sk, sk)
    except ImportError:
        pass
    astra_note, t_astra = _astra_fbp(args.astra_python, par_np, theta, dt_mm, n, h)
    if t_astra is not None:
        peers["ASTRA CPU 'FBP' (parallel, Hann)"] = (t_astra, None)
    ref_rows = []
    for name, val in peers.items():
        if val is None:
            continue
        t_peer, im = val
        ref_rows.append((name, "1 slice", t_peer, t_peer / (t_fbp / nz)))
    cpu = subprocess.run(["bash", "-c", "lscpu | head -20"], capture_output=True, text=True).stdout
    truth = _phantom(n, h, 1)[0]
    c = (np.arange(n) - (n - 1) / 2) * h
    yy, xx = np.meshgrid(c, c, indexing="ij")
    roi = (xx**2 + yy**2) < 40**2
    lines = [
        "# CT benchmark (spectct.ct)",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- device: {dev}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"python {platform.python_version()}; load average at the end "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (a shared machine: times are upper bounds)",
        f"- geometry: {g.n_views} views × {g.n_channels} channels (SOMATOM Definition AS class); "
        f"image {n}² × {h:.3f} mm; FBP batch {nz} slices",
        f"- accuracy: water ROI of our FBP {rec[roi].mean():.5f} /mm vs truth {truth[roi].mean():.5f} /mm",
        "",
        "| operation | batch | seconds per slice | slices per second | peer time / ours (batched) |",
        "|---|---|---|---|---|",
    ]
    for name, batch, sec, ratio in rows + ref_rows:
        r = f"{ratio:.1f}×" if ratio is not None else ""
        lines.append(f"| {name} | {batch} | {sec:.3f} | {1 / sec:.2f} | {r} |")
    lines += ["", "Peers run on the same parallel-beam-equivalent sinogram (576 views over 180°, "
              f"736 samples of {dt_mm:.3f} mm) in the same process. {astra_note}. {fp_note}.", "",
              "```", cpu.strip(), "```", ""]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
