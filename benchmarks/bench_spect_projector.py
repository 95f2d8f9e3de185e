"""Time one forward + back projection of 120 views for a 128³ volume with attenuation and PSF.

Usage: ``python benchmarks/bench_spect_projector.py [--peer /tmp/pytomo/bin/python] [--threads 2]``.
With ``--peer`` the same data are projected with PyTomography's SPECT system matrix in its own venv
(``python3 -m venv /tmp/pytomo && /tmp/pytomo/bin/pip install torch==2.13.0 pytomography==3.4.0``),
in the same run. Results are printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spectct.physics.collimator import Collimator
from spectct.spect.geometry import SpectGeometry
from spectct.spect.projector import SpectModel

PEER_SCRIPT = r'''
import json, sys, time, numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform
from pytomography.projectors.SPECT import SPECTSystemMatrix
d = np.load(sys.argv[1])
n, dx = int(d["n"]), float(d["dx"])
angles = d["angles"]; radii = d["radii"]
obj_meta = SPECTObjectMeta((dx, dx, dx), (n, n, n))
proj_meta = SPECTProjMeta((n, n), (dx, dx), angles, radii)
a, b, c = [float(v) for v in d["abc"]]  # σ(r) = √((a r + b)² + c²), r and σ in cm
psf_meta = SPECTPSFMeta((a, b, c), sigma_fit=lambda r, a, b, c: ((a * r + b) ** 2 + c ** 2) ** 0.5,
                        kernel_dimensions="2D", min_sigmas=3)
att = SPECTAttenuationTransform(torch.tensor(d["mu_cm"], dtype=torch.float32))
psf = SPECTPSFTransform(psf_meta)
sm = SPECTSystemMatrix(obj2obj_transforms=[att, psf], proj2proj_transforms=[], object_meta=obj_meta,
                       proj_meta=proj_meta)
x = torch.tensor(d["x"], dtype=torch.float32)
t = time.perf_counter(); y = sm.forward(x); tf = time.perf_counter() - t
t = time.perf_counter(); bp = sm.backward(y); tb = time.perf_counter() - t
print(json.dumps({"forward_s": tf, "back_s": tb, "forward_total": float(y.double().sum()),
                  "back_total": float(bp.double().sum())}))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--stops", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peer", default=None, help="python of a venv with pytomography 3.4.0")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = SpectGeometry.dual_head(stops_per_head=args.stops, matrix=args.n, radius_mm=270.0)
    grid = g.image_grid()
    zz, yy, xx = np.meshgrid(*grid.axis_coordinates(), indexing="ij")
    body = (np.hypot(xx / 1.3, yy) <= 110.0) & (np.abs(zz) < 250)
    mu = grid.with_data((body * 0.01536).astype(np.float32), unit="1/mm")
    rng = np.random.default_rng(0)
    x = (body * rng.random(grid.shape)).astype(np.float32)
    t = time.perf_counter()
    model = SpectModel(g, grid, mu=mu, collimator=Collimator.lehr(), device=args.device, batch_views=8)
    t_init = time.perf_counter() - t
    xt = torch.as_tensor(x, device=model.device)
    fwd_times, back_times = [], []

    def ours() -> tuple[torch.Tensor, torch.Tensor]:
        t = time.perf_counter()
        y = model.forward(xt)
        fwd_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        bp = model.adjoint(y)
        back_times.append(time.perf_counter() - t)
        return y, bp

    # the machine may be shared: time ours twice before and once after the peer, keep the minimum
    y, bp = ours()
    ours()
    yr = torch.rand_like(y)
    lhs = float((y.double() * yr.double()).sum())
    rel = abs(lhs - float((xt.double() * model.adjoint(yr).double()).sum())) / abs(lhs)
    res = {"n": args.n, "views": g.n_views, "threads": args.threads, "init_s": t_init,
           "adjoint_rel_err_f32": rel, "forward_total": float(y.double().sum()),
           "back_total": float(bp.double().sum())}
    if args.peer:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "d.npz"
            a, b, c = Collimator.lehr().sigma_coefficients
            # PyTomography: object [x, y, z], μ in 1/cm, angles in degrees, radii in cm, sizes in cm
            np.savez(data, n=args.n, dx=grid.spacing[2] / 10.0, angles=g.angles_deg, radii=g.radii_mm / 10.0,
                     mu_cm=mu.data.transpose(2, 1, 0) * 10.0, x=x.transpose(2, 1, 0), abc=[a, b / 10, c / 10])
            script = Path(tmp) / "peer.py"
            script.write_text(PEER_SCRIPT)
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            out = subprocess.run([args.peer, str(script), str(data), str(args.threads)], capture_output=True,
                                 text=True, env=env, timeout=1800)
            if out.returncode == 0:
                res["peer"] = json.loads(out.stdout.strip().splitlines()[-1])
            else:
                res["peer_error"] = out.stderr[-2000:]
    ours()
    res["forward_s"], res["back_s"] = min(fwd_times), min(back_times)
    res["forward_all_s"], res["back_all_s"] = fwd_times, back_times
    print(json.dumps(res, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
