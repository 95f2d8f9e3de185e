"""The SPECT system model: attenuated, depth-dependent collimator response, rotation-based.

For each view the image is resampled (bilinear, an explicit sparse matrix per view) onto a grid that
rotates with the detector: planes ``j`` parallel to the collimator face at distance
``d_j = r_v + t_j`` and columns along the detector. Each plane is multiplied by the attenuation factor
``exp(−Σ_{i<j} μ_i Δ − μ_j Δ/2)`` towards the detector (rotated μ, cached per view when it fits in
memory), blurred by the Gaussian collimator–detector response of its distance, and summed.

The blur is incremental (McCarthy AW, Miller MI, "Maximum likelihood SPECT in clinical computation
times using mesh-connected parallel computers", IEEE Trans Med Imaging 1991;10:426–436): going from
the farthest plane towards the detector, the running sum is blurred by a small kernel whose variance
is the *difference* of the variances of neighbouring planes, then the next plane is added. We use the
three-tap kernel ``[w, 1 − 2w, w]`` per axis, whose variance is exactly ``2w`` (pixels²), so the
variances of the composed kernels add up exactly to ``σ(d_j)²`` and the shapes converge to the
Gaussian. Every step is a symmetric matrix (zero padding), so the adjoint runs the same steps in
reverse order and is exact to rounding — the dot-product test holds to 1e-12 in float64.

Units
-----
``forward(x)`` returns, per detector pixel, ``Σ_k x_k · a_vk · h_vk(pixel)``, where ``a`` is the
attenuation factor and ``h`` the collimator response normalised to 1 over the detector plane. So an
unattenuated unit source anywhere in the field of view gives a projection summing to ≈ 1 per view:
forward maps "photons emitted towards this view that reach the collimator face, per unit of x".
Absolute counts need the collimator's efficiency and the number of decays (see
:mod:`spectct.spect.simulate`).
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import torch

from spectct.device import resolve_device
from spectct.errors import GeometryError, InputError
from spectct.physics.collimator import Collimator
from spectct.spect.geometry import SpectGeometry
from spectct.volume import Volume

_MAX_W = 0.25  # largest three-tap weight: variance 0.5 px² per step keeps the kernel non-negative


class SpectModel:
    """Forward and adjoint SPECT projector for one geometry, image grid and μ-map.

    Parameters
    ----------
    geometry : the acquisition.
    grid : image grid; must be ``geometry.image_grid(n_slices, oversample=k)`` for some integer ``k``
        (transaxial voxel = column pixel / k, slice = row pixel / k, centred on the rotation axis).
        With ``k > 1`` each detector pixel sums ``k × k`` fine pixels (for simulation).
    mu : attenuation map in 1/mm on ``grid`` (None: no attenuation).
    collimator : collimator–detector response (default :meth:`Collimator.lehr`).
    device : torch device.
    psf : model the depth-dependent response (False: ideal collimator, no blur).
    dtype : torch.float32 (default) or torch.float64.
    batch_views : views processed together (memory ∝ batch × grid size; default: ≈ 256 MB, ≤ 8).
    cache_attenuation : keep the rotated attenuation factors of every view (None: when they take
        less than ``cache_limit_bytes``).
    """

    def __init__(self, geometry: SpectGeometry, grid: Volume, mu: Volume | None = None,
                 collimator: Collimator | None = None, device: str | torch.device = "cpu", psf: bool = True,
                 dtype: torch.dtype = torch.float32, batch_views: int | None = None,
                 cache_attenuation: bool | None = None, cache_limit_bytes: float = 1.5e9):
        self.geometry = geometry
        self.grid = grid
        self.device = resolve_device(device)
        self.dtype = dtype
        self.psf = bool(psf)
        self.collimator = collimator if collimator is not None else Collimator.lehr()
        self._layout()
        if batch_views is None:  # about 256 MB of rotated planes per batch, at most 8 views
            per_view = self.n * self.n * self.nzd * torch.finfo(dtype).bits // 8
            batch_views = min(8, max(1, int(2.56e8 // per_view)))
        self.batch_views = max(1, int(batch_views))
        self.n_views = geometry.n_views
        self._rot = [None] * self.n_views
        self._rot_t = [None] * self.n_views
        self._pull = [None] * self.n_views
        self._build_rotations()
        self._build_psf()
        self._mu_flat = None
        self._att_cache = None
        if mu is not None:
            if not mu.same_grid(grid):
                raise GeometryError(f"μ-map grid {mu.shape} @ {mu.spacing} mm does not match the image grid "
                                    f"{grid.shape} @ {grid.spacing} mm; resample it first")
            m = np.asarray(mu.data, dtype=np.float64)
            if not np.all(np.isfinite(m)) or m.min() < 0:
                raise InputError("μ-map must be finite and non-negative (1/mm)")
            if m.max() > 5.0:
                raise InputError(f"μ-map maximum {m.max():.3g} 1/mm is implausible; is it in 1/cm or HU?")
            self._mu_flat = self._to_flat(torch.as_tensor(m, dtype=dtype, device=self.device))
            nbytes = self.n_views * self.n_plane * self.nz * torch.finfo(dtype).bits // 8
            cache = cache_attenuation if cache_attenuation is not None else nbytes <= cache_limit_bytes
            if cache:
                self._att_cache = [self._attenuation(v) for v in range(self.n_views)]
                self._pull = [None] * self.n_views  # not needed any more

    # ----------------------------------------------------------------- set-up
    def _layout(self) -> None:
        g, grid = self.geometry, self.grid
        if not np.allclose(grid.direction, np.eye(3), atol=1e-6):
            raise GeometryError("the SPECT image grid must be axis-aligned LPS (identity direction)")
        nz, ny, nx = grid.shape
        dz, dy, dx = grid.spacing
        k = int(round(g.pixel_mm[1] / dx))
        square = math.isclose(dy, dx, rel_tol=1e-4)
        if k < 1 or not math.isclose(g.pixel_mm[1] / k, dx, rel_tol=1e-4) or not square:
            raise GeometryError(f"grid voxel {dx:.4f}×{dy:.4f} mm is not the column pixel "
                                f"{g.pixel_mm[1]:.4f} mm / k; use geometry.image_grid()")
        if not math.isclose(g.pixel_mm[0] / k, dz, rel_tol=1e-4):
            raise GeometryError(f"grid slice {dz:.4f} mm is not the row pixel {g.pixel_mm[0]:.4f} mm / {k}")
        if nx != ny or nx != k * g.n_cols:
            raise GeometryError(f"grid is {ny}×{nx} transaxially; the detector needs "
                                f"{k * g.n_cols}×{k * g.n_cols}")
        centre = np.array(grid.origin[:2]) + (nx - 1) / 2.0 * dx
        if not np.allclose(centre, 0.0, atol=1e-3 * dx):
            raise GeometryError(f"grid is not centred on the rotation axis (centre x, y = {centre} mm)")
        if nz % k:
            raise GeometryError(f"{nz} slices are not a multiple of the oversampling {k}")
        n_slices = nz // k
        # z of the centre of the top group of k slices versus the detector rows
        z_top = grid.origin[2] + (nz - 1 - (k - 1) / 2.0) * dz
        r0 = (g.row_z_mm()[0] - z_top) / g.pixel_mm[0]
        if abs(r0 - round(r0)) > 1e-3 or round(r0) < 0 or round(r0) + n_slices > g.n_rows:
            raise GeometryError("grid slices do not line up with the detector rows "
                                "(use geometry.image_grid())")
        self.k, self.nz, self.n = k, nz, nx
        self.n_slices, self.row0 = n_slices, int(round(r0))
        # the blur runs over every detector row so that light spreading beyond the grid's slices is kept
        self.nzd = k * g.n_rows
        self.zoff = (g.n_rows - self.row0 - n_slices) * k
        self.n_plane = nx * nx
        self.step_mm = dx

    def _build_rotations(self) -> None:
        n = self.n
        for v in range(self.n_views):
            r, c, w = self._rotation_triplets(v, splat=True)
            self._rot[v] = _csr(r, c, w, (n * n, n * n), self.dtype, self.device)
            self._rot_t[v] = _csr(c, r, w, (n * n, n * n), self.dtype, self.device)

    def _rotation_triplets(self, v: int, splat: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bilinear weights between image pixels (y, x) and rotated samples (plane j, column i).

        ``splat=True`` spreads each image voxel onto the four rotated samples around its centre (the
        weights of a voxel sum to one, so every voxel's photons are counted exactly); ``splat=False``
        interpolates the image at each rotated sample (a uniform map stays uniform; used for μ).
        Returns (rotated index j·n + i, image index y·n + x, weight).
        """
        n, dx = self.n, self.step_mm
        theta = math.radians(float(self.geometry.angles_deg[v]))
        s, co = math.sin(theta), math.cos(theta)
        c = (np.arange(n) - (n - 1) / 2.0) * dx
        a, b = np.meshgrid(c, c, indexing="ij")  # [row, column] of the source lattice
        if splat:  # source = image voxel centres (y=a, x=b); targets = rotated lattice (t, u)
            fa = ((b * s + a * co) / dx + (n - 1) / 2.0).ravel()  # t → plane j
            fb = ((b * co - a * s) / dx + (n - 1) / 2.0).ravel()  # u → column i
        else:  # source = rotated samples (t=a, u=b); targets = image lattice (y, x)
            fa = ((-b * s + a * co) / dx + (n - 1) / 2.0).ravel()  # y
            fb = ((b * co + a * s) / dx + (n - 1) / 2.0).ravel()  # x
        src = np.arange(n * n)
        a0, b0 = np.floor(fa).astype(np.int64), np.floor(fb).astype(np.int64)
        ta, tb = fa - a0, fb - b0
        tgt, srcs, ww = [], [], []
        for da, wa in ((0, 1 - ta), (1, ta)):
            for db, wb in ((0, 1 - tb), (1, tb)):
                ia, ib, w = a0 + da, b0 + db, wa * wb
                ok = (ia >= 0) & (ia < n) & (ib >= 0) & (ib < n) & (w > 0)
                tgt.append(ia[ok] * n + ib[ok])
                srcs.append(src[ok])
                ww.append(w[ok])
        t_idx, s_idx, w = np.concatenate(tgt), np.concatenate(srcs), np.concatenate(ww)
        return (t_idx, s_idx, w) if splat else (s_idx, t_idx, w)

    def _build_psf(self) -> None:
        """Per view: three-tap weights of each plane step and of the final (nearest-plane) blur."""
        g, n = self.geometry, self.n
        t = (np.arange(n) - (n - 1) / 2.0) * self.step_mm
        d = g.radii_mm[:, None] + t[None, :]  # [view, plane] distance to the collimator face
        self._inside = torch.as_tensor(d >= 0, device=self.device)  # planes behind the face hold nothing
        self.distance_mm = d
        if not self.psf:
            return
        sig2 = np.asarray(self.collimator.sigma_mm(d), dtype=np.float64) ** 2
        px_col, px_row = self.geometry.pixel_mm[1] / self.k, self.geometry.pixel_mm[0] / self.k
        wx = np.diff(sig2, axis=1) / px_col ** 2 / 2.0  # [view, plane-1]: step j-1 → j
        wz = np.diff(sig2, axis=1) / px_row ** 2 / 2.0
        s0x, s0z = sig2[:, 0] / px_col ** 2, sig2[:, 0] / px_row ** 2
        # Bilinear splatting at an oblique angle already spreads a voxel along the columns by 1/6 px²
        # on average (variance of the tent weights over uniformly distributed sub-pixel offsets);
        # take it out of the modelled response so the total matches the collimator.
        oblique = np.abs(np.mod(g.angles_deg + 45.0, 90.0) - 45.0) > 1e-6
        s0x = s0x - np.where(oblique, np.minimum(s0x, 1.0 / 6.0), 0.0)
        if max(wx.max(), wz.max()) > _MAX_W:
            raise GeometryError("collimator blur grows too fast per plane for the incremental model; "
                                "use a coarser grid")
        self.n0 = max(1, int(math.ceil(max(s0x.max(), s0z.max()) / (2 * _MAX_W))))
        self._w0 = (torch.as_tensor(s0x / (2 * self.n0), dtype=self.dtype, device=self.device),
                    torch.as_tensor(s0z / (2 * self.n0), dtype=self.dtype, device=self.device))
        self._wx = torch.as_tensor(wx, dtype=self.dtype, device=self.device)
        self._wz = torch.as_tensor(wz, dtype=self.dtype, device=self.device)

    def _path(self, v: int) -> torch.Tensor:
        """∫μ (dimensionless) from every rotated voxel centre to the detector, [plane, column, z]."""
        if self._pull[v] is None:
            r, c, w = self._rotation_triplets(v, splat=False)
            self._pull[v] = _csr(r, c, w, (self.n_plane, self.n_plane), self.dtype, self.device)
        mu_rot = torch.sparse.mm(self._pull[v], self._mu_flat).view(self.n, self.n, self.nz)
        # running sum over planes (a loop of plane additions beats torch.cumsum along dim 0 on CPU)
        path = torch.empty_like(mu_rot)
        path[0] = 0.5 * mu_rot[0]
        for j in range(1, self.n):
            torch.add(path[j - 1], mu_rot[j - 1] + mu_rot[j], alpha=0.5, out=path[j])
        return path.mul_(self.step_mm)

    def _attenuation(self, v: int, scale: float = 1.0, path: torch.Tensor | None = None) -> torch.Tensor:
        """Attenuation factor of every rotated voxel for view ``v`` (μ scaled by ``scale``)."""
        att = self._path(v).mul_(-scale).exp_() if path is None else torch.exp(path * (-scale))
        outside = ~self._inside[v]
        if bool(outside.any()):
            att[outside] = 0.0
        return att

    def _weights(self, v: int) -> torch.Tensor | None:
        if self._att_cache is not None:
            return self._att_cache[v]
        if self._mu_flat is not None:
            return self._attenuation(v)
        if bool(self._inside[v].all()):
            return None
        return self._inside[v].to(self.dtype)[:, None, None]

    def with_mu_scale(self, factor: float) -> SpectModel:
        """The same model with the μ-map multiplied by ``factor`` (shares rotations and PSF; the
        attenuation of the copy is computed per call, not cached). Used for broad-beam scatter."""
        other = copy.copy(self)
        if self._mu_flat is not None:
            other._mu_flat = self._mu_flat * float(factor)
            other._att_cache = None
        return other

    # ----------------------------------------------------------------- helpers
    def _to_flat(self, x: torch.Tensor) -> torch.Tensor:
        """[z, y, x] → [y·x, z] (the layout the rotation matrices act on)."""
        return x.permute(1, 2, 0).reshape(self.n_plane, self.nz).contiguous()

    def _views(self, views) -> np.ndarray:
        if views is None:
            return np.arange(self.n_views)
        if isinstance(views, slice):
            return np.arange(self.n_views)[views]
        if isinstance(views, torch.Tensor):
            views = views.cpu().numpy()
        idx = np.atleast_1d(np.asarray(views, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_views):
            raise InputError(f"view index out of range 0..{self.n_views - 1}")
        return idx

    def _tensor(self, a, shape: tuple[int, ...], what: str) -> torch.Tensor:
        t = torch.as_tensor(a, device=self.device)
        if tuple(t.shape) != shape:
            raise InputError(f"{what} has shape {tuple(t.shape)}, expected {shape}")
        return t.to(self.dtype)

    @staticmethod
    def _blur3(a: torch.Tensor, wx: torch.Tensor, wz: torch.Tensor) -> torch.Tensor:
        """Three-tap blur ``[w, 1−2w, w]`` along columns (dim 1) then z (dim 2); a: [B, I, Z], w: [B]."""
        wx, wz = wx[:, None, None], wz[:, None, None]
        o = a * (1 - 2 * wx)
        o[:, 1:].addcmul_(a[:, :-1], wx)
        o[:, :-1].addcmul_(a[:, 1:], wx)
        p = o * (1 - 2 * wz)
        p[:, :, 1:].addcmul_(o[:, :, :-1], wz)
        p[:, :, :-1].addcmul_(o[:, :, 1:], wz)
        return p

    def _final_blur(self, a: torch.Tensor, vb: np.ndarray) -> torch.Tensor:
        w0x, w0z = self._w0[0][vb], self._w0[1][vb]
        for _ in range(self.n0):
            a = self._blur3(a, w0x, w0z)
        return a

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.n_views, self.geometry.n_rows, self.geometry.n_cols)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.grid.shape

    # ----------------------------------------------------------------- operators
    def forward(self, x, views=None, additive=None) -> torch.Tensor:
        """Project an image ``x`` [z, y, x] to ``[n_views_sel, n_rows, n_cols]`` (see module Units).

        ``additive`` (same shape as the output) is added, e.g. a scatter estimate.
        """
        out = self._project(x, views, None)[0]
        if additive is not None:
            out = out + self._tensor(additive, tuple(out.shape), "additive term")
        return out

    def forward_mu_scales(self, x, mu_scales: tuple[float, ...], views=None) -> list[torch.Tensor]:
        """Forward projections of ``x`` with the μ-map scaled by each factor, sharing the rotations
        (e.g. narrow- and broad-beam attenuation for the scatter model). Without μ all are equal."""
        return self._project(x, views, tuple(float(f) for f in mu_scales))

    def _project(self, x, views, scales: tuple[float, ...] | None) -> list[torch.Tensor]:
        idx = self._views(views)
        xt = self._tensor(x, self.grid.shape, "image")
        xf = self._to_flat(xt)
        n, nz, k = self.n, self.nz, self.k
        g = self.geometry
        n_out = 1 if scales is None else len(scales)
        outs = [torch.zeros((idx.size, g.n_rows, g.n_cols), dtype=self.dtype, device=self.device)
                for _ in range(n_out)]
        zs = slice(self.zoff, self.zoff + nz)
        alloc = torch.empty if self.nzd == nz else torch.zeros
        for b0 in range(0, idx.size, self.batch_views):
            vb = idx[b0:b0 + self.batch_views]
            shape = (vb.size, n, n, self.nzd)
            qs = [alloc(shape, dtype=self.dtype, device=self.device) for _ in range(n_out)]
            for i, v in enumerate(vb):
                qi = torch.sparse.mm(self._rot[v], xf).view(n, n, nz)
                if scales is None:
                    w = self._weights(int(v))
                    qs[0][i, :, :, zs] = qi if w is None else qi * w
                elif self._mu_flat is None:
                    w = self._weights(int(v))
                    for q in qs:
                        q[i, :, :, zs] = qi if w is None else qi * w
                else:
                    path = self._path(int(v))
                    for q, f in zip(qs, scales, strict=True):
                        q[i, :, :, zs] = qi * self._attenuation(int(v), f, path)
            for q, out in zip(qs, outs, strict=True):
                if self.psf:
                    wx, wz = self._wx[vb], self._wz[vb]
                    acc = q[:, n - 1]
                    for j in range(n - 1, 0, -1):
                        acc = self._blur3(acc, wx[:, j - 1], wz[:, j - 1]).add_(q[:, j - 1])
                    acc = self._final_blur(acc, vb)
                else:
                    acc = q.sum(dim=1)
                # acc: [B, column, z] on the fine grid → detector pixels
                if k > 1:
                    acc = acc.reshape(vb.size, g.n_cols, k, g.n_rows, k).sum(dim=(2, 4))
                out[b0:b0 + vb.size] = acc.transpose(1, 2).flip(1)
        return outs

    __call__ = forward

    def adjoint(self, y, views=None) -> torch.Tensor:
        """Back-project ``y`` [n_views_sel, n_rows, n_cols] to an image [z, y, x] (exact adjoint)."""
        idx = self._views(views)
        g = self.geometry
        yt = self._tensor(y, (idx.size, g.n_rows, g.n_cols), "projections")
        n, nz, k = self.n, self.nz, self.k
        res = torch.zeros((self.n_plane, nz), dtype=self.dtype, device=self.device)
        for b0 in range(0, idx.size, self.batch_views):
            vb = idx[b0:b0 + self.batch_views]
            p = yt[b0:b0 + vb.size].flip(1).transpose(1, 2)
            if k > 1:
                p = p.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2)
            p = p.contiguous()
            planes = torch.empty((vb.size, n, n, self.nzd), dtype=self.dtype, device=self.device)
            if self.psf:
                wx, wz = self._wx[vb], self._wz[vb]
                gacc = self._final_blur(p, vb)
                planes[:, 0] = gacc
                for j in range(1, n):
                    gacc = self._blur3(gacc, wx[:, j - 1], wz[:, j - 1])
                    planes[:, j] = gacc
            else:
                planes[:] = p[:, None]
            zs = slice(self.zoff, self.zoff + nz)
            for i, v in enumerate(vb):
                w = self._weights(int(v))
                pl = planes[i, :, :, zs] if w is None else planes[i, :, :, zs] * w
                res += torch.sparse.mm(self._rot_t[v], pl.reshape(n * n, nz))
        return res.view(n, n, nz).permute(2, 0, 1).contiguous()

    def sensitivity(self, views=None) -> torch.Tensor:
        """Adjoint of ones: the sensitivity image of the selected views, [z, y, x]."""
        idx = self._views(views)
        g = self.geometry
        ones = torch.ones((idx.size, g.n_rows, g.n_cols), dtype=self.dtype, device=self.device)
        return self.adjoint(ones, idx)


def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int], dtype: torch.dtype,
         device: torch.device) -> torch.Tensor:
    """A CSR matrix from COO triplets without duplicates (rows sorted, columns sorted within a row)."""
    key = rows.astype(np.int64) * shape[1] + cols
    order = np.argsort(key, kind="stable")
    crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))]).astype(np.int64)
    with warnings.catch_warnings():  # torch flags CSR support as "beta" on every construction
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(crow),
                                       torch.from_numpy(np.ascontiguousarray(cols[order])),
                                       torch.from_numpy(np.ascontiguousarray(vals[order])).to(dtype),
                                       size=shape, check_invariants=False).to(device)
