"""Size presets of the demo. ``small`` is what the tests run; ``standard`` is the case at clinical sampling."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from spectct.errors import InputError


@dataclass(frozen=True)
class DemoSize:
    name: str
    phantom_voxel_mm: float
    spect_matrix: int
    spect_pixel_mm: float
    spect_stops_per_head: int
    spect_time_per_stop_s: float
    osem_iterations: int
    osem_subsets: int
    ct_pixels: int
    ct_pixel_mm: float
    ct_slice_mm: float
    ct_views: int
    ct_channels: int
    ct_z_range_mm: tuple[float, float]  # LPS z of the CT slab (the implant region)

    def as_dict(self) -> dict:
        return asdict(self)


SIZES: dict[str, DemoSize] = {
    "small": DemoSize("small", phantom_voxel_mm=4.0, spect_matrix=64, spect_pixel_mm=2 * 4.7952,
                      spect_stops_per_head=30, spect_time_per_stop_s=40.0, osem_iterations=5, osem_subsets=15,
                      ct_pixels=256, ct_pixel_mm=500 / 256, ct_slice_mm=2.0, ct_views=360, ct_channels=368,
                      ct_z_range_mm=(-440.0, -10.0)),
    "standard": DemoSize("standard", phantom_voxel_mm=2.0, spect_matrix=128, spect_pixel_mm=4.7952,
                         spect_stops_per_head=60, spect_time_per_stop_s=20.0, osem_iterations=5, osem_subsets=15,
                         ct_pixels=512, ct_pixel_mm=500 / 512, ct_slice_mm=1.0, ct_views=1152, ct_channels=736,
                         ct_z_range_mm=(-440.0, -10.0)),
    "full": DemoSize("full", phantom_voxel_mm=1.0, spect_matrix=128, spect_pixel_mm=4.7952,
                     spect_stops_per_head=60, spect_time_per_stop_s=20.0, osem_iterations=5, osem_subsets=15,
                     ct_pixels=512, ct_pixel_mm=500 / 512, ct_slice_mm=1.0, ct_views=1152, ct_channels=736,
                     ct_z_range_mm=(-450.0, 0.0)),
}


def get_size(name: str) -> DemoSize:
    try:
        return SIZES[name]
    except KeyError:
        raise InputError(f"unknown demo size {name!r}; choose one of {', '.join(SIZES)}") from None
