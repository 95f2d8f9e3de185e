"""Every CT and NM file shipped with pydicom (and pydicom-data when installed) is read or refused cleanly."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pydicom
import pytest

from spectct.errors import SpectCTError
from spectct.io.dicom_nm import read_nm_volume
from spectct.io.load import load_projections, load_volume


def _local_test_dirs() -> list[Path]:
    """pydicom's bundled test files and, when installed, pydicom-data's (no network access)."""
    dirs = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # the pydicom-data package

        dirs.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return [d for d in dirs if d.is_dir()]


def _ct_nm_files() -> list[Path]:
    out = []
    for d in _local_test_dirs():
        for p in sorted(d.rglob("*")):
            if not p.is_file() or p.suffix in (".py", ".json", ".txt", ".gz", ".bz2", ".zip", ".pyc"):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
                modality = str(ds.get("Modality", ""))
            except Exception:
                continue
            if modality in ("CT", "NM"):
                out.append(p)
    return out


FILES = _ct_nm_files()


@pytest.mark.skipif(not FILES, reason="pydicom test files not found")
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.parent.name}/{p.name}" for p in FILES])
def test_read_or_refuse_cleanly(path, tmp_path):
    target = tmp_path / path.name
    shutil.copy(path, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modality = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality", ""))
        try:
            if modality == "NM":
                try:
                    result = load_projections(target)
                    assert result.counts.ndim == 4 and result.counts.sum() >= 0
                except SpectCTError:
                    result = read_nm_volume(target)
                    assert result.data.ndim == 3
            else:
                vol = load_volume(tmp_path)
                assert vol.unit == "HU" and vol.data.ndim == 3
        except SpectCTError as exc:
            assert path.name in str(exc) or str(tmp_path) in str(exc)


def test_list_is_not_empty():
    assert len(FILES) >= 5, "expected CT/NM files in pydicom's test data"
