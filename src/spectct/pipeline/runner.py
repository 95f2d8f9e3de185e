"""A small make-like runner for study stages.

A stage names its inputs and outputs (paths relative to the study folder) and the parameters that
change its result. It is skipped as *up to date* when every output exists, is newer than every input,
and the recorded parameters equal the requested ones. Outputs are written atomically by the stages, so
a run killed part-way leaves either finished files or none, and the next run completes the rest.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from spectct.errors import InputError
from spectct.io.study import Study
from spectct.progress import Reporter


@dataclass
class StageContext:
    """What a stage function gets: the study, the device, the reporter and shared settings."""

    study: Study
    device: str
    reporter: Reporter
    settings: dict[str, Any]


@dataclass
class Stage:
    name: str
    description: str
    func: Callable[[StageContext], dict[str, Any] | None]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # modules that must exist for the stage to run

    def missing_modules(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


@dataclass
class StageResult:
    name: str
    status: str  # "ran", "up to date", "skipped"
    seconds: float
    note: str = ""


def _newest(paths: Sequence[Path]) -> float:
    return max((p.stat().st_mtime for p in paths), default=0.0)


def _oldest(paths: Sequence[Path]) -> float:
    return min((p.stat().st_mtime for p in paths), default=0.0)


def is_up_to_date(study: Study, stage: Stage) -> bool:
    outputs = [study.path(o) for o in stage.outputs]
    if not outputs or not all(p.exists() for p in outputs):
        return False
    if study.run_parameters(stage.name) != _normalise(stage.params):
        return False
    inputs = [study.path(i) for i in stage.inputs]
    if not all(p.exists() for p in inputs):
        return False
    return _newest(inputs) <= _oldest(outputs)


def _normalise(params: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(params, default=str))


def _release_caches() -> None:
    """Drop the CT system / back-projection matrices a stage cached (up to ≈ 3 GB at clinical sampling):
    the next stage rarely reuses them, and holding them would add to its own peak memory."""
    import gc

    from spectct.allocator import trim
    from spectct.ct.projector import clear_matrix_cache

    clear_matrix_cache()
    gc.collect()
    trim()  # hand freed heap pages back to the system (glibc), so the next stage starts lean


def run_stages(study: Study, stages: Sequence[Stage], *, device: str = "cpu", reporter: Reporter | None = None,
               force: Sequence[str] = (), settings: dict[str, Any] | None = None) -> list[StageResult]:
    """Run ``stages`` in order, skipping those that are up to date or cannot run yet."""
    reporter = reporter or Reporter()
    names = {s.name for s in stages}
    unknown = [f for f in force if f not in names and f != "all"]
    if unknown:
        raise InputError(f"--force: unknown stage {', '.join(unknown)}; stages are {', '.join(s.name for s in stages)}")
    ctx = StageContext(study=study, device=device, reporter=reporter, settings=dict(settings or {}))
    results: list[StageResult] = []
    for stage in stages:
        forced = stage.name in force or "all" in force
        missing = stage.missing_modules()
        if missing:
            note = f"not available in this build (needs {', '.join(missing)})"
            reporter.info(f"[yellow]skip[/] {stage.name}: {note}")
            results.append(StageResult(stage.name, "skipped", 0.0, note))
            continue
        absent = [i for i in stage.inputs if not study.path(i).exists()]
        if absent:
            note = f"inputs missing: {', '.join(absent)}"
            reporter.info(f"[yellow]skip[/] {stage.name}: {note}")
            results.append(StageResult(stage.name, "skipped", 0.0, note))
            continue
        if not forced and is_up_to_date(study, stage):
            reporter.info(f"[green]up to date[/] {stage.name}")
            results.append(StageResult(stage.name, "up to date", 0.0))
            continue
        reporter.info(f"[bold cyan]>>[/] {stage.name}: {stage.description}")
        t0 = time.perf_counter()
        try:
            extra = stage.func(ctx) or {}
        except BaseException:
            _release_caches()
            raise
        seconds = time.perf_counter() - t0
        study.record_run(stage.name, _normalise(stage.params), seconds)  # the stage is done: say so first
        _release_caches()
        if extra:
            ctx.settings.setdefault("stage_info", {})[stage.name] = extra
        results.append(StageResult(stage.name, "ran", seconds))
        reporter.info(f"   {stage.name} done in {seconds:.1f} s")
    return results


def timing_table(results: Sequence[StageResult]) -> Table:
    table = Table(title="spectct stages")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    for r in results:
        table.add_row(r.name, r.status, f"{r.seconds:.1f}", r.note)
    table.add_row("total", "", f"{sum(r.seconds for r in results):.1f}", "")
    return table
