"""OSEM / MLEM / FBP: first on a small dense random system matrix, then on the real SPECT projector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spectct.errors import InputError
from spectct.spect.recon import (
    fbp_chang,
    gaussian_filter3d,
    mlem,
    osem,
    poisson_log_likelihood,
    subset_views,
)


class DenseOperator:
    """A tiny explicit system matrix A [bins, voxels] acting on images [z, y, x] and data [view, row, col]."""

    def __init__(self, image_shape, data_shape, seed=0, density=0.3):
        rng = np.random.default_rng(seed)
        n_vox = int(np.prod(image_shape))
        n_bins = int(np.prod(data_shape))
        a = rng.random((n_bins, n_vox)) * (rng.random((n_bins, n_vox)) < density)
        self.a = torch.as_tensor(a, dtype=torch.float64)
        self.image_shape = tuple(image_shape)
        self.data_shape = tuple(data_shape)

    def _rows(self, views):
        v, r, c = self.data_shape
        views = np.arange(v) if views is None else np.asarray(views)
        idx = (views[:, None] * (r * c) + np.arange(r * c)[None, :]).ravel()
        return torch.as_tensor(idx), len(views)

    def forward(self, x, views=None):
        rows, nv = self._rows(views)
        out = self.a[rows] @ x.reshape(-1).to(torch.float64)
        return out.reshape(nv, *self.data_shape[1:]).to(x.dtype)

    def adjoint(self, y, views=None):
        rows, _ = self._rows(views)
        out = self.a[rows].T @ y.reshape(-1).to(torch.float64)
        return out.reshape(self.image_shape).to(y.dtype)


IMG = (3, 5, 5)
DATA = (12, 4, 6)


def test_dense_operator_is_adjoint():
    op = DenseOperator(IMG, DATA)
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.random(IMG))
    y = torch.as_tensor(rng.random((4, *DATA[1:])))
    views = [1, 4, 7, 10]
    lhs = float((op.forward(x, views) * y).sum())
    rhs = float((x * op.adjoint(y, views)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_subsets_partition_and_span_the_arc():
    groups = subset_views(120, 15)
    assert len(groups) == 15 and all(len(g) == 8 for g in groups)
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(120))
    for g in groups:  # each subset samples the whole 360°: largest angular gap = 360/8
        angles = np.sort(g) * 3.0
        gaps = np.diff(np.concatenate([angles, [angles[0] + 360.0]]))
        assert gaps.max() == pytest.approx(45.0)
    # consecutive subsets are far apart
    starts = [int(g[0]) for g in groups]
    assert abs(starts[1] - starts[0]) >= 7
    with pytest.raises(InputError):
        subset_views(10, 11)


def test_mlem_log_likelihood_is_monotonic():
    op = DenseOperator(IMG, DATA, seed=3)
    rng = np.random.default_rng(4)
    truth = torch.as_tensor(rng.random(IMG) * 10, dtype=torch.float32)
    scatter = np.full(DATA, 0.5, dtype=np.float32)
    y = rng.poisson(op.forward(truth).numpy() + scatter).astype(np.float32)
    lls = []

    def record(it, x):
        lls.append(poisson_log_likelihood(y, op.forward(x).numpy() + scatter))

    mlem(y, op, iterations=30, additive=scatter, callback=record)
    assert len(lls) == 30
    assert np.all(np.diff(lls) >= -1e-6 * abs(lls[0])), np.diff(lls)
    assert lls[-1] > lls[0]


def test_osem_recovers_noise_free_truth_and_keeps_positivity():
    op = DenseOperator(IMG, DATA, seed=5, density=0.6)
    truth = torch.as_tensor(np.random.default_rng(6).random(IMG) * 5 + 1, dtype=torch.float32)
    y = op.forward(truth).numpy().astype(np.float32)
    scatter = 0.3 * y.mean() * np.ones_like(y)
    x = osem(y + scatter, op, iterations=200, subsets=4, additive=scatter)
    assert isinstance(x, np.ndarray) and x.shape == IMG
    assert x.min() >= 0
    # data fit: the model reproduces the data (the dense system is over-determined: 288 bins, 75 voxels)
    fit = op.forward(torch.as_tensor(x)).numpy()
    assert np.abs(fit - y).max() / y.max() < 0.01
    assert np.abs(x - truth.numpy()).mean() / truth.numpy().mean() < 0.05


def test_osem_without_scatter_term_is_biased_when_scatter_present():
    """Using the additive term matters: ignoring it puts the scatter into the image."""
    op = DenseOperator(IMG, DATA, seed=7, density=0.6)
    truth = torch.full(IMG, 2.0)
    y = op.forward(truth).numpy().astype(np.float32)
    scatter = 0.5 * y
    with_term = osem(y + scatter, op, iterations=60, subsets=3, additive=scatter)
    without = osem(y + scatter, op, iterations=60, subsets=3)
    assert with_term.mean() == pytest.approx(2.0, rel=0.02)
    assert without.mean() > 2.5


def test_osem_rejects_bad_data():
    op = DenseOperator(IMG, DATA)
    y = np.ones(DATA, dtype=np.float32)
    bad = y.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        osem(bad, op, iterations=1, subsets=2)
    bad[0, 0, 0] = -1
    with pytest.raises(InputError, match="negative"):
        osem(bad, op, iterations=1, subsets=2)
    with pytest.raises(InputError, match="shape"):
        osem(y, op, iterations=1, subsets=2, additive=np.ones((2, 2, 2)))


def test_gaussian_postfilter_preserves_mean_and_has_requested_width():
    x = torch.zeros((1, 1, 65))
    x[0, 0, 32] = 1.0
    out = gaussian_filter3d(x, (0.0, 0.0, 10.0), (1.0, 1.0, 2.0))
    prof = out[0, 0].numpy()
    assert prof.sum() == pytest.approx(1.0, rel=1e-5)
    pos = np.arange(65) * 2.0
    mean = (prof * pos).sum()
    sigma = np.sqrt((prof * (pos - mean) ** 2).sum())
    assert 2.3548 * sigma == pytest.approx(10.0, rel=0.03)
    u = gaussian_filter3d(torch.ones((8, 8, 8)), 6.0, (2.0, 2.0, 2.0))
    assert torch.allclose(u, torch.ones_like(u), atol=1e-5)


# --------------------------------------------------------------------------------- parallel-beam toy FBP
class RotateSumOperator:
    """Parallel-beam projector by rotating the image and summing along y (bilinear interpolation),
    with an optional uniform attenuation disc; its adjoint is built by autograd so it is exact."""

    def __init__(self, n, n_views, mu=None):
        self.n, self.n_views = n, n_views
        self.angles = np.arange(n_views) * 2 * np.pi / n_views
        self.mu = mu  # [z, y, x] 1/pixel or None

    def _one(self, x, theta):
        c, s = np.cos(theta), np.sin(theta)
        mat = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype)[None]
        grid = torch.nn.functional.affine_grid(mat, (1, 1, self.n, self.n), align_corners=False)
        img = x[:, None]  # [z, 1, y, x]
        rot = torch.nn.functional.grid_sample(img, grid.expand(x.shape[0], -1, -1, -1), align_corners=False)[
            :, 0
        ]
        if self.mu is not None:
            m = torch.nn.functional.grid_sample(
                self.mu[:, None].to(x.dtype), grid.expand(x.shape[0], -1, -1, -1), align_corners=False
            )[:, 0]
            # attenuation towards the detector at y = +end: integral over the voxels "after" each voxel
            after = torch.flip(torch.cumsum(torch.flip(m, [1]), 1), [1]) - 0.5 * m
            rot = rot * torch.exp(-after)
        return rot.sum(1)  # [z, x]

    def forward(self, x, views=None):
        views = range(self.n_views) if views is None else views
        return torch.stack([self._one(x, self.angles[v]) for v in views])

    def adjoint(self, y, views=None):
        x = torch.zeros((y.shape[1], self.n, self.n), dtype=y.dtype, requires_grad=True)
        out = self.forward(x, views)
        (g,) = torch.autograd.grad(out, x, grad_outputs=y)
        return g.detach()


def test_fbp_chang_recovers_uniform_attenuating_disc():
    n, n_views = 32, 48
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disc = ((yy**2 + xx**2) < 11**2).astype(np.float32)[None]
    mu = torch.as_tensor(disc * 0.08)  # ≈ 0.15 /cm on 2 cm... per pixel units
    plain = RotateSumOperator(n, n_views)
    att = RotateSumOperator(n, n_views, mu=mu)
    truth = torch.as_tensor(disc * 4.0)
    y = att.forward(truth).numpy()
    no_ac = fbp_chang(y, plain, window="ramp")
    ac = fbp_chang(y, plain, attenuated_model=att, window="ramp")
    core = ((yy**2 + xx**2) < 5**2)[None]
    # without AC the centre is strongly under-estimated; Chang brings it back close to the truth
    assert no_ac[core].mean() < 0.6 * 4.0
    assert ac[core].mean() == pytest.approx(4.0, rel=0.12)
    assert abs(ac[~(((yy**2 + xx**2) < 13**2)[None])]).mean() < 0.2


# --------------------------------------------------------------------------------- with the real projector
@pytest.fixture(scope="module")
def cylinder_case():
    """A 32³ water cylinder (8-mm voxels) with three hot spheres, 32 views, LEHR response, μ-map."""
    from spectct.physics.collimator import Collimator
    from spectct.spect.geometry import SpectGeometry
    from spectct.spect.projector import SpectModel

    geom = SpectGeometry.dual_head(stops_per_head=16, radius_mm=170.0, matrix=32, pixel_mm=8.0)
    grid = geom.image_grid()
    z, y, x = np.meshgrid(*grid.axis_coordinates(), indexing="ij")
    body = (x**2 + y**2 < 105**2) & (np.abs(z) < 100)
    mu = grid.with_data((body * 0.01538).astype(np.float32), unit="1/mm")
    spheres = [((-55.0, -30.0, 0.0), 9.0), ((50.0, -35.0, 0.0), 14.0), ((0.0, 55.0, 0.0), 22.0)]
    act = body.astype(np.float32)
    masks = []
    for (cx, cy, cz), r in spheres:
        m = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < r**2
        act[m] = 5.0
        masks.append(m)
    uniform = (np.abs(z) > 45) & (np.abs(z) < 75) & (x**2 + y**2 < 70**2)
    collimator = Collimator.lehr()
    model = SpectModel(geom, grid, mu, collimator, psf=True)
    return {
        "geom": geom,
        "grid": grid,
        "mu": mu,
        "act": act,
        "masks": masks,
        "uniform": uniform,
        "model": model,
        "collimator": collimator,
        "xyz": (x, y, z),
    }


def test_osem_uniform_region_and_sphere_recovery_with_ac_psf_tew(cylinder_case):
    """Poisson data with a known scatter background whose TEW windows are consistent with it:
    after AC + SC + PSF the uniform region is within 5 % of truth and recovery rises with sphere size."""
    from spectct.spect.geometry import EnergyWindow, Projections
    from spectct.spect.scatter import tew

    c = cylinder_case
    model, act = c["model"], c["act"]
    scale = 40.0  # counts per unit activity per view: ~2e6 photopeak counts in all
    primary = model.forward(torch.as_tensor(act)).numpy() * scale
    scatter = 0.35 * gaussian_filter3d(torch.as_tensor(primary), (0.0, 40.0, 40.0), (1.0, 8.0, 8.0)).numpy()
    rng = np.random.default_rng(11)
    peak = EnergyWindow("photopeak", 129.96, 151.04)
    lower = EnergyWindow("lower", 125.75, 129.96)
    upper = EnergyWindow("upper", 151.04, 155.25)
    wp = peak.width_kev
    counts = np.stack(
        [
            rng.poisson(primary + scatter),
            rng.poisson(scatter * lower.width_kev / wp),
            rng.poisson(scatter * upper.width_kev / wp),
        ]
    ).astype(np.float32)
    geom = type(c["geom"])(**{**c["geom"].__dict__, "windows": (peak, lower, upper)})
    proj = Projections(counts, geom)
    s_est = tew(proj, smooth_fwhm_px=3.0)
    assert s_est.mean() == pytest.approx(scatter.mean(), rel=0.03)

    x = osem(proj.photopeak, model, iterations=4, subsets=8, additive=s_est) / scale
    u = x[c["uniform"]]
    assert u.mean() == pytest.approx(1.0, rel=0.05)
    cov = u.std() / u.mean()
    assert cov < 0.25  # reported in benchmarks/results/osem.md with the full-size run
    rc = [x[m].mean() / 5.0 for m in c["masks"]]
    assert rc[0] < rc[1] < rc[2] < 1.1, rc

    # ignoring the scatter term biases the uniform region upwards
    x_nosc = osem(proj.photopeak, model, iterations=4, subsets=8) / scale
    assert x_nosc[c["uniform"]].mean() > 1.15


def test_without_attenuation_correction_the_centre_is_underestimated(cylinder_case):
    from spectct.spect.projector import SpectModel

    c = cylinder_case
    x, y, z = c["xyz"]
    truth = np.where(c["act"] > 0, 1.0, 0.0).astype(np.float32)
    data = c["model"].forward(torch.as_tensor(truth)).numpy()
    no_ac = SpectModel(c["geom"], c["grid"], None, c["collimator"], psf=True)
    centre = (x**2 + y**2 < 30**2) & (np.abs(z) < 60)
    rim = (x**2 + y**2 > 80**2) & (x**2 + y**2 < 95**2) & (np.abs(z) < 60)
    img_ac = osem(data, c["model"], iterations=4, subsets=8)
    img_noac = osem(data, no_ac, iterations=4, subsets=8)
    assert img_ac[centre].mean() == pytest.approx(1.0, rel=0.05)
    ratio_noac = img_noac[centre].mean() / img_noac[rim].mean()
    assert ratio_noac < 0.6  # e^{-0.154·10.5} ≈ 0.2 through the centre, partly offset by the unattenuated rim


# --------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Interfile projections (3 windows) of a small simulated cylinder and its μ-map as NIfTI."""
    from spectct.io.interfile import write_projections_interfile
    from spectct.io.nifti import write_nifti
    from spectct.spect.geometry import SpectGeometry
    from spectct.spect.simulate import simulate_spect

    root = tmp_path_factory.mktemp("recon_cli")
    geom = SpectGeometry.dual_head(stops_per_head=8, radius_mm=150.0, matrix=16, pixel_mm=16.0)
    grid = geom.image_grid(unit="Bq/mL")
    z, y, x = np.meshgrid(*grid.axis_coordinates(), indexing="ij")
    body = (x**2 + y**2 < 90**2) & (np.abs(z) < 80)
    act = grid.with_data((body * 10e3).astype(np.float32))
    mu = grid.with_data((body * 0.01538).astype(np.float32), unit="1/mm")
    proj = simulate_spect(act, mu, geom, rng=2, oversample=1)
    write_projections_interfile(proj, root / "proj")
    write_nifti(mu, root / "mu.nii.gz")
    return root


def _cli(args):
    from typer.testing import CliRunner

    from spectct.cli import app

    return CliRunner().invoke(app, args)


def test_cli_recon_spect_writes_bq_per_ml_and_metadata(tiny_study, tmp_path):
    import json

    from spectct.io.nifti import read_nifti

    out = tmp_path / "spect.nii.gz"
    res = _cli(
        [
            "recon-spect",
            str(tiny_study / "proj"),
            "--mumap",
            str(tiny_study / "mu.nii.gz"),
            "--iterations",
            "2",
            "--subsets",
            "4",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert res.exit_code == 0, res.output
    img = read_nifti(out)
    assert img.unit == "Bq/mL" and img.shape == (16, 16, 16)
    meta = json.loads((tmp_path / "spect.json").read_text())
    assert meta["scatter"] == "tew" and meta["attenuation_correction"] and meta["sensitivity_cps_per_mbq"] > 0


def test_cli_bad_inputs_exit_2_without_output(tiny_study, tmp_path):
    import shutil

    from spectct.errors import SpectCTError
    from spectct.io.nifti import write_nifti
    from spectct.volume import Volume

    out = tmp_path / "spect.nii.gz"
    # NaN counts in the photopeak data file
    bad = tmp_path / "bad"
    shutil.copytree(tiny_study / "proj", bad)
    data_file = sorted(p for p in bad.iterdir() if p.suffix != ".hs")[0]
    raw = np.fromfile(data_file, dtype=np.float32)
    raw[5] = np.nan
    raw.tofile(data_file)
    res = _cli(["recon-spect", str(bad), "--out", str(out), "--quiet"])
    assert isinstance(res.exception, SpectCTError) and "NaN" in str(res.exception)
    assert not out.exists()
    # a CT that does not overlap the SPECT field
    far = Volume.from_bounds((900, 900, 900), (1000, 1000, 1000), 5.0, unit="HU")
    write_nifti(far.with_data(np.zeros(far.shape, np.float32)), tmp_path / "ct.nii.gz")
    res = _cli(
        [
            "recon-spect",
            str(tiny_study / "proj"),
            "--ct",
            str(tmp_path / "ct.nii.gz"),
            "--kvp",
            "120",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert isinstance(res.exception, SpectCTError) and "overlap" in str(res.exception)
    assert not out.exists()
    res = _cli(["recon-spect", str(tmp_path / "missing.dcm"), "--out", str(out), "--quiet"])
    assert isinstance(res.exception, SpectCTError) and "missing.dcm" in str(res.exception)


@pytest.mark.slow
def test_ge_lu177_real_data_reconstructs_onto_the_anatomy(shared_data, tmp_path):
    """GE Discovery 670 Pro, Lu-177, MEGP, 60 views: `recon-spect ... --ct CT --iterations 4 --subsets 10`.
    Most reconstructed activity must lie inside the patient outline of the CT-derived μ-map (a wrong orbit
    convention, e.g. the GE start angle taken 180° off, drops this to ≈ 0.75)."""
    import lzma
    import tarfile

    from spectct.io.dicom_ct import read_ct_series
    from spectct.io.nifti import read_nifti
    from spectct.spect.ctac import ct_to_mumap

    src = shared_data / "ge-lu177-spectct"
    dcm = tmp_path / "bed1_projections.dcm"
    dcm.write_bytes(lzma.decompress((src / "bed1_projections.dcm.xz").read_bytes()))
    with tarfile.open(src / "ct_series.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    out = tmp_path / "spect.nii.gz"
    res = _cli(
        [
            "recon-spect",
            str(dcm),
            "--ct",
            str(tmp_path / "CT"),
            "--iterations",
            "4",
            "--subsets",
            "10",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert res.exit_code == 0, res.output
    img = read_nifti(out)
    mu = ct_to_mumap(read_ct_series(tmp_path / "CT"), img, 120.0, 208.37)
    body = mu.data > 0.005
    assert img.data[body].sum() / img.data.sum() > 0.9


def test_subsets_follow_angles_for_dual_head_order():
    """Dual-head stop-major order (views 2s and 2s+1 are 180° apart): subsets still span the arc evenly."""
    angles = np.mod(np.repeat(np.arange(60) * 3.0, 2) + np.tile([0.0, 180.0], 60), 360.0)
    for g in subset_views(120, 15, angles):
        a = np.sort(angles[g])
        gaps = np.diff(np.concatenate([a, [a[0] + 360.0]]))
        assert gaps.max() == pytest.approx(45.0)
    with pytest.raises(InputError):
        subset_views(120, 15, angles[:10])
