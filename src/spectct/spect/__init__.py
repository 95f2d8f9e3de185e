"""SPECT acquisition: geometry, system model (projector), scatter model and simulation.

``from spectct.spect import SpectGeometry, SpectModel, Projections, simulate_spect`` covers the usual use.
Reconstruction lives beside these modules (its own files).
"""

from spectct.spect.geometry import EnergyWindow, Projections, SpectGeometry, tc99m_windows
from spectct.spect.projector import SpectModel

__all__ = ["EnergyWindow", "Projections", "SpectGeometry", "SpectModel", "tc99m_windows"]
