"""`spectct simulate-ct` / `recon-ct` on a tiny synthetic study, the topogram, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spectct.cli import app
from spectct.ct.drr import ct_figures, topogram, topogram_png
from spectct.ct.sinogram_io import load_raw, save_raw
from spectct.errors import InputError
from spectct.io.nifti import read_nifti, write_nifti
from spectct.volume import Volume


def _truth(folder, voxel=5.0):
    """A water cylinder with a bone rod and a steel pin, on a 5-mm grid over z ∈ [−10, 0]."""
    grid = Volume.from_bounds((-150, -150, -10), (150, 150, 0), voxel, unit="label", dtype=np.uint8)
    _, ys, xs = grid.axis_coordinates()
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    lab = np.zeros(grid.shape, np.uint8)
    lab[:, (xx**2 + yy**2) < 100**2] = 1
    lab[:, ((xx + 40) ** 2 + yy**2) < 15**2] = 2
    lab[:, ((xx - 40) ** 2 + yy**2) < 5**2] = 3
    truth = folder / "truth"
    truth.mkdir(parents=True)
    write_nifti(grid.with_data(lab), truth / "materials.nii.gz")
    doc = {"materials": ["air", "water", "cortical_bone", "steel_316l"],
           "components": [{"name": "body"}, {"name": "bone"}, {"name": "pin"}]}
    (truth / "components.json").write_text(json.dumps(doc))
    return grid.with_data(lab)


def test_simulate_and_recon_ct_cli(tmp_path):
    study = tmp_path / "study"
    _truth(study)
    args = ["simulate-ct", str(study), "--views", "120", "--pixel-mm", "4", "--slice-mm", "5", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ct = read_nifti(study / "ct" / "ct_nomar.nii.gz")
    assert ct.unit == "HU" and ct.shape == (2, 125, 125)
    _, ys, xs = ct.axis_coordinates()
    water = ct.data[:, np.abs(ys) < 20][:, :, np.abs(xs) < 20]
    assert abs(float(water.mean())) < 40.0  # coarse grid, streaks from the pin: loose
    for name in ("topogram.png", "ct_nomar_axial.png", "ct_nomar_coronal.png", "sinogram.npz"):
        assert (study / "ct" / name).stat().st_size > 0
    raw = load_raw(study / "ct" / "sinogram.npz")
    assert raw.metal_trace.any() and raw.geometry.n_views == 120
    out = tmp_path / "again.nii.gz"
    result = CliRunner().invoke(app, ["recon-ct", str(study / "ct" / "sinogram.npz"), "--out", str(out),
                                      "--filter", "ram-lak", "--quiet"])
    assert result.exit_code == 0, result.output
    assert read_nifti(out).same_grid(ct)
    protocol = json.loads((study / "protocol.json").read_text())
    assert protocol["stages"]["simulate-ct"]["parameters"]["geometry"]["n_views"] == 120


def test_cli_bad_input_writes_nothing(tmp_path):
    study = tmp_path / "study"
    _truth(study)
    result = CliRunner().invoke(app, ["simulate-ct", str(study), "--kv", "200", "--quiet"])
    assert isinstance(result.exception, InputError) and "200" in str(result.exception)
    assert not (study / "ct").exists()
    result = CliRunner().invoke(app, ["simulate-ct", str(tmp_path / "empty"), "--quiet"])
    assert isinstance(result.exception, InputError)
    # a sinogram whose shape does not match its geometry
    from spectct.ct.geometry import CtGeometry
    from spectct.ct.simulate import CtRaw

    g = CtGeometry().scaled(n_views=30, n_channels=64)
    raw = CtRaw(np.zeros((1, 30, 64), np.float32), None, np.zeros((1, 30, 64), bool), g, [0.0], 0.02)
    path = save_raw(raw, tmp_path / "raw.npz")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["sinogram"] = np.zeros((1, 30, 60), np.float32)
    np.savez(path, **arrays)
    out = tmp_path / "ct.nii.gz"
    result = CliRunner().invoke(app, ["recon-ct", str(path), "--out", str(out), "--quiet"])
    assert isinstance(result.exception, InputError) and "raw.npz" in str(result.exception)
    assert not out.exists()


def test_topogram_shows_bone_and_metal(tmp_path):
    vol = _truth(tmp_path)
    names = ["air", "water", "cortical_bone", "steel_316l"]
    img = topogram(vol, names, 110.0, pixel_mm=2.0)
    assert img.shape[0] == vol.shape[0]
    cols = (np.arange(img.shape[1]) - (img.shape[1] - 1) / 2) * 2.0  # patient right (−x) on the left
    at = lambda x: img[0, np.argmin(np.abs(cols - x))]  # noqa: E731
    assert at(40.0) > at(-40.0) > at(0.0) > at(130.0) >= 0.0  # steel > bone > water > air
    assert at(0.0) == pytest.approx(200 * 0.0199, rel=0.2)  # ~ μ_water,eff × 200 mm
    assert topogram_png(img, tmp_path / "t.png", row_mm=5.0, col_mm=2.0).stat().st_size > 0
    with pytest.raises(InputError, match="view"):
        topogram(vol, names, view="oblique")
    ct = Volume(np.where(vol.data == 3, 3000.0, 0.0).astype(np.float32), spacing=vol.spacing, unit="HU")
    assert all(p.exists() for p in ct_figures(ct, tmp_path, stem="x"))


def test_simulate_ct_study_library_entry(tmp_path):
    """The pipeline's entry point: fewer channels, no figures, nothing recorded."""
    from spectct.ct.simulate import simulate_ct_study
    from spectct.io.study import Study

    study_dir = tmp_path / "study"
    _truth(study_dir)
    params = simulate_ct_study(Study.open(study_dir, create=False), views=60, channels=128, pixel_mm=5.0,
                               slice_mm=5.0, z_range=(-5.0, 0.0), figures=False, stage_name=None)
    raw = load_raw(study_dir / "ct" / "sinogram.npz")
    assert raw.geometry.n_channels == 128 and raw.sinogram.shape == (1, 60, 128)
    assert params["slices_mm"] == [-5.0, 0.0] and not (study_dir / "ct" / "ct_nomar_axial.png").exists()
    assert not (study_dir / "protocol.json").exists()
