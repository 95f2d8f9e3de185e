"""A focus at a femoral implant is read in the femur even where the CT anatomy leaves that bone to the pelvis.

The anatomy cuts the femur at the lowest bone crossing the midline when the femur touches the pelvis, so
the femoral head, neck and trochanter (where a nail's upper end and a hip screw lie) read as "pelvis".
"""

from __future__ import annotations

import numpy as np

from spectct.analysis.hotspots import Hotspot
from spectct.analysis.implants import ImplantComponent
from spectct.analysis.localize import localize


class _PelvisEverywhere:
    """Anatomy stand-in: bone labelled pelvis at every point, right side for x < 0."""

    def side_of(self, x: float) -> str:
        return "right" if x < 0 else "left"

    def structure_at(self, xyz):
        return "pelvis", None

    def tissue_at(self, xyz):
        return np.array(["marrow"])


def _implant(name: str, kind: str, x: float, carrier: str | None = None) -> ImplantComponent:
    z = np.arange(-200.0, -100.0, 2.0)
    pts = np.stack([np.full_like(z, x), np.zeros_like(z), z], axis=1)
    return ImplantComponent(
        id=1, name=name, kind=kind, side="right" if x < 0 else "left", centroid_lps=tuple(pts.mean(0)),
        volume_ml=10.0, length_mm=100.0, diameter_mm=10.0, end_points_lps=(tuple(pts[-1]), tuple(pts[0])),
        axis=(0.0, 0.0, -1.0), carrier=carrier, points_lps=pts,
    )


def _focus(x: float, z: float = -120.0) -> Hotspot:
    p = (x, 0.0, z)
    return Hotspot(id=1, peak_lps=p, peak_bq_ml=5e4, mean_bq_ml=3e4, volume_ml=5.0, centroid_lps=p,
                   length_mm=20.0, width_mm=20.0, axis=(0.0, 0.0, 1.0), elongated=False, shape="focus",
                   ratio_to_background=20.0, fraction_in_bone=1.0, points_lps=np.array([p]))


def test_focus_at_a_nail_or_hip_screw_is_in_the_femur():
    for implant in (_implant("right intramedullary nail", "nail", -110.0),
                    _implant("right nail proximal locking screw 1", "screw", -110.0, "right intramedullary nail"),
                    _implant("left dynamic hip screw", "screw", 110.0)):
        x = implant.points_lps[0, 0] + (5.0 if implant.side == "right" else -5.0)
        f = localize([_focus(x)], [implant], _PelvisEverywhere())[0]
        assert f.structure == "femur", implant.name


def test_focus_away_from_femoral_implants_stays_in_the_pelvis():
    nail = _implant("right intramedullary nail", "nail", -110.0)
    assert localize([_focus(-60.0)], [nail], _PelvisEverywhere())[0].structure == "pelvis"  # 50 mm away
    plate = _implant("right lateral plate", "plate", -110.0)
    assert localize([_focus(-105.0)], [plate], _PelvisEverywhere())[0].structure == "pelvis"  # not femoral
