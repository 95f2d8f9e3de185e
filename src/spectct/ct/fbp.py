"""Filtered back-projection for an equiangular (third-generation) fan beam, and HU conversion.

The algorithm is that of A. C. Kak and M. Slaney, *Principles of Computerized Tomographic Imaging*
(IEEE Press, 1988; SIAM 2001), chapter 3.4.2 ("equiangular rays"):

1. weight each projection by ``R cos γ`` (R the source–isocentre distance),
2. convolve along the fan angle with ``g(nα) = 1/(8α²)`` (n = 0), ``0`` (n even),
   ``−1/(2π² sin²(nα))`` (n odd), times the channel pitch α, apodised in frequency (Ram-Lak: none,
   Shepp-Logan: ``sinc``, Hann: ``½(1 + cos 2πf)``, f in cycles per sample),
3. back-project over the full rotation with weight ``Δβ / L²``, L the distance from the source to the
   pixel, interpolating linearly between channels at the pixel's fan angle ``γ'``.

Back-projection is pixel-driven; like the projector it computes interpolation weights once per view
and applies them to every slice of the batch.  Pixels outside the scan field (the circle every view
sees, radius ``R sin γ_max``) are set to 0 (air).

The default ``method="rebin"`` is faster: it re-sorts the fan rays into parallel projections (Kak &
Slaney ch. 3.4.3: the fan ray (β, γ) is the parallel ray θ = β + γ, t = −R sin γ), merges each
parallel view with its opposite (θ + π, −t) into a 180° sinogram, ramp-filters along t and
back-projects with the cheap parallel-beam interpolation ``t = x cos θ + y sin θ``.  Its linear-
interpolation weights are stored once per geometry as a sparse CSR matrix (pixels × parallel
samples, cached) and applied to all slices of a batch in one sparse × dense product.  ``method="fan"``
is the direct weighted fan-beam algorithm above; the two agree to within interpolation blur.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from spectct.ct.geometry import CtGeometry
from spectct.ct.projector import _cache_get, _cache_put, _csr, work_elements
from spectct.device import resolve_device
from spectct.errors import InputError

FILTERS = ("ram-lak", "shepp-logan", "hann")
METHODS = ("rebin", "fan")
#: array elements per view chunk while a back-projection matrix is built
_BUILD_ELEMENTS = 4_000_000
#: back-projection matrices up to this many non-zeros (8 bytes each, 1.6 GB) are built and cached;
#: larger problems fall back to on-the-fly interpolation
_MATRIX_NNZ = 200_000_000


def fan_filter(n_channels: int, pitch_rad: float, filter: str = "hann", dtype=torch.float32,
               device: str | torch.device = "cpu", parallel: bool = False) -> tuple[torch.Tensor, int]:
    """Frequency response of the apodised ramp kernel on a zero-padded grid.

    ``parallel=False``: the equiangular fan kernel of pitch α = ``pitch_rad``;
    ``parallel=True``: the parallel-beam kernel ``h(0) = 1/(4τ²)``, ``h(n odd) = −1/(nπτ)²`` of
    sample spacing τ = ``pitch_rad`` (here in mm).
    Returns the real FFT of the kernel (already multiplied by the sample spacing) and the padded
    length.  Building the ramp from its band-limited spatial kernel (rather than ``|f|`` sampled in
    frequency) gives the right DC term and no cupping from the periodic convolution (Kak & Slaney
    ch. 3.3, eqs. 61–62).
    """
    if filter not in FILTERS:
        raise InputError(f"unknown FBP filter {filter!r}; choose one of {', '.join(FILTERS)}")
    size = 1 << int(math.ceil(math.log2(2 * n_channels)))
    n = np.concatenate([np.arange(0, size // 2 + 1), np.arange(-(size // 2) + 1, 0)])
    g = np.zeros(size)
    odd = (n % 2) != 0
    if parallel:
        g[0] = 1.0 / (4.0 * pitch_rad**2)
        g[odd] = -1.0 / (np.pi * n[odd] * pitch_rad) ** 2
    else:
        g[0] = 1.0 / (8.0 * pitch_rad**2)
        g[odd] = -1.0 / (2.0 * np.pi**2 * np.sin(n[odd] * pitch_rad) ** 2)
    response = np.fft.rfft(g).real * pitch_rad
    f = np.fft.rfftfreq(size)  # 0 … 0.5 cycles per sample
    if filter == "shepp-logan":
        response *= np.sinc(f)
    elif filter == "hann":
        response *= 0.5 * (1.0 + np.cos(2.0 * np.pi * f))
    return torch.as_tensor(response, dtype=dtype, device=resolve_device(device)), size


def filter_sinogram(sino: torch.Tensor, geometry: CtGeometry, filter: str = "hann") -> torch.Tensor:
    """Cosine-weight and ramp-filter a fan-beam sinogram ``[nz, V, C]`` along the channels."""
    gammas = torch.as_tensor(geometry.fan_angles_rad(), dtype=sino.dtype, device=sino.device)
    weighted = sino * (geometry.sid_mm * torch.cos(gammas))
    response, size = fan_filter(geometry.n_channels, geometry.channel_pitch_rad, filter, sino.dtype,
                                sino.device)
    spec = torch.fft.rfft(weighted, n=size, dim=-1) * response
    return torch.fft.irfft(spec, n=size, dim=-1)[..., : geometry.n_channels]


def fan_backproject(q: torch.Tensor, geometry: CtGeometry, n_pixels: int, pixel_mm: float) -> torch.Tensor:
    """Weighted pixel-driven back-projection ``Σ_β Δβ q_β(γ') / L²`` of ``q [nz, V, C]`` → ``[nz, n, n]``."""
    nz, nv, nc = q.shape
    dev, dtype = q.device, q.dtype
    c = (torch.arange(n_pixels, dtype=dtype, device=dev) - (n_pixels - 1) / 2.0) * pixel_mm
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    npix = xx.numel()
    flat = torch.cat([q.permute(1, 2, 0).reshape(nv * nc, nz), q.new_zeros(1, nz)])  # extra zero row
    zero_row = nv * nc
    out = torch.zeros((npix, nz), dtype=dtype, device=dev)
    angles = torch.as_tensor(geometry.angles_rad(), dtype=torch.float64, device=dev)
    r, pitch, kc = geometry.sid_mm, geometry.channel_pitch_rad, geometry.central_channel
    d_beta = 2.0 * math.pi / nv
    chunk = max(1, work_elements(dev) // (npix * max(nz, 2)))
    for v0 in range(0, nv, chunk):
        v1 = min(nv, v0 + chunk)
        beta = angles[v0:v1, None]
        sb, cb = torch.sin(beta).to(dtype), torch.cos(beta).to(dtype)
        wx, wy = xx - r * sb, yy + r * cb  # pixel minus source, [Vc, npix]
        along = -sb * wx + cb * wy  # component along the central ray c = (−sin β, cos β)
        across = -sb * wy - cb * wx  # c × w (z component)
        gamma = torch.atan2(across, along)
        k = gamma / pitch + kc
        k0 = torch.floor(k)
        frac = k - k0
        k0 = k0.long()
        inv_l2 = d_beta / (wx * wx + wy * wy)
        base = torch.arange(v0, v1, device=dev)[:, None] * nc
        i0 = torch.where((k0 >= 0) & (k0 < nc), base + k0, zero_row)
        i1 = torch.where((k0 + 1 >= 0) & (k0 + 1 < nc), base + k0 + 1, zero_row)
        w0 = ((1.0 - frac) * inv_l2).reshape(-1, 1)
        w1 = (frac * inv_l2).reshape(-1, 1)
        contrib = flat[i0.reshape(-1)] * w0 + flat[i1.reshape(-1)] * w1
        out += contrib.reshape(v1 - v0, npix, nz).sum(0)
    inside = (xx * xx + yy * yy) <= geometry.scan_field_radius_mm**2
    out *= inside[:, None].to(dtype)
    return out.T.reshape(nz, n_pixels, n_pixels).contiguous()


def rebin_to_parallel(sino: torch.Tensor, geometry: CtGeometry, merge_opposite: bool = True
                      ) -> tuple[torch.Tensor, np.ndarray, float]:
    """Re-sort fan-beam line integrals ``[nz, V, C]`` into parallel-beam projections.

    The parallel grid has the fan's view count over 360° (θ_m = β_0 + m Δβ) and ``C`` samples of
    spacing ``Δt = R Δγ`` centred on the isocentre; each value is bilinearly interpolated in (β, γ) at
    ``γ = −asin(t / R)``, ``β = θ − γ`` (views wrap around the rotation).  With ``merge_opposite`` and
    an even view count, the views θ and θ + π (with t → −t) are averaged into a 180° sinogram.

    Returns
    -------
    (parallel sinogram ``[nz, M, C]``, θ_m in radians, Δt in mm)
    """
    nz, nv, nc = sino.shape
    dev, dtype = sino.device, sino.dtype
    r, pitch = geometry.sid_mm, geometry.channel_pitch_rad
    d_beta = 2.0 * math.pi / nv
    dt = r * pitch
    pad = int(math.ceil((nc / 2 + abs(geometry.detector_offset_channels)) * pitch / d_beta)) + 2
    pad = min(pad, nv)
    wrapped = torch.cat([sino[:, nv - pad:], sino, sino[:, :pad]], dim=1)  # [nz, V + 2P, C]
    theta = geometry.angles_rad()  # θ_m on the β grid
    t = (np.arange(nc) - (nc - 1) / 2.0) * dt
    gamma = -np.arcsin(np.clip(t / r, -1.0, 1.0))  # [T]
    k = gamma / pitch + geometry.central_channel
    b = (theta[:, None] - gamma[None, :] - geometry.start_angle_rad) / d_beta + pad  # [M, T]
    gx = 2.0 * np.broadcast_to(k, b.shape) / (nc - 1) - 1.0
    gy = 2.0 * b / (nv + 2 * pad - 1) - 1.0
    grid = torch.as_tensor(np.stack([gx, gy], axis=-1)[None], dtype=dtype, device=dev)
    par = F.grid_sample(wrapped[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    if merge_opposite and nv % 2 == 0:
        half = nv // 2
        par = 0.5 * (par[:, :half] + par[:, half:].flip(-1))
        theta = theta[:half]
    return par, theta, dt


def parallel_backproject(q: torch.Tensor, theta: np.ndarray, dt: float, n_pixels: int, pixel_mm: float,
                         weight: float) -> torch.Tensor:
    """``weight · Σ_m q_m(x cos θ_m + y sin θ_m)`` with linear interpolation in t → ``[nz, n, n]``.

    ``q`` is ``[nz, M, T]`` with t-samples centred on the isocentre at spacing ``dt``.  When the second
    half of the views is the first turned by 90°, the two halves share one set of interpolation
    weights (a quarter-turn of the square grid maps pixel centres onto pixel centres), halving the work.
    """
    nz, nm, nt = q.shape
    quarter = nm % 2 == 0 and np.allclose(theta[nm // 2:] - theta[: nm // 2], np.pi / 2, atol=1e-9)
    if quarter:
        # view θ + π/2 back-projects like view θ on a grid turned by 90° (x' = y, y' = −x): share the
        # interpolation weights by stacking the two views' data as channels, then turn the second half
        half = nm // 2
        both = torch.cat([q[:, :half], q[:, half:]], dim=0)  # [2 nz, M/2, T]
        out = parallel_backproject(both, theta[:half], dt, n_pixels, pixel_mm, weight)
        return out[:nz] + out[nz:].flip(-2).transpose(-1, -2)
    if n_pixels * n_pixels * nm * 2 > _MATRIX_NNZ:  # too large to keep: interpolate on the fly
        return _backproject_on_the_fly(q, theta, dt, n_pixels, pixel_mm, weight)
    mat = _parallel_matrix(theta, nt, dt, n_pixels, pixel_mm, q.dtype, q.device)
    cols = q.reshape(nz, nm * nt).T.contiguous()  # [M·T, nz]: the slices are the columns
    out = (mat @ cols).T  # [nz, n²]
    return (out * weight).reshape(nz, n_pixels, n_pixels)


def _backproject_on_the_fly(q: torch.Tensor, theta: np.ndarray, dt: float, n_pixels: int, pixel_mm: float,
                            weight: float) -> torch.Tensor:
    """:func:`parallel_backproject` by bilinear ``grid_sample`` over view chunks (no stored matrix)."""
    nz, nm, nt = q.shape
    dev, dtype = q.device, q.dtype
    c = (torch.arange(n_pixels, dtype=dtype, device=dev) - (n_pixels - 1) / 2.0) * pixel_mm
    npix = n_pixels * n_pixels
    src = q[None].contiguous()  # [1, nz, M, T] seen as an image of height M
    out = torch.zeros((nz, npix), dtype=dtype, device=dev)
    th = torch.as_tensor(theta, dtype=torch.float64, device=dev)
    scale_t = 2.0 / ((nt - 1) * dt)  # t in mm -> normalised grid x (t = 0 at the centre)
    chunk = max(1, work_elements(dev) // (npix * max(nz, 2)))
    for m0 in range(0, nm, chunk):
        m1 = min(nm, m0 + chunk)
        cos_t = (torch.cos(th[m0:m1]) * scale_t).to(dtype)
        sin_t = (torch.sin(th[m0:m1]) * scale_t).to(dtype)
        gx = sin_t[:, None, None] * c[None, :, None] + cos_t[:, None, None] * c[None, None, :]  # [Mc, ny, nx]
        rows = torch.arange(m0, m1, device=dev, dtype=dtype) * (2.0 / max(nm - 1, 1)) - 1.0
        gy = rows[:, None, None].expand_as(gx)
        grid = torch.stack([gx, gy], dim=-1).reshape(1, m1 - m0, npix, 2)
        out += F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0].sum(1)
    return (out * weight).reshape(nz, n_pixels, n_pixels)


def _parallel_matrix(theta: np.ndarray, nt: int, dt: float, n_pixels: int, pixel_mm: float,
                     dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Sparse CSR back-projection matrix ``[n², M·T]``, built once per geometry and cached.

    Row ``j·n + i`` (pixel centre (x_i, y_j)) holds, for every view m, the two linear-interpolation
    weights at ``t = x cos θ_m + y sin θ_m`` (samples outside 0…T−1 count as zero).  Applying it to
    the filtered projections with the slices as columns is one sparse × dense product
    (``torch.sparse`` CSR, MKL on CPU), so the interpolation indices and weights are computed once
    instead of once per slice batch — the precomputed-weights form of pixel-driven back-projection
    (Kak & Slaney ch. 3.3, eq. 45; cf. the cached system matrices of ASTRA's CPU projectors,
    W. van Aarle et al., Ultramicroscopy 157 (2015) 35–47).
    """
    th = np.asarray(theta, dtype=np.float64)
    key = ("parallel-bp", th.tobytes(), int(nt), float(dt), int(n_pixels), float(pixel_mm), dtype, str(device))
    mat = _cache_get(key)
    if mat is not None:
        return mat
    nm, n = th.size, n_pixels
    c = (torch.arange(n, dtype=torch.float64, device=device) - (n - 1) / 2.0) * pixel_mm
    t_th = torch.as_tensor(th, device=device)
    cos_t, sin_t = torch.cos(t_th) / dt, torch.sin(t_th) / dt
    base = torch.arange(nm, device=device) * nt
    counts, col_parts, val_parts = [], [], []
    rows_per_chunk = max(1, _BUILD_ELEMENTS // (n * nm))
    for j0 in range(0, n, rows_per_chunk):  # blocks of image rows: the entries come out pixel-major
        j1 = min(n, j0 + rows_per_chunk)
        # continuous sample index t / dt + (T − 1)/2 of every pixel of the block in every view, [P, M]
        k = ((c[j0:j1, None, None] * sin_t + c[None, :, None] * cos_t) + (nt - 1) / 2.0).reshape(-1, nm)
        k0 = torch.floor(k)
        frac = (k - k0).to(dtype)
        k0 = k0.long()
        idx = torch.stack([k0, k0 + 1], dim=-1)  # [P, M, 2]
        w = torch.stack([1.0 - frac, frac], dim=-1)
        keep = (idx >= 0) & (idx < nt) & (w != 0)
        counts.append(keep.reshape(keep.shape[0], -1).sum(1))
        col_parts.append((idx + base[:, None])[keep].to(torch.int32))
        val_parts.append(w[keep])
    counts = torch.cat(counts)
    cols = torch.cat(col_parts)
    del col_parts
    vals = torch.cat(val_parts)
    del val_parts
    mat = _csr(counts, cols, vals, nm * nt)
    _cache_put(key, mat)
    return mat


def _fbp_rebin(s: torch.Tensor, geometry: CtGeometry, n_pixels: int, pixel_mm: float,
               filter: str) -> torch.Tensor:
    par, theta, dt = rebin_to_parallel(s, geometry)
    response, size = fan_filter(par.shape[-1], dt, filter, par.dtype, par.device, parallel=True)
    q = torch.fft.irfft(torch.fft.rfft(par, n=size, dim=-1) * response, n=size, dim=-1)[..., : par.shape[-1]]
    arc = math.pi if len(theta) * 2 == geometry.n_views else 2.0 * math.pi
    img = parallel_backproject(q, theta, dt, n_pixels, pixel_mm, weight=arc / len(theta) * (math.pi / arc))
    return img


def fbp(sino, geometry: CtGeometry, n_pixels: int = 512, pixel_mm: float = 500.0 / 512, filter: str = "hann",
        device: str | torch.device = "cpu", slices_per_chunk: int = 16,
        method: str = "rebin") -> torch.Tensor:
    """Fan-beam filtered back-projection of line integrals to μ in 1/mm.

    Parameters
    ----------
    sino : ``[nz, n_views, n_channels]`` line integrals (tensor or array; ``[V, C]`` for one slice).
    geometry : the scan's :class:`CtGeometry` (views over a full 360° rotation).
    n_pixels, pixel_mm : square output grid centred on the isocentre (same convention as
        :class:`~spectct.ct.projector.FanBeamProjector`).
    filter : ``"ram-lak"``, ``"shepp-logan"`` or ``"hann"`` apodisation of the ramp.
    device : torch device.
    slices_per_chunk : slices filtered and back-projected together (bounds memory).
    method : ``"rebin"`` (re-sort to parallel beam, then parallel FBP; fast, default) or ``"fan"``
        (direct weighted fan-beam FBP).

    Returns
    -------
    torch.Tensor ``[nz, n_pixels, n_pixels]``, float32 (float64 if the input is float64), 1/mm.

    References
    ----------
    Kak & Slaney, *Principles of Computerized Tomographic Imaging*, ch. 3.4.2.
    """
    dev = resolve_device(device)
    if filter not in FILTERS:
        raise InputError(f"unknown FBP filter {filter!r}; choose one of {', '.join(FILTERS)}")
    s = torch.as_tensor(sino, device=dev)
    if s.ndim == 2:
        s = s[None]
    geometry.check_sinogram(tuple(s.shape))
    if not s.is_floating_point() or s.dtype == torch.float16:
        s = s.float()
    if not torch.isfinite(s).all():
        raise InputError("sinogram contains NaN or infinite values")
    if method not in METHODS:
        raise InputError(f"unknown FBP method {method!r}; choose one of {', '.join(METHODS)}")
    if int(n_pixels) < 2 or not pixel_mm > 0:
        raise InputError(f"FBP grid needs n_pixels ≥ 2 and pixel_mm > 0, got {n_pixels}, {pixel_mm}")
    out = []
    for z0 in range(0, s.shape[0], max(1, slices_per_chunk)):
        part = s[z0:z0 + slices_per_chunk]
        if method == "fan":
            q = filter_sinogram(part, geometry, filter)
            out.append(fan_backproject(q, geometry, int(n_pixels), float(pixel_mm)))
        else:
            out.append(_mask_field(_fbp_rebin(part, geometry, int(n_pixels), float(pixel_mm), filter),
                                   geometry, float(pixel_mm)))
    return torch.cat(out)


def _mask_field(img: torch.Tensor, geometry: CtGeometry, pixel_mm: float) -> torch.Tensor:
    n = img.shape[-1]
    c = (torch.arange(n, dtype=img.dtype, device=img.device) - (n - 1) / 2.0) * pixel_mm
    inside = (c[:, None] ** 2 + c[None, :] ** 2) <= geometry.scan_field_radius_mm**2
    return img * inside


def mu_to_hu(mu, mu_water: float):
    """Hounsfield units ``1000 (μ − μ_w) / μ_w`` (works on arrays and tensors; air ≈ −1000)."""
    if not mu_water > 0:
        raise InputError(f"mu_water must be positive, got {mu_water}")
    return (mu - mu_water) * (1000.0 / mu_water)


def hu_to_mu(hu, mu_water: float):
    """Inverse of :func:`mu_to_hu`: ``μ = μ_w (1 + HU/1000)``."""
    if not mu_water > 0:
        raise InputError(f"mu_water must be positive, got {mu_water}")
    return mu_water * (1.0 + hu / 1000.0)
