"""SPECT on the CT grid: resampling in patient coordinates (one frame of reference).

For grids whose axes are parallel to each other (the usual SPECT/CT pair: both axial, possibly with
flipped axes) trilinear interpolation is separable: it is the tensor product of three 1-D linear
interpolations, applied here as three small dense matrix products in torch. Other grids fall back to
:func:`spectct.volume.resample` (trilinear ``grid_sample``). Both give the same values.
"""

from __future__ import annotations

import numpy as np
import torch

from spectct.device import resolve_device
from spectct.errors import GeometryError
from spectct.volume import Volume, resample


def _axis_map(src: Volume, ref: Volume) -> list[tuple[int, float, float]] | None:
    """For each reference index axis (i, j, k): (source axis, scale, offset) of the continuous source index.

    Returns None when some reference axis is not parallel to a source axis.
    """
    m = np.linalg.inv(src.affine) @ ref.affine  # ref (i, j, k, 1) -> src (i, j, k, 1)
    out = []
    for col in range(3):
        rows = np.flatnonzero(np.abs(m[:3, col]) > 1e-9 * max(1.0, np.abs(m[:3, col]).max()))
        if len(rows) != 1:
            return None
        r = int(rows[0])
        out.append((r, float(m[r, col]), float(m[r, 3])))
    if sorted(a for a, _, _ in out) != [0, 1, 2]:
        return None
    return out


def _interp_matrix(n_src: int, n_ref: int, scale: float, offset: float, dev) -> torch.Tensor:
    """[n_ref, n_src] linear-interpolation weights; zero rows outside the source (±0.5 voxel border)."""
    t = offset + scale * torch.arange(n_ref, dtype=torch.float64, device=dev)
    inside = (t >= -0.5) & (t <= n_src - 0.5)
    tc = t.clamp(0.0, n_src - 1.0)
    i0 = torch.floor(tc).long().clamp(max=max(n_src - 2, 0))
    frac = tc - i0 if n_src > 1 else torch.zeros_like(tc)
    w = torch.zeros((n_ref, n_src), dtype=torch.float64, device=dev)
    rows = torch.arange(n_ref, device=dev)
    w[rows, i0] += (1.0 - frac) * inside
    if n_src > 1:
        w[rows, i0 + 1] += frac * inside
    return w.to(torch.float32)


def separable_resample(source: Volume, reference: Volume, fill: float = 0.0,
                       device: str | torch.device | None = "cpu") -> Volume | None:
    """Trilinear resampling for grids with parallel axes as three 1-D interpolations; None otherwise.

    Values outside the source field of view (more than half a voxel beyond its edge voxels) get ``fill``.
    """
    amap = _axis_map(source, reference)
    if amap is None:
        return None
    dev = resolve_device(device)
    src_n = source.shape[::-1]  # (nx, ny, nz) for source index axes (i, j, k)
    ref_n = reference.shape[::-1]
    mats = [_interp_matrix(src_n[a], ref_n[c], s, o, dev) for c, (a, s, o) in enumerate(amap)]
    data = torch.as_tensor(np.ascontiguousarray(source.data, dtype=np.float32) - np.float32(fill), device=dev)
    # data is [k, j, i]; contract each source axis with the matrix of the reference axis it feeds
    letters = {0: "i", 1: "j", 2: "k"}
    src_sub = "kji"
    out_sub = "".join(letters[amap[c][0]].upper() for c in (2, 1, 0))  # reference (k, j, i) order
    terms = [data]
    subs = [src_sub]
    for c, (a, _, _) in enumerate(amap):
        terms.append(mats[c])
        subs.append(letters[a].upper() + letters[a])
    out = torch.einsum(",".join(subs) + "->" + out_sub, *terms) + fill
    return Volume(out.cpu().numpy(), spacing=reference.spacing, origin=reference.origin,
                  direction=reference.direction.copy(), unit=source.unit,
                  frame_of_reference=reference.frame_of_reference or source.frame_of_reference)


def spect_to_ct(spect: Volume, ct: Volume, device: str | torch.device | None = "cpu",
                transform=None) -> Volume:
    """Resample a SPECT volume onto the CT grid by trilinear interpolation in LPS coordinates.

    Activity concentration (Bq/mL) is an intensive quantity, so interpolated values keep their unit;
    CT voxels outside the SPECT field of view get 0.

    Parameters
    ----------
    spect : SPECT volume (any grid, usually 4–5 mm voxels).
    ct : CT volume whose grid is used (its data are not read).
    device : torch device for the interpolation.
    transform : optional :class:`spectct.fusion.register.RigidTransform` from :func:`register_rigid`
        (CT as fixed, SPECT as moving) to apply when the two are not in one frame of reference.

    Raises
    ------
    GeometryError
        When the two fields of view do not overlap, or when both volumes name different frames of
        reference and no transform is given (register them first).
    """
    if transform is not None:
        from spectct.fusion.register import apply_rigid

        return apply_rigid(spect, transform, ct, device=device)
    if (spect.frame_of_reference and ct.frame_of_reference
            and spect.frame_of_reference != ct.frame_of_reference):
        raise GeometryError(f"SPECT (frame {spect.frame_of_reference}) and CT "
                            f"(frame {ct.frame_of_reference}) are in different frames of reference; "
                            "register them first (register_rigid)")
    if not spect.overlaps(ct):
        lo_s, hi_s = spect.extent_world.round(1)
        lo_c, hi_c = ct.extent_world.round(1)
        raise GeometryError(f"SPECT field of view {tuple(lo_s)}..{tuple(hi_s)} mm and CT {tuple(lo_c)}.."
                            f"{tuple(hi_c)} mm (LPS) do not overlap")
    fast = separable_resample(spect, ct, fill=0.0, device=device)
    if fast is not None:
        return fast
    return resample(spect, ct, order="linear", fill=0.0, device=device)
