"""Third-generation fan-beam CT geometry (one axial rotation per 1-mm slice).

The default numbers are those of a Siemens SOMATOM Definition AS class scanner as published with the
AAPM low-dose CT grand-challenge projection data (../shared/PHYSICS.md): source–isocentre 595 mm,
source–detector 1085.6 mm, 736 channels on a cylindrical (equiangular) detector, 1152 views per rotation.

Coordinates (DICOM LPS, mm, in the axial plane of one slice)
------------------------------------------------------------
- The source turns about the isocentre ``x = y = 0``.  At view angle ``β`` the source sits at
  ``S(β) = R · (sin β, −cos β)``: at ``β = 0`` it is anterior (``y = −R``) and the detector posterior.
  ``β`` grows counter-clockwise in the (x, y) plane as seen from the head (+z toward the viewer).
- The central ray points from the source through the isocentre, ``c(β) = (−sin β, cos β)``.
  Channel ``k`` has the fan angle ``γ_k = (k − k_c) · Δγ`` with ``k_c = (n_channels − 1)/2 + offset``;
  its ray direction is ``c`` rotated counter-clockwise by ``γ_k``.
- ``channel_pitch_rad`` is the angular pitch ``Δγ`` seen from the focal spot.  The default
  1.2858 mm / 1085.6 mm (the challenge data's detector element width at the detector) gives a full fan
  of 49.9°, i.e. a scan field of radius ``R sin(γ_max) ≈ 251 mm`` — just covering the 500-mm field.

Helical acquisition is approximated by one axial rotation per reconstructed slice (the 32 × 0.7 mm
collimation with z-interpolation to 1-mm slices is not modelled ray by ray).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from spectct.errors import GeometryError, InputError

#: tube voltages a clinical CT offers (kVp); outside this range the simulation refuses to run.
KVP_RANGE = (70.0, 150.0)


@dataclass(frozen=True)
class CtGeometry:
    """A fan-beam CT scan: geometry of the gantry plus the tube settings.

    Parameters
    ----------
    sid_mm : source–isocentre distance ``R``.
    sdd_mm : source–detector distance (only used for documentation of the detector size and for the
        magnification of the topogram; the equiangular model needs only ``R`` and ``Δγ``).
    n_channels : detector channels in the fan.
    channel_pitch_rad : angular pitch ``Δγ`` of the channels seen from the focal spot.
    n_views : views per 360° rotation (equally spaced, starting at ``start_angle_rad``).
    fov_mm : diameter of the reconstruction field; the fan must cover it.
    kvp : tube voltage (70–150 kV).
    mas : tube current–time product per rotation (effective mAs).
    slice_mm : reconstructed slice thickness (and spacing).
    detector_offset_channels : shift of the central ray from the detector centre, in channels
        (a quarter-channel offset, 0.25, is what clinical scanners use to interleave opposed rays).
    start_angle_rad : angle of the first view.
    """

    sid_mm: float = 595.0
    sdd_mm: float = 1085.6
    n_channels: int = 736
    channel_pitch_rad: float = 1.2858 / 1085.6
    n_views: int = 1152
    fov_mm: float = 500.0
    kvp: float = 110.0
    mas: float = 150.0
    slice_mm: float = 1.0
    detector_offset_channels: float = 0.25
    start_angle_rad: float = 0.0

    def __post_init__(self) -> None:
        if not (self.sid_mm > 0 and self.sdd_mm > self.sid_mm):
            raise GeometryError(f"CT geometry needs 0 < sid_mm < sdd_mm, got {self.sid_mm}, {self.sdd_mm}")
        if self.n_channels < 8 or self.n_views < 8:
            raise GeometryError(f"CT geometry needs ≥ 8 channels and views, got {self.n_channels}, "
                                f"{self.n_views}")
        if not (self.channel_pitch_rad > 0 and self.fov_mm > 0 and self.slice_mm > 0 and self.mas > 0):
            raise GeometryError("CT geometry: channel pitch, field, slice thickness and mAs must be positive")
        if not (KVP_RANGE[0] <= self.kvp <= KVP_RANGE[1]):
            raise InputError(f"tube voltage {self.kvp} kV is outside the CT range "
                             f"{KVP_RANGE[0]:g}–{KVP_RANGE[1]:g} kV")
        if self.fov_mm / 2 >= self.sid_mm:
            raise GeometryError(f"field {self.fov_mm} mm does not fit inside the source circle "
                                f"R={self.sid_mm} mm")
        if self.scan_field_radius_mm < self.fov_mm / 2 * 0.999:
            raise GeometryError(
                f"the fan ({self.n_channels} × {self.channel_pitch_rad:.3g} rad) covers a field of radius "
                f"{self.scan_field_radius_mm:.1f} mm, less than fov_mm/2 = {self.fov_mm / 2:.1f} mm")

    # ----------------------------------------------------------------- derived quantities
    @property
    def fan_half_angle_rad(self) -> float:
        """Half the fan angle that the smaller side of the (offset) detector reaches."""
        half = (self.n_channels - 1) / 2.0
        return (half - abs(self.detector_offset_channels)) * self.channel_pitch_rad

    @property
    def scan_field_radius_mm(self) -> float:
        """Radius of the circle every view sees completely, ``R sin γ_max``."""
        return self.sid_mm * math.sin(self.fan_half_angle_rad)

    @property
    def central_channel(self) -> float:
        """``k_c``: the (fractional) channel index of the ray through the isocentre."""
        return (self.n_channels - 1) / 2.0 + self.detector_offset_channels

    def angles_rad(self) -> np.ndarray:
        """View angles ``β`` (float64, radians) of one full rotation."""
        return self.start_angle_rad + 2.0 * np.pi * np.arange(self.n_views) / self.n_views

    def fan_angles_rad(self) -> np.ndarray:
        """Fan angle ``γ_k`` (float64, radians) of every channel."""
        return (np.arange(self.n_channels) - self.central_channel) * self.channel_pitch_rad

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(n_views, n_channels)`` of one slice's sinogram."""
        return (self.n_views, self.n_channels)

    def check_sinogram(self, shape: tuple[int, ...], name: str = "sinogram") -> None:
        """Raise :class:`InputError` unless ``shape`` is ``[nz, n_views, n_channels]``."""
        if len(shape) != 3 or tuple(shape[1:]) != self.sinogram_shape:
            raise InputError(f"{name} has shape {tuple(shape)}, but its geometry needs "
                             f"[slices, {self.n_views} views, {self.n_channels} channels]")

    # ----------------------------------------------------------------- variants
    def scaled(self, n_views: int | None = None, n_channels: int | None = None, **changes) -> CtGeometry:
        """The same scanner with fewer (or more) views and channels, keeping the full fan angle.

        Other fields (``kvp``, ``mas`` …) may be changed by keyword.
        """
        nc = int(n_channels or self.n_channels)
        nv = int(n_views or self.n_views)
        # keep the half-fan of the shorter (offset) side, so the scan field stays the same
        pitch = self.fan_half_angle_rad / ((nc - 1) / 2.0 - abs(self.detector_offset_channels))
        return replace(self, n_channels=nc, n_views=nv, channel_pitch_rad=pitch, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-able dictionary (see :meth:`from_dict`)."""
        return {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, doc: dict) -> CtGeometry:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        known = set(cls.__dataclass_fields__)
        extra = set(doc) - known
        if extra:
            raise InputError(f"unknown CT geometry fields {sorted(extra)}")
        return cls(**doc)
