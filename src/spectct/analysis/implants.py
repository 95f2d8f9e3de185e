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
   screw cut lengthwise gives halves within one radius of each other's axis); a blob as wide as it is long
   is tried from two starts and the split whose halves continue other fragments is kept
   (``_split_touching``). Fragments on one line (a screw interrupted by the nail it passes through, or by
   its plate hole) are then joined, most collinear first, never two touching pieces, never the two halves
   of a split, and never across two carriers. A screw part thinner than ``MIN_SCREW_DIAMETER_MM`` is a
   sliver of a carrier's skin and goes back to that carrier.
4. Carriers are plates when flat (second principal width ≥ 1.8 × the third) and nails/rods otherwise;
   a nail is intramedullary when most of it lies inside bone. A screw fragment ≥ ``DHS_DIAMETER_MM`` thick
   and ≥ 30 mm long is the lag screw of a hip screw; it takes in the fragments that touch it (within
   2.5 voxels) *and* run along it (axis within 35°: its barrel, a compression screw), not a side-plate
   screw whose shank passes the barrel across it (53–54° on the small demo's 2-mm CTs, 4.9–5.9 mm from the
   barrel; see :func:`_hip_screws`). Each screw is attached to the carrier its
   pieces were joined across (a locking screw through its nail), else the carrier it touches (a plate
   before a nail), else the nearest carrier within 15 mm, and screws are numbered per
   carrier from proximal (towards the hip: larger LPS z) to distal.
5. Flags: ``"extruded"`` when the screw has backed out — its head stands more than ``extrusion_mm``
   proud of its plate, its tip lies more than 3 × ``extrusion_mm`` outside bone (bicortical and locking
   screws normally protrude a few mm), or less than a fifth of it lies in bone. A screw is ``"bent"`` when
   its centre line — sub-voxel section centres every half voxel, only where no other metal is near
   (:mod:`spectct.analysis.implant_shape`) — is fitted by two straight arms meeting at a knee (two-phase
   regression, Hudson 1966, J Am Stat Assoc 61:1097), each arm ≥ max(8 mm, 4 voxels) long, that differ in
   direction by more than ``bend_deg`` (9.5°) *and* whose shorter arm's far end lies ≥ ``bend_dev_mm``
   (1.5 mm) off the longer arm's line. The deviation is what the grid resolves: the phantom bends by
   15–25° with a short arm of 11–14 mm, i.e. 2.8–5.9 mm off line, while the direction of a 10-mm arm
   drawn from voxels 2 mm wide is uncertain by several degrees. Sections beside a carrier are left out
   rather than corrected: the carrier's one-voxel shell took the screw's side facing it, and their centres
   lie 1–3 mm off the axis (straight plate screws of the small demo read 31–43° "bends" from them with the
   former slab-centroid fit). Measured (angle°, deviation mm), arms ≥ 8 mm:
   - demo CTs after MAR (1 mm: standard demo, seed 0; 2 mm: small demo, seeds 0 and 1): bent screws
     14.2–17.8°/2.4–3.2 mm (1 mm) and 14.4–21.6°/2.2–3.3 mm (2 mm); straight screws ≤ 12.8° with deviation
     ≤ 0.6 mm, or deviation ≤ 1.9 mm with ≤ 8.0° (the small demo's proximal locking screw, whose tip blooms).
     Nominal 2-mm case CT (no artefacts), seeds 0–2: the 9 bent screws flagged, no other.
   - tests/test_implants_bend.py (screws beside a nail and a plate, blooming from a Gaussian blur of
     0.8–1.5 mm): bent 11.1–15.6°/2.2–3.4 mm; straight ≤ 3.7°.
   9.5° lies midway between 8.0° and 11.1°; 1.5 mm lies 0.9 mm above 0.6 and 0.7 mm below 2.2 mm. A screw
   too close to a carrier along most of its length has no two measurable arms and is not flagged. The hip
   screw is read on its lag screw alone (the barrel's metal counts as other metal). Carriers keep the
   centre-line deviation test (``bend_mm``) on slabs holding at least half the median count (a 4-voxel
   sliver at a nail's tip read 2.7 mm off a 69-voxel-per-slab line on the demo CT). The tip is the end
   deeper in bone, else the end away from the carrier.
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

from spectct.analysis.anatomy import METAL_HU, Anatomy, segment_anatomy
from spectct.analysis.implant_shape import (
    fit_line,
    line_distance,
    plate_standoff,
    principal_shape,
    screw_bend,
    screw_centre_line,
)
from spectct.errors import InputError
from spectct.progress import SILENT, Reporter
from spectct.volume import Volume

DHS_DIAMETER_MM = 8.0  # lag screws of hip screw systems are 10–13 mm thick, cortical screws 3.5–5 mm
#: A screw part thinner than this (equivalent cylinder diameter) is a sliver of a carrier's skin left by the
#: opening, not a screw: the thinnest cortical screws have 3.5-mm shanks, which blooming only thickens
#: (screws of the demo CTs read 4.8–6.6 mm; the sliver on the lateral end of the 1-mm demo's hip-screw
#: barrel, formerly a third "plate screw", reads 2.5 mm).
MIN_SCREW_DIAMETER_MM = 3.0


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
    bend_deg: float = 9.5,
    bend_dev_mm: float = 1.5,
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
    bend_dev_mm : how far the end of a screw's shorter arm must lie off the longer arm's line for ``"bent"``.
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
            halves = _split_touching(s, ct_hu, min_vox, others=s_parts)
            if len(halves) == 2:
                apart.add((len(pieces), len(pieces) + 1))
            pieces += halves
        screws += _join_across_carriers(pieces, c_parts, ct_hu, apart=apart)
    return _name_parts(
        carriers, screws, ct_hu, anatomy, extrusion_mm, bend_mm, (bend_deg, bend_dev_mm), metal, displaced_mm,
        metal_threshold_hu,
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
_shape = principal_shape  # centre, principal axes, length and widths of a point cloud


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
    c0, a0 = fit_line(cent)
    return float(line_distance(cent, c0, a0).max())


def _slab_centroids(part: _Part, slab_mm: float) -> tuple[np.ndarray, float]:
    """Centroids of the slabs across the principal axis (in axis order) and the median slab's voxel count.

    Slabs with fewer than 3 voxels or less than half the median slab's voxels are left out: a slab only
    partly filled (the oblique end of a fragment, a sliver left beside a carrier) has a lopsided centroid.
    """
    t = (part.pts - part.center) @ part.axes[0]
    bins = np.floor((t - t.min()) / slab_mm).astype(int)
    counts = np.bincount(bins)
    median = float(np.median(counts[counts > 0]))
    ok = counts >= max(3.0, 0.5 * median)
    sums = np.stack([np.bincount(bins, weights=part.pts[:, a]) for a in range(3)], axis=1)
    return sums[ok] / counts[ok, None], median


def _split_touching(
    part: _Part, ct: Volume, min_vox: int, others: list[_Part] | None = None, iterations: int = 20
) -> list[_Part]:
    """Split a fragment made of two touching screws side by side into the two screws (else return it).

    A two-line k-means (k-lines): start from the halves on either side of a principal axis, then give each
    voxel to the nearer of the two fitted lines until the assignment is stable. A split stands when both
    halves are screw-sized (≥ ``min_vox`` voxels, ≥ 8 mm long) and lie off each other's axis: the median
    distance of one half's voxels from the other half's line is ≥ max(4.5 mm, 1.5 voxels) (more than a
    shank diameter) and ≥ 3 × the mean two-line residual. A single screw, straight or bent, cut lengthwise
    into two halves fails this (its halves lie within a radius, ~2–3 mm, of each other's line), and so does a
    thick cylinder such as a lag screw (halves 0.85 radius apart, residual half a radius).

    The first start is across the second principal axis. A blob of two screws about as wide as it is long
    (where the lowest plate screw of the case meets the head of the nail's locking screw: 20 × 19 × 7 mm)
    may split either way, so a second start, across the first axis, is tried too and the two are ranked by
    how many of their halves continue one of ``others`` (the other fragments of the same metal: a screw
    interrupted by a plate or nail is continued beyond it; see :func:`_continues`); a tie keeps the first.
    On the 2-mm demo CT the first start there gives two "screws" running across the blob that continue
    nothing, the second the plate screw and the locking screw, whose half continues the locking screw's piece
    beyond the nail. A split found only by the second start stands only when its halves continue more
    fragments than the whole fragment does (otherwise a screw cut crosswise by a blob could pass).
    A lag screw (equivalent diameter ≥ ``DHS_DIAMETER_MM`` and ≥ 30 mm long) is not split; a shorter thick
    fragment is tried (two 5-mm screws side by side read 8.9 mm thick).
    """
    if len(part.pts) < 2 * min_vox or (_diameter(part, ct) >= DHS_DIAMETER_MM and part.length >= 30.0):
        return [part]
    others = [o for o in others or [] if o is not part]
    first = _two_lines(part, ct, min_vox, 1, iterations)
    second = _two_lines(part, ct, min_vox, 0, iterations)
    if second is None:
        return [part] if first is None else first
    score = sum(_continues(h, others, ct) for h in second)
    if first is not None:
        return second if score > sum(_continues(h, others, ct) for h in first) else first
    return second if score > _continues(part, others, ct) else [part]


def _continues(part: _Part, others: list[_Part], ct: Volume, max_angle_deg: float = 35.0) -> bool:
    """Whether another fragment lies on ``part``'s line beyond it: its centre within max(4 mm, 2 voxels) of
    the line and more than half ``part``'s length from ``part``'s centre, its axis within ``max_angle_deg``
    of the line (as for joining fragments across a carrier)."""
    tol = max(4.0, 2.0 * max(ct.spacing))
    cos_max = math.cos(math.radians(max_angle_deg))
    return any(
        _line_distance(o.center, part) <= tol
        and abs(float(o.axes[0] @ part.axes[0])) >= cos_max
        and np.linalg.norm(o.center - part.center) > 0.5 * part.length
        for o in others
    )


def _two_lines(part: _Part, ct: Volume, min_vox: int, start_axis: int, iterations: int) -> list[_Part] | None:
    """One k-lines split of ``part`` started across ``axes[start_axis]``: the two halves, or None when the
    split does not stand (see :func:`_split_touching`)."""
    pts = part.pts
    lab = (pts - part.center) @ part.axes[start_axis] > 0
    lines = None
    for _ in range(iterations):
        if lab.sum() < 3 or (~lab).sum() < 3:
            return None
        lines = (fit_line(pts[~lab]), fit_line(pts[lab]))
        new = line_distance(pts, *lines[1]) < line_distance(pts, *lines[0])
        if (new == lab).all():
            break
        lab = new
    if lines is None or min(lab.sum(), (~lab).sum()) < min_vox:
        return None
    halves = [_make_part("screw", part.idx[m], ct) for m in (~lab, lab)]
    if min(h.length for h in halves) < 8.0:
        return None
    residual = float(np.where(lab, line_distance(pts, *lines[1]), line_distance(pts, *lines[0])).mean())
    cross = min(
        float(np.median(line_distance(pts[lab], *lines[0]))), float(np.median(line_distance(pts[~lab], *lines[1])))
    )
    if cross < max(4.5, 1.5 * max(ct.spacing)) or cross < 3.0 * residual:
        return None
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
    metal: np.ndarray,
    displaced_mm: float = 5.0,
    metal_hu: float = METAL_HU,
) -> list[ImplantComponent]:
    slab = max(2.0, 2.0 * max(ct.spacing))
    # distance to bone proper (cortex, spongiosa, marrow cavity), the metal itself excluded
    outside_bone_mm = ndimage.distance_transform_edt(~(anatomy.filled & ~anatomy.metal), sampling=anatomy.grid.spacing)
    tol_touch = 2.5 * max(ct.spacing) + 0.1
    hips, screws = _hip_screws(screws, ct, tol_touch)
    hips, carriers = _barrels_to_plates(hips, carriers, tol_touch)
    screws, carriers = _slivers_to_carriers(screws, carriers, ct, tol_touch)
    hip_trees = [cKDTree(h.pts) for h in hips]
    screws_idx = np.concatenate([_core_of(s).idx for s in hips + screws]) if hips or screws else None
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
            standoff = plate_standoff((part.core or part).pts, ct, metal_hu)
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
            h, e1, e2, None, anatomy, outside_bone_mm, extrusion_mm, bend, metal, ct, screws_idx
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
                metal,
                ct,
                screws_idx,
            )
            comp = _component(len(comps) + 1, name, "screw", side, s, ct, (e1, e2), flags)
            comp.carrier = ccomp.name if ccomp is not None else None
            comp.number = num
            comps.append(comp)
    return comps


def _core_of(part: _Part) -> _Part:
    return part.core or part


def _hip_screws(
    screws: list[_Part], ct: Volume, tol_touch: float, max_angle_deg: float = 35.0
) -> tuple[list[_Part], list[_Part]]:
    """Thick screws (lag screws of hip screw systems) with the fragments that touch them and run along them
    (their barrel).

    The barrel is a sleeve around the lag screw, so its pieces share the lag screw's axis: a touching
    fragment joins only when its axis lies within ``max_angle_deg`` of the lag screw's (the allowance of
    :func:`_join_across_carriers`). A side-plate screw is set across the plate, at about the neck-shaft angle
    less 90° (40–50°) or more to the lag screw, and its shank may pass within the touch distance of the barrel
    where the barrel leaves the plate: on the small demo's 2-mm CT after MAR, the shank of the upper plate
    screw (11 mm, 4.9 mm across) lay 4.9 mm from the barrel (touch distance 5.1 mm) at 54° to the lag axis and
    was swallowed by the hip screw, so the plate showed one screw, numbered 1 (seed 1: 5.9 mm, 53°, kept);
    the barrel of the nominal 2-mm CT, a fragment of its own, lies at 12° (and joins the plate, see
    :func:`_barrels_to_plates`). 35° leaves 23° below the 12° and 18° above the 53°.
    """
    hips = [s for s in screws if _diameter(s, ct) >= DHS_DIAMETER_MM and s.length >= 30.0]
    rest = [s for s in screws if not any(s is h for h in hips)]
    cos_max = math.cos(math.radians(max_angle_deg))
    for i, h in enumerate(hips):
        tree = cKDTree(h.pts)
        touching = [
            s
            for s in rest
            if abs(float(s.axes[0] @ h.axes[0])) >= cos_max and tree.query(s.pts, k=1)[0].min() <= tol_touch
        ]
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


def _slivers_to_carriers(
    screws: list[_Part], carriers: list[_Part], ct: Volume, tol_touch: float
) -> tuple[list[_Part], list[_Part]]:
    """Screw parts thinner than :data:`MIN_SCREW_DIAMETER_MM` go back to the carrier they touch (the
    carrier's ``core`` stays as it was, for its bend and stand-off), or are dropped when they touch none."""
    keep = []
    for s in screws:
        if _diameter(s, ct) >= MIN_SCREW_DIAMETER_MM:
            keep.append(s)
            continue
        tree = cKDTree(s.pts)
        dist = [float(tree.query(c.pts[:: max(1, len(c.pts) // 3000)])[0].min()) for c in carriers]
        if dist and min(dist) <= tol_touch:
            k = int(np.argmin(dist))
            c = carriers[k]
            carriers[k] = _Part(
                c.kind, np.concatenate([c.idx, s.idx]), np.concatenate([c.pts, s.pts]), core=_core_of(c)
            )
            carriers[k].axes, carriers[k].center = c.axes, c.center  # keep the carrier's own frame
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
    metal: np.ndarray,
    ct: Volume,
    screws_idx: np.ndarray | None = None,
) -> tuple[str, ...]:
    """``extruded``: head standing more than ``extrusion_mm`` proud of its plate (backed out), tip more than
    3 × ``extrusion_mm`` outside bone, or less than a fifth of the screw in bone; ``bent``: see
    :func:`screw_is_bent` (``bend`` = (angle in degrees, deviation in mm))."""
    flags = []
    tip_out = anatomy.sample(outside_bone_mm, tip)[0] > 3.0 * extrusion_mm
    proud = plate is not None and cKDTree(plate.pts).query(head)[0] > extrusion_mm
    reach = max(2.5, max(anatomy.grid.spacing))  # a screw voxel in bone lies within its radius of bone
    in_bone = (anatomy.sample(outside_bone_mm, s.pts[:: max(1, len(s.pts) // 1000)]) <= reach).mean()
    if tip_out or proud or in_bone < 0.2:
        flags.append("extruded")
    if screw_is_bent((s.core or s).idx, metal, ct, *bend, screws_idx=screws_idx):
        flags.append("bent")
    return tuple(flags)


def screw_is_bent(
    idx: np.ndarray,
    metal: np.ndarray,
    ct: Volume,
    bend_deg: float,
    bend_dev_mm: float,
    screws_idx: np.ndarray | None = None,
) -> bool:
    """A screw (CT indices ``idx`` of its voxels) is bent when the two arms of its clean centre line
    (:func:`spectct.analysis.implant_shape.screw_centre_line`, each arm ≥ max(8 mm, 4 voxels)) differ in
    direction by more than ``bend_deg`` and the shorter arm's far end lies ``bend_dev_mm`` or more off the
    longer arm's line (see the module notes for the thresholds)."""
    line = screw_centre_line(idx, metal, ct, screws_idx)
    b = screw_bend(line, min_arm_mm=max(8.0, 4.0 * max(ct.spacing)))
    return b.angle_deg > bend_deg and b.deviation_mm >= bend_dev_mm


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
