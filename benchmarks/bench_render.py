"""Time fusion and rendering against peers where one exists; writes benchmarks/results/render.md.

Peers: SimpleITK ``Resample`` and SciPy ``ndimage.affine_transform`` (order 1) for SPECT→CT resampling;
a NumPy axis-aligned maximum for the anterior MIP. Run: ``.venv/bin/python benchmarks/bench_render.py``.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk
import torch

from spectct.fusion import register_rigid, spect_to_ct
from spectct.fusion.register import to_sitk
from spectct.render import fused_figure, mip, ray_cast
from spectct.volume import Volume

OUT = Path(__file__).resolve().parent / "results" / "render.md"


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def scene(ct_mm: float, ct_half=(150.0, 100.0, 120.0), spect_mm: float = 4.8):
    rng = np.random.default_rng(0)
    lo, hi = tuple(-h for h in ct_half), ct_half
    ct = Volume.from_bounds(lo, hi, ct_mm, unit="HU")
    z, y, x = np.meshgrid(*ct.axis_coordinates(), indexing="ij")
    d = np.full(ct.shape, -1000, np.float32)
    for cx in (-70, 70):
        d[((x - cx) / 62) ** 2 + (y / 70) ** 2 < 1] = 40
        r = np.hypot(x - cx, y - 5)
        d[r < 15] = 1300
        d[r < 9] = 80
    d[(np.hypot(x + 70, y - 5) < 4.5)] = 3000
    d += rng.normal(0, 10, d.shape).astype(np.float32)
    sp = Volume.from_bounds(lo, hi, spect_mm, unit="Bq/mL")
    zs, ys, xs = np.meshgrid(*sp.axis_coordinates(), indexing="ij")
    s = 1000 * np.exp(-((xs + 90) ** 2 + (ys - 5) ** 2 + (zs - 25) ** 2) / 128.0) + 50
    return ct.with_data(d), sp.with_data(s.astype(np.float32))


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    lines = []
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:12]
    load = os.getloadavg()
    ct, sp = scene(1.0)
    rows = []

    # SPECT -> CT resampling
    t_ours = best_of(lambda: spect_to_ct(sp, ct))
    ref = to_sitk(ct)
    mov = to_sitk(sp)
    t_sitk = best_of(lambda: sitk.Resample(mov, ref, sitk.Transform(), sitk.sitkLinear, 0.0))
    m = np.linalg.inv(sp.affine) @ ct.affine  # (i, j, k) -> (i, j, k); scipy wants (k, j, i)
    perm = np.eye(4)[[2, 1, 0, 3]]
    mz = perm @ m @ perm
    t_scipy = best_of(lambda: ndi.affine_transform(sp.data, mz[:3, :3], mz[:3, 3], output_shape=ct.shape,
                                                   order=1, mode="constant", cval=0.0), repeat=1)
    a = spect_to_ct(sp, ct).data
    b = sitk.GetArrayFromImage(sitk.Resample(mov, ref, sitk.Transform(), sitk.sitkLinear, 0.0))
    inner = (slice(5, -5),) * 3
    agree = float(np.abs(a[inner] - b[inner]).max())
    rows.append((f"spect_to_ct {sp.shape}@4.8 mm → CT {ct.shape}@1 mm", t_ours,
                 f"SimpleITK Resample {t_sitk:.2f} s (×{t_sitk / t_ours:.2f}); scipy affine_transform "
                 f"{t_scipy:.2f} s (×{t_scipy / t_ours:.2f}); max abs(ours − sitk) = {agree:.2e} Bq/mL"))

    # MIP
    t_mip = best_of(lambda: mip(sp, 0.0))
    t_np = best_of(lambda: sp.data.max(axis=1))
    t_mip45 = best_of(lambda: mip(sp, 45.0))
    rows.append((f"MIP anterior, SPECT {sp.shape}", t_mip, f"NumPy axis max {t_np * 1e3:.1f} ms (no "
                 f"interpolation; only axis-aligned views); MIP at 45° {t_mip45:.2f} s"))

    # fused figure
    with tempfile.TemporaryDirectory() as tmp:
        t_fused = best_of(lambda: fused_figure(ct, sp, None, path=Path(tmp) / "f.png"), repeat=2)
    rows.append((f"fused_figure 3 planes, CT {ct.shape}", t_fused, "matplotlib PNG included"))

    # VRT
    t_vrt0 = best_of(lambda: ray_cast(ct, sp, 0.0), repeat=1)
    t_vrt30 = best_of(lambda: ray_cast(ct, sp, 30.0), repeat=1)
    rows.append((f"ray_cast anterior, CT {ct.shape}", t_vrt0, f"30° view {t_vrt30:.2f} s; no peer (VTK not "
                 "installed headless)"))

    # registration
    small = Volume.from_bounds((-64, -64, -64), (64, 64, 64), 2.0, unit="HU")
    z, y, x = np.meshgrid(*small.axis_coordinates(), indexing="ij")
    d = np.full(small.shape, -1000, np.float32)
    d[(x / 60) ** 2 + (y / 45) ** 2 + (z / 70) ** 2 < 1] = 40
    d[np.hypot(x - 20, y) < 10] = 1200
    d[(np.hypot(x + 25, y - 5) < 8) & (z < 25)] = 900
    d[(x - 5) ** 2 + (y + 20) ** 2 + (z - 15) ** 2 < 100] = 2500
    fixed = small.with_data(d)
    moving = Volume(fixed.data, fixed.spacing, tuple(np.asarray(fixed.origin) + [3.0, -2.0, 4.0]), unit="HU")
    res = {}
    t_reg = best_of(lambda: res.setdefault("t", register_rigid(fixed, moving)), repeat=1)
    err = np.abs(res["t"].translation - np.array([3.0, -2.0, 4.0])).max()
    rows.append((f"register_rigid (Mattes MI) {fixed.shape}@2 mm", t_reg, f"translation error {err:.2f} mm"))

    lines.append("# Fusion and rendering benchmarks\n")
    now = datetime.datetime.now(datetime.UTC)
    lines.append(f"Date: {now:%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
                 f"torch {torch.__version__}, threads {torch.get_num_threads()}, device CPU.")
    lines.append(f"Load average at start: {load[0]:.1f} (shared machine; times are best of repeats).\n")
    lines.append("```\n" + "\n".join(lscpu) + "\n```\n")
    lines.append("| task | spectct (s) | peer / notes |")
    lines.append("|---|---|---|")
    for name, t, note in rows:
        lines.append(f"| {name} | {t:.3f} | {note} |")
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
