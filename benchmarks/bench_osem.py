"""Time spectct's OSEM (AC + PSF + additive scatter) and report image quality on a cylinder phantom.

Usage::

    .venv/bin/python benchmarks/bench_osem.py --matrix 64 --stops 30 --iterations 5 --subsets 15 \
        [--device cpu|cuda] [--threads 2] [--out benchmarks/results/osem.md]

The phantom is a water cylinder (radius 105 mm of the 128-matrix field scaled to the chosen matrix) with
three hot spheres 5:1; data are Poisson counts of the model's own projections plus a smooth scatter
background (35 %), reconstructed with the scatter as additive term. Reported: model build (rotations,
attenuation cache) and sensitivity time, seconds per full iteration, total, uniform-region bias and COV,
sphere recovery coefficients. The peer (PyTomography) is run separately in its own environment
(``--peer case.npz`` with the peer's Python); ``benchmarks/peer_osem.sh`` runs both back to back on one
saved case and writes one JSON. ``--json PATH`` writes either mode's result as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from spectct.physics.collimator import Collimator
from spectct.spect.geometry import SpectGeometry
from spectct.spect.projector import SpectModel
from spectct.spect.recon import gaussian_filter3d, osem


def run(
    matrix: int,
    stops: int,
    iterations: int,
    subsets: int,
    device: str,
    seed: int = 3,
    save: Path | None = None,
) -> dict:
    pixel = 4.7952 * 128 / matrix
    geom = SpectGeometry.dual_head(stops_per_head=stops, radius_mm=250.0, matrix=matrix, pixel_mm=pixel)
    grid = geom.image_grid()
    z, y, x = np.meshgrid(*grid.axis_coordinates(), indexing="ij")
    body = (x**2 + y**2 < 150**2) & (np.abs(z) < 200)
    mu = grid.with_data((body * 0.01538).astype(np.float32), unit="1/mm")
    act = body.astype(np.float32)
    masks = []
    for cx, cy, r in ((-80.0, -40.0, 10.0), (70.0, -50.0, 16.0), (0.0, 80.0, 25.0)):
        m = (x - cx) ** 2 + (y - cy) ** 2 + z**2 < r**2
        act[m] = 5.0
        masks.append(m)
    uniform = (np.abs(z) > 60) & (np.abs(z) < 150) & (x**2 + y**2 < 100**2)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model = SpectModel(geom, grid, mu, Collimator.lehr(), device=device, psf=True)
    t_build = time.perf_counter() - t0
    scale = 2.0e7 / float(model.forward(torch.as_tensor(act, device=device)).sum())
    primary = model.forward(torch.as_tensor(act, device=device)) * scale
    spacing = (1.0, pixel, pixel)
    scatter = 0.35 * gaussian_filter3d(primary, (0.0, 60.0, 60.0), spacing)
    gen = torch.Generator(device=device).manual_seed(seed)
    data = torch.poisson(primary + scatter, generator=gen)
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(it, img):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    t1 = time.perf_counter()
    img = osem(
        data, model, iterations=iterations, subsets=subsets, additive=scatter, device=device, callback=tick
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t_total = time.perf_counter() - t1
    img = img.cpu().numpy() / scale
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        a, b, c = Collimator.lehr().sigma_coefficients
        np.savez(
            save / "case.npz",
            data=data.cpu().numpy(),
            scatter=scatter.cpu().numpy(),
            mu=mu.data,
            image=img,
            scale=scale,
            angles=geom.angles_deg,
            radii=geom.radii_mm,
            pixel=pixel,
            psf=np.array([a, b, c]),
            uniform=uniform,
            masks=np.stack(masks),
            act=act,
            seconds=np.array([t_build, t_total]),
            iterations=iterations,
            subsets=subsets,
        )
    u = img[uniform]
    return {
        "matrix": matrix,
        "views": geom.n_views,
        "iterations": iterations,
        "subsets": subsets,
        "device": device,
        "build_s": t_build,
        "first_iteration_s": times[0],
        "iteration_s": [float(v) for v in times],
        "per_iteration_s": float(np.mean(times[1:] or times)),
        "osem_total_s": t_total,
        "uniform_mean": float(u.mean()),
        "uniform_cov": float(u.std() / u.mean()),
        "recovery": [float(img[m].mean() / 5.0) for m in masks],
    }


def peer_pytomography(case: Path, threads: int) -> dict:
    """Reconstruct the saved case with PyTomography (run with the peer environment's Python).

    Same data, additive scatter, μ-map (1/cm), Gaussian PSF with the same σ(d) = √((a d + b)² + c²) and
    the same OSEM iterations × subsets. PyTomography's object axes are [x, y, z] and projections
    [view, column, z]; its angle convention is matched to ours by the orientation whose forward projection
    of the phantom correlates best with our data.
    """
    import pytomography
    from pytomography.algorithms import OSEM
    from pytomography.likelihoods import PoissonLogLikelihood
    from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
    from pytomography.projectors.SPECT import SPECTSystemMatrix
    from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform

    torch.set_num_threads(threads)
    d = np.load(case)
    n_v, n_r, n_c = d["data"].shape
    px_cm = float(d["pixel"]) / 10.0

    def to_pt_proj(p):  # ours [view, row (head first), col] -> [view, col, z ascending]
        return torch.as_tensor(np.ascontiguousarray(p[:, ::-1, :].transpose(0, 2, 1)), dtype=torch.float32)

    def to_pt_obj(x):  # ours [z, y, x] -> [x, y, z]
        return torch.as_tensor(np.ascontiguousarray(x.transpose(2, 1, 0)), dtype=torch.float32)

    def from_pt_obj(x):
        return np.ascontiguousarray(x.cpu().numpy().transpose(2, 1, 0))

    a, b, c = d["psf"]
    obj_meta = SPECTObjectMeta(dr=(px_cm, px_cm, px_cm), shape=(n_c, n_c, n_r))
    psf_meta = SPECTPSFMeta(
        (a, b / 10.0, c / 10.0), sigma_fit=lambda r, a, b, c: np.sqrt((a * r + b) ** 2 + c**2)
    )

    def system(angles):
        proj_meta = SPECTProjMeta((n_c, n_r), (px_cm, px_cm), angles, radii=d["radii"] / 10.0)
        att = SPECTAttenuationTransform(attenuation_map=to_pt_obj(d["mu"] * 10.0))
        return SPECTSystemMatrix(
            obj2obj_transforms=[att, SPECTPSFTransform(psf_meta)],
            proj2proj_transforms=[],
            object_meta=obj_meta,
            proj_meta=proj_meta,
        )

    ours = d["angles"]
    # Orientation check on every 8th view only (a full forward projection per candidate is costly at 128³);
    # not part of the timed reconstruction.
    pick = np.arange(0, n_v, 8)
    truth_proj = to_pt_proj(d["data"][pick] - d["scatter"][pick])
    t_check = time.perf_counter()
    best = None
    for name, ang in (("θ", ours), ("-θ", -ours), ("θ+180", ours + 180), ("180-θ", 180 - ours)):
        ang = np.mod(ang, 360.0)
        proj_meta = SPECTProjMeta((n_c, n_r), (px_cm, px_cm), ang[pick], radii=d["radii"][pick] / 10.0)
        sm_check = SPECTSystemMatrix(
            obj2obj_transforms=[
                SPECTAttenuationTransform(attenuation_map=to_pt_obj(d["mu"] * 10.0)),
                SPECTPSFTransform(psf_meta),
            ],
            proj2proj_transforms=[],
            object_meta=obj_meta,
            proj_meta=proj_meta,
        )
        fp = sm_check.forward(to_pt_obj(d["act"]))
        r = float(np.corrcoef(fp.cpu().numpy().ravel(), truth_proj.numpy().ravel())[0, 1])
        if best is None or r > best[1]:
            best = (name, r, ang)
    t_check = time.perf_counter() - t_check

    class _Clock:  # PyTomography callback: time stamp after the last subset of every iteration
        def __init__(self):
            self.stamps: list[float] = []

        def run(self, obj, n_iter, n_subset):
            if n_subset == int(d["subsets"]) - 1:
                self.stamps.append(time.perf_counter())
            return obj

        def finalize(self, obj):
            return None

    t0 = time.perf_counter()
    sm = system(best[2])
    lik = PoissonLogLikelihood(sm, to_pt_proj(d["data"]), to_pt_proj(d["scatter"]))
    t_matrix = time.perf_counter() - t0
    lik._set_n_subsets(int(d["subsets"]))  # subset sensitivities A_bᵀ1 (OSEM reuses them)
    t_sens = time.perf_counter() - t0 - t_matrix
    clock = _Clock()
    t_it0 = time.perf_counter()
    rec = OSEM(lik)(n_iters=int(d["iterations"]), n_subsets=int(d["subsets"]), callback=clock)
    seconds = time.perf_counter() - t0
    per_it = np.diff([t_it0, *clock.stamps])
    img = from_pt_obj(rec) / float(d["scale"])
    ours_img = d["image"]
    uni = d["uniform"]
    np.save(case.with_name("peer_image.npy"), img.astype(np.float32))
    body = d["mu"] > 0
    truth = d["act"][body].ravel()
    return {
        "seconds": seconds,
        "setup_s": t_matrix,
        "sensitivity_s": t_sens,
        "iteration_s": [float(v) for v in per_it],
        "orientation_check_s": t_check,
        "orientation": best[0],
        "orientation_r": best[1],
        "uniform_peer": float(img[uni].mean()),
        "uniform_ours": float(ours_img[uni].mean()),
        "cov_peer": float(img[uni].std() / img[uni].mean()),
        "rc_peer": [float(img[m].mean() / 5.0) for m in d["masks"]],
        "rc_ours": [float(ours_img[m].mean() / 5.0) for m in d["masks"]],
        "corr_body": float(np.corrcoef(img[body].ravel(), ours_img[body].ravel())[0, 1]),
        "corr_truth_peer": float(np.corrcoef(img[body].ravel(), truth)[0, 1]),
        "corr_truth_ours": float(np.corrcoef(ours_img[body].ravel(), truth)[0, 1]),
        "ours_seconds": float(d["seconds"].sum()),
        "threads": torch.get_num_threads(),
        "pytomography": pytomography.__version__ if hasattr(pytomography, "__version__") else "?",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matrix", type=int, default=64)
    ap.add_argument("--stops", type=int, default=30, help="stops per head (views = 2 × stops)")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--subsets", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="append a Markdown row to this file")
    ap.add_argument("--save", type=Path, default=None, help="save data and our image (case.npz) for the peer")
    ap.add_argument(
        "--peer",
        type=Path,
        default=None,
        help="run PyTomography on a saved case.npz (use the peer environment's python)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.peer is not None:
        res = peer_pytomography(args.peer, args.threads)
        print(json.dumps(res, indent=1))
        if args.json is not None:
            args.json.write_text(json.dumps(res, indent=1))
        return
    r = run(args.matrix, args.stops, args.iterations, args.subsets, args.device, save=args.save)
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=1))
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    model_name = next(
        (line.split(":", 1)[1].strip() for line in cpu if line.startswith("Model name")), platform.processor()
    )
    row = (
        f"| {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} | {model_name}, {args.threads} threads "
        f"| {r['device']} | "
        f"{r['matrix']}³, {r['views']} views | {r['iterations']}×{r['subsets']} | {r['build_s']:.2f} | "
        f"{r['per_iteration_s']:.2f} | {r['osem_total_s']:.1f} | {100 * (r['uniform_mean'] - 1):+.1f} % | "
        f"{100 * r['uniform_cov']:.1f} % | {', '.join(f'{v:.2f}' for v in r['recovery'])} |"
    )
    print(row)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not args.out.exists():
            args.out.write_text(
                "# OSEM benchmark (spectct)\n\n"
                "AC + PSF (LEHR) + additive scatter, cylinder phantom with 3 spheres "
                "(r = 10/16/25 mm, 5:1).\n\n"
                "| date (UTC) | CPU | device | size | it×subsets | model build s | s / iteration | "
                "OSEM total s | uniform bias | uniform COV | sphere RC (small→large) |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|\n"
            )
        with args.out.open("a") as fh:
            fh.write(row + "\n")


if __name__ == "__main__":
    main()
