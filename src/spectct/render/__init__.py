"""Rendering: MPR, MIP, fused SPECT/CT, volume rendering and planar display (matplotlib, Agg).

Every figure carries orientation letters derived from LPS geometry, a scale bar, and colour bars with
units.
"""

from spectct.render.fuse import fused_figure, side_by_side
from spectct.render.mip import mip, mip_figure, rotating_mip
from spectct.render.mpr import Slice2D, mpr_slices
from spectct.render.planar import planar_figure
from spectct.render.vrt import TransferFunction, ray_cast, volume_render

__all__ = ["Slice2D", "TransferFunction", "fused_figure", "mip", "mip_figure", "mpr_slices", "planar_figure",
           "ray_cast", "rotating_mip", "side_by_side", "volume_render"]
