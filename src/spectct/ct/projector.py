"""Fan-beam forward projector (Joseph's method) and its exact adjoint, batched over slices.

Each ray of each view is sampled once per image row (or column, whichever the ray crosses more
steeply), with linear interpolation between the two neighbouring pixels along the other axis and a
step length ``pixel_mm / |cos θ|`` — P. M. Joseph, "An improved algorithm for reprojecting rays
through pixel images", IEEE Trans. Med. Imaging 1 (1982) 192–196.

The samples' (ray, pixel, weight) triplets are stored once as a sparse CSR system matrix ``A``
(``[views · channels, n²]``, two entries per sample, out-of-grid neighbours dropped); the slices of a
batch are the columns of a dense matrix, so the forward projection is one sparse × dense product
``A X`` and the adjoint is ``Aᵀ Y`` with the very same entries — the exact transpose, checked by the
dot-product test.  Computing the interpolation once per geometry instead of once per slice is what
makes it fast on a CPU (the idea of precomputed system matrices in iterative CT, e.g. J. A. Fessler,
"Statistical image reconstruction methods for transmission tomography", in *Handbook of Medical
Imaging* vol. 2, SPIE 2000, ch. 1).

Only the first quarter of the rotation is stored: the square grid centred on the isocentre maps onto
itself under a quarter-turn, so view ``k + q·V/4`` of an image is view ``k`` of the image turned by
``q`` quarter-turns (``torch.rot90``, exact, no interpolation); the turned copies are extra columns of
the same product.  This cuts the matrix of a clinical rotation (512² × 1152 views × 736 channels) from
≈ 730 M to ≈ 183 M stored entries (1.5 GB); the product does the same arithmetic as with the whole
matrix.  (Odd multiples of two views share a half-turn instead.)  Matrices up to ``_CACHE_NNZ`` entries
are cached (a few per process, least recently used dropped); a few views (a topogram) get a matrix
built for the call.  Larger geometries draw the same samples on the fly with
``torch.nn.functional.grid_sample`` (bilinear at points on a row or column of pixel centres *is*
Joseph's linear interpolation) and back-project with its input-gradient (``grid_sampler_2d_backward``),
which scatters with identical weights — again the exact transpose.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from spectct.ct.geometry import CtGeometry
from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError

#: elements (samples × slices) of the working arrays per chunk: ~100 MB of float32 on a CPU, 16× more on
#: a GPU (where larger batches are what makes it fast).
_CHUNK_ELEMENTS = 24_000_000
#: stored samples (non-zeros) per view chunk when a system matrix is built: bounds the temporaries
#: (≈ 100 bytes per sample while building, 8 bytes per sample kept).
_CHUNK_NNZ = 4_000_000
#: whole-rotation matrices up to this many non-zeros (≈ 8 bytes each: 800 MB) are cached per geometry;
#: larger geometries are projected on the fly with ``grid_sample``.
_CACHE_NNZ = 240_000_000
#: dense columns per sparse × dense product on a CPU: a few slices at once reuse each matrix entry, more
#: spill the dense operand out of the cache (measured best at 8–16 on the 2-core EPYC of the benchmarks)
_PRODUCT_COLUMNS = 16
#: cached matrices kept (least recently used dropped first).
_CACHE_ENTRIES = 8
#: … and at most this many stored entries in all (≈ 2 GB)
_CACHE_TOTAL_NNZ = 420_000_000


def work_elements(device: torch.device, base: int = _CHUNK_ELEMENTS) -> int:
    """Chunk budget in array elements for ``device`` (CPU: ``base``; CUDA: 16 × ``base``)."""
    return base * 16 if torch.device(device).type == "cuda" else base


class FanBeamProjector:
    """Line integrals through a stack of axial slices for a :class:`CtGeometry`.

    Parameters
    ----------
    geometry : scanner geometry (views and channels).
    n_pixels : image size ``n × n``; the grid is centred on the isocentre.
    pixel_mm : pixel size.  Pixel ``(j, i)`` has its centre at
        ``x = (i − (n−1)/2)·pixel_mm`` (toward patient left) and ``y = (j − (n−1)/2)·pixel_mm``
        (toward posterior).
    device : torch device for all computation.

    Notes
    -----
    ``forward`` maps μ in 1/mm (``[nz, ny, nx]``) to dimensionless line integrals
    ``[nz, n_views, n_channels]``; ``adjoint`` is its transpose.
    """

    def __init__(self, geometry: CtGeometry, n_pixels: int, pixel_mm: float,
                 device: str | torch.device = "cpu"):
        if int(n_pixels) < 2 or not (pixel_mm > 0):
            raise GeometryError(f"projector grid needs n_pixels ≥ 2 and pixel_mm > 0, "
                                f"got {n_pixels}, {pixel_mm}")
        half_diag = n_pixels * pixel_mm / math.sqrt(2.0)
        if half_diag >= geometry.sid_mm:
            raise GeometryError(f"image grid ({n_pixels} × {pixel_mm} mm) reaches the source circle")
        self.geometry = geometry
        self.n_pixels = int(n_pixels)
        self.pixel_mm = float(pixel_mm)
        self.device = resolve_device(device)
        self._angles = geometry.angles_rad()
        self._gammas = geometry.fan_angles_rad()
        self._inners: dict[int, FanBeamProjector] = {}
        self._crop = True  # project a zero-bordered image on a centred inner grid (:meth:`_empty_border`)

    @property
    def in_shape(self) -> tuple[int, int]:
        return (self.n_pixels, self.n_pixels)

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.geometry.sinogram_shape

    # ----------------------------------------------------------------- system matrix
    def _ray_lines(self, views: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Joseph's parametrisation of the rays of ``views`` (float64, ``[V, C]`` each).

        Along the major axis u (the image axis closer to the ray direction) a ray is sampled at every
        pixel centre; the other index v is ``a + slope · (s − (n−1)/2)`` at sample s. Returns
        ``y_major`` (u is the y axis), ``du`` (the direction's u component, so a sample stands for
        ``pixel_mm / |du|`` mm), ``slope`` and ``a``.
        """
        n, h = self.n_pixels, self.pixel_mm
        dev = self.device
        beta = torch.as_tensor(self._angles[views], dtype=torch.float64, device=dev)[:, None]
        gamma = torch.as_tensor(self._gammas, dtype=torch.float64, device=dev)[None, :]
        r = self.geometry.sid_mm
        sx, sy = r * torch.sin(beta), -r * torch.cos(beta)  # source, [V, 1]
        phi = beta + gamma  # direction of c rotated by γ: (−sin(β+γ), cos(β+γ))
        dx, dy = -torch.sin(phi), torch.cos(phi)  # [V, C]
        y_major = dy.abs() >= dx.abs()
        du = torch.where(y_major, dy, dx)
        dv = torch.where(y_major, dx, dy)
        su = torch.where(y_major, sy, sx)
        sv = torch.where(y_major, sx, sy)
        slope = dv / du
        a = (sv - su * slope) / h + (n - 1) / 2.0
        return y_major, du, slope, a

    def _samples(self, views: np.ndarray, dtype: torch.dtype):
        """Joseph's samples of the given views as (ray, pixel, weight) triplets.

        Ray ``r`` (``view_pos · C + channel``) is sampled at every pixel centre ``u_s`` of its major
        axis; the continuous index ``v`` on the other axis splits each sample between pixels
        ``⌊v⌋`` and ``⌊v⌋ + 1`` with weights ``(1 − frac, frac)`` times the step ``pixel_mm / |cos θ|``.
        Neighbours outside the grid (zero padding) are dropped.  Returns the number of entries of
        each ray, their int32 pixel indices and their weights, ray-major (so they form a CSR matrix
        without sorting).
        """
        n, h = self.n_pixels, self.pixel_mm
        dev = self.device
        y_major, du, slope, a = self._ray_lines(views)
        s_off = torch.arange(n, dtype=torch.float64, device=dev) - (n - 1) / 2.0
        v = torch.addcmul(a[..., None], slope[..., None], s_off)  # [V, C, S]
        step = (h / du.abs())[..., None]
        v0 = torch.floor(v)
        frac = v - v0
        v0 = v0.long()
        s_idx = torch.arange(n, device=dev)
        ym = y_major[..., None]
        stride_u = torch.where(ym, n, 1)  # pixel = u · stride_u + v · stride_v
        stride_v = torch.where(ym, 1, n)
        base = s_idx * stride_u
        pix0 = base + v0 * stride_v
        w0 = ((1.0 - frac) * step).to(dtype)
        w1 = (frac * step).to(dtype)
        ok0 = (v0 >= 0) & (v0 < n)
        ok1 = (v0 >= -1) & (v0 < n - 1)
        pix = torch.stack([pix0, pix0 + stride_v.expand_as(pix0)], dim=-1)  # [V, C, S, 2]
        w = torch.stack([w0, w1], dim=-1)
        keep = torch.stack([ok0, ok1], dim=-1) & (w != 0)
        n_rays = y_major.numel()
        counts = keep.reshape(n_rays, -1).sum(1)
        return counts, pix[keep].to(torch.int32), w[keep]  # n² < 2³¹ for any sane grid

    def _matrix(self, views: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """Sparse CSR system matrix ``[len(views) · C, n²]`` of the given views (built view-chunk-wise)."""
        counts, cols, vals = zip(*(self._samples(views[pos], dtype) for pos in self._view_chunks(len(views))),
                                 strict=True)
        counts = torch.cat(counts)
        cols = torch.cat(cols)  # one array at a time, its parts dropped: 1.5× the matrix while building, not 2×
        vals = torch.cat(vals)
        return _csr(counts, cols, vals, self.n_pixels**2)

    def _cache_key(self, dtype: torch.dtype) -> tuple:
        return ("joseph", self.geometry, self.n_pixels, self.pixel_mm, str(self.device), dtype)

    def _symmetry_views(self) -> tuple[int, int]:
        """``(m, turns)``: the first ``m`` views, on the image turned ``q · turns`` quarter-turns for
        ``q = 0 … V/m − 1``, give every view of the rotation.

        The square, isocentred grid maps onto itself under a quarter-turn, so view ``k + q·m`` (source
        turned by ``q · 2π m / V``) of an image equals view ``k`` of the image turned back by that angle;
        ``m = V/4`` when ``V`` is a multiple of 4, ``V/2`` (half-turns) when it is even, else ``V``.
        """
        v = self.geometry.n_views
        for parts in (4, 2):
            if v % parts == 0:
                return v // parts, 4 // parts
        return v, 0

    def _full_matrix(self, dtype: torch.dtype, transpose: bool) -> torch.Tensor | None:
        """The cached matrix of the first :meth:`_symmetry_views` views (or its transpose), or None when
        even that would be too large."""
        m, _ = self._symmetry_views()
        if m * self.geometry.n_channels * self.n_pixels * 2 > _CACHE_NNZ:
            return None
        key = self._cache_key(dtype) + (transpose,)
        mat = _cache_get(key)
        if mat is None:
            if transpose:
                fwd = self._full_matrix(dtype, False)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    mat = fwd.t().to_sparse_csr()
            else:
                mat = self._matrix(np.arange(m), dtype)
            _cache_put(key, mat)
        return mat

    def _turned(self, x: torch.Tensor) -> torch.Tensor:
        """``[nz, n, n]`` → ``[V/m · nz, n, n]``: the image turned by each symmetry step, step-major."""
        m, turns = self._symmetry_views()
        return torch.cat([torch.rot90(x, q * turns, dims=(-2, -1)) for q in range(self.geometry.n_views // m)])

    def _empty_border(self, x: torch.Tensor) -> int:
        """Width (pixels, a multiple of ``n/16``) of a border that is zero in every slice of ``x``.

        Rays through the border add nothing, so projecting the centred inner grid gives the same line
        integrals for a fraction of the work — the body of a patient rarely fills the 500-mm field.
        The width is rounded down to steps of ``n/16`` pixels (inner grids of ``n``, ``7n/8``, ``3n/4`` …)
        so that few inner matrices get built and cached.
        """
        n = self.n_pixels
        step = max(2, n // 16)
        if n < 4 * step:
            return 0
        inside = (x != 0).any(0)
        rows, cols = torch.nonzero(inside.any(1)), torch.nonzero(inside.any(0))
        if rows.numel() == 0:
            return 0
        free = min(int(rows[0]), n - 1 - int(rows[-1]), int(cols[0]), n - 1 - int(cols[-1]))
        return min(free // step * step, (n - 2 * step) // 2 // step * step)

    def _inner_size(self, needed: int, dtype: torch.dtype) -> int:
        """Inner grid to project on when ``needed`` pixels hold the image: the smallest inner grid of at
        least that size whose matrix is already cached (a batch of thinner slices then reuses the matrix of
        wider ones instead of building its own), else ``needed``; building one drops the cached matrices of
        the smaller inner grids, which it supersedes."""
        held = [size for size, inner in self._inners.items()
                if size >= needed and _cache_get(inner._cache_key(dtype) + (False,), touch=False) is not None]
        if held:
            return min(held)
        for size, inner in self._inners.items():
            if size < needed:
                for transpose in (False, True):
                    _cache_drop(inner._cache_key(dtype) + (transpose,))
        return needed

    def _inner(self, n_inner: int) -> FanBeamProjector:
        """The projector of the centred ``n_inner²`` sub-grid (same pixel size), kept per size."""
        if n_inner not in self._inners:  # it projects what it is given (cropping again would defeat the reuse)
            inner = FanBeamProjector(self.geometry, n_inner, self.pixel_mm, device=self.device)
            inner._crop = False
            self._inners[n_inner] = inner
        return self._inners[n_inner]

    def _slices_per_product(self, copies: int) -> int:
        """Slices per sparse × dense product: about ``_PRODUCT_COLUMNS`` dense columns (CPU), all on CUDA."""
        if self.device.type == "cuda":
            return 1 << 30
        return max(1, _PRODUCT_COLUMNS // copies)

    def _view_chunks(self, n_views: int | None = None):
        n_views = self.geometry.n_views if n_views is None else n_views
        per_view = self.geometry.n_channels * self.n_pixels * 2
        size = max(1, _CHUNK_NNZ // per_view)
        for v0 in range(0, n_views, size):
            yield np.arange(v0, min(n_views, v0 + size))

    # ------------------------------------------- on-the-fly sampling (geometries too large to cache)
    def _rays(self, views: np.ndarray, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Joseph's sample points for the given views.

        Returns ``grid`` ``[1, V·C, S, 2]`` in ``grid_sample``'s normalised (x, y) coordinates
        (``align_corners=True``: −1 and +1 are the first and last pixel centres) and the step length
        ``[V, C]`` in mm that each sample stands for.
        """
        n, h = self.n_pixels, self.pixel_mm
        dev = self.device
        y_major, du, slope, a_index = self._ray_lines(views)
        # continuous v index at sample s: a + slope · (s − (n−1)/2); normalised: index · 2/(n−1) − 1
        scale = 2.0 / (n - 1)
        a = a_index * scale - 1.0
        s_off = torch.arange(n, dtype=torch.float64, device=dev) - (n - 1) / 2.0
        v_norm = torch.addcmul(a[..., None], (slope * scale)[..., None], s_off).to(dtype)  # [V, C, S]
        u_norm = (s_off * scale).to(dtype).expand_as(v_norm)
        ym = y_major[..., None]
        grid = torch.stack([torch.where(ym, v_norm, u_norm), torch.where(ym, u_norm, v_norm)], dim=-1)
        step = (h / du.abs()).to(dtype)
        return grid.reshape(1, -1, n, 2), step

    def _grid_chunks(self, nz: int, n_views: int | None = None):
        n_views = self.geometry.n_views if n_views is None else n_views
        per_view = self.geometry.n_channels * self.n_pixels * max(2, nz)
        size = max(1, work_elements(self.device) // per_view)
        for v0 in range(0, n_views, size):
            yield np.arange(v0, min(n_views, v0 + size))

    # ----------------------------------------------------------------- operators
    def _as_tensor(self, x, shape_tail: tuple[int, int], what: str) -> torch.Tensor:
        t = torch.as_tensor(x, device=self.device)
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or tuple(t.shape[1:]) != shape_tail:
            raise InputError(f"{what} must have shape [nz, {shape_tail[0]}, {shape_tail[1]}], "
                             f"got {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return t

    def forward(self, img, views: np.ndarray | None = None) -> torch.Tensor:
        """Line integrals ``[nz, n_views, n_channels]`` of μ ``[nz, ny, nx]`` (1/mm).

        ``views`` (indices) restricts the output to those views, in that order (e.g. one view for a
        topogram); the default is the whole rotation.
        """
        x = self._as_tensor(img, self.in_shape, "image")
        nz, nc = x.shape[0], self.geometry.n_channels
        if views is None:
            wanted = np.arange(self.geometry.n_views)
        else:
            wanted = np.asarray(views, dtype=int).reshape(-1)
            if wanted.size and (wanted.min() < 0 or wanted.max() >= self.geometry.n_views):
                raise InputError(f"view indices must lie in 0…{self.geometry.n_views - 1}")
        if views is None and self._crop:
            k = self._empty_border(x)
            if k:  # zero border: the centred inner grid has the same pixel centres, rays and weights
                k = (self.n_pixels - self._inner_size(self.n_pixels - 2 * k, x.dtype)) // 2
                if k:
                    return self._inner(self.n_pixels - 2 * k).forward(x[:, k:-k, k:-k])
        full = self._full_matrix(x.dtype, False) if views is None else None
        if full is None and views is not None and wanted.size * nc * self.n_pixels * 2 <= _CHUNK_NNZ:
            full = self._matrix(wanted, x.dtype)  # a few views (a topogram): build, use, drop
        if full is not None and views is None:  # turned copies of each slice through the shared views
            m = full.shape[0] // nc
            copies = self.geometry.n_views // m
            out = torch.empty((nz, copies, m, nc), dtype=x.dtype, device=self.device)
            for z0 in range(0, nz, self._slices_per_product(copies)):
                part = x[z0:z0 + self._slices_per_product(copies)]
                b = part.shape[0]
                res = full @ _columns(self._turned(part))  # [m·C, copies·b], columns step-major
                out[z0:z0 + b] = res.reshape(m, nc, copies, b).permute(3, 2, 0, 1)
            return out.reshape(nz, copies * m, nc)
        if full is not None:
            return (full @ _columns(x)).T.reshape(nz, wanted.size, nc)
        # too large to store: Joseph's samples drawn by bilinear grid_sample, view chunk by view chunk
        out = torch.empty((nz, wanted.size, nc), dtype=x.dtype, device=self.device)
        src = x[None].contiguous()
        for pos in self._grid_chunks(nz, wanted.size):
            grid, step = self._rays(wanted[pos], x.dtype)
            samples = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out[:, pos[0]:pos[-1] + 1] = samples[0].sum(-1).reshape(nz, pos.size, nc) * step
        return out

    def adjoint(self, sino) -> torch.Tensor:
        """Back-projection ``[nz, ny, nx]``, the exact transpose of :meth:`forward`."""
        y = self._as_tensor(sino, self.out_shape, "sinogram")
        nz, n = y.shape[0], self.n_pixels
        full = self._full_matrix(y.dtype, True)
        if full is not None:
            m, turns = self._symmetry_views()
            copies = self.geometry.n_views // m
            out = torch.empty((nz, n, n), dtype=y.dtype, device=self.device)
            for z0 in range(0, nz, self._slices_per_product(copies)):
                part = y[z0:z0 + self._slices_per_product(copies)]
                b = part.shape[0]
                steps = part.reshape(b, copies, -1).transpose(0, 1).reshape(copies * b, -1)  # step-major
                back = (full @ _columns(steps)).T.reshape(copies, b, n, n)
                out[z0:z0 + b] = sum(torch.rot90(back[q], -q * turns, dims=(-2, -1)) for q in range(copies))
            return out
        out = torch.zeros((1, nz, n, n), dtype=y.dtype, device=self.device)
        for views in self._grid_chunks(nz):  # the input-gradient of the same grid_sample: its transpose
            grid, step = self._rays(views, y.dtype)
            weights = (y[:, views[0]:views[-1] + 1] * step).reshape(1, nz, -1, 1)
            grad = weights.expand(1, nz, weights.shape[2], n).contiguous()
            out += _grid_sample_transpose(grad, grid, (1, nz, n, n))
        return out[0]

    __call__ = forward




def _columns(x: torch.Tensor) -> torch.Tensor:
    """``[b, …]`` → ``[∏…, b]``: each slice (or sinogram) one column of a dense matrix."""
    return x.reshape(x.shape[0], -1).T.contiguous()


def _csr(counts: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_cols: int) -> torch.Tensor:
    """CSR matrix from per-row entry counts and row-major column indices / values."""
    crow = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=cols.device)
    torch.cumsum(counts, 0, out=crow[1:])
    if int(crow[-1]) < 2**31 - 1 and n_cols < 2**31 - 1:
        crow, cols = crow.to(torch.int32), cols.to(torch.int32)
    else:
        crow, cols = crow, cols.long()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, cols, vals, size=(counts.numel(), n_cols), check_invariants=False)

_CACHE: OrderedDict = OrderedDict()


def _cache_drop(key) -> None:
    _CACHE.pop(key, None)


def _cache_get(key, touch: bool = True):
    mat = _CACHE.get(key)
    if mat is not None and touch:
        _CACHE.move_to_end(key)
    return mat


def _cache_put(key, mat) -> None:
    """Cache ``mat``; the least recently used matrices go first once more than ``_CACHE_ENTRIES`` are
    held or they store more than ``_CACHE_TOTAL_NNZ`` entries together."""
    _CACHE[key] = mat
    _CACHE.move_to_end(key)
    while len(_CACHE) > 1 and (len(_CACHE) > _CACHE_ENTRIES
                               or sum(m.values().numel() for m in _CACHE.values()) > _CACHE_TOTAL_NNZ):
        _CACHE.popitem(last=False)


def clear_matrix_cache() -> None:
    """Drop every cached system / back-projection matrix (frees their memory)."""
    _CACHE.clear()


def _grid_sample_transpose(grad: torch.Tensor, grid: torch.Tensor, in_shape: tuple[int, ...]) -> torch.Tensor:
    """Transpose of bilinear, zero-padded ``grid_sample`` (``align_corners=True``) applied to ``grad``."""
    dummy = torch.zeros(in_shape, dtype=grad.dtype, device=grad.device)
    # interpolation 0 = bilinear, padding 0 = zeros; only the input gradient is wanted
    grad_in, _ = torch.ops.aten.grid_sampler_2d_backward(grad, dummy, grid, 0, 0, True, [True, False])
    return grad_in
