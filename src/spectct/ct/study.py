"""Study-folder entry points of the CT chain (simulate, MAR), shared by the CLI and the pipeline."""

from spectct.ct.simulate import simulate_ct_study

__all__ = ["simulate_ct_study"]
