"""The audit sweep: result cache, resuming, added checkpoints, failures, and a tiny-model end-to-end run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fakes import ScriptedEngine
from tether.audit import AuditReport
from tether.audit.cache import ResultCache, default_cache_path
from tether.audit.sweep import expand_models, run_audit
from tether.errors import ConfigError, ModelLoadError
from tether.evals.types import ItemResult

REFUSAL = "I'm sorry, but I can't help with that."


class Loader:
    """A ``load_engine`` that hands out scripted engines (refuse everything, prefer the first choice)
    and remembers them; specs in ``broken`` fail to load, specs in ``failing`` load but raise on
    generate."""

    def __init__(self, broken=(), failing=()):
        self.engines: dict[str, ScriptedEngine] = {}
        self.broken, self.failing = set(broken), set(failing)

    def __call__(self, spec, config, tracer):
        if spec in self.broken:
            raise ModelLoadError("no such weights", where=spec)
        reply = RuntimeError("engine on fire") if spec in self.failing else REFUSAL
        engine = ScriptedEngine(reply, name=f"fp-{spec}", fingerprint=f"fp-{spec}")
        self.engines[spec] = engine
        return engine


TASKS = ["overrefusal", "mmlu"]


def test_cache_roundtrip_skips_errors(tmp_path):
    path = tmp_path / "c.sqlite"
    ok = ItemResult(task="t", item_id="a", model="m", model_fingerprint="fp", status="scored", score=1.0)
    bad = ItemResult(task="t", item_id="b", model="m", model_fingerprint="fp", status="error")
    with ResultCache(path) as cache:
        assert cache.put("fp", "t", "v1", [ok, bad]) == 1
        assert cache.get("fp", "t", "v1", ["a", "b"]) == {"a": ok}
        assert cache.get("fp", "t", "v2", ["a"]) == {}  # another task version misses
        assert cache.get("other", "t", "v1", ["a"]) == {}
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_cache_path(tmp_path, monkeypatch):
    monkeypatch.delenv("TETHER_CACHE", raising=False)
    assert default_cache_path(tmp_path / "out") == tmp_path / "out" / "audit.sqlite"
    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "c"))
    assert default_cache_path(tmp_path / "out") == tmp_path / "c" / "audit.sqlite"


def test_rerun_uses_cache_and_added_checkpoint_runs_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("TETHER_CACHE", raising=False)
    out = tmp_path / "audit"
    first = Loader()
    report = run_audit(["base"], TASKS, out, limit=4, load_engine=first, progress=False)
    base = first.engines["base"]
    assert len(base.generated) == 4 and len(base.scored) == 4
    assert report.summary("base", "overrefusal").value == 0.0  # it refuses everything

    again = Loader()
    report = run_audit(["base"], TASKS, out, limit=4, load_engine=again, progress=False)
    assert again.engines["base"].generated == [] and again.engines["base"].scored == []
    assert report.summary("base", "overrefusal").n_scored == 4
    assert report.settings["items from cache"] == {"base / overrefusal": 4, "base / mmlu": 4}

    more = Loader()
    report = run_audit(["base", "ckpt"], TASKS, out, limit=4, load_engine=more, progress=False)
    assert more.engines["base"].generated == [] and more.engines["base"].scored == []
    assert len(more.engines["ckpt"].generated) == 4 and len(more.engines["ckpt"].scored) == 4
    assert report.model_names() == ["base", "ckpt"]
    assert {(d.model, d.baseline) for d in report.deltas} == {("ckpt", "base")}

    # A bigger limit evaluates only the new items.
    bigger = Loader()
    run_audit(["base"], TASKS, out, limit=6, load_engine=bigger, progress=False)
    assert len(bigger.engines["base"].generated) == 2


def test_results_are_cached_batch_by_batch(tmp_path, monkeypatch):
    """An interruption keeps every finished batch: a second run evaluates only the rest."""
    import dataclasses

    from tether.evals import get_task, registry

    task = dataclasses.replace(get_task("mmlu"), batch_items=3)
    calls = {"n": 0}
    original = task.run

    def flaky(engine, items, seed=0):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(engine, items, seed=seed)

    monkeypatch.setitem(registry._builtin(), "mmlu", dataclasses.replace(task, run=flaky))
    with pytest.raises(KeyboardInterrupt):
        run_audit(
            ["base"],
            ["mmlu"],
            tmp_path,
            limit=9,
            cache=tmp_path / "c.sqlite",
            load_engine=Loader(),
            progress=False,
        )
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "interrupted"
    monkeypatch.setitem(registry._builtin(), "mmlu", task)
    loader = Loader()
    run_audit(
        ["base"], ["mmlu"], tmp_path, limit=9, cache=tmp_path / "c.sqlite", load_engine=loader, progress=False
    )
    assert len(loader.engines["base"].scored) == 3  # two batches of 3 survived the interruption


def test_failing_task_marks_items_error_and_audit_goes_on(tmp_path):
    loader = Loader(failing={"base"})
    report = run_audit(["base"], TASKS, tmp_path, limit=3, load_engine=loader, cache=False, progress=False)
    refusal, mmlu = report.summary("base", "overrefusal"), report.summary("base", "mmlu")
    # Generation failures are caught per item by the task itself: every item "error", task incomplete.
    assert (refusal.n_error, refusal.complete, refusal.value) == (3, False, None)
    assert mmlu.complete and mmlu.n_scored == 3


def test_task_raising_is_contained(tmp_path, monkeypatch):
    import dataclasses

    from tether.evals import get_task, registry

    def boom(engine, items, seed=0):
        raise ValueError("scorer bug")

    monkeypatch.setitem(registry._builtin(), "mmlu", dataclasses.replace(get_task("mmlu"), run=boom))
    report = run_audit(["base"], TASKS, tmp_path, limit=3, load_engine=Loader(), cache=False, progress=False)
    s = report.summary("base", "mmlu")
    assert (s.n_error, s.complete) == (3, False)
    assert "scorer bug" in report.settings["task errors"]["base / mmlu"]
    assert report.summary("base", "overrefusal").complete


def test_model_that_fails_to_load(tmp_path):
    loader = Loader(broken={"bad"})
    report = run_audit(
        ["base", "bad"], ["mmlu"], tmp_path, limit=2, load_engine=loader, cache=False, progress=False
    )
    assert "no such weights" in report.settings["failed models"]["bad"]
    assert report.summary("bad", "mmlu").complete is False and report.summary("base", "mmlu").complete
    with pytest.raises(ModelLoadError, match="no such weights"):
        run_audit(["bad"], ["mmlu"], tmp_path / "x", limit=2, load_engine=loader, cache=False, progress=False)


def test_expand_models_run_directory_and_names(tmp_path):
    run = tmp_path / "sft-run"
    for step in ("step-100", "step-20", "notes"):
        (run / "checkpoints" / step).mkdir(parents=True)
    for step in ("step-100", "step-20"):
        (run / "checkpoints" / step / "adapter_config.json").write_text("{}")
    targets = expand_models(["default", str(run)])
    assert [t.name for t in targets] == ["default", "sft-run/step-20", "sft-run/step-100"]
    assert targets[1].spec == str(run / "checkpoints" / "step-20")
    assert [t.name for t in expand_models(["default", str(run)], ["base", "sft"])][1] == "sft/step-20"
    with pytest.raises(ConfigError, match="both called"):
        expand_models(["default", "default"])
    with pytest.raises(ConfigError, match="name"):
        expand_models(["default"], ["a", "b"])


def test_bad_pareto_axis_fails_before_any_model_loads(tmp_path):
    from tether.audit import AxisSpec, ParetoSpec

    loader = Loader()
    spec = ParetoSpec(safety=AxisSpec(tasks=["overrefusals"]), capability=AxisSpec(tasks=["mmlu"]))
    with pytest.raises(ConfigError, match="did you mean overrefusal"):
        run_audit(["base"], TASKS, tmp_path, pareto=spec, load_engine=loader, progress=False)
    assert loader.engines == {}


def test_out_dir_of_another_job_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"job": "sft"}')
    with pytest.raises(ConfigError, match="'sft' job"):
        run_audit(["base"], ["mmlu"], tmp_path, load_engine=Loader(), progress=False)


def test_end_to_end_tiny_model(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("TETHER_CACHE", raising=False)
    out = tmp_path / "audit"
    report = run_audit([str(tiny_model_dir)], TASKS, out, limit=3, progress=False)
    assert (out / "report.json").exists() and (out / "report.html").exists()
    assert AuditReport.load(out / "report.json").model_names() == [Path(tiny_model_dir).name]
    for task in TASKS:
        s = report.summary(Path(tiny_model_dir).name, task)
        assert s.n_total == 3 and s.n_scored + s.n_unscored == 3
    assert report.summary(Path(tiny_model_dir).name, "mmlu").n_scored == 3
    traces = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    assert {t["kind"] for t in traces} == {"generate", "score"}
    assert {t["stage"] for t in traces if t["kind"] == "generate"} == {"overrefusal"}
    sheet = report.judge_validation["refusal judge"]
    validated = {r["dataset"] for r in sheet["rows"] if r["role"] == "validation" and r["n"] > 0}
    assert {"labelled:test", "pyrit:refusal_extra.csv"} <= validated
    assert "degenerate detector" in report.judge_validation
    assert "harmful judge" not in report.judge_validation  # no task here uses it
    assert {d.name for d in report.datasets} == {"overrefusal (overrefusal)", "mmlu (mmlu)"}
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert (out / "audit.sqlite").exists()
    # The report's timeline is the run's stage spans: one row per model/task stage, in start order,
    # with the tokens of the model calls beneath it; the HTML draws it.
    name = Path(tiny_model_dir).name
    stages = [s.stage for s in report.timeline]
    assert stages == [f"{name}/{task}" for task in TASKS]
    generated = report.timeline[0]
    assert generated.calls >= 1 and generated.input_tokens > 0 and generated.output_tokens > 0
    assert report.timeline[1].output_tokens == 0 and report.timeline[1].input_tokens > 0  # scoring only
    assert all(s.seconds >= 0 for s in report.timeline)
    assert report.timeline[0].start <= report.timeline[1].start
    html = (out / "report.html").read_text()
    assert 'id="timeline"' in html and f"{name}/overrefusal" in html and 'alt="stage timeline"' in html


def test_generation_tasks_report_degenerate_answers_without_changing_scores(tmp_path):
    from types import SimpleNamespace

    from tether.audit.cache import NullCache
    from tether.audit.sweep import run_task
    from tether.evals.registry import Task
    from tether.evals.tasks._common import make_result
    from tether.evals.types import MetricSpec

    outputs = {"a": "The answer is 12.", "b": "12 12 12 12 12. " * 8, "c": "<|im_start|>assistant\n12"}
    items = [SimpleNamespace(id=k, category="all") for k in outputs]

    def run(engine, chunk, seed=0):
        return [
            make_result(
                engine, "sums", it, status="scored", score=1.0, prompt="What is 5 + 7?", output=outputs[it.id]
            )
            for it in chunk
        ]

    def task(kind):
        return Task(
            name="sums", description="d", sources=(), metric=MetricSpec(name="acc"), kind=kind,
            load=lambda: items, run=run,
        )  # fmt: skip

    engine = ScriptedEngine("unused")
    done = run_task(engine, task("generate"), items, model="m", cache=NullCache(), progress=False)
    assert [r.extra.get("degenerate") for r in done.results] == [None, "loop", "echo"]
    assert [r.score for r in done.results] == [1.0, 1.0, 1.0]  # a capability score is the task's own
    scored_only = run_task(engine, task("score"), items, model="m", cache=NullCache(), progress=False)
    assert all("degenerate" not in r.extra for r in scored_only.results)


def test_the_report_prints_the_harmful_judge_figures_for_a_jailbreak_audit(tmp_path, monkeypatch):
    from tether.audit.report import render_html
    from tether.audit.sweep import _judge_validation
    from tether.evals.registry import get_task

    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "cache"))
    figures = _judge_validation([get_task("jailbreak")])
    assert set(figures) == {"harmful judge", "degenerate detector"}
    sheet = figures["harmful judge"]
    rows = {(r["judge"], r["dataset"]): r for r in sheet["rows"]}
    for dataset in ("labelled:test", "pyrit:objective", "pyrit:harm"):
        assert (
            rows[(sheet["default"], dataset)]["n"] > 0
            and rows[(sheet["default"], dataset)]["role"] == "validation"
        )
    report = run_audit(
        ["m"], ["jailbreak"], tmp_path / "audit", limit=2, load_engine=Loader(), cache=False, progress=False
    )
    html = render_html(report, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "harmful judge — default: rules" in html and "pyrit:objective" in html and "labelled:test" in html
    assert "false-alarm rate" in html and "degenerate detector" in html
