import json
import os
import time

import pytest

from spectct.errors import InputError, OutputError
from spectct.io.study import STUDY_FORMAT, Study
from spectct.pipeline.runner import Stage, run_stages
from spectct.progress import SILENT


def _stages(calls):
    def make_a(ctx):
        calls.append("a")
        (ctx.study.root / "a.txt").write_text("a")

    def make_b(ctx):
        calls.append("b")
        (ctx.study.root / "b.txt").write_text((ctx.study.root / "a.txt").read_text() + "b")

    return [
        Stage("a", "first", make_a, outputs=("a.txt",), params={"n": 1}),
        Stage("b", "second", make_b, inputs=("a.txt",), outputs=("b.txt",)),
        Stage("c", "needs a module that does not exist", make_b, requires=("spectct._no_such_module",)),
    ]


def test_stages_run_then_skip_as_up_to_date(tmp_path):
    calls = []
    study = Study.open(tmp_path / "s")
    res = run_stages(study, _stages(calls), reporter=SILENT)
    assert [r.status for r in res] == ["ran", "ran", "skipped"]
    assert "needs spectct._no_such_module" in res[2].note
    res = run_stages(study, _stages(calls), reporter=SILENT)
    assert [r.status for r in res][:2] == ["up to date", "up to date"]
    assert calls == ["a", "b"]


def test_changed_input_or_force_reruns(tmp_path):
    calls = []
    study = Study.open(tmp_path / "s")
    run_stages(study, _stages(calls), reporter=SILENT)
    later = time.time() + 5
    os.utime(study.path("a.txt"), (later, later))
    run_stages(study, _stages(calls), reporter=SILENT)
    assert calls == ["a", "b", "b"]
    run_stages(study, _stages(calls), reporter=SILENT, force=["a"])
    assert calls[-2:] == ["a", "b"]
    with pytest.raises(InputError, match="unknown stage"):
        run_stages(study, _stages(calls), reporter=SILENT, force=["zzz"])


def test_changed_parameters_rerun(tmp_path):
    calls = []
    study = Study.open(tmp_path / "s")
    run_stages(study, _stages(calls), reporter=SILENT)
    stages = _stages(calls)
    stages[0].params = {"n": 2}
    run_stages(study, stages, reporter=SILENT)
    assert calls == ["a", "b", "a", "b"]


def test_newer_study_format_is_refused(tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    (root / "protocol.json").write_text(json.dumps({"study_format": STUDY_FORMAT + 1, "spectct_version": "9.0"}))
    with pytest.raises(OutputError, match="newer spectct"):
        Study.open(root)


def test_unwritable_study_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        Study.open(blocker / "study")
