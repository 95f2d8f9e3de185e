"""SPECT acquisition geometry, energy windows and projection data.

Angle convention (spectct internal)
-----------------------------------
``angles_deg[v]`` is the position of the centre of the detector face for view ``v``, in the
transaxial plane of the patient, measured from **anterior** (0° = detector above a supine
patient, facing it, at −y in LPS) and increasing **counter-clockwise as seen from the patient's
feet** (looking towards +z, the viewer has patient left = +x on the right and anterior up), so that
90° = detector at the patient's right (−x), 180° = posterior (+y), 270° = patient's left (+x).
In LPS the unit vector from the rotation axis to the detector is ``n(θ) = (−sin θ, −cos θ, 0)``.

Detector pixels
---------------
Projections are ``[view, row, col]``. Rows run along z: row 0 is the most superior (head) row.
Columns are transaxial: column ``c`` sits at ``u_c = (c − (n_cols − 1)/2) · pixel_col`` along
``e_u(θ) = (cos θ, −sin θ, 0)``; at 0° (anterior view) columns increase towards patient left (+x), i.e.
the anterior image is seen as if facing the patient (patient right on the viewer's left).

DICOM NM mapping
----------------
DICOM (PS3.3, NM Detector and NM/Rotation modules) gives per detector a Start Angle (0054,0200), an
Angular Step (0018,1144), a Rotation Direction (0018,1140, ``CW`` or ``CC``) and the Radial Position
(0018,1142, one value per view). DICOM refers the angles to the gantry as seen when facing it, with
0° at the top (12 o'clock); for a head-first supine patient the viewer facing the gantry stands at
the patient's feet and 0° is anterior, which is the internal convention above, so
:func:`from_dicom_angles` maps ``CC`` to counter-clockwise and ``CW`` to clockwise directly. Feet-first
or prone patients, and vendors whose files disagree with the standard (Siemens and GE files of the
same orbit have been reported 180° apart or mirrored, see the STIR discussion #1180 on SPECTUB flips),
need ``vendor_flip`` or an angle offset; the IO layer owns that choice.

Energy windows for Tc-99m
-------------------------
Photopeak 140.5 keV ± 7.5 % (129.96–151.04 keV, case protocol). Triple-energy-window scatter
estimation (Ogawa K, Harata Y, Ichihara T, Kubo A, Hashimoto S. "A practical method for
position-dependent Compton-scatter correction in single photon emission CT." IEEE Trans Med Imaging
1991;10:408–412) uses two narrow windows abutting the photopeak window; we use 3 % of 140.5 keV
(4.215 keV) each: lower 125.75–129.96 keV, upper 151.04–155.25 keV.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from spectct.errors import GeometryError, InputError
from spectct.volume import Volume


@dataclass(frozen=True)
class EnergyWindow:
    """An energy acceptance window ``[lower_kev, upper_kev]``."""

    name: str
    lower_kev: float
    upper_kev: float

    def __post_init__(self) -> None:
        if not (0 < self.lower_kev < self.upper_kev):
            raise InputError(f"energy window {self.name!r}: need 0 < lower < upper, got "
                             f"{self.lower_kev}–{self.upper_kev} keV")

    @property
    def center_kev(self) -> float:
        return 0.5 * (self.lower_kev + self.upper_kev)

    @property
    def width_kev(self) -> float:
        return self.upper_kev - self.lower_kev

    @classmethod
    def around(cls, name: str, center_kev: float, half_width_percent: float) -> EnergyWindow:
        """A window ``center ± half_width_percent %``."""
        h = center_kev * half_width_percent / 100.0
        return cls(name, center_kev - h, center_kev + h)


def tc99m_windows(peak_half_width_percent: float = 7.5, sub_window_percent: float = 3.0
                  ) -> tuple[EnergyWindow, EnergyWindow, EnergyWindow]:
    """Photopeak, lower and upper scatter windows for Tc-99m (TEW, Ogawa et al. 1991).

    Parameters
    ----------
    peak_half_width_percent : half width of the photopeak window in % of 140.5 keV (7.5 → 15 % window).
    sub_window_percent : width of each abutting scatter window in % of 140.5 keV.
    """
    peak = EnergyWindow.around("photopeak", 140.5, peak_half_width_percent)
    w = 140.5 * sub_window_percent / 100.0
    return (peak, EnergyWindow("lower", peak.lower_kev - w, peak.lower_kev),
            EnergyWindow("upper", peak.upper_kev, peak.upper_kev + w))


@dataclass
class SpectGeometry:
    """A step-and-shoot SPECT acquisition (see the module docstring for conventions).

    Attributes
    ----------
    angles_deg : detector angle of each view (internal convention), shape (n_views,).
    radii_mm : distance rotation axis → collimator face for each view, shape (n_views,).
    n_rows, n_cols : detector matrix (rows along z).
    pixel_mm : (row, col) pixel size in mm.
    time_per_view_s : acquisition time of one stop.
    windows : energy windows acquired simultaneously.
    heads : number of detector heads (views are ordered stop-major: stop 0 of head 0, stop 0 of
        head 1, stop 1 of head 0 ...). Views acquired at the same stop are simultaneous.
    stops_per_head : stops per head.
    direction : "CCW" or "CW" rotation (internal sense).
    start_angle_deg : angle of head 0 at stop 0.
    axial_center_mm : z (LPS) of the detector's central row.
    step_time_s : gantry motion time between stops (for decay timing).
    """

    angles_deg: np.ndarray
    radii_mm: np.ndarray
    n_rows: int = 128
    n_cols: int = 128
    pixel_mm: tuple[float, float] = (4.7952, 4.7952)
    time_per_view_s: float = 20.0
    windows: tuple[EnergyWindow, ...] = field(default_factory=tc99m_windows)
    heads: int = 1
    stops_per_head: int | None = None
    direction: str = "CCW"
    start_angle_deg: float = 0.0
    axial_center_mm: float = 0.0
    step_time_s: float = 0.0

    def __post_init__(self) -> None:
        self.angles_deg = np.asarray(self.angles_deg, dtype=np.float64).reshape(-1)
        radii = np.asarray(self.radii_mm, dtype=np.float64).reshape(-1)
        if radii.size == 1:
            radii = np.full(self.angles_deg.size, float(radii[0]))
        self.radii_mm = radii
        if self.angles_deg.size == 0:
            raise GeometryError("SpectGeometry needs at least one view")
        if self.radii_mm.size != self.angles_deg.size:
            raise GeometryError(f"{self.radii_mm.size} radii for {self.angles_deg.size} views")
        if not np.all(np.isfinite(self.radii_mm)) or np.any(self.radii_mm <= 0):
            raise GeometryError("orbit radii must be positive finite mm")
        if not np.all(np.isfinite(self.angles_deg)):
            raise GeometryError("view angles must be finite")
        self.n_rows, self.n_cols = int(self.n_rows), int(self.n_cols)
        if self.n_rows < 1 or self.n_cols < 1:
            raise GeometryError(f"detector matrix must be positive, got {self.n_rows}×{self.n_cols}")
        self.pixel_mm = tuple(float(p) for p in np.broadcast_to(np.asarray(self.pixel_mm, float), (2,)))
        if not all(p > 0 for p in self.pixel_mm):
            raise GeometryError(f"pixel size must be positive, got {self.pixel_mm}")
        if not self.time_per_view_s > 0:
            raise InputError(f"time per view must be positive, got {self.time_per_view_s} s")
        self.windows = tuple(self.windows)
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise InputError(f"energy window names must be unique, got {names}")
        if self.direction not in ("CW", "CCW"):
            raise InputError(f"rotation direction must be 'CW' or 'CCW', got {self.direction!r}")
        if self.stops_per_head is None:
            self.stops_per_head = self.angles_deg.size // max(1, self.heads)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def dual_head(cls, stops_per_head: int = 60, radius_mm: float = 250.0, matrix: int = 128,
                  pixel_mm: float = 4.7952, time_per_stop_s: float = 20.0,
                  windows: tuple[EnergyWindow, ...] | None = None, start_angle_deg: float = 0.0,
                  direction: str = "CCW", radii_mm: np.ndarray | None = None,
                  axial_center_mm: float = 0.0, step_time_s: float = 0.0) -> SpectGeometry:
        """Two heads opposed at 180°, each stepping over 180° (2·stops views over 360°).

        Views are ordered by stop then head, so views ``2s`` and ``2s+1`` are simultaneous and the
        angles are ``start + sign·(s·Δ + h·180°)`` with ``Δ = 180°/stops``.
        ``radii_mm`` (per view) overrides ``radius_mm`` for body-contour orbits.
        """
        if stops_per_head < 1:
            raise InputError(f"stops per head must be ≥ 1, got {stops_per_head}")
        if direction not in ("CW", "CCW"):
            raise InputError(f"rotation direction must be 'CW' or 'CCW', got {direction!r}")
        sign = 1.0 if direction == "CCW" else -1.0
        step = 180.0 / stops_per_head
        s = np.repeat(np.arange(stops_per_head), 2)
        h = np.tile([0, 1], stops_per_head)
        angles = np.mod(start_angle_deg + sign * (s * step + h * 180.0), 360.0)
        radii = np.full(angles.size, float(radius_mm)) if radii_mm is None else np.asarray(radii_mm, float)
        return cls(angles_deg=angles, radii_mm=radii, n_rows=matrix, n_cols=matrix,
                   pixel_mm=(pixel_mm, pixel_mm), time_per_view_s=time_per_stop_s,
                   windows=tuple(windows) if windows is not None else tc99m_windows(), heads=2,
                   stops_per_head=stops_per_head, direction=direction, start_angle_deg=start_angle_deg,
                   axial_center_mm=axial_center_mm, step_time_s=step_time_s)

    @classmethod
    def planar(cls, matrix: tuple[int, int] = (256, 256), pixel_mm: float = 2.3976, radius_mm: float = 250.0,
               time_s: float = 300.0, windows: tuple[EnergyWindow, ...] | None = None,
               axial_center_mm: float = 0.0) -> SpectGeometry:
        """Simultaneous anterior (view 0) and posterior (view 1) statics of a dual-head camera."""
        return cls(angles_deg=np.array([0.0, 180.0]), radii_mm=np.full(2, float(radius_mm)),
                   n_rows=matrix[0], n_cols=matrix[1], pixel_mm=(pixel_mm, pixel_mm), time_per_view_s=time_s,
                   windows=tuple(windows) if windows is not None else tc99m_windows(), heads=2,
                   stops_per_head=1, axial_center_mm=axial_center_mm)

    # ----------------------------------------------------------------- properties
    @property
    def n_views(self) -> int:
        return int(self.angles_deg.size)

    @property
    def window_names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.windows)

    def window_index(self, name: str) -> int:
        try:
            return self.window_names.index(name)
        except ValueError:
            raise InputError(f"no energy window {name!r}; have {', '.join(self.window_names)}") from None

    def detector_normals(self) -> np.ndarray:
        """Unit vectors (x, y) from the rotation axis to each detector, shape (n_views, 2)."""
        t = np.deg2rad(self.angles_deg)
        return np.stack([-np.sin(t), -np.cos(t)], axis=1)

    def column_axes(self) -> np.ndarray:
        """Unit vectors (x, y) along increasing column for each view, shape (n_views, 2)."""
        t = np.deg2rad(self.angles_deg)
        return np.stack([np.cos(t), -np.sin(t)], axis=1)

    def view_start_times_s(self) -> np.ndarray:
        """Start time of each view relative to the start of the acquisition (simultaneous heads)."""
        stop = np.arange(self.n_views) // max(1, self.heads)
        return stop * (self.time_per_view_s + self.step_time_s)

    @property
    def duration_s(self) -> float:
        return float(self.view_start_times_s().max() + self.time_per_view_s)

    def row_z_mm(self) -> np.ndarray:
        """LPS z of each detector row (row 0 = most superior)."""
        r = np.arange(self.n_rows)
        return self.axial_center_mm + ((self.n_rows - 1) / 2.0 - r) * self.pixel_mm[0]

    def subset(self, views) -> SpectGeometry:
        """The geometry of the selected views only (index array, list or slice)."""
        idx = np.arange(self.n_views)[views] if isinstance(views, slice) else np.asarray(views, dtype=int)
        idx = np.atleast_1d(idx)
        if idx.size == 0 or idx.min() < -self.n_views or idx.max() >= self.n_views:
            raise GeometryError(f"view subset out of range for {self.n_views} views")
        return replace(self, angles_deg=self.angles_deg[idx].copy(), radii_mm=self.radii_mm[idx].copy(),
                       heads=1, stops_per_head=int(idx.size))

    def image_grid(self, n_slices: int | None = None, oversample: int = 1, unit: str = "1") -> Volume:
        """The reconstruction grid: ``n_cols × n_cols`` transaxial voxels of the column pixel size and
        ``n_slices`` (default ``n_rows``) slices of the row pixel size, centred on the rotation axis
        (x = y = 0) and on ``axial_center_mm``; axis-aligned LPS. ``oversample`` divides the voxel size
        (a finer grid for simulation)."""
        k = int(oversample)
        if k < 1:
            raise GeometryError(f"oversample must be ≥ 1, got {oversample}")
        nz = (self.n_rows if n_slices is None else int(n_slices)) * k
        nxy = self.n_cols * k
        dz, dxy = self.pixel_mm[0] / k, self.pixel_mm[1] / k
        origin = (-(nxy - 1) / 2.0 * dxy, -(nxy - 1) / 2.0 * dxy, self.axial_center_mm - (nz - 1) / 2.0 * dz)
        return Volume(np.zeros((nz, nxy, nxy), dtype=np.float32), spacing=(dz, dxy, dxy), origin=origin,
                      unit=unit)

    # ----------------------------------------------------------------- orbits
    def body_contour_radii(self, mu_or_body_volume: Volume, clearance_mm: float = 20.0,
                           threshold: float | None = None, min_radius_mm: float = 0.0) -> np.ndarray:
        """Per-view radii that keep ``clearance_mm`` between the collimator face and the body outline.

        The body is every voxel of ``mu_or_body_volume`` above ``threshold`` (default: half the
        attenuation of water at 140 keV for a μ-map in 1/mm, 0.5 otherwise); its extent along each
        detector normal, over all slices, plus the clearance gives the radius. The collimator face is a
        plane, so the nearest approach is the support function of the body in that direction.

        Returns the radii (mm, one per view); assign them with ``dataclasses.replace(g, radii_mm=...)``.
        """
        vol = mu_or_body_volume
        if clearance_mm < 0:
            raise InputError(f"clearance must be ≥ 0 mm, got {clearance_mm}")
        thr = threshold if threshold is not None else (0.0077 if vol.unit == "1/mm" else 0.5)
        mask = np.asarray(vol.data) > thr
        if not mask.any():
            raise InputError("body outline is empty: no voxel above the threshold")
        e_z = [0.0, 0.0, 1.0]
        if np.allclose(vol.direction[2], e_z) and np.allclose(vol.direction[:, 2], e_z):
            # slices are transaxial: the outline over all slices is the union of their masks
            jj_ii = np.argwhere(mask.any(axis=0)).astype(np.float64)
            idx = np.column_stack([np.zeros(len(jj_ii)), jj_ii])
        else:
            idx = np.argwhere(mask).astype(np.float64)
        pts = vol.index_to_world(idx)[:, :2]
        # add the voxel half-diagonal so that the outline is the voxel edge, not its centre
        half = 0.5 * np.hypot(vol.spacing[1], vol.spacing[2])
        hull = _hull_points(pts)
        support = (hull @ self.detector_normals().T).max(axis=0) + half
        return np.maximum(support + clearance_mm, min_radius_mm)

    def check_orbit_clears(self, body: Volume, threshold: float | None = None) -> None:
        """Raise :class:`GeometryError` if any view's collimator face lies inside the body outline."""
        needed = self.body_contour_radii(body, clearance_mm=0.0, threshold=threshold)
        bad = np.flatnonzero(self.radii_mm < needed - 1e-6)
        if bad.size:
            v = int(bad[0])
            raise GeometryError(f"orbit radius {self.radii_mm[v]:.1f} mm at view {v} "
                                f"({self.angles_deg[v]:.1f}°) is inside the body outline "
                                f"(needs ≥ {needed[v]:.1f} mm)")

    # ----------------------------------------------------------------- DICOM
    @classmethod
    def from_dicom_angles(cls, start_angles_deg, angular_step_deg: float, rotation_direction: str,
                          stops_per_head: int, radial_positions_mm, n_rows: int, n_cols: int,
                          pixel_mm: tuple[float, float], time_per_view_s: float,
                          windows: tuple[EnergyWindow, ...] | None = None, vendor_flip: bool = False,
                          axial_center_mm: float = 0.0) -> SpectGeometry:
        """Build a geometry from DICOM NM Detector/Rotation values.

        Parameters
        ----------
        start_angles_deg : Start Angle (0054,0200) of each detector (one per head).
        angular_step_deg : Angular Step (0018,1144), ≥ 0 by DICOM.
        rotation_direction : Rotation Direction (0018,1140): "CW" or "CC".
        stops_per_head : Number of Frames in Rotation (0054,0053).
        radial_positions_mm : Radial Position (0018,1142) — per head, each with one value per stop
            (or a scalar per head); shape (heads, stops) after broadcasting.
        vendor_flip : mirror the orbit (angle → −angle) for vendors whose angle sense is opposite.

        Views are ordered stop-major (stop 0 head 0, stop 0 head 1, ...), matching :meth:`dual_head`.
        """
        starts = np.atleast_1d(np.asarray(start_angles_deg, dtype=float))
        heads = starts.size
        rd = rotation_direction.strip().upper()
        if rd not in ("CW", "CC", "CCW"):
            raise InputError(f"Rotation Direction must be CW or CC, got {rotation_direction!r}")
        sign = 1.0 if rd in ("CC", "CCW") else -1.0
        if vendor_flip:
            sign, starts = -sign, -starts
        s = np.arange(int(stops_per_head))
        ang = starts[None, :] + sign * abs(angular_step_deg) * s[:, None]  # [stop, head]
        r = np.asarray(radial_positions_mm, dtype=float)
        r = r.reshape(1, 1) if r.size == 1 else r.reshape(heads, -1)
        try:
            radii = np.broadcast_to(r, (heads, int(stops_per_head))).T
        except ValueError:
            raise InputError(f"radial positions of shape {r.shape} do not fit {heads} heads × "
                             f"{stops_per_head} stops") from None
        return cls(angles_deg=np.mod(ang, 360.0).reshape(-1), radii_mm=radii.reshape(-1).copy(),
                   n_rows=n_rows, n_cols=n_cols, pixel_mm=tuple(pixel_mm), time_per_view_s=time_per_view_s,
                   windows=tuple(windows) if windows is not None else tc99m_windows(), heads=heads,
                   stops_per_head=int(stops_per_head), direction="CCW" if sign > 0 else "CW",
                   start_angle_deg=float(np.mod(starts[0], 360.0)), axial_center_mm=axial_center_mm)

    def to_dicom(self, vendor_flip: bool = False) -> dict:
        """DICOM NM values for this geometry (inverse of :meth:`from_dicom_angles`).

        Returns a dict with ``start_angles_deg`` (per head), ``angular_step_deg``,
        ``rotation_direction`` ("CW"/"CC"), ``stops_per_head``, ``radial_positions_mm`` (heads × stops),
        ``pixel_spacing_mm`` (row, col), ``rows``, ``columns``, ``actual_frame_duration_ms``.
        """
        heads = max(1, self.heads)
        stops = self.n_views // heads
        if stops * heads != self.n_views:
            raise GeometryError(f"{self.n_views} views do not split over {heads} heads")
        ang = self.angles_deg.reshape(stops, heads)
        sign = 1.0 if self.direction == "CCW" else -1.0
        step = float(np.mod(sign * (ang[1, 0] - ang[0, 0]), 360.0)) if stops > 1 else 0.0
        starts = ang[0].copy()
        if vendor_flip:
            sign, starts = -sign, -starts
        return {
            "start_angles_deg": np.mod(starts, 360.0).tolist(),
            "angular_step_deg": step,
            "rotation_direction": "CC" if sign > 0 else "CW",
            "stops_per_head": stops,
            "radial_positions_mm": self.radii_mm.reshape(stops, heads).T.tolist(),
            "pixel_spacing_mm": list(self.pixel_mm),
            "rows": self.n_rows,
            "columns": self.n_cols,
            "actual_frame_duration_ms": int(round(self.time_per_view_s * 1000)),
        }

    def to_dict(self) -> dict:
        """Plain JSON-able description (for acquisition.json)."""
        return {
            "angles_deg": self.angles_deg.tolist(), "radii_mm": self.radii_mm.tolist(),
            "n_rows": self.n_rows, "n_cols": self.n_cols, "pixel_mm": list(self.pixel_mm),
            "time_per_view_s": self.time_per_view_s,
            "windows": [{"name": w.name, "lower_kev": w.lower_kev, "upper_kev": w.upper_kev}
                        for w in self.windows],
            "heads": self.heads, "stops_per_head": self.stops_per_head, "direction": self.direction,
            "start_angle_deg": self.start_angle_deg, "axial_center_mm": self.axial_center_mm,
            "step_time_s": self.step_time_s,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SpectGeometry:
        d = dict(d)
        d["windows"] = tuple(EnergyWindow(**w) for w in d["windows"])
        d["pixel_mm"] = tuple(d["pixel_mm"])
        return cls(**d)


def _hull_points(pts: np.ndarray) -> np.ndarray:
    """Convex-hull vertices of 2-D points (falls back to all points for degenerate sets)."""
    uniq = np.unique(np.round(pts, 6), axis=0)
    if uniq.shape[0] < 3:
        return uniq
    try:
        from scipy.spatial import ConvexHull

        return uniq[ConvexHull(uniq).vertices]
    except Exception:  # collinear points: the support function of the raw set is still exact
        return uniq


@dataclass
class Projections:
    """Counts ``[window, view, row, col]`` with the geometry they were acquired with.

    ``start_time_after_injection_s`` is the start of the first view; view ``v`` starts
    ``geometry.view_start_times_s()[v]`` later.
    """

    counts: np.ndarray
    geometry: SpectGeometry
    radionuclide: str = "Tc-99m"
    start_time_after_injection_s: float = 0.0
    injected_activity_bq: float | None = None

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts)
        g = self.geometry
        expected = (len(g.windows), g.n_views, g.n_rows, g.n_cols)
        if self.counts.shape != expected:
            raise GeometryError(f"projection counts have shape {self.counts.shape}, geometry expects "
                                f"[window, view, row, col] = {expected}")

    def window(self, name: str) -> np.ndarray:
        """Counts of one energy window, ``[view, row, col]``."""
        return self.counts[self.geometry.window_index(name)]

    @property
    def photopeak(self) -> np.ndarray:
        return self.window("photopeak")
