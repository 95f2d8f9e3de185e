"""The digital patient of the case: an elderly woman with infected right femoral fixation.

The case (../shared/reference/case-study.txt): bilateral femoral fractures; on the right an
intramedullary nail with proximal and distal locking screws plus a lateral plate with screws, the
plate displaced laterally at its lower end with extruded (and some bent) lower screws; on the left an
intramedullary nail with a dynamic hip screw (DHS) through the neck and trochanter. 99mTc-HMPAO
leukocytes at 3 h show infection along the whole lateral plate with the maximum at plate screw 2,
milder uptake along the whole right nail (more in its upper part), a dependent collection at the
nail's distal tip, a soft-tissue collection at the plate's lower end with a sinus tract to the lateral
skin, and nothing abnormal on the left.

Patient coordinates
-------------------
DICOM LPS in mm: x to the patient's Left (patient right = −x), y to Posterior (anterior = −y), z to the
head. The field covers x ∈ [−200, 200], y ∈ [−130, 130], z ∈ [−450, 0]: z = 0 lies near the iliac
crests, the hip joint centres at z = −95, the knees at about z = −445. The body is centred on
x = y = 0, which is the rotation axis of both the SPECT and the CT. The right femoral shaft lies around
x ≈ −95 and the right lateral plate lateral to it (x ≈ −115 … −125).

Materials
---------
Nails and their locking screws are Ti-6Al-4V (``ti6al4v``); the right lateral plate, its screws, the
left dynamic hip screw, its side plate and that plate's screws are stainless steel 316L (``steel_316l``).
Bone cortex is ``cortical_bone``; the cancellous proximal femur and the pelvic marrow spaces are
``trabecular_bone`` (ICRU 46 spongiosa, which includes red marrow); the femoral shaft marrow of an
elderly adult is fatty (``yellow_marrow``).

Relative activity concentrations (WBC at 3 h)
----------------------------------------------
Per mL, scaled later by the injected activity. At 3–4 h labelled leukocytes sit in the
reticuloendothelial system (marrow, liver, spleen) with a falling blood pool; an infection is read
positive when its uptake exceeds that of normal marrow and grows over time (EANM guideline: Signore
et al., Eur J Nucl Med Mol Imaging 2018;45:1816–31; Glaudemans et al., Eur J Nucl Med Mol Imaging
2013;40:1760–9). The values below encode that ordering; they are chosen, not measured:

- soft tissue, muscle, skin 1.0 (blood pool and interstitium); fat 0.3; cortical bone 0.5;
- red (active) marrow of pelvis and proximal femurs 8; fatty shaft marrow 2;
- infection along the right nail 12 (milder than marrow-plus), upper nail 20, tip collection 16;
- infection along the right lateral plate 25, the soft-tissue collection 35, the sinus tract 25;
- the focus at plate screw 2 is the maximum, 70;
- metal 0; air 0 (activity is zero outside the body).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from spectct.errors import InputError
from spectct.phantom.model import Component, Phantom
from spectct.phantom.shapes import (
    Box,
    Capsule,
    Clipped,
    Cylinder,
    Ellipsoid,
    EllipticSection,
    Paint,
    Shape,
    Sphere,
    paint_points,
    rasterize,
    rotate,
    unit,
)
from spectct.volume import Volume

#: The phantom's field of view (LPS mm): lower and upper corners.
FIELD_LOWER = (-200.0, -130.0, -450.0)
FIELD_UPPER = (200.0, 130.0, 0.0)
VOXEL_MM_RANGE = (0.5, 10.0)

EX = np.array([1.0, 0.0, 0.0])
EZ = np.array([0.0, 0.0, 1.0])


@dataclass
class _Builder:
    """Collects components (ids in order of creation) and painter steps (in painting order)."""

    components: list[Component] = field(default_factory=list)
    steps: list[Paint] = field(default_factory=list)

    def add(
        self,
        name: str,
        kind: str,
        material: str,
        activity: float = 0.0,
        side: str | None = None,
        carrier: str | None = None,
        number: int | None = None,
        flags: tuple[str, ...] = (),
    ) -> int:
        cid = len(self.components) + 1
        self.components.append(
            Component(
                id=cid,
                name=name,
                kind=kind,
                material=material,
                activity=activity,
                side=side,
                carrier=carrier,
                number=number,
                flags=flags,
            )
        )
        return cid

    def id(self, name: str) -> int:
        for c in self.components:
            if c.name == name:
                return c.id
        raise KeyError(name)

    def paint(self, name: str, *shapes: Shape) -> None:
        cid = self.id(name)
        self.steps.extend(Paint(s, cid) for s in shapes)


@dataclass(frozen=True)
class _Femur:
    """Landmarks of one femur (LPS mm)."""

    sgn: float  # −1 right, +1 left
    head: np.ndarray  # head centre
    top: np.ndarray  # proximal end of the shaft axis
    bottom: np.ndarray  # distal end of the shaft axis (knee)
    r_top: float = 14.5
    r_mid: float = 13.5
    r_canal: float = 7.5
    z_flare: float = -380.0
    z_shaft: float = -110.0  # the tubular shaft runs from here down to z_flare

    @property
    def axis(self) -> np.ndarray:
        return unit(self.bottom - self.top)

    def at(self, z: float) -> np.ndarray:
        """Point of the shaft axis at height ``z``."""
        d = self.axis
        return self.top + d * (z - self.top[2]) / d[2]

    def radius(self, z: float) -> float:
        """Outer shaft radius at height ``z`` (shaft part)."""
        f = np.clip((self.z_shaft - z) / (self.z_shaft - self.z_flare), 0.0, 1.0)
        return float(self.r_top + (self.r_mid - self.r_top) * f)


def _femur(sgn: float) -> _Femur:
    return _Femur(
        sgn=sgn,
        head=np.array([sgn * 88.0, -5.0, -95.0]),
        top=np.array([sgn * 120.0, 0.0, -120.0]),
        bottom=np.array([sgn * 72.0, 8.0, -445.0]),
    )


def _frame(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Orthonormal frame (columns u, v, w) with w exact and u as close as possible to ``u``."""
    w = unit(w)
    u = unit(u - np.dot(u, w) * w)
    return np.stack([u, np.cross(w, u), w], axis=1)


def _line_cylinder_exit(
    p: np.ndarray, d: np.ndarray, c: np.ndarray, axis: np.ndarray, r: float
) -> tuple[float, float]:
    """Parameters (t_in, t_out) where the line p + t d crosses the infinite cylinder (c, axis, r)."""

    def perp(v: np.ndarray) -> np.ndarray:
        return v - np.dot(v, axis) * axis

    q, e = perp(p - c), perp(d)
    a, b, cc = np.dot(e, e), 2 * np.dot(q, e), np.dot(q, q) - r * r
    disc = b * b - 4 * a * cc
    if disc < 0:
        raise ValueError("line misses the cylinder")
    s = math.sqrt(disc)
    return (-b - s) / (2 * a), (-b + s) / (2 * a)


def _surface_exit(shape: Shape, start: np.ndarray, direction: np.ndarray, max_t: float = 300.0) -> float:
    """Distance along ``direction`` from ``start`` (inside ``shape``) to its surface, by bisection."""

    def inside(t: float) -> bool:
        pt = torch.as_tensor((start + t * direction)[None], dtype=torch.float64)
        return bool(shape.inside(pt)[0])

    lo, hi = 0.0, max_t
    if not inside(lo) or inside(hi):
        raise ValueError("start must be inside and the far end outside")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if inside(mid) else (lo, mid)
    return lo


class _Union(Shape):
    """Points inside any of ``shapes`` (used only for surface searches, not painted)."""

    def __init__(self, *shapes: Shape):
        self.shapes = shapes

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
        for s in self.shapes:
            out |= s.inside(p)
        return out


def _body(fat_mm: float = 18.0, skin_mm: float = 2.0) -> dict[str, list[Shape]]:
    trunk = EllipticSection(
        z=(-175.0, -150.0, -120.0, -60.0, 0.0),
        cx=(0.0,) * 5,
        cy=(10.0, 5.0, 5.0, 5.0, 5.0),
        a=(150.0, 175.0, 185.0, 175.0, 165.0),
        b=(85.0, 100.0, 110.0, 110.0, 105.0),
    )
    thighs = [
        EllipticSection(
            z=(-450.0, -330.0, -200.0, -120.0),
            cx=tuple(s * v for v in (72.0, 82.0, 95.0, 100.0)),
            cy=(10.0, 8.0, 5.0, 5.0),
            a=(58.0, 70.0, 88.0, 85.0),
            b=(58.0, 68.0, 85.0, 95.0),
        )
        for s in (-1.0, 1.0)
    ]
    outer = [trunk, *thighs]
    return {
        "skin": outer,
        "fat": [s.grown(-skin_mm) for s in outer],
        "muscle": [s.grown(-skin_mm - fat_mm) for s in outer],
    }


def _pelvis_shapes(sgn: float, f: _Femur) -> list[Shape]:
    n = unit((sgn * 0.85, -0.45, 0.25))  # the iliac wing faces antero-laterally
    wing = Ellipsoid((sgn * 110.0, 15.0, -45.0), (9.0, 62.0, 46.0), _frame(n, EZ))
    body = Ellipsoid((sgn * 92.0, 10.0, -72.0), (20.0, 28.0, 30.0))
    # acetabulum: the medial and upper part of a shell around the femoral head
    h = f.head
    if sgn < 0:  # right: medial is +x; keep the part medial of 8 mm lateral to the head centre
        lo, hi = (h[0] - 8.0, h[1] - 40.0, h[2] - 12.0), (h[0] + 40.0, h[1] + 40.0, h[2] + 40.0)
    else:
        lo, hi = (h[0] - 40.0, h[1] - 40.0, h[2] - 12.0), (h[0] + 8.0, h[1] + 40.0, h[2] + 40.0)
    acetabulum = Clipped(Sphere(tuple(h), 31.0), lo, hi)
    sup_ramus = Capsule((sgn * 72.0, -20.0, -100.0), (sgn * 6.0, -55.0, -108.0), 10.0)
    inf_ramus = Capsule((sgn * 10.0, -50.0, -125.0), (sgn * 68.0, 12.0, -138.0), 8.5)
    ischium = Capsule((sgn * 82.0, 18.0, -100.0), (sgn * 70.0, 22.0, -140.0), 13.0)
    return [wing, body, acetabulum, sup_ramus, inf_ramus, ischium]


def _sacrum() -> Shape:
    w = unit((0.0, 0.45, 1.0))  # long axis tilted: the lower sacrum lies more posterior
    return Ellipsoid((0.0, 72.0, -45.0), (46.0, 17.0, 52.0), _frame(EX, w))


def _femur_shapes(f: _Femur) -> tuple[list[Shape], list[Shape], list[Shape]]:
    """(outer cortex shapes, proximal marrow shapes, distal marrow shapes) of one femur."""
    s = f.sgn
    neck_base = f.at(-128.0) + np.array([s * -4.0, 0.0, 0.0])
    flare0, knee = f.at(f.z_flare), f.at(-432.0)
    outer: list[Shape] = [
        Sphere(tuple(f.head), 23.0),
        Capsule(tuple(f.head), tuple(neck_base), 15.0),
        Ellipsoid((s * 136.0, 8.0, -112.0), (16.0, 20.0, 26.0)),  # greater trochanter
        Ellipsoid((s * 100.0, 14.0, -152.0), (9.0, 9.0, 11.0)),  # lesser trochanter
        Ellipsoid(tuple(f.at(-135.0)), (24.0, 20.0, 34.0), _frame(EX, f.axis)),  # intertrochanteric
        Cylinder(tuple(f.at(f.z_shaft)), tuple(flare0), f.r_top, f.r_mid),  # shaft
        Cylinder(tuple(flare0), tuple(knee), f.r_mid, 31.0),  # distal metaphysis
        Ellipsoid(tuple(f.at(-440.0) + np.array([0.0, 4.0, 0.0])), (38.0, 30.0, 20.0)),  # condyles
    ]
    inner = [
        Sphere(tuple(f.head), 20.5),
        Capsule(tuple(f.head), tuple(neck_base), 12.0),
        outer[2].grown(-2.5),
        outer[3].grown(-2.5),
        outer[4].grown(-3.0),
        Cylinder(tuple(f.at(f.z_shaft)), tuple(flare0), f.r_canal + 0.5, f.r_canal),
        outer[6].grown(-3.0),
        outer[7].grown(-2.5),
    ]
    z_split = -190.0
    prox = [Clipped(sh, (-1e4, -1e4, z_split), (1e4, 1e4, 1e4)) for sh in inner]
    dist = [Clipped(sh, (-1e4, -1e4, -1e4), (1e4, 1e4, z_split)) for sh in inner[5:]]
    return outer, prox, dist


def _screw(
    p_head: np.ndarray,
    direction: np.ndarray,
    length: float,
    radius: float,
    head_radius: float,
    head_len: float,
    bend_at: float | None = None,
    bend_axis: np.ndarray | None = None,
    bend_deg: float = 0.0,
) -> tuple[list[Shape], np.ndarray]:
    """Shapes of a screw whose head sits outward of ``p_head`` and whose shank runs along ``direction``.

    With ``bend_at`` the shank bends by ``bend_deg`` about ``bend_axis`` at that distance from the
    head (two straight segments joined by a ball). Returns the shapes and the tip position.
    """
    d = unit(direction)
    shapes: list[Shape] = [Cylinder(tuple(p_head - d * head_len), tuple(p_head), head_radius)]
    if bend_at is None:
        tip = p_head + d * length
        shapes.append(Cylinder(tuple(p_head), tuple(tip), radius))
    else:
        knee = p_head + d * bend_at
        d2 = rotate(d, bend_axis, bend_deg)
        tip = knee + d2 * (length - bend_at)
        shapes += [
            Cylinder(tuple(p_head), tuple(knee), radius),
            Sphere(tuple(knee), radius),
            Cylinder(tuple(knee), tuple(tip), radius),
        ]
    return shapes, tip


def build_case(seed: int = 0) -> tuple[list[Component], list[Paint], dict]:
    """The case's component table, painter steps and landmarks (grid independent).

    ``seed`` draws the small patient-specific variations (lower-plate displacement, bend angles of the
    bent screws, size of the screw-2 focus); component ids and names never depend on it.

    Returns
    -------
    components, steps, landmarks : landmarks hold LPS points used by tests and figures
        (plate ends, tract ends, screw tips).
    """
    rng = np.random.default_rng(seed)
    plate_gap_mm = float(rng.uniform(10.0, 14.0))
    bend_deg = rng.uniform(15.0, 25.0, size=3)
    focus_scale = float(rng.uniform(0.9, 1.1))

    b = _Builder()
    fr, fl = _femur(-1.0), _femur(1.0)
    lm: dict = {}

    # ---------------------------------------------------------------- component table (ids in this order)
    b.add("skin", "skin", "skin", 1.0)
    b.add("fat", "fat", "adipose", 0.3)
    b.add("muscle", "muscle", "muscle", 1.0)
    b.add("pelvic soft tissue", "soft_tissue", "soft_tissue", 1.0)
    b.add("pelvis", "bone", "cortical_bone", 0.5)
    b.add("pelvis marrow", "marrow", "trabecular_bone", 8.0)
    for side in ("right", "left"):
        b.add(f"{side} femur cortex", "bone", "cortical_bone", 0.5, side=side)
        b.add(f"{side} femur marrow", "marrow", "trabecular_bone", 8.0, side=side)
        b.add(f"{side} femur shaft marrow", "marrow", "yellow_marrow", 2.0, side=side)
    inf = {
        "infection along right lateral plate": ("collection", "soft_tissue", 25.0),
        "focus at right lateral plate screw 2": ("focus", "soft_tissue", 70.0),
        "infection along right nail": ("collection", "red_marrow", 12.0),
        "infection at upper right nail": ("focus", "red_marrow", 20.0),
        "collection at right nail tip": ("collection", "soft_tissue", 16.0),
        "soft-tissue collection at lower plate": ("collection", "soft_tissue", 35.0),
        "sinus tract to lateral skin": ("tract", "soft_tissue", 25.0),
    }
    for name, (kind, mat, act) in inf.items():
        b.add(name, kind, mat, act, side="right")
    nail_r, nail_l = "right intramedullary nail", "left intramedullary nail"
    plate = "right lateral plate"
    dhs, dhs_plate = "left dynamic hip screw", "left dynamic hip screw plate"
    b.add(nail_r, "nail", "ti6al4v", side="right")
    b.add("right nail proximal locking screw 1", "screw", "ti6al4v", side="right", carrier=nail_r, number=1)
    for k in (1, 2):
        flags = ("bent",) if k == 2 else ()
        b.add(
            f"right nail distal locking screw {k}",
            "screw",
            "ti6al4v",
            side="right",
            carrier=nail_r,
            number=k,
            flags=flags,
        )
    b.add(plate, "plate", "steel_316l", side="right", flags=("displaced",))
    plate_flags = {k: () for k in range(1, 9)}
    for k in (6, 7, 8):
        plate_flags[k] = ("extruded",)
    for k in (7, 8):
        plate_flags[k] = ("extruded", "bent")
    for k in range(1, 9):
        b.add(
            f"right lateral plate screw {k}",
            "screw",
            "steel_316l",
            side="right",
            carrier=plate,
            number=k,
            flags=plate_flags[k],
        )
    b.add(nail_l, "nail", "ti6al4v", side="left")
    for k in (1, 2):
        b.add(
            f"left nail distal locking screw {k}", "screw", "ti6al4v", side="left", carrier=nail_l, number=k
        )
    b.add(dhs, "screw", "steel_316l", side="left")
    b.add(dhs_plate, "plate", "steel_316l", side="left")
    for k in (1, 2):
        b.add(
            f"left dynamic hip screw plate screw {k}",
            "screw",
            "steel_316l",
            side="left",
            carrier=dhs_plate,
            number=k,
        )

    # ---------------------------------------------------------------- soft tissues
    body = _body()
    for name in ("skin", "fat", "muscle"):
        b.paint(name, *body[name])
    b.paint("pelvic soft tissue", Ellipsoid((0.0, 15.0, -55.0), (80.0, 55.0, 65.0)))
    outer_body = _Union(*body["skin"])

    # ---------------------------------------------------------------- right lateral plate geometry
    lat = np.array([fr.sgn, 0.0, 0.0])  # lateral direction on the right
    z_top, z_bot, half_t, half_w = -165.0, -372.0, 2.5, 8.0
    q0 = fr.at(z_top) + lat * (fr.radius(z_top) + half_t + 0.3)
    q1 = fr.at(z_bot) + lat * (fr.radius(z_bot) + half_t + 0.3 + plate_gap_mm)
    pw = unit(q1 - q0)
    pu = unit(lat - np.dot(lat, pw) * pw)  # plate normal, pointing away from the bone
    pv = np.cross(pw, pu)
    pframe = np.stack([pu, pv, pw], axis=1)
    plen = float(np.linalg.norm(q1 - q0))
    plate_box = Box(tuple((q0 + q1) / 2), (half_t, half_w, plen / 2), pframe)
    lm.update(plate_top=q0, plate_bottom=q1, plate_normal=pu, plate_gap_mm=plate_gap_mm)

    # infection around the plate and the soft-tissue collection with its tract (painted before bone)
    b.paint(
        "infection along right lateral plate",
        Box(plate_box.center, (half_t + 5.0, half_w + 5.0, plen / 2 + 8.0), pframe),
    )
    holes = []
    for k in range(1, 9):
        stagger = 1.0 if k % 2 else -1.0
        c = q0 + pw * plen * (k - 0.5) / 8 + pv * 4.0 * stagger
        holes.append((c, stagger))
    c2 = holes[1][0]
    focus_r = np.array([9.0, 11.0, 14.0]) * focus_scale
    b.paint("focus at right lateral plate screw 2", Ellipsoid(tuple(c2 - pu * 2.0), tuple(focus_r), pframe))
    coll_c = q1 + pu * (half_t + 11.0) - pw * 6.0
    b.paint("soft-tissue collection at lower plate", Ellipsoid(tuple(coll_c), (10.0, 13.0, 20.0), pframe))
    # the tract runs laterally and a little anteriorly and caudally to the skin of the lateral thigh
    tract_dir = unit(lat * math.cos(math.radians(20)) + np.array([0.0, -math.sin(math.radians(20)), -0.12]))
    t_exit = _surface_exit(outer_body, coll_c, tract_dir)
    skin_pt = coll_c + tract_dir * t_exit
    b.paint("sinus tract to lateral skin", Cylinder(tuple(coll_c), tuple(skin_pt), 3.0))
    lm.update(tract_start=coll_c, tract_end=skin_pt, collection_center=coll_c)

    # ---------------------------------------------------------------- bone
    b.paint("pelvis", *_pelvis_shapes(-1.0, fr), *_pelvis_shapes(1.0, fl), _sacrum())
    b.paint(
        "pelvis marrow",
        *[s.grown(-2.5) for s in _pelvis_shapes(-1.0, fr)],
        *[s.grown(-2.5) for s in _pelvis_shapes(1.0, fl)],
        _sacrum().grown(-3.0),
    )
    b.paint("muscle", Sphere(tuple(fr.head), 25.0), Sphere(tuple(fl.head), 25.0))  # hip joint space
    femur_parts = {}
    for side, f in (("right", fr), ("left", fl)):
        outer, prox, dist = _femur_shapes(f)
        femur_parts[side] = outer
        b.paint(f"{side} femur cortex", *outer)
        b.paint(f"{side} femur marrow", *prox)
        b.paint(f"{side} femur shaft marrow", *dist)

    # ---------------------------------------------------------------- nails (geometry)
    nail_z = (-95.0, -400.0)
    nails = {
        side: Cylinder(tuple(f.at(nail_z[0])), tuple(f.at(nail_z[1])), 5.5)
        for side, f in (("right", fr), ("left", fl))
    }
    lm.update(right_nail=nails["right"], left_nail=nails["left"], right_femur=fr, left_femur=fl)

    # infection in the right marrow cavity, upper nail and the dependent collection at the tip
    b.paint("infection along right nail", Cylinder(tuple(fr.at(-105.0)), tuple(fr.at(-398.0)), fr.r_canal))
    # the upper nail's infection stays within the cancellous trochanteric region (radius 8 < bone)
    b.paint("infection at upper right nail", Cylinder(tuple(fr.at(-104.0)), tuple(fr.at(-160.0)), 8.0))
    tip = fr.at(nail_z[1])
    b.paint(
        "collection at right nail tip",
        Ellipsoid(
            tuple(tip + fr.axis * 7.0),
            (9.0, 9.0, 13.0),
            np.stack([EX, np.cross(fr.axis, EX), fr.axis], axis=1),
        ),
    )
    lm.update(nail_tip=tip)

    # ---------------------------------------------------------------- right plate screws (geometry first)
    screw_shapes: dict[int, list[Shape]] = {}
    screw_tips = {}
    for k, (c, stagger) in enumerate(holes, start=1):
        # aimed past the nail: through the point 9 mm beside the shaft axis on the hole's side
        p_head = c + pu * half_t
        z_here = float(c[2])
        d = unit(fr.at(z_here) + pv * stagger * 9.0 - p_head)
        angle = math.acos(float(np.clip(np.dot(d, -pu), -1.0, 1.0)))
        r_here = fr.radius(z_here)
        t_in, t_out = _line_cylinder_exit(p_head, d, fr.at(z_here), fr.axis, r_here)
        flags = plate_flags[k]
        length = t_out + 2.5  # bicortical, 2.5 mm past the far cortex
        shift = 0.0
        if "extruded" in flags:
            # backed out along its axis: the tip now lies 5 mm into the near (lateral) cortex and the
            # head stands proud of the plate
            shift = t_in + 5.0 - length
            p_head = p_head + d * shift
        if "bent" in flags:
            t_plate_inner = 2 * half_t / math.cos(angle)
            bend_at = float(np.clip(0.5 * (t_plate_inner + t_in) - shift, 3.0, length - 3.0))
            shapes, tip_pt = _screw(p_head, d, length, 2.25, 4.0, 3.0, bend_at, pv, bend_deg[k - 7] * stagger)
        else:
            shapes, tip_pt = _screw(p_head, d, length, 2.25, 4.0, 3.0)
        screw_shapes[k] = shapes
        screw_tips[k] = tip_pt
    lm["plate_screw_tips"] = screw_tips

    # osteolysis with pus around screw 2 through the bone (part of the focus, painted over bone)
    c2_head = holes[1][0] + pu * half_t
    d2 = unit(fr.at(float(c2_head[2])) + pv * holes[1][1] * 9.0 - c2_head)
    b.paint("focus at right lateral plate screw 2", Cylinder(tuple(c2_head), tuple(c2_head + d2 * 22.0), 4.5))

    # ---------------------------------------------------------------- metal (painted last)
    b.paint(nail_r, nails["right"])
    b.paint(nail_l, nails["left"])
    # right nail: one proximal locking screw (lateral → medial, slightly upward), two distal screws
    a = fr.at(-140.0)
    d_prox = unit(-lat + np.array([0.0, 0.0, 0.15]))
    shapes, _ = _screw(a - d_prox * 26.0, d_prox, 50.0, 2.5, 4.5, 3.0)
    b.paint("right nail proximal locking screw 1", *shapes)
    for k, z in ((1, -360.0), (2, -380.0)):
        a = fr.at(z)
        if k == 2:
            shapes, _ = _screw(
                a + lat * 20.0, -lat, 40.0, 2.5, 4.5, 3.0, 26.0, np.array([0.0, 1.0, 0.0]), -bend_deg[2]
            )
        else:
            shapes, _ = _screw(a + lat * 20.0, -lat, 40.0, 2.5, 4.5, 3.0)
        b.paint(f"right nail distal locking screw {k}", *shapes)
    # left nail distal locking screws
    lat_l = np.array([fl.sgn, 0.0, 0.0])
    for k, z in ((1, -360.0), (2, -380.0)):
        a = fl.at(z)
        shapes, _ = _screw(a + lat_l * 20.0, -lat_l, 40.0, 2.5, 4.5, 3.0)
        b.paint(f"left nail distal locking screw {k}", *shapes)
    # right lateral plate and its screws
    b.paint(plate, plate_box)
    for k in range(1, 9):
        b.paint(f"right lateral plate screw {k}", *screw_shapes[k])
    # left dynamic hip screw: lag screw along the neck axis from the lateral cortex to near the head centre,
    # with a barrel and a short side plate on the lateral cortex
    neck_base = fl.at(-150.0)
    u = unit(fl.head - neck_base)
    t_lat = -_line_cylinder_exit(neck_base, -u, fl.at(-150.0), fl.axis, fl.radius(-150.0))[1]
    entry = neck_base + u * t_lat  # on the lateral cortex
    lag_tip = fl.head + u * 10.0
    b.paint(dhs, Cylinder(tuple(entry), tuple(lag_tip), 6.0))
    side_c0 = fl.at(-140.0) + lat_l * (fl.radius(-140.0) + 3.3)
    side_c1 = fl.at(-225.0) + lat_l * (fl.radius(-225.0) + 3.3)
    sw = unit(side_c1 - side_c0)
    su = unit(lat_l - np.dot(lat_l, sw) * sw)
    sframe = np.stack([su, np.cross(sw, su), sw], axis=1)
    slen = float(np.linalg.norm(side_c1 - side_c0))
    b.paint(
        dhs_plate,
        Box(tuple((side_c0 + side_c1) / 2), (3.0, 9.0, slen / 2), sframe),
        Cylinder(tuple(entry - u * 4.0), tuple(entry + u * 30.0), 9.5),
    )
    for k, t in ((1, 0.55), (2, 0.85)):
        c = side_c0 + sw * slen * t
        stagger = 1.0 if k == 1 else -1.0
        d = unit(-su * math.cos(math.radians(25.0)) + sframe[:, 1] * stagger * math.sin(math.radians(25.0)))
        shapes, _ = _screw(c + su * 3.0, d, 24.0, 2.25, 4.0, 3.0)
        b.paint(f"left dynamic hip screw plate screw {k}", *shapes)
    lm.update(dhs_entry=entry, dhs_tip=lag_tip)

    # the whole table must be painted somewhere
    painted = {s.label for s in b.steps}
    missing = [c.name for c in b.components if c.id not in painted]
    if missing:
        raise AssertionError(f"components without shapes: {missing}")
    return b.components, b.steps, lm


def default_grid(voxel_mm: float = 2.0) -> Volume:
    """The phantom's full field (see module docstring) at isotropic ``voxel_mm``."""
    check_voxel_mm(voxel_mm)
    return Volume.from_bounds(FIELD_LOWER, FIELD_UPPER, voxel_mm, unit="label", dtype=np.int16)


def check_voxel_mm(voxel_mm: float) -> float:
    """Validate a voxel size, raising :class:`InputError` with the allowed range."""
    try:
        v = float(voxel_mm)
    except (TypeError, ValueError):
        raise InputError(f"voxel size must be a number of mm, got {voxel_mm!r}") from None
    lo, hi = VOXEL_MM_RANGE
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"voxel size {voxel_mm!r} mm is out of range; use {lo}–{hi} mm")
    return v


def case_phantom(
    voxel_mm: float = 2.0,
    seed: int = 0,
    grid: Volume | None = None,
    supersample: int = 2,
    device="cpu",
    reporter=None,
) -> Phantom:
    """Rasterise the case's digital patient.

    Parameters
    ----------
    voxel_mm : isotropic voxel size of the default full-field grid (ignored when ``grid`` is given).
    seed : patient-specific variations (see :func:`build_case`); ids and names do not depend on it.
    grid : draw on this grid instead (any spacing and orientation, e.g. a CT slab); the model is
        rasterised analytically on it, never resampled.
    supersample : points per voxel edge in voxels crossed by a surface (partial volume).
    device : torch device.
    reporter : optional :class:`spectct.progress.Reporter`.

    Returns
    -------
    Phantom
        int16 labels (0 outside the body), float32 relative activity per mL, and the component
        table with centroids and volumes measured on this grid.
    """
    if grid is None:
        grid = default_grid(voxel_mm)
    components, steps, _ = build_case(seed)
    lut = np.zeros(max(c.id for c in components) + 1, dtype=np.float32)
    for c in components:
        lut[c.id] = c.activity
    labels, activity = rasterize(grid, steps, lut, supersample=supersample, device=device, reporter=reporter)
    geo = dict(
        spacing=grid.spacing,
        origin=grid.origin,
        direction=grid.direction.copy(),
        frame_of_reference=grid.frame_of_reference,
    )
    phantom = Phantom(
        labels=Volume(labels, unit="label", **geo),
        activity=Volume(activity, unit="relative", **geo),
        components=components,
    )
    phantom.update_statistics()
    return phantom


def label_points(points_lps: np.ndarray, seed: int = 0, device="cpu") -> np.ndarray:
    """Component ids at arbitrary LPS points [N, 3] (no supersampling): the phantom as a function."""
    _, steps, _ = build_case(seed)
    pts = torch.as_tensor(np.asarray(points_lps, dtype=np.float32).reshape(-1, 3), device=device)
    return paint_points(pts, steps).cpu().numpy()
