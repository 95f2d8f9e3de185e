"""Rigid registration by Mattes mutual information (SimpleITK), and applying the found transform.

Used when SPECT and CT are not in one frame of reference, or are visibly misaligned (patient motion
between the two scans). Mutual information suits the multi-modal pair (Mattes et al., "PET-CT image
registration in the chest using free-form deformations", IEEE TMI 22(1):120–128, 2003).

Transform convention (ITK's): the transform maps a point of the *fixed* image to the corresponding
point of the *moving* image, ``p_moving = R @ p_fixed + t`` in LPS mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from spectct.errors import GeometryError, InputError
from spectct.volume import Volume, resample


@dataclass
class RigidTransform:
    """A rigid map from fixed to moving LPS coordinates: ``p_moving = rotation @ p_fixed + translation``.

    ``metric`` is the final Mattes mutual information (negative; lower is better), ``iterations`` the
    optimiser iterations of the last level, ``stop`` the optimiser's reason for stopping.
    """

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    metric: float = float("nan")
    iterations: int = 0
    stop: str = ""

    @property
    def matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix of the map."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    @property
    def rotation_deg(self) -> float:
        """Total rotation angle in degrees."""
        c = (np.trace(self.rotation) - 1.0) / 2.0
        return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))

    def apply(self, points_lps) -> np.ndarray:
        """Map fixed-space LPS points ``[..., 3]`` to moving space."""
        p = np.asarray(points_lps, dtype=float)
        return p @ self.rotation.T + self.translation

    def to_dict(self) -> dict:
        """JSON-ready description (for protocol.json / findings)."""
        return {"rotation": self.rotation.round(6).tolist(),
                "translation_mm": self.translation.round(3).tolist(),
                "rotation_deg": round(self.rotation_deg, 3), "metric_mattes_mi": self.metric,
                "iterations": self.iterations, "stop": self.stop}


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the volume's data and LPS geometry (ITK is LPS too)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume.data, dtype=np.float32))
    dz, dy, dx = volume.spacing
    img.SetSpacing((dx, dy, dz))
    img.SetOrigin(tuple(volume.origin))
    img.SetDirection(tuple(np.asarray(volume.direction, dtype=float).ravel()))
    return img


def register_rigid(fixed: Volume, moving: Volume, bins: int = 50, sampling: float = 0.2, seed: int = 0,
                   shrink: tuple[int, ...] = (4, 2, 1), smoothing_mm: tuple[float, ...] | None = None,
                   iterations: int = 200, initial: RigidTransform | None = None,
                   full_sampling_below: int = 2_000_000) -> RigidTransform:
    """Find the rigid transform that aligns ``moving`` to ``fixed`` by maximising mutual information.

    Parameters
    ----------
    fixed : reference volume (usually the CT).
    moving : volume to align (usually the SPECT or its attenuation map).
    bins : joint-histogram bins of the Mattes metric.
    sampling : fraction of voxels sampled at random each iteration (seeded with ``seed``) when the
        fixed image has more than ``full_sampling_below`` voxels; smaller images use every voxel.
    shrink : pyramid shrink factors, coarse to fine.
    smoothing_mm : Gaussian sigma per level in mm (default: half the shrink factor times the coarsest
        spacing of the two images, 0 at the finest level).
    iterations : maximum optimiser iterations per level.
    initial : start transform (default: identity, rotation about the fixed image's centre).

    Returns
    -------
    RigidTransform
        Fixed→moving map in LPS mm with the final metric.
    """
    if not fixed.overlaps(moving):
        raise GeometryError("fixed and moving volumes do not overlap in patient space; set an initial "
                            "transform or check their origins")
    if not 0 < sampling <= 1:
        raise InputError(f"sampling fraction must be in (0, 1], got {sampling}")
    f_img, m_img = to_sitk(fixed), to_sitk(moving)
    coarse = max(max(fixed.spacing), max(moving.spacing))
    if smoothing_mm is None:
        smoothing_mm = tuple(0.5 * s * coarse if s > 1 else 0.0 for s in shrink)
    if len(smoothing_mm) != len(shrink):
        raise InputError("smoothing_mm needs one value per shrink level")
    tx = sitk.Euler3DTransform()
    tx.SetCenter(tuple(float(c) for c in fixed.center_world))
    if initial is not None:
        tx.SetMatrix(tuple(np.asarray(initial.rotation, float).ravel()))
        # p_m = R (p - c) + c + t'  ==  R p + t  →  t' = t - c + R c
        c = fixed.center_world
        tx.SetTranslation(tuple(initial.translation - c + initial.rotation @ c))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    if fixed.data.size > full_sampling_below:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, seed)
    else:  # every voxel: deterministic and robust for small images
        reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4,
                                                 numberOfIterations=iterations, relaxationFactor=0.7,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(smoothing_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=True)
    try:
        reg.Execute(f_img, m_img)
    except RuntimeError as exc:
        raise GeometryError(f"rigid registration failed: {str(exc).strip().splitlines()[-1]}") from None
    rot = np.asarray(tx.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(tx.GetCenter(), dtype=float)
    t = np.asarray(tx.GetTranslation(), dtype=float) + c - rot @ c
    return RigidTransform(rotation=rot, translation=t, metric=float(reg.GetMetricValue()),
                          iterations=int(reg.GetOptimizerIteration()),
                          stop=reg.GetOptimizerStopConditionDescription())


def apply_rigid(volume: Volume, transform: RigidTransform, reference: Volume,
                device: str | torch.device | None = "cpu", order: str = "linear",
                fill: float | None = None) -> Volume:
    """Resample a moving ``volume`` onto ``reference``'s grid through a fixed→moving ``transform``.

    The moving grid is re-expressed in fixed coordinates (its affine left-multiplied by the inverse
    transform, which stays rigid) and then resampled by :func:`spectct.volume.resample`.
    """
    inv = np.linalg.inv(transform.matrix)
    new_dir = inv[:3, :3] @ volume.direction
    new_origin = inv[:3, :3] @ np.asarray(volume.origin) + inv[:3, 3]
    moved = Volume(volume.data, spacing=volume.spacing, origin=tuple(new_origin), direction=new_dir,
                   unit=volume.unit, frame_of_reference=reference.frame_of_reference)
    if not moved.overlaps(reference):
        raise GeometryError("the transformed volume does not overlap the reference grid")
    if fill is None:
        fill = -1024.0 if volume.unit == "HU" else 0.0
    out = resample(moved, reference, order=order, fill=fill, device=device)
    out.frame_of_reference = reference.frame_of_reference
    return out
