"""Time the DICOM readers/writers on the real GE SPECT/CT study against SimpleITK (GDCM) as peer.

Usage: python benchmarks/io_dicom.py [--out benchmarks/results/io_dicom.md]
Needs ../shared/data/ge-lu177-spectct. Each timing is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import lzma
import platform
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from spectct.io.dicom_ct import read_ct_series
from spectct.io.dicom_nm import read_nm_projections
from spectct.io.dicom_out import write_ct_series, write_nm_projections
from spectct.io.interfile import read_projections_interfile, write_projections_interfile

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ge-lu177-spectct"


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "io_dicom.md")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="spectct-bench-io-"))
    try:
        with tarfile.open(DATA / "ct_series.tar.xz") as tar:
            tar.extractall(tmp / "ct", filter="data")
        nm = tmp / "nm.dcm"
        with lzma.open(DATA / "bed1_projections.dcm.xz") as src, open(nm, "wb") as dst:
            shutil.copyfileobj(src, dst)
        rows = []
        t_ours, ct = best(lambda: read_ct_series(tmp / "ct"), args.repeat)

        def peer_ct():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(next((tmp / "ct").rglob("*.dcm")).parent)))
            return reader.Execute()

        t_peer, img = best(peer_ct, args.repeat)
        same = np.allclose(sitk.GetArrayFromImage(img), ct.data) and np.allclose(img.GetOrigin(), ct.origin)
        rows.append(("read CT series 303×512² (HU)", t_ours, "SimpleITK ImageSeriesReader", t_peer, same))
        t_w, _ = best(lambda: write_ct_series(ct, tmp / "ct_out"), args.repeat)
        rows.append(("write CT series 303×512²", t_w, "", None, None))
        t_nm, p = best(lambda: read_nm_projections(nm), args.repeat)
        t_pd, arr = best(lambda: pydicom.dcmread(nm).pixel_array, args.repeat)
        rows.append(
            (
                "read NM projections 6×60×128²",
                t_nm,
                "pydicom dcmread + pixel_array",
                t_pd,
                bool(np.array_equal(arr.reshape(p.counts.shape), p.counts)),
            )
        )
        t_wn, _ = best(lambda: write_nm_projections(p, tmp / "nm_out.dcm"), args.repeat)
        rows.append(("write NM projections 6×60×128²", t_wn, "", None, None))
        t_wi, _ = best(lambda: write_projections_interfile(p, tmp / "itf"), args.repeat)
        rows.append(("write Interfile projections (6 windows)", t_wi, "", None, None))
        t_ri, _ = best(lambda: read_projections_interfile(tmp / "itf"), args.repeat)
        rows.append(("read Interfile projections (6 windows)", t_ri, "", None, None))
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
        lines = [
            "# DICOM / Interfile IO benchmark",
            "",
            f"Date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; "
            f"Python {platform.python_version()}; pydicom {pydicom.__version__}; "
            f"SimpleITK {sitk.Version_VersionString()}; best of {args.repeat}.",
            "Data: ../shared/data/ge-lu177-spectct (GE Discovery 670, real study). "
            "CPU shared with other jobs.",
            "",
            "```",
            *cpu,
            "```",
            "",
            "| operation | spectct (s) | peer | peer (s) | peer / spectct | same result |",
            "|---|---|---|---|---|---|",
        ]
        for name, t, peer, tp, ok in rows:
            ratio = f"{tp / t:.2f}" if tp else ""
            lines.append(
                f"| {name} | {t:.3f} | {peer} | {'' if tp is None else f'{tp:.3f}'} | {ratio} | "
                f"{'' if ok is None else ok} |"
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
