"""Fan-beam forward projector (Joseph's method) and its exact adjoint, batched over slices.

Each ray of each view is sampled once per image row (or column, whichever the ray crosses more
steeply), with linear interpolation between the two neighbouring pixels along the other axis and a
step length ``pixel_mm / |cos θ|`` — P. M. Joseph, "An improved algorithm for reprojecting rays
through pixel images", IEEE Trans. Med. Imaging 1 (1982) 192–196.  Because every sample lies on a
row (or column) of pixel centres, bilinear interpolation there *is* Joseph's linear interpolation, so
the sampling is done by ``torch.nn.functional.grid_sample`` (compiled, multi-threaded on CPU, a CUDA
kernel on GPU), with the slices of the batch as its channels.  The adjoint is the input-gradient of
that same sampling (``grid_sampler_2d_backward``), which scatters with identical weights: it is the
exact transpose, not an approximation (checked by the dot-product test).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from spectct.ct.geometry import CtGeometry
from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError

#: elements (samples × slices) of the working arrays per chunk: ~100 MB of float32 on a CPU, 16× more on
#: a GPU (where larger batches are what makes it fast).
_CHUNK_ELEMENTS = 24_000_000


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

    @property
    def in_shape(self) -> tuple[int, int]:
        return (self.n_pixels, self.n_pixels)

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.geometry.sinogram_shape

    # ----------------------------------------------------------------- ray sampling
    def _rays(self, views: np.ndarray, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Joseph's sample points for the given views.

        Returns ``grid`` ``[1, V·C, S, 2]`` in ``grid_sample``'s normalised (x, y) coordinates
        (``align_corners=True``: −1 and +1 are the first and last pixel centres) and the step length
        ``[V, C]`` in mm that each sample stands for.
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
        # along the major axis u the ray is sampled at every pixel centre u_s; v is the other axis.
        du = torch.where(y_major, dy, dx)
        dv = torch.where(y_major, dx, dy)
        su = torch.where(y_major, sy, sx)
        sv = torch.where(y_major, sx, sy)
        slope = dv / du
        # continuous v index at sample s: a + slope · (s − (n−1)/2); normalised: index · 2/(n−1) − 1
        scale = 2.0 / (n - 1)
        a = ((sv - su * slope) / h + (n - 1) / 2.0) * scale - 1.0
        s_off = torch.arange(n, dtype=torch.float64, device=dev) - (n - 1) / 2.0
        v_norm = torch.addcmul(a[..., None], (slope * scale)[..., None], s_off).to(dtype)  # [V, C, S]
        u_norm = (s_off * scale).to(dtype).expand_as(v_norm)
        ym = y_major[..., None]
        grid = torch.stack([torch.where(ym, v_norm, u_norm), torch.where(ym, u_norm, v_norm)], dim=-1)
        step = (h / du.abs()).to(dtype)
        return grid.reshape(1, -1, n, 2), step

    def _view_chunks(self, nz: int, n_views: int | None = None):
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
        out = torch.empty((nz, wanted.size, nc), dtype=x.dtype, device=self.device)
        src = x[None].contiguous()
        for pos in self._view_chunks(nz, wanted.size):
            grid, step = self._rays(wanted[pos], x.dtype)
            samples = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out[:, pos[0]:pos[-1] + 1] = samples[0].sum(-1).reshape(nz, pos.size, nc) * step
        return out

    def adjoint(self, sino) -> torch.Tensor:
        """Back-projection ``[nz, ny, nx]``, the exact transpose of :meth:`forward`."""
        y = self._as_tensor(sino, self.out_shape, "sinogram")
        nz, n = y.shape[0], self.n_pixels
        out = torch.zeros((1, nz, n, n), dtype=y.dtype, device=self.device)
        for views in self._view_chunks(nz):
            grid, step = self._rays(views, y.dtype)
            weights = (y[:, views[0]:views[-1] + 1] * step).reshape(1, nz, -1, 1)
            grad = weights.expand(1, nz, weights.shape[2], n).contiguous()
            out += _grid_sample_transpose(grad, grid, (1, nz, n, n))
        return out[0]

    __call__ = forward


def _grid_sample_transpose(grad: torch.Tensor, grid: torch.Tensor, in_shape: tuple[int, ...]) -> torch.Tensor:
    """Transpose of bilinear, zero-padded ``grid_sample`` (``align_corners=True``) applied to ``grad``."""
    dummy = torch.zeros(in_shape, dtype=grad.dtype, device=grad.device)
    # interpolation 0 = bilinear, padding 0 = zeros; only the input gradient is wanted
    grad_in, _ = torch.ops.aten.grid_sampler_2d_backward(grad, dummy, grid, 0, 0, True, [True, False])
    return grad_in
