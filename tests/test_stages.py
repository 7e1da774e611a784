"""The stage runner: skip/resume, timing, summaries, only=, needs, and SIGTERM."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tether.errors import ConfigError
from tether.runs import Run, Stage, StageContext, StageInterrupted, run_stages


def _stages(calls: list[str]):
    def make(name):
        def fn(ctx):
            calls.append(name)
            return {"stage": name, "n": len(calls)}

        return fn

    return [Stage("a", make("a")), Stage("b", make("b"), needs=("a",)), Stage("c", make("c"), needs=("b",))]


def test_runs_in_order_records_summaries_and_skips_complete(tmp_path):
    calls: list[str] = []
    run = Run.create("r", root=tmp_path, job="t")
    summaries = run_stages(run, _stages(calls), StageContext(run=run))
    assert calls == ["a", "b", "c"]
    assert summaries == {
        "a": {"stage": "a", "n": 1},
        "b": {"stage": "b", "n": 2},
        "c": {"stage": "c", "n": 3},
    }
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["stages"]["b"]["summary"] == {"stage": "b", "n": 2}
    assert all(manifest["stages"][s]["status"] == "complete" for s in "abc")
    assert all(manifest["stages"][s]["seconds"] >= 0 for s in "abc")
    # A rerun skips every complete stage and still returns their summaries.
    again = Run.create("r", root=tmp_path, job="t")
    assert run_stages(again, _stages(calls), StageContext(run=again)) == summaries
    assert calls == ["a", "b", "c"]


def test_a_complete_stage_runs_again_when_a_stage_it_needs_ran(tmp_path):
    """A stage added to a finished pipeline (a strategy added to a campaign) runs, and the complete
    stage that reads its artifacts (the report) runs again instead of keeping a stale summary."""
    calls: list[str] = []
    said: list[str] = []
    run = Run.create("r", root=tmp_path, job="t")
    run_stages(run, _stages(calls), StageContext(run=run))
    assert calls == ["a", "b", "c"]
    run.manifest["stages"]["c"]["seconds"] = run.manifest["stages"]["c"]["seconds_before"] = 1000.0
    run.save()
    added = Stage("a2", lambda ctx: calls.append("a2") or {"stage": "a2"})
    stages = _stages(calls)
    stages = [stages[0], added, stages[1], Stage("c", stages[2].fn, needs=("b", "a2"))]
    again = Run.create("r", root=tmp_path, job="t")
    summaries = run_stages(again, stages, StageContext(run=again, say=said.append))
    assert calls == ["a", "b", "c", "a2", "c"]  # b needs only a, which did not run: skipped
    assert summaries["c"] == {"stage": "c", "n": 5}
    assert said == ["c: running again, since a2 ran"]
    assert again.manifest["stages"]["c"]["seconds"] < 1000  # timed afresh, not added to the old time
    third = Run.create("r", root=tmp_path, job="t")
    run_stages(third, stages, StageContext(run=third))
    assert calls == ["a", "b", "c", "a2", "c"]
    third.reopen("a")  # a reopened stage runs, and leaves its dependents to whoever reopened it
    run_stages(third, stages, StageContext(run=third))
    assert calls == ["a", "b", "c", "a2", "c", "a"]


def test_interrupted_stage_keeps_its_seconds_and_reruns(tmp_path):
    run = Run.create("r", root=tmp_path, job="t")
    attempts = []

    def flaky(ctx):
        attempts.append(1)
        if len(attempts) == 1:
            raise KeyboardInterrupt
        return {"ok": True}

    stages = [Stage("a", lambda ctx: {"x": 1}), Stage("b", flaky, needs=("a",))]
    with pytest.raises(KeyboardInterrupt):
        run_stages(run, stages, StageContext(run=run))
    assert run.manifest["stages"]["b"]["status"] == "interrupted"
    assert run.manifest["stages"]["b"]["seconds"] >= 0
    resumed = Run.create("r", root=tmp_path, job="t")
    assert run_stages(resumed, stages, StageContext(run=resumed))["b"] == {"ok": True}
    assert len(attempts) == 2 and resumed.is_complete("b")


def test_sigterm_marks_the_stage_interrupted(tmp_path):
    run = Run.create("r", root=tmp_path, job="t")

    def killed(ctx):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM should have interrupted the stage")

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StageInterrupted):
        run_stages(run, [Stage("long", killed)], StageContext(run=run))
    entry = json.loads((tmp_path / "r" / "manifest.json").read_text())["stages"]["long"]
    assert entry["status"] == "interrupted" and "StageInterrupted" in entry["error"]
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is restored


def test_only_runs_the_named_stages_and_checks_needs(tmp_path):
    calls: list[str] = []
    run = Run.create("r", root=tmp_path, job="t")
    with pytest.raises(ConfigError, match="stage 'c' needs b"):
        run_stages(run, _stages(calls), StageContext(run=run), only=["c"])
    assert calls == []  # the check comes before any stage runs
    run_stages(run, _stages(calls), StageContext(run=run, provided={"b"}), only=["c"])
    assert calls == ["c"]
    run_stages(run, _stages(calls), StageContext(run=run), only=["a", "b"])
    assert calls == ["c", "a", "b"]
    with pytest.raises(ConfigError, match="no stage named 'd'"):
        run_stages(run, _stages(calls), StageContext(run=run), only=["d"])


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (KeyboardInterrupt(), "interrupted"),
        (StageInterrupted("signal 15"), "interrupted"),
        (ValueError("x"), "failed"),
    ],
)
def test_recording_outcome_marks_the_run_and_reraises(tmp_path, raised, status):
    from tether.runs import recording_outcome

    run = Run.create("r", root=tmp_path, job="t", config={}, seed=0)
    with pytest.raises(type(raised)), recording_outcome(run):
        raise raised
    assert json.loads((run.path / "manifest.json").read_text())["status"] == status
