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

from spectct.analysis import analyze_study
from spectct.analysis.anatomy import segment_anatomy
from spectct.analysis.implants import decompose_implants
from spectct.phantom.synthetic import blurred_spect, nominal_ct
from spectct.volume import Volume


def inputs():
    from spectct.phantom.case import FIELD_LOWER, FIELD_UPPER, case_phantom

    ph = case_phantom(voxel_mm=2.0, seed=0)
    ct = nominal_ct(ph)
    spect = blurred_spect(ph, FIELD_LOWER, FIELD_UPPER)
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
