"""The case, stage by stage, resumable from a study folder."""

from spectct.pipeline.runner import Stage, StageContext, StageResult, run_stages

__all__ = ["Stage", "StageContext", "StageResult", "run_stages"]
