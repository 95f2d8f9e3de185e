"""`Component` and `Phantom`: a labelled voxel model with its component table.

A phantom is truth: only the simulators and evaluations read it, never a reading stage.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spectct.atomic import atomic_path
from spectct.errors import InputError
from spectct.io.nifti import read_nifti, write_nifti
from spectct.physics.materials import get_material
from spectct.volume import Volume

KINDS = ("air", "skin", "fat", "muscle", "soft_tissue", "bone", "marrow", "nail", "plate", "screw",
         "focus", "tract", "collection")
IMPLANT_KINDS = ("nail", "plate", "screw")
INFECTION_KINDS = ("focus", "tract", "collection")


@dataclass
class Component:
    """One labelled part of the phantom.

    ``activity`` is the relative WBC concentration (per mL, scaled later by the injected activity).
    Screws carry ``carrier`` (the name of their plate or nail) and ``number`` (1 = most proximal).
    ``flags`` holds words such as ``"extruded"`` or ``"bent"``.
    """

    id: int
    name: str
    kind: str
    material: str
    activity: float = 0.0
    side: str | None = None
    carrier: str | None = None
    number: int | None = None
    flags: tuple[str, ...] = ()
    centroid_lps: tuple[float, float, float] | None = None
    volume_ml: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"component {self.name!r}: unknown kind {self.kind!r}")
        get_material(self.material)
        self.flags = tuple(self.flags)


@dataclass
class Phantom:
    """Labels (int16, 0 = outside the body), relative activity concentration, and the component table."""

    labels: Volume
    activity: Volume
    components: list[Component] = field(default_factory=list)

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def by_kind(self, *kinds: str) -> list[Component]:
        return [c for c in self.components if c.kind in kinds]

    def material_map(self) -> tuple[Volume, list[str]]:
        """A uint8 index volume into the returned list of material names (index 0 = air)."""
        names = ["air"] + sorted({c.material for c in self.components} - {"air"})
        lut = np.zeros(max(c.id for c in self.components) + 1, dtype=np.uint8)
        for c in self.components:
            lut[c.id] = names.index(c.material)
        return self.labels.with_data(lut[self.labels.data.astype(np.int64)], unit="label"), names

    def mu_map(self, energy_kev: float) -> Volume:
        """Linear attenuation in 1/mm at ``energy_kev`` from the component materials."""
        index, names = self.material_map()
        mu = np.array([get_material(n).mu(energy_kev) for n in names], dtype=np.float32)
        return self.labels.with_data(mu[index.data], unit="1/mm")

    def update_statistics(self) -> None:
        """Fill each component's centroid (LPS mm) and volume (mL) from the label volume."""
        lab = self.labels.data
        n_ids = max(int(lab.max(initial=0)), max(c.id for c in self.components)) + 1
        counts = np.zeros(n_ids)
        sums = np.zeros((n_ids, 3))
        nz, ny, nx = lab.shape
        jj, ii = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
        for k in range(nz):  # slice by slice: no index arrays of the full volume (1-mm grids)
            flat = lab[k].ravel().astype(np.int64)
            n = np.bincount(flat, minlength=n_ids)
            counts += n
            sums[:, 0] += n * k
            sums[:, 1] += np.bincount(flat, weights=jj.ravel(), minlength=n_ids)
            sums[:, 2] += np.bincount(flat, weights=ii.ravel(), minlength=n_ids)
        for c in self.components:
            n = counts[c.id] if c.id < counts.size else 0
            c.volume_ml = float(n * self.labels.voxel_volume_ml)
            if n:
                centroid = self.labels.index_to_world(sums[c.id] / n)
                c.centroid_lps = tuple(round(float(v), 3) for v in centroid)
            else:
                c.centroid_lps = None

    # ----------------------------------------------------------------- files
    def save(self, folder: str | os.PathLike) -> Path:
        """Write labels.nii.gz, activity.nii.gz, materials.nii.gz and components.json into ``folder``."""
        folder = Path(folder)
        write_nifti(self.labels, folder / "labels.nii.gz")
        write_nifti(self.activity, folder / "activity.nii.gz")
        index, names = self.material_map()
        write_nifti(index, folder / "materials.nii.gz")
        doc = {"materials": names, "components": [asdict(c) for c in self.components]}
        with atomic_path(folder / "components.json") as tmp:
            tmp.write_text(json.dumps(doc, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Phantom:
        folder = Path(folder)
        path = folder / "components.json"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: no such file (not a phantom folder)") from None
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        comps = []
        for c in doc["components"]:
            c = dict(c)
            for key in ("centroid_lps", "flags"):
                if c.get(key) is not None:
                    c[key] = tuple(c[key])
            comps.append(Component(**c))
        labels = read_nifti(folder / "labels.nii.gz", unit="label")
        activity = read_nifti(folder / "activity.nii.gz", unit="relative")
        return cls(labels=labels, activity=activity, components=comps)
