"""Polyenergetic fan-beam CT of a material map, and its reconstruction to HU.

The physics, ray by ray (one axial rotation per slice, see :mod:`spectct.ct.geometry`):

1. **Path lengths** through the materials, by forward projection with
   :class:`~spectct.ct.projector.FanBeamProjector`.  To project fewer images, every non-metal tissue
   is written as a water/cortical-bone mixture, ``μ_m(E) ≈ a_m μ_water(E) + b_m μ_bone(E)``, fitted
   by weighted least squares over the beam's spectrum (the two-basis decomposition of Alvarez &
   Macovski, Phys. Med. Biol. 21 (1976) 733–744; weighted RMS error < 0.1 % for the ICRU tissues of
   :mod:`spectct.physics.materials`).  Metals, and any material the fit misses by more than 0.2 %,
   keep a basis of their own, so metal is exact.  One projection per basis image replaces one per
   material.
2. **Polyenergetic transmission** of an energy-integrating detector,
   ``T = Σ_E w_E exp(−Σ_m μ_m(E) L_m)`` with ``w_E ∝ E Φ(E)`` from the spekpy spectrum
   (:mod:`spectct.physics.spectrum`) and μ from xraylib (:mod:`spectct.physics.materials`).  This is
   where beam hardening and, behind metal, photon starvation come from.
3. **Quantum noise**: the number of photons reaching a channel is Poisson with mean
   ``N̄ = N₀ T_ph`` (``T_ph`` the photon-number transmission); ``N₀`` is the spectrum's fluence at 1 m
   per mAs, scaled by the inverse square law to the detector, the channel's area
   (``sdd·Δγ × slice·sdd/sid``) and the mAs of one view (``mAs / n_views``).  Each detected photon
   carries the mean energy of the transmitted spectrum (the Swank factor of the energy spread is
   neglected).  **Electronic noise** adds a Gaussian of ``electronic_noise_photons`` photon-equivalents
   (σ ≈ 5–10 quanta is typical of modern CT detector channels: Whiting et al., "Properties of
   preprocessed sinogram data in x-ray computed tomography", Med. Phys. 33 (2006) 3290–3303).
   No bowtie filter is modelled: every channel sees the same unattenuated fluence.
4. **Log and water beam-hardening correction**, as a scanner does: ``p = −ln T`` (with non-positive
   signals clamped to half a photon), then the water calibration curve maps ``p`` to the water path
   ``L_w(p)`` that gives the same polyenergetic attenuation and returns ``μ_w,eff · L_w`` — so water of
   any thickness reconstructs to 0 HU, while bone and metal keep their residual hardening (dark bands
   and streaks) as on a real scanner.  ``μ_w,eff`` is the effective water attenuation behind 200 mm of
   water (:func:`spectct.physics.spectrum.water_effective_mu`); it is the HU scale (``CtRaw.mu_water``).

The metal-free **reference** sinogram is the same scan, noise-free, with every metal voxel replaced by
soft tissue: the truth a metal artifact reduction is judged against.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from spectct.ct.fbp import fbp, mu_to_hu
from spectct.ct.geometry import CtGeometry
from spectct.ct.projector import FanBeamProjector, clear_matrix_cache, work_elements
from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError
from spectct.io.stored_array import StoredArray
from spectct.physics.materials import get_material
from spectct.physics.spectrum import CT_ANODE_ANGLE_DEG, CT_FILTRATION, tube_spectrum
from spectct.progress import SILENT, Reporter
from spectct.volume import Volume

#: the material that replaces metal in the reference (metal-free) scan
REFERENCE_FILL = "soft_tissue"
#: water thickness (mm) whose hardened beam defines μ_w,eff (the 0-HU scale)
CALIBRATION_WATER_MM = 200.0
_WORK_ELEMENTS = 32_000_000


def _float32(data):
    """``data`` as float32; a file-backed :class:`~spectct.io.stored_array.StoredArray` of float32 stays on
    disk (read slice by slice where it is used)."""
    if isinstance(data, StoredArray) and data.dtype == np.float32:
        return data
    return np.asarray(data, dtype=np.float32)


@dataclass
class CtRaw:
    """Raw data of a simulated (or imported) CT scan.

    Attributes
    ----------
    sinogram : ``[nz, n_views, n_channels]`` float32 line integrals after log and water
        beam-hardening correction (1/mm × mm, dimensionless); a
        :class:`~spectct.io.stored_array.StoredArray` when loaded from a file (read slice by slice).
    reference : same shape: the noise-free scan with metal replaced by soft tissue (MAR truth);
        may be ``None`` for imported data.
    metal_trace : same shape, bool: rays that cross any metal.
    geometry : the scan's :class:`CtGeometry`.
    z_mm : ``[nz]`` LPS z of each slice (mm).
    mu_water : μ of water (1/mm) on the scale of ``sinogram`` (HU = 1000 (μ − μ_water)/μ_water).
    isocenter_xy_mm : LPS (x, y) of the rotation axis.
    n_pixels, pixel_mm : the image grid the scan was simulated on (the natural reconstruction grid).
    effective_energy_kev : energy whose water μ equals ``mu_water``.
    frame_of_reference : frame of reference UID of the patient the scan belongs to.
    """

    sinogram: np.ndarray | StoredArray
    reference: np.ndarray | StoredArray | None
    metal_trace: np.ndarray
    geometry: CtGeometry
    z_mm: np.ndarray
    mu_water: float
    isocenter_xy_mm: tuple[float, float] = (0.0, 0.0)
    n_pixels: int = 512
    pixel_mm: float = 500.0 / 512
    effective_energy_kev: float = float("nan")
    frame_of_reference: str | None = None

    def __post_init__(self) -> None:
        self.sinogram = _float32(self.sinogram)
        self.geometry.check_sinogram(self.sinogram.shape)
        self.z_mm = np.asarray(self.z_mm, dtype=np.float64).reshape(-1)
        if self.z_mm.size != self.sinogram.shape[0]:
            raise InputError(f"sinogram has {self.sinogram.shape[0]} slices but {self.z_mm.size} z positions")
        if self.reference is not None:
            self.reference = _float32(self.reference)
            if self.reference.shape != self.sinogram.shape:
                raise InputError(f"reference sinogram shape {self.reference.shape} != {self.sinogram.shape}")
        self.metal_trace = np.asarray(self.metal_trace, dtype=bool)
        if self.metal_trace.shape != self.sinogram.shape:
            raise InputError(f"metal trace shape {self.metal_trace.shape} != sinogram {self.sinogram.shape}")
        if not (self.mu_water > 0):
            raise InputError(f"mu_water must be positive, got {self.mu_water}")
        self.isocenter_xy_mm = (float(self.isocenter_xy_mm[0]), float(self.isocenter_xy_mm[1]))

    @property
    def slice_spacing_mm(self) -> float:
        """Spacing of the slices (``geometry.slice_mm`` for a single slice)."""
        if self.z_mm.size < 2:
            return self.geometry.slice_mm
        d = np.diff(self.z_mm)
        if not np.allclose(d, d[0], atol=1e-3) or d[0] <= 0:
            raise GeometryError("CT slices must be equally spaced with increasing z")
        return float(d[0])


# --------------------------------------------------------------------------- spectrum handling
@dataclass(frozen=True)
class Beam:
    """A binned, detector-weighted spectrum and the water calibration derived from it."""

    energies_kev: np.ndarray  # [E]
    weights: np.ndarray  # [E] energy-integrating detector weights, Σ = 1
    photon_fraction: np.ndarray  # [E] photon-number fractions, Σ = 1
    photons_per_mm2_mas: float  # fluence at 1 m
    mu_water_eff: float  # 1/mm
    effective_energy_kev: float
    mean_energy_kev: float

    @classmethod
    def from_spectrum(cls, kvp: float, bin_kev: float = 4.0, monoenergetic: bool = False,
                      filtration=CT_FILTRATION, anode_angle: float = CT_ANODE_ANGLE_DEG) -> Beam:
        k, phi = tube_spectrum(kvp, filtration, anode_angle)
        water = get_material("water")
        # coarse bins: fluence-weighted mean energy per bin (spectrum shape kept, cost bounded)
        edges = np.arange(0.0, kvp + bin_kev, bin_kev)
        which = np.clip(np.digitize(k, edges) - 1, 0, len(edges) - 2)
        flu = np.bincount(which, weights=phi, minlength=len(edges) - 1)
        e_mean = np.bincount(which, weights=phi * k, minlength=len(edges) - 1)
        keep = flu > flu.sum() * 1e-7
        energies, flu = e_mean[keep] / flu[keep], flu[keep]
        w = energies * flu / (energies * flu).sum()
        mu_w = np.asarray(water.mu(energies))
        l_cal = CALIBRATION_WATER_MM
        mu_eff = float(-np.log((w * np.exp(-mu_w * l_cal)).sum()) / l_cal)
        grid = np.linspace(15.0, float(kvp), 4000)
        e_eff = float(np.interp(-mu_eff, -np.asarray(water.mu(grid)), grid))
        total = float(phi.sum())
        e_avg = float((k * phi).sum() / phi.sum())
        if monoenergetic:
            mu_mono = float(water.mu(e_eff))
            return cls(np.array([e_eff]), np.array([1.0]), np.array([1.0]), total, mu_mono, e_eff, e_eff)
        return cls(energies, w, flu / flu.sum(), total, mu_eff, e_eff, e_avg)

    def water_table(self, max_mm: float = 1500.0, n: int = 3001) -> tuple[np.ndarray, np.ndarray]:
        """``(p_poly(L), μ_w,eff · L)`` for water paths ``L`` in 0 … ``max_mm`` (the BHC curve)."""
        length = np.linspace(0.0, max_mm, n)
        mu_w = np.asarray(get_material("water").mu(self.energies_kev))
        p = -np.log(np.exp(-np.outer(length, mu_w)) @ self.weights)
        return p, self.mu_water_eff * length


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation with linear extrapolation at the top end (``xp`` increasing)."""
    i = torch.searchsorted(xp, x.contiguous()).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


# --------------------------------------------------------------------------- simulation
def ct_grid(material_index: Volume, geometry: CtGeometry, n_pixels: int | None = None,
            pixel_mm: float | None = None, isocenter_xy_mm: tuple[float, float] = (0.0, 0.0)) -> Volume:
    """The square, isocentred image grid (over the map's slices) a scan of ``material_index`` uses.

    Defaults: the map's in-plane pixel size and as many pixels as fill ``geometry.fov_mm``.
    """
    if not np.allclose(np.abs(material_index.direction), np.eye(3), atol=1e-6):
        raise GeometryError("the CT material map must be on an axis-aligned grid")
    dz, dy, dx = material_index.spacing
    h = float(pixel_mm or dx)
    n = int(n_pixels or int(math.ceil(geometry.fov_mm / h - 1e-6)))
    zs = material_index.axis_coordinates()[0]
    x0 = isocenter_xy_mm[0] - (n - 1) / 2.0 * h
    y0 = isocenter_xy_mm[1] - (n - 1) / 2.0 * h
    return Volume(np.zeros((material_index.shape[0], n, n), dtype=np.uint8), spacing=(dz, h, h),
                  origin=(x0, y0, float(zs.min())), unit="label",
                  frame_of_reference=material_index.frame_of_reference)


@dataclass(frozen=True)
class MaterialBases:
    """Basis materials for the projection: ``μ_m(E) ≈ Σ_k coefficients[k, m] μ_k(E)``."""

    names: tuple[str, ...]  # basis material names
    coefficients: np.ndarray  # [K, M]
    mu: np.ndarray  # [E, K] in 1/mm
    fill: np.ndarray  # [K] coefficients of REFERENCE_FILL (what replaces metal in the reference)
    fit_error: np.ndarray  # [M] weighted relative RMS error of each material's fit


def material_bases(names: list[str], energies_kev: np.ndarray, weights: np.ndarray,
                   tolerance: float = 0.002) -> MaterialBases:
    """Two-basis (water, cortical bone) decomposition of the tissues; metals keep their own basis.

    ``weights`` (the detector weights of the energies) weight the least-squares fit; a material
    whose weighted relative RMS error exceeds ``tolerance`` becomes a basis itself.  ``"air"`` is
    vacuum (all coefficients 0).
    """
    energies = np.asarray(energies_kev, dtype=float)
    w = np.sqrt(np.asarray(weights, dtype=float))
    mats = [get_material(nm) for nm in names]
    basis_names = ["water", "cortical_bone"]
    basis_mu = [np.atleast_1d(get_material(b).mu(energies)) for b in basis_names]

    def fit(mu_m: np.ndarray, cols: list[np.ndarray]) -> tuple[np.ndarray, float]:
        a = np.stack(cols, axis=1)
        x, *_ = np.linalg.lstsq(a * w[:, None], mu_m * w, rcond=None)
        err = float(np.sqrt(np.sum(w**2 * ((a @ x - mu_m) / mu_m) ** 2) / np.sum(w**2)))
        return x, err

    own = [i for i, m in enumerate(mats) if m.name != "air" and m.name not in basis_names
           and (m.is_metal or fit(np.atleast_1d(m.mu(energies)), basis_mu[:2])[1] > tolerance)]
    for i in own:
        basis_names.append(mats[i].name)
        basis_mu.append(np.atleast_1d(mats[i].mu(energies)))
    k = len(basis_names)
    coef = np.zeros((k, len(mats)))
    errors = np.zeros(len(mats))
    for i, m in enumerate(mats):
        if m.name == "air":
            continue
        if m.name in basis_names:
            coef[basis_names.index(m.name), i] = 1.0
            continue
        x, errors[i] = fit(np.atleast_1d(m.mu(energies)), basis_mu[:2])
        coef[:2, i] = x
    fill_x, _ = fit(np.atleast_1d(get_material(REFERENCE_FILL).mu(energies)), basis_mu[:2])
    fill = np.zeros(k)
    fill[:2] = fill_x
    return MaterialBases(tuple(basis_names), coef, np.stack(basis_mu, axis=1), fill, errors)


def simulate_ct(material_index: Volume, material_names: list[str], geometry: CtGeometry, *, seed: int = 0,
                device: str | torch.device = "cpu", reporter: Reporter | None = None,
                metal_free: bool = False,
                polyenergetic: bool = True, noise: bool = True, electronic_noise_photons: float = 6.0,
                n_pixels: int | None = None, pixel_mm: float | None = None,
                isocenter_xy_mm: tuple[float, float] = (0.0, 0.0), bin_kev: float = 4.0,
                save_to: str | os.PathLike | None = None) -> CtRaw:
    """Simulate the raw data of a fan-beam CT scan of a material map (see the module docstring).

    Parameters
    ----------
    material_index : uint8 label volume; value ``i`` means ``material_names[i]`` (``"air"`` is vacuum
        for the simulation).  It is resampled (nearest) to the scan grid unless it already is on it.
    material_names : names known to :mod:`spectct.physics.materials`.
    geometry : scanner, views, channels, kVp and mAs.
    seed : seed of the noise (each slice draws from its own generator seeded by ``seed`` and its
        index, so results do not depend on chunking).
    device : torch device.
    reporter : progress reporter.
    metal_free : replace metal by soft tissue in the simulated scan itself (the reference is always
        metal-free).
    polyenergetic : ``False`` simulates a monoenergetic beam at the effective energy (no beam
        hardening; for tests and comparison).
    noise : quantum and electronic noise on (``False``: the expected signal).
    electronic_noise_photons : σ of the electronic noise in photon-equivalents.
    n_pixels, pixel_mm : simulation grid (defaults: the map's pixel size over ``geometry.fov_mm``).
    isocenter_xy_mm : LPS (x, y) of the rotation axis.
    bin_kev : width of the energy bins the spectrum is summed over.
    save_to : write the raw data to this ``.npz`` (as :func:`spectct.ct.sinogram_io.save_raw` does) block
        by block while simulating, instead of holding the scan in memory (3.3 GB at 1-mm clinical
        sampling); the returned CtRaw then reads its sinograms from that file.

    Returns
    -------
    CtRaw
    """
    rep = reporter or SILENT
    dev = resolve_device(device)
    names = list(material_names)
    for nm in names:
        get_material(nm)  # unknown names raise InputError
    data = np.asarray(material_index.data)
    if not np.issubdtype(data.dtype, np.integer):
        raise InputError(f"material map must hold integer labels, got {data.dtype}")
    if data.size and (int(data.max()) >= len(names) or int(data.min()) < 0):
        raise InputError(f"material map holds label {int(data.max())} but only {len(names)} "
                         "material names given")
    grid = ct_grid(material_index, geometry, n_pixels, pixel_mm, isocenter_xy_mm)
    if not material_index.same_grid(grid):
        rep.info("resampling the material map onto the CT grid")
        labels = material_index.with_data(data.astype(np.float32), unit="1").resample_to(
            grid, order="nearest", fill=0.0, device=dev).data.astype(np.uint8)
    else:
        labels = data.astype(np.uint8, copy=False)
    nz, n, h = grid.shape[0], grid.shape[1], grid.spacing[1]
    beam = Beam.from_spectrum(geometry.kvp, bin_kev, monoenergetic=not polyenergetic)
    projector = FanBeamProjector(geometry, n, h, device=dev)
    n0 = (beam.photons_per_mm2_mas * 1.0e6 * geometry.channel_pitch_rad * geometry.slice_mm / geometry.sid_mm
          * geometry.mas / geometry.n_views)  # photons per channel per view without object
    # basis decomposition: coefficients [K, M] of each material, μ of each basis [E, K]
    bases = material_bases(names, beam.energies_kev, beam.weights)
    coef = bases.coefficients  # [K, M]
    mu_k = bases.mu  # [E, K]
    fill = bases.fill  # [K] coefficients of the reference fill (soft tissue)
    metal_k = np.array([k for k, nm in enumerate(bases.names) if get_material(nm).is_metal], dtype=int)
    p_tab, l_tab = beam.water_table()
    tabs = (torch.as_tensor(p_tab, dtype=torch.float32, device=dev),
            torch.as_tensor(l_tab, dtype=torch.float32, device=dev))
    v, c = geometry.sinogram_shape
    z = grid.axis_coordinates()[0]
    header = dict(geometry=geometry, z_mm=z, mu_water=beam.mu_water_eff, isocenter_xy_mm=isocenter_xy_mm,
                  n_pixels=n, pixel_mm=h, effective_energy_kev=beam.effective_energy_kev,
                  frame_of_reference=grid.frame_of_reference)
    with contextlib.ExitStack() as stack:
        if save_to is not None:
            from spectct.ct.sinogram_io import raw_writer

            write = stack.enter_context(raw_writer(save_to, (nz, v, c), **header))
        else:
            sino = np.empty((nz, v, c), dtype=np.float32)
            ref = np.empty((nz, v, c), dtype=np.float32)
            trace = np.zeros((nz, v, c), dtype=bool)

            def write(s_part, r_part, t_part, z0):
                sino[z0:z0 + s_part.shape[0]], ref[z0:z0 + s_part.shape[0]] = s_part, r_part
                trace[z0:z0 + s_part.shape[0]] = t_part

        _simulate_blocks(write, labels, coef, mu_k, fill, metal_k, beam, projector, n0, tabs, seed, dev, rep,
                         metal_free=metal_free, noise=noise, electronic_noise_photons=electronic_noise_photons)
    if save_to is not None:
        from spectct.ct.sinogram_io import load_raw

        return load_raw(save_to)
    return CtRaw(sinogram=sino, reference=ref, metal_trace=trace, **header)


def _simulate_blocks(write, labels, coef, mu_k, fill, metal_k, beam, projector, n0, tabs, seed, dev, rep, *,
                     metal_free, noise, electronic_noise_photons) -> None:
    """The scan of :func:`simulate_ct`, block of slices by block: ``write(sino, ref, trace, z0=…)``."""
    nz, n = labels.shape[0], labels.shape[1]
    v, c = projector.geometry.sinogram_shape
    k_all = coef.shape[0]
    chunk = max(1, work_elements(dev, _WORK_ELEMENTS) // (max(1, k_all) * v * c))
    starts = list(range(0, nz, chunk))
    luts = torch.as_tensor(coef, dtype=torch.float32, device=dev)  # [K, M]: label -> basis density
    for z0 in rep.track(starts, "simulating CT", total=len(starts)):
        z1 = min(nz, z0 + chunk)
        lab = torch.as_tensor(labels[z0:z1], device=dev).long()
        present_labels = torch.unique(lab).cpu().numpy()
        active = [k for k in range(k_all) if np.any(coef[k, present_labels] != 0)]
        if any(k in metal_k for k in active):  # the fill that replaces metal in the reference must be there
            active = sorted(set(active) | set(np.flatnonzero(fill).tolist()))
        act = np.asarray(active, dtype=int)
        is_metal = torch.as_tensor(np.isin(act, metal_k), device=dev)
        if act.size:
            images = torch.stack([luts[k][lab] for k in act])  # [K', nzc, n, n]
            lengths = projector.forward(images.reshape(-1, n, n)).reshape(act.size, z1 - z0, v, c)
        else:
            lengths = torch.zeros((0, z1 - z0, v, c), dtype=torch.float32, device=dev)
        metal_len = lengths[is_metal].sum(0) if bool(is_metal.any()) else torch.zeros((z1 - z0, v, c), device=dev)
        hit = metal_len > 0  # only these rays differ in the metal-free reference
        fill_act = torch.as_tensor(fill[act], dtype=torch.float32, device=dev)[:, None]
        ref_hit = None  # path lengths [K', rays] of those rays with metal replaced by the fill
        if bool(hit.any()):
            ref_hit = torch.where(is_metal[:, None], 0.0, lengths[:, hit]) + fill_act * metal_len[hit]
        scanned = lengths
        if metal_free and ref_hit is not None:
            scanned = lengths.clone()
            scanned[:, hit] = ref_hit
        t_e, t_ph = _transmission(scanned, mu_k[:, act], beam)
        t_ref = t_e.clone()
        if not metal_free and ref_hit is not None:
            t_ref[hit] = _transmission(ref_hit, mu_k[:, act], beam)[0]
        if noise:
            t_e = _add_noise(t_e, t_ph, n0, electronic_noise_photons, seed, z0, dev)
        write(_log_bhc(t_e, n0, tabs).cpu().numpy(), _log_bhc(t_ref, n0, tabs).cpu().numpy(),
              (metal_len > 1e-3).cpu().numpy(), z0=z0)


def _transmission(lengths: torch.Tensor, mu: np.ndarray, beam: Beam) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy-weighted and photon-number transmissions for path lengths ``[M, …]`` and μ ``[E, M]``."""
    shape = lengths.shape[1:]
    t_e = torch.zeros(shape, dtype=torch.float32, device=lengths.device)
    t_ph = torch.zeros_like(t_e)
    mu_t = torch.as_tensor(mu, dtype=torch.float32, device=lengths.device)
    for e in range(mu.shape[0]):
        if lengths.shape[0]:
            att = torch.exp(-torch.tensordot(mu_t[e], lengths, dims=1))
        else:
            att = torch.ones(shape, dtype=torch.float32, device=lengths.device)
        t_e.add_(att, alpha=float(beam.weights[e]))
        t_ph.add_(att, alpha=float(beam.photon_fraction[e]))
    return t_e, t_ph


def _add_noise(t_e: torch.Tensor, t_ph: torch.Tensor, n0: float, sigma_e: float, seed: int, z0: int,
               dev: torch.device) -> torch.Tensor:
    out = torch.empty_like(t_e)
    for k in range(t_e.shape[0]):
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(seed) * 1_000_003 + z0 + k)
        mean_n = (n0 * t_ph[k]).double()
        counts = torch.poisson(mean_n, generator=gen).float()
        # each photon carries the transmitted mean energy: T = T_e · N / N̄
        signal = t_e[k] * counts / mean_n.float().clamp_min(1e-30)
        if sigma_e > 0:
            signal = signal + torch.randn(t_e[k].shape, generator=gen, device=dev) * (sigma_e / n0)
        out[k] = signal
    return out


def _log_bhc(t: torch.Tensor, n0: float, tabs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``−ln T`` (clamped at half a photon) mapped through the water beam-hardening curve."""
    p = -torch.log(t.clamp_min(0.5 / n0))
    return _interp(p.reshape(-1), *tabs).reshape(p.shape)


# --------------------------------------------------------------------------- reconstruction
def reconstruct_ct(raw: CtRaw, n_pixels: int = 512, pixel_mm: float = 500.0 / 512, filter: str = "hann",
                   device: str | torch.device = "cpu", reporter: Reporter | None = None,
                   sinogram: np.ndarray | None = None, slices_per_chunk: int = 8) -> Volume:
    """FBP of ``raw.sinogram`` (or ``sinogram``, e.g. a MAR-corrected one) to HU on an LPS grid.

    The grid is axis-aligned, ``n_pixels × n_pixels`` of ``pixel_mm`` centred on the isocentre, one
    slice per raw slice at its z.  Pixels outside the scan field read −1000 HU.
    """
    rep = reporter or SILENT
    data = raw.sinogram if sinogram is None else np.asarray(sinogram, dtype=np.float32)
    raw.geometry.check_sinogram(data.shape)
    if data.shape[0] != raw.z_mm.size:
        raise InputError(f"sinogram has {data.shape[0]} slices, raw data {raw.z_mm.size}")
    dz = raw.slice_spacing_mm
    nz = data.shape[0]
    out = np.empty((nz, int(n_pixels), int(n_pixels)), dtype=np.float32)
    starts = list(range(0, nz, slices_per_chunk))
    for z0 in rep.track(starts, "FBP", total=len(starts)):
        z1 = min(nz, z0 + slices_per_chunk)
        mu = fbp(data[z0:z1], raw.geometry, n_pixels=n_pixels, pixel_mm=pixel_mm, filter=filter,
                 device=device)
        out[z0:z1] = mu_to_hu(mu, raw.mu_water).cpu().numpy()
    h = float(pixel_mm)
    x0 = raw.isocenter_xy_mm[0] - (n_pixels - 1) / 2.0 * h
    y0 = raw.isocenter_xy_mm[1] - (n_pixels - 1) / 2.0 * h
    return Volume(out, spacing=(dz, h, h), origin=(x0, y0, float(raw.z_mm[0])), unit="HU",
                  frame_of_reference=raw.frame_of_reference)


# --------------------------------------------------------------------------- study folder
def simulate_ct_study(study, *, kv: float = 110.0, mas: float = 150.0, views: int = 1152, channels: int = 736,
                      z_range: tuple[float, float] | None = None, pixel_mm: float = 500.0 / 512,
                      slice_mm: float = 1.0, filter: str = "hann", seed: int = 0, figures: bool = True,
                      device: str | torch.device = "cpu", reporter: Reporter | None = None,
                      stage_name: str | None = "simulate-ct") -> dict:
    """Scan the phantom of a study folder: ``ct/sinogram.npz``, ``ct/ct_nomar.nii.gz``, ``ct/topogram.png``.

    The case phantom (when ``truth/components.json`` is the case's) is rasterised analytically on
    the part of the CT grid that holds the patient; any other truth is resampled (nearest) from
    ``truth/materials.nii.gz``.  The topogram is drawn from ``truth/materials.nii.gz`` over the whole
    field.  With ``figures``, ``ct/ct_nomar_axial.png`` (slice with the most metal) and
    ``ct/ct_nomar_coronal.png`` are written too.  ``stage_name`` (``None``: do not) records the
    parameters in ``protocol.json``.

    Parameters
    ----------
    study : :class:`spectct.io.study.Study`.
    kv, mas, views, channels : tube voltage (70–150 kV), mAs, views per rotation and channels.
    z_range : LPS z range (mm) of the slab; default: the whole truth.
    pixel_mm, slice_mm : image pixel (square, over the 500-mm field) and slice size.
    filter, seed, figures, device, reporter : FBP filter, noise seed, PNGs, torch device, progress.

    Returns
    -------
    dict of the parameters actually used (JSON-able).
    """
    import json
    import time

    from spectct.ct.drr import ct_figures, topogram, topogram_png
    from spectct.ct.fbp import FILTERS
    from spectct.io.nifti import read_nifti, write_nifti

    t_start = time.time()
    rep = reporter or SILENT
    if filter not in FILTERS:
        raise InputError(f"FBP filter {filter!r}: choose one of {', '.join(FILTERS)}")
    if not 0.25 <= pixel_mm <= 5.0 or not 0.25 <= slice_mm <= 10.0:
        raise InputError(f"CT pixel {pixel_mm} mm / slice {slice_mm} mm out of range (0.25–5 / 0.25–10 mm)")
    base = CtGeometry(kvp=kv, mas=mas, slice_mm=slice_mm)  # validates kV
    geometry = base if (views, channels) == (base.n_views, base.n_channels) else base.scaled(views, channels)
    truth_materials = study.truth / "materials.nii.gz"
    comp_path = study.truth / "components.json"
    if not comp_path.exists() or not truth_materials.exists():
        raise InputError(f"{study.truth}: no phantom (components.json, materials.nii.gz); "
                         "run `spectct phantom` first")
    try:
        names = list(json.loads(comp_path.read_text())["materials"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{comp_path}: no material list") from None
    truth_map = read_nifti(truth_materials, unit="label")
    lo, hi = truth_map.extent_world
    z0, z1 = z_range if z_range is not None else (float(lo[2]), float(hi[2]))
    z0, z1 = max(float(z0), float(lo[2])), min(float(z1), float(hi[2]))
    if not z1 > z0:
        raise InputError(f"CT z range {z_range} is outside the phantom's z range {lo[2]:.0f}…{hi[2]:.0f} mm")
    n_pix = int(np.ceil(geometry.fov_mm / pixel_mm - 1e-6))
    nz = max(1, int(round((z1 - z0) / slice_mm)))
    slab = Volume(np.zeros((nz, 1, 1), np.uint8), spacing=(slice_mm, pixel_mm, pixel_mm),
                  origin=(0.0, 0.0, z0 + slice_mm / 2), unit="label",
                  frame_of_reference=truth_map.frame_of_reference)
    grid = ct_grid(slab, geometry, n_pix, pixel_mm)
    phantom_seed = _phantom_seed(study)
    material_index = _study_material_map(study, grid, names, truth_map, phantom_seed, rep, device)
    rep.info(f"CT: {geometry.kvp:g} kV, {geometry.mas:g} mAs, {geometry.n_views} views × "
             f"{geometry.n_channels} channels, {nz} slices of {slice_mm:g} mm, {n_pix}² × {pixel_mm:.3f} mm")
    out = study.ct
    # streamed to disk while simulated: the 1-mm scan and its reference never sit in memory together
    raw = simulate_ct(material_index, names, geometry, seed=seed, device=device, reporter=rep,
                      n_pixels=n_pix, pixel_mm=pixel_mm, save_to=out / "sinogram.npz")
    del material_index
    clear_matrix_cache()  # the reconstruction does not need the projector's matrix: free it first
    ct = reconstruct_ct(raw, n_pixels=n_pix, pixel_mm=pixel_mm, filter=filter, device=device, reporter=rep)
    topo = topogram(truth_map, names, kv, geometry=geometry, device=device, reporter=rep)
    write_nifti(ct, out / "ct_nomar.nii.gz")
    topogram_png(topo, out / "topogram.png", row_mm=truth_map.spacing[0], col_mm=truth_map.spacing[2],
                 title=f"topogram AP {kv:g} kV")
    if figures:
        ct_figures(ct, out, stem="ct_nomar", title="CT without MAR")
    params = {"geometry": geometry.to_dict(), "slices_mm": [z0, z1], "pixel_mm": pixel_mm, "n_pixels": n_pix,
              "filter": filter, "seed": seed, "mu_water_per_mm": raw.mu_water,
              "effective_energy_kev": raw.effective_energy_kev, "phantom_seed": phantom_seed}
    if stage_name:
        study.record_stage(stage_name, params, seconds=time.time() - t_start)
    rep.info(f"wrote {out / 'sinogram.npz'}, {out / 'ct_nomar.nii.gz'}, {out / 'topogram.png'}")
    return params


def _phantom_seed(study) -> int:
    """The truth's seed: protocol.json's phantom stage, components.json, else 0."""
    import json

    params = study.stage_parameters("phantom") or {}
    if "seed" in params:
        return int(params["seed"])
    try:
        doc = json.loads((study.truth / "components.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(doc.get("seed", 0)) if isinstance(doc, dict) else 0


def _study_material_map(study, grid: Volume, names: list[str], truth_map: Volume, seed: int, rep: Reporter,
                        device) -> Volume:
    """The material map on ``grid``: the case phantom rasterised there, or the truth's map resampled."""
    import json

    lo, hi = truth_map.extent_world
    zs, ys, xs = grid.axis_coordinates()
    keep_y = np.nonzero((ys >= lo[1]) & (ys <= hi[1]))[0]
    keep_x = np.nonzero((xs >= lo[0]) & (xs <= hi[0]))[0]
    sub = Volume(np.zeros((grid.shape[0], keep_y.size, keep_x.size), np.int16), spacing=grid.spacing,
                 origin=(xs[keep_x[0]], ys[keep_y[0]], zs[0]), unit="label",
                 frame_of_reference=grid.frame_of_reference)
    index = None
    try:
        from spectct.phantom.case import build_case, case_phantom

        truth_doc = json.loads((study.truth / "components.json").read_text())
        truth_names = [c.get("name") for c in truth_doc.get("components", [])]
        if truth_names == [c.name for c in build_case(seed)[0]]:  # the truth is the case phantom
            index, ph_names = case_phantom(seed=seed, grid=sub, device=device, reporter=rep).material_map()
            if ph_names != names:
                index = None
    except (ImportError, OSError, ValueError, AttributeError):
        index = None
    if index is None:
        rep.info("material map: resampling truth/materials.nii.gz (not the case phantom)")
        index = truth_map.with_data(truth_map.data.astype(np.float32), unit="1").resample_to(
            sub, order="nearest", fill=0.0, device=device)
        index = index.with_data(index.data.astype(np.uint8), unit="label")
    full = np.zeros(grid.shape, np.uint8)
    full[:, keep_y[0]:keep_y[-1] + 1, keep_x[0]:keep_x[-1] + 1] = index.data
    return grid.with_data(full, unit="label")
