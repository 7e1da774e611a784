from __future__ import annotations

import json

import pytest

from tether.errors import TetherError
from tether.runs import Run, list_runs


def test_manifest_and_stage_timings(tmp_path):
    run = Run.create("r1", root=tmp_path, job="demo", config={"a": 1}, seed=3)
    with run.stage("generate", items=2):
        pass
    manifest = json.loads((tmp_path / "r1" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["config"] == {"a": 1}
    assert manifest["versions"]["torch"]
    assert manifest["stages"]["generate"]["status"] == "complete"
    assert run.is_complete("generate")


def test_interrupted_stage_resumes(tmp_path):
    run = Run.create("r2", root=tmp_path, job="demo")
    with pytest.raises(KeyboardInterrupt), run.stage("score"):
        raise KeyboardInterrupt
    assert run.manifest["stages"]["score"]["status"] == "interrupted"
    again = Run.create("r2", root=tmp_path, job="demo")
    assert again.manifest["resumed"] == 1 and not again.is_complete("score")
    with again.stage("score"):
        pass
    assert again.is_complete("score")
    assert [r.name for r in list_runs(tmp_path)] == ["r2"]


def test_open_unknown_run(tmp_path):
    with pytest.raises(TetherError, match="no run named"):
        Run.open("missing", root=tmp_path)
    Run.create("x", root=tmp_path)
    with pytest.raises(TetherError, match="already exists"):
        Run.create("x", root=tmp_path, resume=False)
