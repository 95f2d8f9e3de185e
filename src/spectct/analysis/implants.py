"""Implant decomposition from CT alone: nails, plates and screws out of the metal mask.

Method
------
1. Metal is CT ≥ ``metal_threshold_hu``; its 26-connected components are treated one at a time.
2. Inside a component longer than a screw, the *carriers* (nails, rods, plates: long along the main axis)
   are what survives a morphological opening with a line of ``carrier_line_mm`` along the component's
   first principal axis (then again along each carrier's own axis so found, since a plate fixed to a
   nail need not be parallel to it): a line that long fits inside a nail or plate but not across a screw that
   crosses the axis (a screw of diameter d inclined by θ to the axis holds a line of at most d / sin θ).
3. What the opening removed, less a one-voxel shell around the carriers (partial-volume slivers),
   splits into screw fragments. A fragment that is two touching screws side by side (a plate screw
   whose head touches a nail's locking screw) is split in two by a two-line fit (k-lines: points go to the
   nearer of two fitted axes until stable; k-plane clustering, Bradley & Mangasarian 2000,
   J Global Optim 16:23), kept only when each half lies well off the other's axis
   (median distance ≥ max(4.5 mm, 1.5 voxels) and ≥ 3 × the two-line residual — a single straight or bent
   screw cut lengthwise gives halves within one radius of each other's axis). Fragments on one line (a screw
   interrupted by the nail it passes through, or by its plate hole) are then joined, most collinear
   first, never two touching pieces, never the two halves of a split, and never across two carriers.
4. Carriers are plates when flat (second principal width ≥ 1.8 × the third) and nails/rods otherwise;
   a nail is intramedullary when most of it lies inside bone. Each screw is attached to the carrier its
   pieces were joined across (a locking screw through its nail), else the carrier it touches (a plate
   before a nail), else the nearest carrier within 15 mm, and screws are numbered per
   carrier from proximal (towards the hip: larger LPS z) to distal.
5. Flags: ``"extruded"`` when the screw has backed out — its head stands more than ``extrusion_mm``
   proud of its plate, its tip lies more than 3 × ``extrusion_mm`` outside bone (bicortical and locking
   screws normally protrude a few mm), or less than a fifth of it lies in bone. A screw is ``"bent"`` when
   its centre line (slab centroids along the axis, a discrete skeleton) is fitted by two straight arms
   meeting at a knee (two-phase regression with the join point searched over the centroids, Hudson 1966,
   J Am Stat Assoc 61:1097) that (a) differ in direction by more than ``bend_deg`` (default 8°) and
   (b) fit at least ``bend_gain`` (default 2.9) times better than one line (ratio of squared residual
   sums). Each arm holds three centroids or more and spans at least 1.5 shank diameters (shorter, it is
   an end cap). A slab centroid of a voxelised cylinder is off the true axis by up to about a quarter voxel
   (0.5 mm at 2 mm voxels), so the direction of an arm of three centroids spanning two slabs (8 mm at
   2 mm voxels) is uncertain by about atan(2 × 0.5 / 8) ≈ 7°: the angle alone cannot separate, and a
   short arm that includes the knee under-reads a bend (12° measured for a 15–18° bend). Measured
   (angle, gain) on the 2-mm case phantom (nominal CT, seeds 0–2, 48 screws, 9 bent) and the synthetic
   screws of tests/test_analysis.py: every bent screw reads ≥ 12.3° with gain ≥ 3.25; a straight screw
   reads either < 8° (largest 7.4°; the one straight screw with gain above 2.62, 4.4, reads 2.3°) or,
   from 8.7° up to 18.4° (26-mm screws whose head cap tilts the centroid line), gain ≤ 2.62. So 2.9 is
   the geometric mean of 2.62 and 3.25 (10 % margin on each side; the former 3.0 left 8 % to the bent
   side) and 8° lies 4.3° below the smallest bent angle (the former 10° left 2.3°) and 5.7° above the
   high-gain straight screw. A bend so found must be confirmed without the slabs a carrier's shell
   thinned (slabs touching a carrier, within 2.25 voxels, that hold < 0.75 × the median of the other
   slabs; see ``_slab_centroids``): the arms must still be measurable and still differ by more than
   ``bend_deg``. On a reconstructed CT, blooming merges a plate screw with the nail it passes, the shell
   takes the screw's nail-side half over 10–12 mm, and the centroids there shift 1.5–3 mm: straight
   screws then read 31–43° with gains 3.3–11 from all slabs, and nothing (arms too short) without the
   thinned ones. A real bend reads the same either way (case phantom: every bent screw ≥ 12.3° both
   ways). See docs/findings.md for what the small demo reads. Carriers keep the centre-line deviation
   test (``bend_mm``) on slabs holding at least half the median count (a 4-voxel sliver at a nail's tip
   read 2.7 mm off a 69-voxel-per-slab line on the demo CT). The tip is the end deeper in bone, else the
   end away from the carrier.
6. A plate is ``"displaced"`` when it stands off the bone: along the plate's normal (its thinnest
   principal axis, turned towards the bone), rays leave the plate's mid-plane every ``slab`` mm along the
   plate (five across its width) and the soft tissue they cross before reaching cortex (bone followed by
   3 mm of bone) is measured in the CT; a slab's gap is the median of its rays, the plate's
   ``standoff_mm`` the largest gap found in two slabs or more (slabs whose rays meet no bone within 40 mm,
   a plate end beyond the bone, are skipped). Flagged when ``standoff_mm`` > ``displaced_mm`` (default
   5 mm). Why 5 mm: a plate screwed on is flush with the cortex, and a locking plate, which needs no bone
   contact, is set at most about 2 mm off it (the "internal fixator" principle: Wagner 2003, Injury 34
   Suppl 2:B31); the partial-volume halo of metal and cortex hides about a voxel of a real gap, so a flush
   plate reads 0 mm, a 2-mm gap ≤ 2 mm, and 5 mm leaves 3 mm above that. Measured: synthetic plates lifted
   by 0/3/6/10/14 mm at one end (2-mm CT) read 0/2.5/4.5/8.5/12.5 mm; the case phantom's right lateral
   plate (10–14 mm off the bone at its lower end) reads 10.5/8.0/8.5 mm on the nominal 2-mm CT of seeds
   0/1/2 and 8.0 mm on the small demo's simulated CT after MAR, its flush left hip-screw plate 0 mm in all.

Side (right/left) comes from LPS x against the body midline, never from array order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from spectct.analysis.anatomy import BONE_HU, METAL_HU, Anatomy, segment_anatomy
from spectct.errors import InputError
from spectct.progress import SILENT, Reporter
from spectct.volume import Volume

DHS_DIAMETER_MM = 8.0  # lag screws of hip screw systems are 10–13 mm thick, cortical screws 3.5–5 mm


@dataclass
class ImplantComponent:
    """One implant part found in the CT.

    ``end_points_lps`` is (head, tip) for screws and (proximal, distal) for carriers; ``axis`` is the
    unit vector from the first end point to the second. ``indices`` are the CT voxel indices [k, j, i]
    of the part and ``points_lps`` their LPS positions in mm (neither is written to JSON).
    """

    id: int
    name: str
    kind: str
    side: str
    centroid_lps: tuple[float, float, float]
    volume_ml: float
    length_mm: float
    diameter_mm: float
    end_points_lps: tuple[tuple[float, float, float], tuple[float, float, float]]
    axis: tuple[float, float, float]
    carrier: str | None = None
    number: int | None = None
    flags: tuple[str, ...] = ()
    material: str = "metal"
    standoff_mm: float | None = None  # plates: largest gap between plate and bone along the plate normal
    standoff_end: str | None = None  # plates: "upper end", "middle" or "lower end": where that gap is
    indices: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int32), repr=False)
    points_lps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)

    def to_json(self) -> dict:
        """The component in the form of the phantom's components.json (plus the shape measures)."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "material": self.material,
            "activity": 0.0,
            "side": self.side,
            "carrier": self.carrier,
            "number": self.number,
            "flags": list(self.flags),
            "centroid_lps": [round(v, 2) for v in self.centroid_lps],
            "volume_ml": round(self.volume_ml, 3),
            "length_mm": round(self.length_mm, 1),
            "diameter_mm": round(self.diameter_mm, 1),
            "end_points_lps": [[round(v, 2) for v in p] for p in self.end_points_lps],
            "axis": [round(v, 4) for v in self.axis],
            "standoff_mm": None if self.standoff_mm is None else round(self.standoff_mm, 1),
            "standoff_end": self.standoff_end,
        }


@dataclass
class _Part:
    kind: str
    idx: np.ndarray  # (N, 3) CT indices
    pts: np.ndarray  # (N, 3) LPS mm
    center: np.ndarray = field(init=False)
    axes: np.ndarray = field(init=False)
    length: float = field(init=False)
    widths: tuple[float, float] = field(init=False)
    core: _Part | None = None  # the part without attachments (a plate without its barrel), for the bend test
    through: _Part | None = None  # the carrier a screw was found to pass through (its pieces joined across it)

    def __post_init__(self) -> None:
        self.center, self.axes, self.length, self.widths = _shape(self.pts)


def decompose_implants(
    ct_hu: Volume,
    metal_threshold_hu: float = METAL_HU,
    anatomy: Anatomy | None = None,
    carrier_line_mm: float = 40.0,
    min_screw_ml: float = 0.05,
    extrusion_mm: float = 5.0,
    bend_mm: float | None = None,
    bend_deg: float = 8.0,
    bend_gain: float = 2.9,
    displaced_mm: float = 5.0,
    reporter: Reporter | None = None,
    device: str = "cpu",
) -> list[ImplantComponent]:
    """Separate the metal of a CT into nails, plates and screws (see the module notes).

    Parameters
    ----------
    ct_hu : CT in HU (any grid in patient coordinates).
    metal_threshold_hu : HU above which a voxel is metal.
    anatomy : anatomy of the same CT (computed when None) — bone for the extrusion test, midline for sides.
    carrier_line_mm : length of the line that must fit inside a carrier along its axis.
    min_screw_ml : smaller metal fragments are ignored.
    extrusion_mm : scale of the ``"extruded"`` test (head proud of its plate by more, tip out of bone by
        more than three times).
    bend_mm : centre-line deviation that flags a carrier ``"bent"``; default max(2 mm, 0.75 voxel).
    bend_deg : angle between a screw's two arms above which it may be ``"bent"`` (see the module notes).
    bend_gain : how many times better two arms must fit than one line for ``"bent"`` (module notes).
    displaced_mm : gap between a plate and the bone (along the plate normal) above which the plate is
        flagged ``"displaced"`` (see the module notes).
    reporter : progress messages.
    device : torch device for the anatomy resampling.

    Returns
    -------
    list of ImplantComponent, carriers first, then screws by carrier and number. Empty without metal.
    """
    reporter = reporter or SILENT
    if ct_hu.unit not in ("HU", "1"):
        raise InputError(f"CT must be in HU for implant decomposition, got unit {ct_hu.unit!r}")
    metal = ct_hu.data >= metal_threshold_hu
    if not metal.any():
        reporter.info("no metal in the CT: no implant components")
        return []
    anatomy = anatomy or segment_anatomy(ct_hu, metal_threshold_hu=metal_threshold_hu, device=device)
    vox_ml = ct_hu.voxel_volume_ml
    min_vox = max(3, int(math.ceil(min_screw_ml / vox_ml)))
    bend_mm = bend_mm if bend_mm is not None else max(2.0, 0.75 * max(ct_hu.spacing))
    labels, n = ndimage.label(metal, structure=np.ones((3, 3, 3), bool))
    objects = ndimage.find_objects(labels)
    carriers: list[_Part] = []
    screws: list[_Part] = []
    for lab in reporter.track(range(1, n + 1), "decomposing metal", total=n):
        sl = _pad(objects[lab - 1], ct_hu.shape, 2)
        sub = labels[sl] == lab
        offset = np.array([s.start for s in sl])
        if sub.sum() < min_vox:
            continue
        whole = _make_part("?", np.argwhere(sub) + offset, ct_hu)
        if whole.length < 2.5 * carrier_line_mm:
            if _is_flat(whole):
                carriers.append(_retag(whole, "plate"))
            else:
                screws += _split_touching(_retag(whole, "screw"), ct_hu, min_vox)
            continue
        c_parts, s_parts = _split_component(sub, offset, whole.axes[0], ct_hu, carrier_line_mm, min_vox)
        carriers += c_parts
        pieces: list[_Part] = []
        apart: set[tuple[int, int]] = set()  # halves of a split fragment: two different screws
        for s in s_parts:
            halves = _split_touching(s, ct_hu, min_vox)
            if len(halves) == 2:
                apart.add((len(pieces), len(pieces) + 1))
            pieces += halves
        screws += _join_across_carriers(pieces, c_parts, ct_hu, apart=apart)
    return _name_parts(
        carriers, screws, ct_hu, anatomy, extrusion_mm, bend_mm, (bend_deg, bend_gain), displaced_mm, metal_threshold_hu
    )


def implants_to_json(components: list[ImplantComponent]) -> dict:
    """The components table in the form of the phantom's components.json."""
    return {
        "materials": sorted({c.material for c in components}),
        "components": [c.to_json() for c in components],
    }


def implant_label_volume(components: list[ImplantComponent], ct: Volume) -> Volume:
    """A label volume on ``ct``'s grid: each component's voxels hold its ``id`` (0 = no implant)."""
    out = np.zeros(ct.shape, dtype=np.int16)
    for c in components:
        if len(c.indices):
            out[c.indices[:, 0], c.indices[:, 1], c.indices[:, 2]] = c.id
    return ct.with_data(out, unit="label")


# --------------------------------------------------------------------------- shape analysis
def _shape(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
    """Centre, principal axes (rows, largest first), length along axis 1 and widths along axes 2, 3."""
    center = pts.mean(axis=0)
    if len(pts) < 3:
        return center, np.eye(3), 0.0, (0.0, 0.0)
    cov = np.cov((pts - center).T)
    w, v = np.linalg.eigh(cov)
    axes = v[:, ::-1].T
    proj = (pts - center) @ axes.T
    lo, hi = np.percentile(proj, [0.5, 99.5], axis=0)
    ext = hi - lo
    return center, axes, float(proj[:, 0].max() - proj[:, 0].min()), (float(ext[1]), float(ext[2]))


def _is_flat(part: _Part) -> bool:
    w2, w3 = part.widths
    return w2 >= 8.0 and w2 >= 1.8 * max(w3, 1e-6)


def _make_part(kind: str, idx: np.ndarray, ct: Volume) -> _Part:
    return _Part(kind, idx, ct.index_to_world(idx))


def _retag(part: _Part, kind: str) -> _Part:
    part.kind = kind
    return part


def _pad(sl: tuple[slice, ...], shape: tuple[int, ...], p: int) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, n in zip(sl, shape, strict=True))


def _line_structure(axis_xyz: np.ndarray, ct: Volume, length_mm: float) -> np.ndarray:
    """Boolean structuring element: a digital line of ``length_mm`` along an LPS direction."""
    dz, dy, dx = ct.spacing
    to_index = np.linalg.inv(ct.direction @ np.diag([dx, dy, dz]))  # mm (x,y,z) -> index (i,j,k)
    step = to_index @ axis_xyz
    t = np.arange(-length_mm / 2, length_mm / 2 + 1e-6, 0.25 * min(ct.spacing))
    offs = np.rint(np.outer(t, step)[:, ::-1]).astype(int)  # (k, j, i)
    r = np.abs(offs).max(axis=0)
    se = np.zeros(tuple(2 * r + 1), dtype=bool)
    se[tuple((offs + r).T)] = True
    return se


def _open_along(sub: np.ndarray, axis: np.ndarray, ct: Volume, line_mm: float) -> np.ndarray:
    """Binary opening of ``sub`` with a digital line of ``line_mm`` along ``axis`` (LPS)."""
    se = _line_structure(axis, ct, line_mm)
    pad = max(se.shape) // 2 + 1
    return ndimage.binary_opening(np.pad(sub, pad), structure=se)[pad:-pad, pad:-pad, pad:-pad]


def _split_component(
    sub: np.ndarray, offset: np.ndarray, axis: np.ndarray, ct: Volume, line_mm: float, min_vox: int
) -> tuple[list[_Part], list[_Part]]:
    opened = _open_along(sub, axis, ct, line_mm)
    # second pass: along each first-pass carrier's own axis (a plate fixed to a nail need not be parallel)
    lab, n = ndimage.label(opened, structure=np.ones((3, 3, 3), bool))
    done = [np.asarray(axis, float)]
    for c in range(1, n + 1):
        pts = ct.index_to_world(np.argwhere(lab == c) + offset)
        if len(pts) < min_vox:
            continue
        _, axes, length, _ = _shape(pts)
        if length >= line_mm and all(abs(float(axes[0] @ d)) < math.cos(math.radians(1.0)) for d in done):
            done.append(axes[0])
            opened |= _open_along(sub, axes[0], ct, line_mm)
    lab, n = ndimage.label(opened, structure=np.ones((3, 3, 3), bool))
    carriers = []
    keep = np.zeros_like(opened)
    for c in range(1, n + 1):
        m = lab == c
        part = _make_part("carrier", np.argwhere(m) + offset, ct)
        if part.length < line_mm or m.sum() < min_vox:
            continue
        keep |= m
        carriers.append(_retag(part, "plate" if _is_flat(part) else "nail"))
    shell = ndimage.binary_dilation(keep, structure=np.ones((3, 3, 3), bool)) & sub
    residue = sub & ~shell
    lab, n = ndimage.label(residue, structure=np.ones((3, 3, 3), bool))
    screws = []
    for c in range(1, n + 1):
        m = lab == c
        if m.sum() < min_vox:
            continue
        part = _make_part("screw", np.argwhere(m) + offset, ct)
        if part.length >= 4.0:
            screws.append(part)
    return carriers, screws


def _join_across_carriers(
    screws: list[_Part],
    carriers: list[_Part],
    ct: Volume,
    max_gap_mm: float = 20.0,
    max_angle_deg: float = 35.0,
    apart: set[tuple[int, int]] | None = None,
) -> list[_Part]:
    """Join fragments of one screw that a carrier interrupts (a screw through a plate hole or a nail).

    Two fragments are joined when the gap between them is short, the point halfway across the gap lies in a
    carrier or in the hole the screw passes, and the shorter fragment lies along the longer one's axis (a
    bent screw is allowed ``max_angle_deg``). "In the hole" is within max(one voxel, the longer fragment's
    radius) of the carrier's metal: on the 1-mm CT of the standard demo the screw in its plate hole is
    resolved, the head outside the plate becomes a fragment of its own and the midpoint falls in the hole
    1.1–1.5 mm from the plate metal (three of the eight lateral plate screws were left in two pieces with a
    one-voxel tolerance); on 2-mm voxels one voxel covers it. A lag screw, thicker than ``DHS_DIAMETER_MM``,
    passes no plate hole and keeps the one voxel. Candidate pairs are joined most collinear first (distance
    of the shorter's centre from the longer's axis), never two that touch (no carrier between them), never
    into one group two fragments listed in ``apart`` (the halves of two touching screws split apart), and
    never so that one screw crosses two carriers (a plate screw passes its plate hole and is aimed past the
    nail; a locking screw crosses only its nail).
    """
    if len(screws) < 2 or not carriers:
        return screws
    carrier_tree = cKDTree(np.concatenate([c.pts for c in carriers]))
    carrier_of = np.concatenate([np.full(len(c.pts), k) for k, c in enumerate(carriers)])
    voxel_mm = 1.0 * max(ct.spacing)
    touch_mm = 1.5 * max(ct.spacing)
    trees = [cKDTree(s.pts) for s in screws]
    parent = list(range(len(screws)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    cos_max = math.cos(math.radians(max_angle_deg))
    candidates: list[tuple[float, int, int]] = []
    for a in range(len(screws)):
        for b in range(a + 1, len(screws)):
            long_, short = (screws[a], screws[b]) if screws[a].length >= screws[b].length else (screws[b], screws[a])
            if np.linalg.norm(long_.center - short.center) > long_.length + short.length + max_gap_mm:
                continue
            d, i = trees[b].query(screws[a].pts, k=1)
            j = int(np.argmin(d))
            if d[j] > max_gap_mm or d[j] <= touch_mm:
                continue  # too far apart, or touching (then no carrier lies between: two screws side by side)
            mid = 0.5 * (screws[a].pts[j] + screws[b].pts[i[j]])
            dist_c, at = carrier_tree.query(mid)
            d_long = _diameter(long_, ct)
            if dist_c > max(voxel_mm, 0.5 * d_long if d_long < DHS_DIAMETER_MM else 0.0):
                continue
            v = short.center - long_.center
            if abs(float(v @ long_.axes[0])) < cos_max * np.linalg.norm(v):
                continue
            candidates.append((_line_distance(short.center, long_), a, b, int(carrier_of[at])))
    groups_of = {i: {i} for i in range(len(screws))}
    crossed: dict[int, set[int]] = {i: set() for i in range(len(screws))}
    apart = apart or set()
    for _, a, b, k in sorted(candidates):
        ra, rb = find(a), find(b)
        if ra == rb or len(crossed[ra] | crossed[rb] | {k}) > 1:
            continue
        if any((min(i, j), max(i, j)) in apart for i in groups_of[ra] for j in groups_of[rb]):
            continue
        parent[rb] = ra
        groups_of[ra] |= groups_of.pop(rb)
        crossed[ra] |= crossed.pop(rb) | {k}
    groups: dict[int, list[_Part]] = {}
    for i, s in enumerate(screws):
        groups.setdefault(find(i), []).append(s)
    out = []
    for root, members in groups.items():
        if len(members) == 1:
            out.append(members[0])
        else:
            out.append(
                _Part(
                    "screw",
                    np.concatenate([m.idx for m in members]),
                    np.concatenate([m.pts for m in members]),
                )
            )
            out[-1].through = carriers[next(iter(crossed[root]))] if crossed.get(root) else None
    return out


def _line_distance(p: np.ndarray, part: _Part) -> float:
    d = p - part.center
    return float(np.linalg.norm(d - (d @ part.axes[0]) * part.axes[0]))


def _centerline_deviation(part: _Part, slab_mm: float) -> float:
    """Largest distance of the slab centroids (a discrete skeleton) from their best straight line.

    Thinned slabs are left out as in :func:`_slab_centroids` (a nail's rounded tip, a sliver at a locking
    hole; fewer than half the median count): at the tip of a nail on the small demo's CT a 4-voxel end slab
    read 2.7 mm off the line of slabs holding 69 voxels (median).
    """
    cent, _ = _slab_centroids(part, slab_mm)
    if len(cent) < 3:
        return 0.0
    c0, a0 = _fit_line(cent)
    return float(_line_dist(cent, c0, a0).max())


def _fit_line(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through points: (centroid, unit direction)."""
    c = p.mean(axis=0)
    _, _, vt = np.linalg.svd(p - c, full_matrices=False)
    return c, vt[0]


def _line_dist(p: np.ndarray, c: np.ndarray, a: np.ndarray) -> np.ndarray:
    d = p - c
    return np.linalg.norm(d - np.outer(d @ a, a), axis=1)


def _slab_centroids(
    part: _Part, slab_mm: float, contact: np.ndarray | None = None, thin: float = 0.75
) -> tuple[np.ndarray, float]:
    """Centroids of the slabs across the principal axis (in axis order) and the median slab's voxel count.

    Slabs with fewer than 3 voxels or less than half the median slab's voxels are left out: a slab only
    partly filled (the oblique end of a fragment, a sliver left beside a carrier) has a lopsided centroid.
    With ``contact`` (per voxel: within reach of a carrier) a slab that touches a carrier is also left out
    when it holds fewer than ``thin`` × the median count of the slabs that touch none: the part of the
    screw that faced the carrier went with the carrier's one-voxel shell (``_split_component``), so its
    centroid is pushed away from the carrier. On the small demo's reconstructed CT, where blooming merges
    a plate screw with the nail it passes, such stretches run 10–12 mm with 4–7 voxels per 2-mm slab
    against 10–12 elsewhere, and their centroids lie 1.5–3 mm off the screw's true axis: straight screws
    read 31–43° "bends" from them. A slab that touches a carrier but is full (a locking screw leaving its
    nail) is kept.
    """
    t = (part.pts - part.center) @ part.axes[0]
    bins = np.floor((t - t.min()) / slab_mm).astype(int)
    counts = np.bincount(bins)
    median = float(np.median(counts[counts > 0]))
    ok = counts >= max(3.0, 0.5 * median)
    if contact is not None and contact.any():
        touches = np.bincount(bins, weights=contact.astype(float), minlength=len(counts)) > 0
        free = counts[~touches & (counts > 0)]
        reference = float(np.median(free)) if free.size else median
        ok &= ~(touches & (counts < thin * reference))
    sums = np.stack([np.bincount(bins, weights=part.pts[:, a]) for a in range(3)], axis=1)
    return sums[ok] / counts[ok, None], median


def _bend_fit(
    part: _Part, slab_mm: float, voxel_mm3: float, contact: np.ndarray | None = None
) -> tuple[float, float]:
    """Angle (degrees) between the two arms of the best two-segment fit to the slab centroids, and how
    much better two arms fit than one line (ratio of the squared residual sums, one line / two arms).

    Every centroid is tried as the knee; both arms (sharing the knee) need three centroids or more and
    must span at least 1.5 shank diameters along the axis (the diameter from the median slab's area): a
    shorter "arm" of a thick screw is mostly its end cap, whose centroids do not follow the axis. The knee
    with the least total squared distance of the centroids from their arm's line wins. (0, 1) when the
    screw is too short for two arms. ``contact`` marks the voxels next to a carrier (see
    :func:`_slab_centroids`).
    """
    cent, median = _slab_centroids(part, slab_mm, contact)
    min_arm = 1.5 * 2.0 * math.sqrt(median * voxel_mm3 / slab_mm / math.pi)
    t = (cent - part.center) @ part.axes[0]
    best = (math.inf, 0.0)
    if len(cent) < 5:
        return 0.0, 1.0
    c0, d0 = _fit_line(cent)
    sse1 = float((_line_dist(cent, c0, d0) ** 2).sum())
    for b in range(2, len(cent) - 2):
        if min(abs(t[b] - t[0]), abs(t[-1] - t[b])) < min_arm - 1e-6:
            continue
        arm1, arm2 = cent[: b + 1], cent[b:]
        (c1, d1), (c2, d2) = _fit_line(arm1), _fit_line(arm2)
        sse = float((_line_dist(arm1, c1, d1) ** 2).sum() + (_line_dist(arm2, c2, d2) ** 2).sum())
        if sse < best[0]:
            best = (sse, math.degrees(math.acos(min(1.0, abs(float(d1 @ d2))))))
    if not math.isfinite(best[0]):
        return 0.0, 1.0
    return best[1], sse1 / max(best[0], 1e-6)


def _split_touching(part: _Part, ct: Volume, min_vox: int, iterations: int = 20) -> list[_Part]:
    """Split a fragment made of two touching screws side by side into the two screws (else return it).

    A two-line k-means (k-lines): start from the halves on either side of the second principal axis,
    then give each voxel to the nearer of the two fitted lines until the assignment is stable. The split
    stands when both halves are screw-sized (≥ ``min_vox`` voxels, ≥ 8 mm long) and lie off each other's
    axis: the median distance of one half's voxels from the other half's line is ≥ max(4.5 mm, 1.5 voxels)
    (more than a shank diameter) and ≥ 3 × the mean two-line residual. A single screw, straight or bent,
    cut lengthwise into two halves fails this (its halves lie within a radius, ~2–3 mm, of each other's
    line), and so do thick lag screws, which are not split (equivalent diameter ≥ DHS_DIAMETER_MM).
    """
    if len(part.pts) < 2 * min_vox or _diameter(part, ct) >= DHS_DIAMETER_MM:
        return [part]
    pts = part.pts
    lab = (pts - part.center) @ part.axes[1] > 0
    lines = None
    for _ in range(iterations):
        if lab.sum() < 3 or (~lab).sum() < 3:
            return [part]
        lines = (_fit_line(pts[~lab]), _fit_line(pts[lab]))
        new = _line_dist(pts, *lines[1]) < _line_dist(pts, *lines[0])
        if (new == lab).all():
            break
        lab = new
    if lines is None or min(lab.sum(), (~lab).sum()) < min_vox:
        return [part]
    halves = [_make_part("screw", part.idx[m], ct) for m in (~lab, lab)]
    if min(h.length for h in halves) < 8.0:
        return [part]
    residual = float(np.where(lab, _line_dist(pts, *lines[1]), _line_dist(pts, *lines[0])).mean())
    cross = min(float(np.median(_line_dist(pts[lab], *lines[0]))), float(np.median(_line_dist(pts[~lab], *lines[1]))))
    if cross < max(4.5, 1.5 * max(ct.spacing)) or cross < 3.0 * residual:
        return [part]
    return halves


# --------------------------------------------------------------------------- naming
def _name_parts(
    carriers: list[_Part],
    screws: list[_Part],
    ct: Volume,
    anatomy: Anatomy,
    extrusion_mm: float,
    bend_mm: float,
    bend: tuple[float, float],
    displaced_mm: float = 5.0,
    metal_hu: float = METAL_HU,
) -> list[ImplantComponent]:
    slab = max(2.0, 2.0 * max(ct.spacing))
    vox_mm3 = ct.voxel_volume_ml * 1000.0
    # distance to bone proper (cortex, spongiosa, marrow cavity), the metal itself excluded
    outside_bone_mm = ndimage.distance_transform_edt(~(anatomy.filled & ~anatomy.metal), sampling=anatomy.grid.spacing)
    tol_touch = 2.5 * max(ct.spacing) + 0.1
    hips, screws = _hip_screws(screws, ct, tol_touch)
    hips, carriers = _barrels_to_plates(hips, carriers, tol_touch)
    hip_trees = [cKDTree(h.pts) for h in hips]
    # screw voxels within reach of a carrier (the one-voxel shell removed around carriers, and the voxel
    # beside it, diagonals included): their slabs may be thinned (see _slab_centroids)
    carrier_tree = cKDTree(np.concatenate([c.pts for c in carriers])) if carriers else None
    contact_mm = 2.25 * max(ct.spacing)
    comps: list[ImplantComponent] = []
    carrier_comps: list[tuple[_Part, ImplantComponent]] = []
    used: dict[str, int] = {}
    for part in sorted(carriers, key=lambda p: -p.center[2]):  # carriers, proximal first
        side = anatomy.side_of(part.center[0])
        sample = part.pts[:: max(1, len(part.pts) // 2000)]
        if part.kind == "plate":
            near_hip = any(t.query(sample)[0].min() <= 15.0 for t in hip_trees)
            base = f"{side} dynamic hip screw plate" if near_hip else f"{side} {_plate_position(part, anatomy, side)} plate"
        else:
            inside = anatomy.sample(anatomy.filled, sample).mean()
            base = f"{side} intramedullary nail" if inside >= 0.5 else f"{side} rod"
        used[base] = used.get(base, 0) + 1
        name = base if used[base] == 1 else f"{base} {used[base]}"
        p_end, d_end = _ends(part)
        if p_end[2] < d_end[2]:
            p_end, d_end = d_end, p_end
        flags = ("bent",) if _centerline_deviation(part.core or part, slab) > bend_mm else ()
        standoff = None
        if part.kind == "plate":
            standoff = plate_standoff(part.core or part, ct, metal_hu)
            if standoff is not None and standoff[0] > displaced_mm:
                flags = (*flags, "displaced")
        comp = _component(len(comps) + 1, name, part.kind, side, part, ct, (p_end, d_end), flags)
        if standoff is not None:
            comp.standoff_mm, comp.standoff_end = standoff
        comps.append(comp)
        carrier_comps.append((part, comp))
    for n_hip, h in enumerate(sorted(hips, key=lambda p: -p.center[2]), start=1):
        side = anatomy.side_of(h.center[0])
        e1, e2 = _ends(h)
        if anatomy.sample(outside_bone_mm, e1)[0] < anatomy.sample(outside_bone_mm, e2)[0]:
            e1, e2 = (
                e2,
                e1,
            )  # the head (lateral end) lies farther out of bone than the tip in the femoral head
        name = f"{side} dynamic hip screw" + ("" if n_hip == 1 else f" {n_hip}")
        flags = _screw_flags(
            h, e1, e2, None, anatomy, outside_bone_mm, extrusion_mm, bend, slab, vox_mm3, carrier_tree, contact_mm
        )
        comps.append(_component(len(comps) + 1, name, "screw", side, h, ct, (e1, e2), flags))
    trees = [(cKDTree(p.pts), p, c) for p, c in carrier_comps]
    per_carrier: dict[str | None, list[tuple[_Part, _Part | None, ImplantComponent | None]]] = {}
    for s in screws:
        best = None
        for tree, p, c in trees:
            dmin = float(tree.query(s.pts[:: max(1, len(s.pts) // 500)], k=1)[0].min())
            touching = dmin <= tol_touch
            rank = (0, 0 if c.kind == "plate" else 1, dmin) if touching else (1, dmin, 0)
            if _core_of(p) is s.through:
                rank = (-1, 0, 0)  # the screw passes through this carrier (a locking screw through its nail)
            if dmin <= 15.0 and (best is None or rank < best[0]):
                best = (rank, p, c)
        key = best[2].name if best else None
        per_carrier.setdefault(key, []).append((s, best[1] if best else None, best[2] if best else None))
    side_counts: dict[str, int] = {}
    for items in per_carrier.values():
        items.sort(key=lambda it: -it[0].center[2])  # proximal (larger z) first
        numbers: dict[str, int] = {}
        for s, cpart, ccomp in items:
            side = ccomp.side if ccomp is not None else anatomy.side_of(s.center[0])
            e1, e2 = _ends(s)
            b1, b2 = (float(anatomy.sample(outside_bone_mm, e)[0]) for e in (e1, e2))
            if abs(b1 - b2) > extrusion_mm:
                if b1 < b2:
                    e1, e2 = e2, e1  # the tip is the end in (or nearer to) bone
            elif cpart is not None:
                tree = cKDTree(cpart.pts)
                if tree.query(e1)[0] > tree.query(e2)[0]:
                    e1, e2 = e2, e1  # else the head is the end at the carrier
            if ccomp is None:
                side_counts[side] = side_counts.get(side, 0) + 1
                name, num = f"{side} screw {side_counts[side]}", side_counts[side]
            elif ccomp.kind == "nail" and ccomp.name.endswith("intramedullary nail"):
                level = "proximal" if s.center[2] > cpart.center[2] else "distal"
                numbers[level] = numbers.get(level, 0) + 1
                num = numbers[level]
                name = f"{ccomp.name.replace('intramedullary nail', 'nail')} {level} locking screw {num}"
            else:
                numbers[""] = numbers.get("", 0) + 1
                num = numbers[""]
                name = f"{ccomp.name} screw {num}"
            flags = _screw_flags(
                s,
                e1,
                e2,
                cpart if ccomp is not None and ccomp.kind == "plate" else None,
                anatomy,
                outside_bone_mm,
                extrusion_mm,
                bend,
                slab,
                vox_mm3,
                carrier_tree,
                contact_mm,
            )
            comp = _component(len(comps) + 1, name, "screw", side, s, ct, (e1, e2), flags)
            comp.carrier = ccomp.name if ccomp is not None else None
            comp.number = num
            comps.append(comp)
    return comps


def _core_of(part: _Part) -> _Part:
    return part.core or part


def _hip_screws(screws: list[_Part], ct: Volume, tol_touch: float) -> tuple[list[_Part], list[_Part]]:
    """Thick screws (lag screws of hip screw systems) with the fragments that touch them (their barrel)."""
    hips = [s for s in screws if _diameter(s, ct) >= DHS_DIAMETER_MM and s.length >= 30.0]
    rest = [s for s in screws if not any(s is h for h in hips)]
    for i, h in enumerate(hips):
        tree = cKDTree(h.pts)
        touching = [s for s in rest if tree.query(s.pts, k=1)[0].min() <= tol_touch]
        if touching:
            rest = [s for s in rest if not any(s is t for t in touching)]
            members = [h, *touching]
            hips[i] = _Part("screw", np.concatenate([m.idx for m in members]), np.concatenate([m.pts for m in members]))
            hips[i].axes, hips[i].center = h.axes, h.center  # keep the lag screw's own axis
            hips[i].core = h  # the lag screw alone, for the bend test
    return hips, rest


def _barrels_to_plates(
    hips: list[_Part], carriers: list[_Part], tol_touch: float, max_barrel_mm: float = 50.0
) -> tuple[list[_Part], list[_Part]]:
    """A short thick piece touching a plate is that plate's barrel (the sleeve a lag screw slides in)."""
    keep = []
    for h in hips:
        plate = None
        if h.length < max_barrel_mm:
            tree = cKDTree(h.pts)
            for i, c in enumerate(carriers):
                if c.kind == "plate" and tree.query(c.pts[:: max(1, len(c.pts) // 3000)])[0].min() <= tol_touch:
                    plate = i
                    break
        if plate is None:
            keep.append(h)
        else:
            c = carriers[plate]
            carriers[plate] = _Part("plate", np.concatenate([c.idx, h.idx]), np.concatenate([c.pts, h.pts]), core=c)
    return keep, carriers


def _diameter(part: _Part, ct: Volume) -> float:
    """Equivalent cylinder diameter from volume and length (mm)."""
    return 2.0 * math.sqrt(len(part.idx) * ct.voxel_volume_ml * 1000.0 / max(part.length, 1e-6) / math.pi)


def _screw_flags(
    s: _Part,
    head: np.ndarray,
    tip: np.ndarray,
    plate: _Part | None,
    anatomy: Anatomy,
    outside_bone_mm: np.ndarray,
    extrusion_mm: float,
    bend: tuple[float, float],
    slab: float,
    voxel_mm3: float,
    carrier_tree: cKDTree | None = None,
    contact_mm: float = 0.0,
) -> tuple[str, ...]:
    """``extruded``: head standing more than ``extrusion_mm`` proud of its plate (backed out), tip more than
    3 × ``extrusion_mm`` outside bone, or less than a fifth of the screw in bone; ``bent``: the two arms
    of its centre line differ in direction by more than ``bend[0]`` degrees and fit ``bend[1]`` times
    better than one line, and still differ by more than ``bend[0]`` without the slabs that touch a
    carrier (voxels within ``contact_mm`` of ``carrier_tree``) and were thinned by its shell."""
    flags = []
    tip_out = anatomy.sample(outside_bone_mm, tip)[0] > 3.0 * extrusion_mm
    proud = plate is not None and cKDTree(plate.pts).query(head)[0] > extrusion_mm
    reach = max(2.5, max(anatomy.grid.spacing))  # a screw voxel in bone lies within its radius of bone
    in_bone = (anatomy.sample(outside_bone_mm, s.pts[:: max(1, len(s.pts) // 1000)]) <= reach).mean()
    if tip_out or proud or in_bone < 0.2:
        flags.append("extruded")
    part = s.core or s
    angle, gain = _bend_fit(part, slab, voxel_mm3)
    if angle > bend[0] and gain >= bend[1]:
        # confirmed without the slabs a carrier's shell thinned: a kink made by them vanishes, a bend stays
        contact = None if carrier_tree is None else carrier_tree.query(part.pts)[0] <= contact_mm
        if contact is None or not contact.any() or _bend_fit(part, slab, voxel_mm3, contact)[0] > bend[0]:
            flags.append("bent")
    return tuple(flags)


def standoff_profile(
    pts: np.ndarray,
    ct_hu: Volume,
    metal_threshold_hu: float = METAL_HU,
    slab_mm: float = 10.0,
    max_mm: float = 40.0,
    step_mm: float = 0.5,
    cortex_mm: float = 3.0,
    rays: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft tissue between a plate and the bone along the plate normal, slab by slab along the plate.

    Parameters
    ----------
    pts : (N, 3) LPS positions (mm) of the plate's voxels (the plate alone, without screws or barrel).
    ct_hu : the CT in HU, sampled along the rays by trilinear interpolation.
    metal_threshold_hu : HU of metal; bone is ``BONE_HU`` ≤ HU < metal.
    slab_mm : slab width along the plate's long axis.
    max_mm : a ray that meets no bone this far from the plate's mid-plane finds "no bone beside this slab".
    step_mm : ray sampling step.
    cortex_mm : bone is reached where a bone sample is followed by this much bone (or metal: a screw in
        the cortex); a thinner bright rim is the partial-volume halo of the plate, not cortex.
    rays : rays per slab, spread over the middle 80 % of the plate's width.

    Returns
    -------
    positions, gaps : the slabs' centres along the long axis (mm from the plate centre, increasing along
        the first principal axis) and their gaps in mm (NaN where no ray met bone). A ray starts on the
        slab's mid-plane (median position of its voxels along the normal) and its gap is the length of
        soft tissue (neither metal nor bone) it crosses before reaching bone; the slab's gap is the median
        over its rays (a ray running along a screw reads no gap). The normal is turned towards the side
        where the rays reach bone nearer. Counting soft tissue makes the measure independent of the
        plate's apparent thickness (metal blooming); the partial-volume halo of metal and cortex shortens
        it by about a voxel, so it errs towards "not displaced".
    """
    center, axes, _, (width, _) = _shape(pts)
    rel = pts - center
    t_long, t_across, t_norm = rel @ axes[0], rel @ axes[1], rel @ axes[2]
    edges = np.arange(t_long.min(), t_long.max() + slab_mm, slab_mm)
    centres = 0.5 * (edges[:-1] + edges[1:])
    steps = np.arange(0.0, max_mm + step_mm, step_mm)
    n_cortex = max(1, int(round(cortex_mm / step_mm)))
    offsets = width * np.linspace(-0.4, 0.4, rays) if rays > 1 else np.zeros(1)
    data = np.asarray(ct_hu.data, dtype=np.float32)

    def ray_gap(start: np.ndarray, direction: np.ndarray) -> tuple[float, float]:
        """(gap, distance to bone) along one ray; NaN, inf when it meets no bone."""
        ray = start[None, :] + steps[:, None] * direction[None, :]
        hu = ndimage.map_coordinates(data, ct_hu.world_to_index(ray).T, order=1, mode="constant", cval=-1000.0)
        metal = hu >= metal_threshold_hu
        bone = (hu >= BONE_HU) & ~metal
        solid = np.concatenate([bone | metal, np.zeros(n_cortex, bool)])
        left_plate = np.flatnonzero(~metal)
        if left_plate.size == 0:
            return math.nan, math.inf
        for i in np.flatnonzero(bone[left_plate[0] :]) + left_plate[0]:
            if solid[i : i + n_cortex].all():
                soft = ~(bone | metal)[:i]
                return float(soft.sum() * step_mm), float(steps[i])
        return math.nan, math.inf

    def profile(sign: float) -> tuple[np.ndarray, float]:
        gaps = np.full((len(centres), len(offsets)), np.nan)
        reach = []
        for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            sel = (t_long >= a) & (t_long < b)
            if sel.sum() < 3:
                continue
            mid = float(np.median(t_norm[sel]))
            mid_across = float(np.median(t_across[sel]))
            for r, v in enumerate(offsets):
                start = center + centres[k] * axes[0] + (mid_across + v) * axes[1] + mid * axes[2]
                gaps[k, r], d = ray_gap(start, sign * axes[2])
                reach.append(d)
        return gaps, float(np.median(reach)) if reach else math.inf

    (g_pos, d_pos), (g_neg, d_neg) = profile(1.0), profile(-1.0)
    chosen = g_pos if d_pos <= d_neg else g_neg
    out = np.full(len(centres), np.nan)
    found = np.isfinite(chosen).any(axis=1)
    out[found] = np.nanmedian(chosen[found], axis=1)
    return centres, out


def plate_standoff(
    part: _Part, ct_hu: Volume, metal_threshold_hu: float = METAL_HU, slab_mm: float = 10.0
) -> tuple[float, str | None] | None:
    """The plate's gap to the bone along its normal (mm, see :func:`standoff_profile`) and where it lies
    ("upper end", "middle", "lower end": thirds of the plate by LPS z; None without a gap); None when no
    ray meets bone.

    The gap is the second largest of the slab gaps, i.e. the largest found in at least two slabs: a plate
    is rigid, so a real stand-off spans several slabs, while one slab can misread (a streak, a screw head).
    Its place is the mean position of the slabs at or above it.
    """
    centres, gaps = standoff_profile(part.pts, ct_hu, metal_threshold_hu, slab_mm=slab_mm)
    ok = np.isfinite(gaps)
    if not ok.any():
        return None
    ranked = np.sort(gaps[ok])[::-1]
    gap = float(ranked[1] if len(ranked) > 1 else ranked[0])
    at = float(centres[ok][gaps[ok] >= gap].mean())
    along = at / max(float(np.ptp(centres)) / 2.0, 1e-6)  # −1 … 1 along the first axis
    upward = along * (1.0 if float(part.axes[0][2]) >= 0 else -1.0)  # +1 at the end with the larger z
    where = "upper end" if upward > 1.0 / 3.0 else "lower end" if upward < -1.0 / 3.0 else "middle"
    return gap, (where if gap > 0 else None)


def _plate_position(part: _Part, anatomy: Anatomy, side: str) -> str:
    """lateral/medial/anterior/posterior from the bone beside the plate (same side, same heights)."""
    zs = part.pts[:, 2]
    grid = anatomy.grid
    z_of_k, y_of_j, x_of_i = grid.axis_coordinates()
    ks = np.flatnonzero((z_of_k >= zs.min()) & (z_of_k <= zs.max()))
    sign = -1.0 if side == "right" else 1.0
    cols = np.flatnonzero(sign * (x_of_i - anatomy.midline_x) > 0)
    if ks.size == 0 or cols.size == 0:
        return "lateral"
    sub = anatomy.filled[ks][:, :, cols] & ~anatomy.metal[ks][:, :, cols]
    if not sub.any():
        return "lateral"
    _, jj, ii = np.nonzero(sub)
    bone_xy = np.array([x_of_i[cols][ii].mean(), y_of_j[jj].mean()])
    d = part.center[:2] - bone_xy
    if abs(d[0]) >= abs(d[1]):
        return "lateral" if sign * d[0] > 0 else "medial"
    return "anterior" if d[1] < 0 else "posterior"


def _ends(part: _Part) -> tuple[np.ndarray, np.ndarray]:
    t = (part.pts - part.center) @ part.axes[0]
    lo, hi = t.min(), t.max()
    tol = 0.5 * (hi - lo) * 0.05 + 1e-6
    near_lo = part.pts[t <= lo + tol].mean(axis=0)
    near_hi = part.pts[t >= hi - tol].mean(axis=0)
    # project onto the axis through the centre so the end points lie on the centre line
    return (
        part.center + (near_lo - part.center) @ part.axes[0] * part.axes[0],
        part.center + (near_hi - part.center) @ part.axes[0] * part.axes[0],
    )


def _component(
    cid: int,
    name: str,
    kind: str,
    side: str,
    part: _Part,
    ct: Volume,
    ends: tuple[np.ndarray, np.ndarray],
    flags: tuple[str, ...],
) -> ImplantComponent:
    e1, e2 = (np.asarray(e, float) for e in ends)
    axis = e2 - e1
    axis = axis / max(np.linalg.norm(axis), 1e-9)
    vol = len(part.idx) * ct.voxel_volume_ml
    diameter = _diameter(part, ct)
    return ImplantComponent(
        id=cid,
        name=name,
        kind=kind,
        side=side,
        centroid_lps=tuple(float(v) for v in part.center),
        volume_ml=float(vol),
        length_mm=float(part.length + np.mean(ct.spacing)),
        diameter_mm=float(diameter),
        end_points_lps=(tuple(float(v) for v in e1), tuple(float(v) for v in e2)),
        axis=tuple(float(v) for v in axis),
        flags=flags,
        indices=part.idx.astype(np.int32),
        points_lps=part.pts,
    )
