"""Polyenergetic CT simulation: HU of water, air and bone, beam-hardening streaks, noise vs mAs."""

from __future__ import annotations

import numpy as np
import pytest

from spectct.ct.geometry import CtGeometry
from spectct.ct.simulate import reconstruct_ct, simulate_ct
from spectct.ct.sinogram_io import load_raw, load_reference, save_raw
from spectct.errors import InputError
from spectct.physics.spectrum import effective_energy, tube_spectrum
from spectct.volume import Volume

N, H = 96, 2.5  # 240-mm field of 2.5-mm pixels
NAMES = ["air", "water", "cortical_bone", "steel_316l"]
GEOM = CtGeometry().scaled(n_views=180, n_channels=368)


def _coords():
    c = (np.arange(N) - (N - 1) / 2) * H
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return xx, yy


def _phantom(bone: bool = False, rods: bool = False) -> Volume:
    xx, yy = _coords()
    lab = np.zeros((1, N, N), np.uint8)
    lab[0][(xx**2 + yy**2) < 100**2] = 1
    if bone:
        lab[0][((xx - 50) ** 2 + yy**2) < 15**2] = 2
    if rods:
        for cx in (-35.0, 35.0):
            lab[0][((xx - cx) ** 2 + yy**2) < 3.5**2] = 3
    origin = (-(N - 1) / 2 * H, -(N - 1) / 2 * H, -5.0)
    return Volume(lab, spacing=(1.0, H, H), origin=origin, unit="label")


def _recon(raw):
    return reconstruct_ct(raw, n_pixels=N, pixel_mm=H).data[0]


def test_spectrum_is_a_ct_beam():
    k, phi = tube_spectrum(110.0)
    assert k.max() < 110.0 and phi.min() >= 0
    mean = (k * phi).sum() / phi.sum()
    assert 50.0 < mean < 70.0
    assert 55.0 < effective_energy(110.0) < 75.0
    assert effective_energy(140.0) > effective_energy(80.0)
    with pytest.raises(InputError, match="kV"):
        tube_spectrum(60.0)


def test_water_and_air_hu():
    raw = simulate_ct(_phantom(), NAMES, GEOM, seed=3)
    img = _recon(raw)
    xx, yy = _coords()
    r2 = xx**2 + yy**2
    assert abs(img[r2 < 30**2].mean()) < 5.0
    assert img[(r2 > 108**2) & (r2 < 118**2)].mean() == pytest.approx(-1000.0, abs=10.0)
    # the HU scale is water at the effective energy of the hardened beam
    assert raw.mu_water == pytest.approx(0.0199, rel=0.03)


def test_cortical_bone_hu_in_clinical_range():
    raw = simulate_ct(_phantom(bone=True), NAMES, GEOM, noise=False)
    img = _recon(raw)
    xx, yy = _coords()
    bone = img[((xx - 50) ** 2 + yy**2) < 8**2].mean()
    # dense cortical bone at 100–120 kV reads about 1200–2000 HU clinically
    assert 1200.0 < bone < 2000.0


def test_metal_streaks_come_from_beam_hardening():
    """Two steel rods, noise-free: the polyenergetic scan shows the dark band between them and the
    hardened (cupped, under-valued) metal; the monoenergetic scan of the same rods has neither."""
    xx, yy = _coords()
    between = (np.abs(xx) < 22) & (np.abs(yy) < 3)
    rods = np.minimum((xx - 35) ** 2, (xx + 35) ** 2) + yy**2 < 2**2
    poly = _recon(simulate_ct(_phantom(rods=True), NAMES, GEOM, noise=False))
    mono = _recon(simulate_ct(_phantom(rods=True), NAMES, GEOM, noise=False, polyenergetic=False))
    clean = _recon(simulate_ct(_phantom(), NAMES, GEOM, noise=False))
    assert (poly - clean)[between].mean() < -60.0
    assert abs((mono - clean)[between].mean()) < 10.0
    assert poly[rods].mean() < 0.8 * mono[rods].mean()


def test_noise_scales_with_inverse_sqrt_mas():
    phantom = _phantom()
    xx, yy = _coords()
    roi = (xx**2 + yy**2) < 60**2
    clean = _recon(simulate_ct(phantom, NAMES, GEOM, noise=False))
    sd = {}
    for mas in (40.0, 160.0):
        g = GEOM.scaled(mas=mas)
        sd[mas] = np.std((_recon(simulate_ct(phantom, NAMES, g, seed=1)) - clean)[roi])
    assert sd[40.0] / sd[160.0] == pytest.approx(2.0, rel=0.10)


def test_reference_and_metal_trace(tmp_path):
    raw = simulate_ct(_phantom(rods=True), NAMES, GEOM, seed=1)
    assert raw.metal_trace.any() and raw.metal_trace.mean() < 0.2
    # outside the metal trace the reference and the scan agree up to noise and beam hardening
    outside = ~raw.metal_trace
    assert np.abs(raw.sinogram[outside] - raw.reference[outside]).mean() < 0.02
    assert (raw.sinogram[raw.metal_trace] - raw.reference[raw.metal_trace]).mean() > 0.5
    path = save_raw(raw, tmp_path / "sino.npz")
    back = load_raw(path)
    assert np.array_equal(back.sinogram, raw.sinogram) and np.array_equal(back.metal_trace, raw.metal_trace)
    assert back.geometry == raw.geometry and back.mu_water == raw.mu_water
    assert np.array_equal(back.reference, raw.reference)
    light = load_raw(path, reference=False)  # the reference stays on disk until asked for
    assert light.reference is None and np.array_equal(light.metal_trace, raw.metal_trace)
    assert np.array_equal(load_reference(path, [0]), raw.reference[[0]])
    vol = reconstruct_ct(back, n_pixels=N, pixel_mm=H)
    assert vol.unit == "HU" and vol.shape == (1, N, N)
    assert np.allclose(vol.center_world[:2], 0.0) and vol.origin[2] == pytest.approx(-5.0)


def test_simulation_streamed_to_disk_is_identical(tmp_path, monkeypatch):
    """``save_to`` writes the scan block by block; the file holds exactly the in-memory result, and a
    failure part-way leaves no file under the final name."""
    from spectct.ct import simulate as sim
    from spectct.io.stored_array import StoredArray

    one = _phantom(rods=True)
    lab = Volume(np.repeat(one.data, 3, axis=0), spacing=one.spacing, origin=one.origin, unit="label")
    monkeypatch.setattr(sim, "_WORK_ELEMENTS", 1)  # one slice per block: three blocks
    mem = simulate_ct(lab, NAMES, GEOM, seed=4)
    disk = simulate_ct(lab, NAMES, GEOM, seed=4, save_to=tmp_path / "s.npz")
    assert isinstance(disk.sinogram, StoredArray)
    for name in ("sinogram", "reference", "metal_trace", "z_mm"):
        assert np.array_equal(np.asarray(getattr(disk, name)), getattr(mem, name)), name
    assert disk.mu_water == mem.mu_water and disk.geometry == mem.geometry
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the second block
            raise RuntimeError("interrupted")
        return original(*args, **kwargs)

    original = sim._log_bhc
    monkeypatch.setattr(sim, "_log_bhc", failing)
    with pytest.raises(RuntimeError):
        simulate_ct(lab, NAMES, GEOM, seed=4, save_to=tmp_path / "t.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="unobtainium"):
        simulate_ct(_phantom(), ["air", "unobtainium"], GEOM)
    with pytest.raises(InputError, match="label"):
        simulate_ct(_phantom(rods=True), ["air", "water"], GEOM)
    with pytest.raises(InputError, match="kV"):
        GEOM.scaled(kvp=200.0)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        load_raw(bad)


def test_tissue_basis_decomposition_is_accurate():
    """Tissues as water/bone mixtures within 0.2 % (weighted); metals and the bases stay exact."""
    from spectct.ct.simulate import Beam, material_bases
    from spectct.physics.materials import MATERIALS

    beam = Beam.from_spectrum(110.0)
    names = list(MATERIALS)
    bases = material_bases(names, beam.energies_kev, beam.weights)
    assert {"ti6al4v", "steel_316l", "cocrmo"} <= set(bases.names)
    approx = bases.mu @ bases.coefficients  # [E, M]
    for i, name in enumerate(names):
        if name == "air":
            assert not bases.coefficients[:, i].any()
            continue
        mu = np.asarray(MATERIALS[name].mu(beam.energies_kev))
        rel = np.sqrt(np.sum(beam.weights * ((approx[:, i] - mu) / mu) ** 2))
        assert rel < 0.002, name
        if MATERIALS[name].is_metal:
            assert np.allclose(approx[:, i], mu)
