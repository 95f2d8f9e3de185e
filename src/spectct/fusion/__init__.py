"""Fusion: SPECT on the CT grid, with rigid registration when the frames differ."""

from spectct.fusion.register import RigidTransform, apply_rigid, register_rigid
from spectct.fusion.resample import spect_to_ct

__all__ = ["RigidTransform", "apply_rigid", "register_rigid", "spect_to_ct"]
