"""spectct vs PyTomography 3.4.0 on the real GE Discovery 670 Pro Lu-177 acquisition (issue 4).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_ge_peer.py [--work /tmp/ge_peer] [--peer-python /tmp/g_peer/bin/python]

runs three steps and writes ``WORK/ge_pair.json`` and ``benchmarks/results/ge_peer_coronal.png``:

1. ``--step ours`` (project environment): ``spectct.spect.study.reconstruct_file`` — the call behind
   ``spectct recon-spect bed1_projections.dcm --ct CT/ --iterations 4 --subsets 10`` (photopeak
   187.2–228.8 keV, TEW from the adjacent windows, MEGP PSF, CTAC).
2. ``--step peer`` (PyTomography environment, never a project dependency): PyTomography's own GE DICOM
   path — ``get_metadata``/``get_projections``, TEW from ``get_energy_window_scatter_estimate_projections``,
   μ-map from ``get_attenuation_map_from_CT_slices`` (its bilinear HU→μ table), PSF from
   ``get_psfmeta_from_scanner_params`` and OSEM 4 × 10.
3. ``--step compare`` (project environment): the peer image is resampled onto our grid through both
   images' patient (LPS) affines; both are put in one unit (counts per view that the voxel's activity would
   give in air), then: centre of mass of each in LPS mm (checks axis orders and flips), voxel correlation
   inside the body (CT μ > 0.005 /mm), ratio of totals, and a coronal figure.

Equivalent settings: same window, iterations and subsets; the peer's PSF uses the same Gaussian form
σ(d) = √((a d + b)² + c²) (Metz et al. 1980) with the GE MEGP hole (3.0 mm, 58 mm long, SIMIND code
GI-MEGP) and the same 3.9 mm intrinsic FWHM; the peer's TEW estimate is smoothed by the same 2-pixel
FWHM as ours. Differences that remain by design are reported, not hidden: our TEW subtracts the photopeak's
spill-over into the scatter windows (energy resolution 9.9 %), PyTomography's does not; the two HU→μ
conversions are different bilinear tables.
"""

from __future__ import annotations

import argparse
import json
import lzma
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ge-lu177-spectct"
PEAK, LOWER, UPPER = 1, 3, 2  # EnergyWindowInformationSequence: 187.2–228.8, 166.89–186.31, 229.63–251.16 keV
E_PEAK_KEV = 208.366  # Lu-177 γ line in the photopeak window
MEGP_INTRINSIC_CM = 0.39  # FWHM, as Collimator.megp
TEW_SMOOTH_FWHM_PX = 2.0  # as reconstruct_spect's default
PIXEL_CM = 0.44196


def extract(work: Path) -> tuple[Path, Path]:
    """Decompress the shared projections and CT series into ``work`` (once)."""
    work.mkdir(parents=True, exist_ok=True)
    dcm = work / "bed1_projections.dcm"
    if not dcm.exists():
        dcm.write_bytes(lzma.decompress((DATA / "bed1_projections.dcm.xz").read_bytes()))
    ct = work / "CT"
    if not ct.exists():
        with tarfile.open(DATA / "ct_series.tar.xz") as tar:
            tar.extractall(work, filter="data")
    return dcm, ct


def step_ours(work: Path, threads: int) -> dict:
    import torch

    from spectct.spect.study import reconstruct_file

    torch.set_num_threads(threads)
    dcm, ct = extract(work)
    t0 = time.perf_counter()
    image, meta = reconstruct_file(dcm, ct=ct, iterations=4, subsets=10)
    seconds = time.perf_counter() - t0
    np.savez(work / "ours.npz", image=image.data, affine=image.affine)
    res = {
        "seconds_total": seconds,
        "seconds_reconstruction": meta["seconds_reconstruction"],
        "seconds_recon_with_quant": meta["seconds_total"],
        "sensitivity_cps_per_mbq": meta["sensitivity_cps_per_mbq"],
        "decay_correction_factor": meta["decay_correction_factor"],
        "time_per_view_s": meta["acquisition"]["time_per_view_s"],
        "voxel_ml": float(np.prod(image.spacing)) / 1000.0,
        "collimator": meta["collimator"],
        "photopeak_window": meta["photopeak_window"],
        "scatter_windows": meta["scatter_windows"],
        "mu_energy_kev": meta.get("mu_energy_kev"),
        "threads": torch.get_num_threads(),
    }
    (work / "ours.json").write_text(json.dumps(res, indent=1))
    return res


def step_peer(work: Path, threads: int) -> dict:
    import pytomography
    import torch
    from pytomography.algorithms import OSEM
    from pytomography.io.SPECT import dicom
    from pytomography.likelihoods import PoissonLogLikelihood
    from pytomography.projectors.SPECT import SPECTSystemMatrix
    from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform

    torch.set_num_threads(threads)
    dcm, ct = extract(work)
    files_ct = sorted(str(p) for p in ct.glob("*.dcm"))
    sigma_cm = TEW_SMOOTH_FWHM_PX * PIXEL_CM / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    stamps = {}
    t0 = time.perf_counter()
    object_meta, proj_meta = dicom.get_metadata(str(dcm), index_peak=PEAK)
    windows = dicom.get_projections(str(dcm))
    photopeak = windows[PEAK]
    scatter = dicom.get_energy_window_scatter_estimate_projections(
        str(dcm), windows, PEAK, LOWER, UPPER, proj_meta=proj_meta, sigma_r=sigma_cm, sigma_z=sigma_cm
    )
    stamps["read_projections_tew_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    mu = dicom.get_attenuation_map_from_CT_slices(files_ct, str(dcm), index_peak=PEAK)
    stamps["mu_map_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    psf_meta = dicom.get_psfmeta_from_scanner_params("GI-MEGP", E_PEAK_KEV, intrinsic_resolution=MEGP_INTRINSIC_CM)
    system = SPECTSystemMatrix(
        obj2obj_transforms=[SPECTAttenuationTransform(mu), SPECTPSFTransform(psf_meta)],
        proj2proj_transforms=[],
        object_meta=object_meta,
        proj_meta=proj_meta,
    )
    likelihood = PoissonLogLikelihood(system, photopeak, scatter)
    likelihood._set_n_subsets(10)  # subset sensitivities, reused by OSEM
    stamps["system_and_sensitivity_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    image = OSEM(likelihood)(n_iters=4, n_subsets=10)
    stamps["osem_s"] = time.perf_counter() - t1
    seconds = time.perf_counter() - t0
    np.savez(
        work / "peer.npz",
        image=image.cpu().numpy(),
        affine=object_meta.affine_matrix,
        mu=mu.cpu().numpy(),
        scatter_total=float(scatter.sum()),
        photopeak_total=float(photopeak.sum()),
    )
    res = {
        "seconds_total": seconds,
        **stamps,
        "seconds_reconstruction": stamps["system_and_sensitivity_s"] + stamps["osem_s"],
        "psf_sigma_coefficients_cm": [float(v) for v in psf_meta.sigma_fit_params],
        "scatter_total": float(scatter.sum()),
        "photopeak_total": float(photopeak.sum()),
        "threads": torch.get_num_threads(),
        "pytomography": pytomography.__version__,
    }
    (work / "peer.json").write_text(json.dumps(res, indent=1))
    return res


def _centre_of_mass_lps(img: np.ndarray, affine: np.ndarray, first_axis_is_x: bool) -> list[float]:
    """Activity-weighted mean position in LPS mm of an image with the given index→LPS affine."""
    idx = np.indices(img.shape).reshape(3, -1).astype(np.float64)
    w = img.reshape(-1).astype(np.float64)
    mean_idx = idx @ w / w.sum()  # in array axis order
    ijk = mean_idx if first_axis_is_x else mean_idx[::-1]  # affine takes (i along x, j along y, k along z)
    return [float(v) for v in affine[:3, :3] @ ijk + affine[:3, 3]]


def step_compare(work: Path, png: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.ndimage import map_coordinates

    from spectct.io.dicom_ct import read_ct_series
    from spectct.spect.ctac import ct_to_mumap
    from spectct.spect.inputs import load_projections_with_info
    from spectct.spect.recon import photopeak_window
    from spectct.spect.scatter import tew
    from spectct.volume import Volume

    o = np.load(work / "ours.npz")
    p = np.load(work / "peer.npz")
    oj = json.loads((work / "ours.json").read_text())
    pj = json.loads((work / "peer.json").read_text())
    # ours in Bq/mL → counts per view in air from each voxel (the peer's unit: its projector has unit gain)
    ours = o["image"].astype(np.float64) * oj["voxel_ml"] * oj["sensitivity_cps_per_mbq"] * oj["time_per_view_s"]
    ours /= 1e6 * oj["decay_correction_factor"]
    peer = p["image"].astype(np.float64)  # [x, y, z]
    a_ours, a_peer = o["affine"], p["affine"]
    com_ours = _centre_of_mass_lps(ours, a_ours, first_axis_is_x=False)
    com_peer = _centre_of_mass_lps(peer, a_peer, first_axis_is_x=True)
    # resample the peer onto our voxel centres through the two patient-coordinate affines
    kk, jj, ii = np.indices(ours.shape).reshape(3, -1).astype(np.float64)
    world = a_ours[:3, :3] @ np.stack([ii, jj, kk]) + a_ours[:3, 3:4]
    pidx = np.linalg.solve(a_peer[:3, :3], world - a_peer[:3, 3:4])
    peer_on_ours = map_coordinates(peer, pidx, order=1, mode="constant", cval=0.0).reshape(ours.shape)
    ours_vol = Volume(o["image"], spacing=(abs(a_ours[2, 2]), abs(a_ours[1, 1]), abs(a_ours[0, 0])),
                      origin=tuple(a_ours[:3, 3]), direction=a_ours[:3, :3] / np.linalg.norm(a_ours[:3, :3], axis=0))
    mu = ct_to_mumap(read_ct_series(work / "CT"), ours_vol, 120.0, E_PEAK_KEV).data
    body = mu > 0.005
    corr_body = float(np.corrcoef(ours[body], peer_on_ours[body])[0, 1])
    # μ-maps of both on one grid (ours from our CTAC, the peer's from its own loader)
    mu_peer = map_coordinates(p["mu"].astype(np.float64), pidx, order=1, cval=0.0).reshape(ours.shape) / 10.0
    # our scatter estimate with and without the spill-over correction, for the report
    proj, _ = load_projections_with_info(work / "bed1_projections.dcm")
    pw = photopeak_window(proj, None)
    tew_ours = float(tew(proj, peak=pw, smooth_fwhm_px=TEW_SMOOTH_FWHM_PX, energy_resolution=0.099,
                         energy_kev=E_PEAK_KEV).sum())
    tew_classic = float(tew(proj, peak=pw, smooth_fwhm_px=TEW_SMOOTH_FWHM_PX).sum())
    hot = body & (ours > np.percentile(ours[body], 99))
    res = {
        "centre_of_mass_lps_mm": {"ours": com_ours, "peer": com_peer},
        "centre_of_mass_distance_mm": float(np.linalg.norm(np.subtract(com_ours, com_peer))),
        "voxel_correlation_body": corr_body,
        "voxel_correlation_all": float(np.corrcoef(ours.ravel(), peer_on_ours.ravel())[0, 1]),
        "total_ratio_peer_over_ours": float(peer.sum() / ours.sum()),
        "body_total_ratio_peer_over_ours": float(peer_on_ours[body].sum() / ours[body].sum()),
        "hot_1pct_mean_ratio_peer_over_ours": float(peer_on_ours[hot].mean() / ours[hot].mean()),
        "fraction_in_body": {"ours": float(ours[body].sum() / ours.sum()),
                             "peer": float(peer_on_ours[body].sum() / peer_on_ours.sum())},
        "mu_body_mean_per_mm": {"ours": float(mu[body].mean()), "peer": float(mu_peer[body].mean())},
        "tew_total": {"peer_classic": pj["scatter_total"], "ours_spillover_corrected": tew_ours,
                      "ours_classic": tew_classic, "photopeak": pj["photopeak_total"]},
        "seconds": {"ours_total": oj["seconds_total"], "peer_total": pj["seconds_total"],
                    "ours_reconstruction": oj["seconds_reconstruction"],
                    "peer_reconstruction": pj["seconds_reconstruction"]},
    }
    # coronal figure: slice through the body's centre of mass and the coronal MIP, one colour scale
    j = int(round(np.average(np.arange(ours.shape[1]), weights=ours.sum(axis=(0, 2)))))
    vmax = float(np.percentile(ours[body], 99.5))
    z_up = a_ours[2, 2] > 0  # LPS z grows superior: draw index 0 at the bottom when it is the most inferior
    fig, ax = plt.subplots(2, 3, figsize=(12, 8.5))
    for r, (name, f) in enumerate((("coronal slice", lambda v: v[:, j, :]), ("coronal MIP", lambda v: v.max(1)))):
        a, b = f(ours), f(peer_on_ours)
        for c, (title, img, kw) in enumerate(
            (("spectct", a, {"cmap": "gray_r", "vmin": 0, "vmax": vmax}),
             ("PyTomography 3.4.0", b, {"cmap": "gray_r", "vmin": 0, "vmax": vmax}),
             ("PyTomography − spectct", b - a, {"cmap": "RdBu_r", "vmin": -vmax / 2, "vmax": vmax / 2}))
        ):
            im = ax[r, c].imshow(img, origin="lower" if z_up else "upper", aspect=abs(a_ours[2, 2] / a_ours[0, 0]), **kw)
            ax[r, c].set_title(f"{title}: {name}" + (f" (y index {j})" if r == 0 and c == 0 else ""), fontsize=9)
            ax[r, c].set_xlabel("x index (patient right → left)")
            plt.colorbar(im, ax=ax[r, c], shrink=0.7)
    fig.suptitle(f"GE D670 Lu-177, OSEM 4×10, AC+PSF+TEW; voxel correlation in body {corr_body:.3f}", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    (work / "compare.json").write_text(json.dumps(res, indent=1))
    return res


def _timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time -v; return wall seconds, peak RSS and the load average around it."""
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    subprocess.run(["/usr/bin/time", "-v", "-o", str(log), *cmd], check=True, cwd=ROOT)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    rec = {"load_before": load_before, "load_after": load_after}
    for line in log.read_text().splitlines():
        key, _, val = line.strip().rpartition(": ")
        if key.startswith("Elapsed (wall clock)"):
            rec["process_wall_s"] = sum(float(v) * 60**i for i, v in enumerate(reversed(val.split(":"))))
        elif key == "Maximum resident set size (kbytes)":
            rec["peak_rss_mb"] = int(val) / 1024
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", choices=("all", "ours", "peer", "compare"), default="all")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ge_peer"))
    ap.add_argument("--peer-python", default="/tmp/g_peer/bin/python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--png", type=Path, default=ROOT / "benchmarks" / "results" / "ge_peer_coronal.png")
    args = ap.parse_args()
    if args.step == "ours":
        print(json.dumps(step_ours(args.work, args.threads), indent=1))
    elif args.step == "peer":
        print(json.dumps(step_peer(args.work, args.threads), indent=1))
    elif args.step == "compare":
        print(json.dumps(step_compare(args.work, args.png), indent=1))
    else:
        extract(args.work)
        me = [sys.executable, str(Path(__file__).resolve()), "--work", str(args.work), "--threads", str(args.threads)]
        peer = [args.peer_python, *me[1:]]
        runs = {
            "ours": _timed([*me, "--step", "ours"], args.work / "time_ours.txt"),
            "peer": _timed([*peer, "--step", "peer"], args.work / "time_peer.txt"),
        }
        res = step_compare(args.work, args.png)
        res["processes"] = runs
        (args.work / "ge_pair.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
