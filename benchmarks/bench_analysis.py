"""Time the reading stage (anatomy, implant decomposition, hot spots, localization) on the case phantom.

Synthetic inputs: CT with nominal HU per material on the phantom's 2-mm grid (and the same CT
upsampled to 1 mm, nearest, for the clinical slice size), SPECT = activity blurred to 12 mm FWHM on a
4.8-mm grid with noise. Usage: ``python benchmarks/analysis_bench.py [--out benchmarks/results/analysis.md]``.
No peer: no open package decomposes implants or reads leukocyte SPECT/CT.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import time

import numpy as np
from scipy import ndimage

from spectct.analysis import analyze_study
from spectct.analysis.anatomy import segment_anatomy
from spectct.analysis.implants import decompose_implants
from spectct.volume import Volume

NOMINAL_HU = {
    "air": -1000.0,
    "water": 0.0,
    "adipose": -100.0,
    "soft_tissue": 40.0,
    "muscle": 45.0,
    "skin": 40.0,
    "red_marrow": 30.0,
    "yellow_marrow": -50.0,
    "trabecular_bone": 300.0,
    "cortical_bone": 1500.0,
    "ti6al4v": 3071.0,
    "steel_316l": 3071.0,
    "cocrmo": 3071.0,
}


def inputs():
    from spectct.phantom.case import FIELD_LOWER, FIELD_UPPER, case_phantom

    ph = case_phantom(voxel_mm=2.0, seed=0)
    index, names = ph.material_map()
    ct = ph.labels.with_data(np.array([NOMINAL_HU[n] for n in names], np.float32)[index.data], unit="HU")
    blurred = ndimage.gaussian_filter(ph.activity.data.astype(np.float32), 12.0 / 2.3548 / 2.0) * 1000.0
    grid = Volume.from_bounds(FIELD_LOWER, FIELD_UPPER, 4.8, unit="Bq/mL")
    sp = ph.activity.with_data(blurred, unit="Bq/mL").resample_to(grid)
    rng = np.random.default_rng(1)
    spect = sp.with_data(
        np.maximum(sp.data + rng.normal(0, 1, sp.shape) * np.sqrt(np.maximum(sp.data, 0) * 20), 0).astype(
            np.float32
        )
    )
    return ct, spect


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--one-mm", action="store_true", help="also time a 1-mm CT (about 47 M voxels)")
    args = ap.parse_args()
    ct, spect = inputs()
    rows = []
    cts = [("2 mm", ct)]
    if args.one_mm:
        fine = Volume.from_bounds(tuple(ct.extent_world[0]), tuple(ct.extent_world[1]), 1.0, unit="HU")
        cts.append(("1 mm", ct.resample_to(fine, order="nearest")))
    for label, c in cts:
        an, t_an = timed(segment_anatomy, c)
        comps, t_imp = timed(decompose_implants, c, anatomy=an)
        doc, t_all = timed(analyze_study, spect, c)
        rows.append((label, c.shape, t_an, t_imp, t_all, len(comps), len(doc["findings"])))
    cpu = subprocess.run(["bash", "-c", "lscpu | head -15"], capture_output=True, text=True).stdout
    lines = [
        "# Reading stage (spectct.analysis) timings",
        "",
        f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; python {platform.python_version()}; CPU only",
        "",
        "```",
        cpu.strip(),
        "```",
        "",
        f"SPECT grid {spect.shape} at 4.8 mm (case phantom, 12 mm FWHM, noise).",
        "",
        "| CT | CT shape | anatomy s | implants s | analyze_study s (no figures) | components | findings |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, shape, a, i, t, n, f in rows:
        lines.append(f"| {label} | {shape} | {a:.1f} | {i:.1f} | {t:.1f} | {n} | {f} |")
    lines += [
        "",
        "The 1-mm CT is the 2-mm phantom CT upsampled (nearest): the clinical voxel count, not new detail. "
        "No peer exists for this stage (implant decomposition and leukocyte reading are spectct's own).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
