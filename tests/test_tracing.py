"""OpenTelemetry spans: a tiny-model pipeline's spans pass the span schema, nest run → stage → call →
item, carry the items' own times and the token totals, and are read back by `tether runs trace`."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from tether.engine import EngineLike, Prompt, SamplingParams, ScoreRequest
from tether.runs import Run, Stage, StageContext, run_stages
from tether.tracing import SPANS_FILENAME, check_span, check_spans, format_tree, read_spans, token_totals


@dataclass(kw_only=True)
class _Ctx(StageContext):
    engine: EngineLike


PROMPTS = [
    Prompt(id=f"p{i}", text=t) for i, t in enumerate(["Hi", "Tell me a long story about a cat", "2+2?"])
]


def _answer(ctx: _Ctx) -> dict:
    from tether.evals.tasks._common import judge_traced
    from tether.judges.refusal import RuleRefusalJudge

    out = ctx.engine.generate(PROMPTS, SamplingParams(max_new_tokens=6), stage="answer", progress=False)
    judge_traced(
        RuleRefusalJudge(),
        [(p.text, c.text) for p, c in zip(PROMPTS, out, strict=True)],
        [p.id for p in PROMPTS],
    )
    return {
        "tokens": sum(c.completion_tokens for c in out),
        "prompt_tokens": sum(c.prompt_tokens for c in out),
    }


def _score(ctx: _Ctx) -> dict:
    requests = [ScoreRequest(id="q1", context="The sky is", continuations=[" blue", " green"])]
    ctx.engine.score(requests, stage="score", progress=False)
    return {}


@pytest.fixture(scope="module")
def traced_run(tiny_model_dir, tmp_path_factory):
    from tether.engine import Engine

    root = tmp_path_factory.mktemp("runs")
    run = Run.create("traced", root=root, job="test")
    engine = Engine.from_spec(str(tiny_model_dir), tracer=run.tracer)
    summaries = run_stages(
        run, [Stage("answer", _answer), Stage("score", _score)], _Ctx(run=run, engine=engine)
    )
    run.finish()
    return run, read_spans(run.path / SPANS_FILENAME), summaries


def test_every_span_of_a_pipeline_run_passes_the_schema(traced_run):
    _, spans, _ = traced_run
    assert spans and check_spans(spans) == []
    assert len({s["traceId"] for s in spans}) == 1  # one trace per run


def test_spans_nest_run_stage_call_item(traced_run):
    run, spans, _ = traced_run
    by_id = {s["spanId"]: s for s in spans}
    [root] = [s for s in spans if not s["parentSpanId"]]
    assert root["name"] == f"run {run.name}"
    stages = {s["attributes"]["tether.stage"]: s for s in spans if s["name"].startswith("stage ")}
    assert set(stages) == {"answer", "score"} and all(
        s["parentSpanId"] == root["spanId"] for s in stages.values()
    )
    engine_name = next(
        s["attributes"]["gen_ai.request.model"] for s in spans if "gen_ai.request.model" in s["attributes"]
    )
    [call] = [
        s for s in spans if s["parentSpanId"] == stages["answer"]["spanId"] and s["name"].startswith("chat ")
    ]
    assert call["name"] == f"chat {engine_name}" and call["kind"] == 3  # SpanKind.CLIENT
    assert call["attributes"]["gen_ai.request.max_tokens"] == 6
    assert call["attributes"]["gen_ai.request.temperature"] == 0.0
    items = [s for s in spans if s["parentSpanId"] == call["spanId"]]
    assert sorted(s["attributes"]["tether.item.id"] for s in items) == ["p0", "p1", "p2"]
    assert all(call["start"] <= s["start"] <= s["end"] <= call["end"] for s in items)
    judged = [s for s in spans if "tether.judge.verdict" in s["attributes"]]
    assert sorted(s["attributes"]["tether.item.id"] for s in judged) == ["p0", "p1", "p2"]
    assert all(by_id[by_id[s["parentSpanId"]]["parentSpanId"]]["name"] == "stage answer" for s in judged)
    [score] = [
        s for s in spans if s["name"].startswith("score ") and s["parentSpanId"] == stages["score"]["spanId"]
    ]
    assert [s["attributes"]["tether.item.id"] for s in spans if s["parentSpanId"] == score["spanId"]] == [
        "q1"
    ]


def test_items_carry_their_own_times_and_the_token_totals(traced_run):
    _, spans, summaries = traced_run
    [call] = [s for s in spans if s["name"].startswith("chat ") and "tether.item.id" not in s["attributes"]]
    items = [s for s in spans if s["parentSpanId"] == call["spanId"]]
    assert {s["attributes"]["tether.latency.kind"] for s in items} == {"own"}  # the decode loop's times
    assert len({(s["start"], s["end"]) for s in items}) == 3  # not the batch's time three times over
    out_tokens = summaries["answer"]["tokens"]
    assert call["attributes"]["gen_ai.usage.output_tokens"] == out_tokens
    assert sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in items) == out_tokens
    assert call["attributes"]["gen_ai.usage.input_tokens"] == summaries["answer"]["prompt_tokens"]
    assert call["attributes"]["tether.prefix.reused_tokens"] == 0  # greedy under 'auto' reuses nothing
    calls, _, tokens_out = token_totals(spans)
    assert calls == 2 and tokens_out == out_tokens  # the items are not counted twice


def test_reward_embedder_and_train_step_spans(tiny_model_dir, tmp_path):
    """The calls that are not the engine's: reward-model scoring (a child per pair with its reward),
    the embedder (tokens counted) and the training callback (one span per logged interval with the
    logged numbers), each under its stage and each passing the schema."""
    from types import SimpleNamespace

    from tether.train.lora import tracer_callback
    from tether.train.monitors import Embedder
    from tether.train.reward import RewardModel

    reward_model = RewardModel.from_spec(str(tiny_model_dir), device="cpu")
    rewards: list[float] = []

    def reward(ctx) -> dict:
        rewards.extend(reward_model.score(["Sum up: cats", "Sum up: dogs"], ["Cats.", "Dogs bark."]))
        return {}

    def embed(ctx) -> dict:
        Embedder().embed(["a cat", "a dog", "the sky"])
        return {}

    def train(ctx) -> dict:
        callback = tracer_callback(ctx.run.tracer, "sft")
        state = SimpleNamespace(global_step=0)
        callback.on_train_begin(None, state, None)
        for step, loss in ((1, 2.5), (2, 2.1)):
            state.global_step = step
            callback.on_log(None, state, None, logs={"loss": loss, "learning_rate": 1e-4})
        return {}

    run = Run.create("other-calls", root=tmp_path, job="test")
    run_stages(
        run, [Stage("reward", reward), Stage("embed", embed), Stage("train", train)], StageContext(run=run)
    )
    run.finish()
    spans = read_spans(run.path / SPANS_FILENAME)
    assert check_spans(spans) == []
    stage_of = {
        s["spanId"]: s["attributes"].get("tether.stage") for s in spans if s["name"].startswith("stage ")
    }
    [call] = [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "reward" and s["kind"] == 3]
    assert stage_of[call["parentSpanId"]] == "reward" and call["attributes"]["tether.batch.items"] == 2
    pairs = [s for s in spans if s["parentSpanId"] == call["spanId"]]
    assert [s["attributes"]["tether.reward"] for s in pairs] == pytest.approx(rewards)
    assert all(s["attributes"]["gen_ai.usage.input_tokens"] > 0 for s in pairs)
    [embedding] = [s for s in spans if s["name"] == "embeddings all-MiniLM-L6-v2"]
    assert stage_of[embedding["parentSpanId"]] == "embed"
    assert embedding["attributes"]["gen_ai.usage.input_tokens"] >= 6  # three texts, [CLS] and [SEP] each
    steps = [s for s in spans if s["name"] == "train_step sft"]
    assert [s["attributes"]["tether.train.loss"] for s in steps] == [2.5, 2.1]
    assert all(stage_of[s["parentSpanId"]] == "train" for s in steps)
    assert steps[0]["end"] <= steps[1]["start"] + 1  # consecutive intervals, not one time twice


def test_the_file_is_otlp_json_and_traces_jsonl_links_to_it(traced_run):
    run, spans, _ = traced_run
    request = json.loads((run.path / SPANS_FILENAME).read_text().splitlines()[0])
    raw = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert isinstance(raw["startTimeUnixNano"], str) and isinstance(raw["kind"], int)
    assert len(raw["traceId"]) == 32 and int(raw["traceId"], 16)
    lines = [json.loads(x) for x in (run.path / "traces.jsonl").read_text().splitlines()]
    ids = {s["spanId"] for s in spans}
    assert lines and all(line["span_id"] in ids for line in lines)


def test_runs_trace_prints_the_tree_and_checks_it(traced_run):
    from typer.testing import CliRunner

    from tether.cli import app

    run, spans, summaries = traced_run
    result = CliRunner().invoke(app, ["runs", "trace", str(run.path)])
    assert result.exit_code == 0, result.output
    assert "stage answer" in result.output and "(3 item spans; own time median" in result.output
    assert f"out {summaries['answer']['tokens']}" in result.output.splitlines()[-1]
    assert format_tree(spans).splitlines()[-1] == result.output.strip().splitlines()[-1]
    checked = CliRunner().invoke(app, ["runs", "trace", str(run.path), "--check"])
    assert checked.exit_code == 0 and checked.output.startswith("ok:")


def _good_span() -> dict:
    return {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "parentSpanId": "00f067aa0ba902b7",
        "name": "chat m",
        "kind": 3,
        "start": 10,
        "end": 20,
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "gen_ai.usage.input_tokens": 3,
        },
        "resource": {"tether.run": "r"},
    }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"traceId": "xyz"}, "traceId"),
        ({"spanId": "0" * 16}, "spanId"),
        ({"end": 5}, "end before start"),
        ({"name": "chat other"}, "not 'chat m'"),
        ({"attributes": {"gen_ai.operation.name": "chat"}}, "gen_ai.request.model"),
        ({"attributes": {"gen_ai.operation.name": "guess", "gen_ai.request.model": "m"}}, "is not one of"),
        ({"attributes": {**_good_span()["attributes"], "gen_ai.usage.input_tokens": -1}}, "non-negative"),
        ({"resource": {}}, "tether.run"),
        ({"parentSpanId": ""}, "without a parent"),
        ({"name": "stage x", "attributes": {}}, "without tether.stage"),
    ],
)
def test_the_schema_check_finds_each_problem(change, problem):
    assert check_span(_good_span()) == []
    assert any(problem in p for p in check_span({**_good_span(), **change}))


def test_stage_timeline_takes_each_stages_latest_run_and_its_tokens():
    from tether.tracing import stage_timeline

    def span(sid, parent, name, start, end, **attributes):
        return {"spanId": sid, "parentSpanId": parent, "name": name, "start": start, "end": end,
                "attributes": attributes}  # fmt: skip

    spans = [
        span("r1", "", "run a", 0, 100),
        span("s1", "r1", "stage gen", 0, 40, **{"tether.stage": "gen"}),  # interrupted, then resumed
        span("r2", "", "run a", 200, 400),
        span("s2", "r2", "stage gen", 200, 300, **{"tether.stage": "gen"}),
        span(
            "c",
            "s2",
            "chat m",
            210,
            290,
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 7,
                "gen_ai.usage.output_tokens": 5,
            },
        ),  # fmt: skip
        span(
            "i",
            "c",
            "chat m",
            210,
            250,
            **{
                "gen_ai.operation.name": "chat",
                "tether.item.id": "x",
                "gen_ai.usage.input_tokens": 7,
                "gen_ai.usage.output_tokens": 5,
            },
        ),  # fmt: skip
        span("s3", "r2", "stage score", 300, 350, **{"tether.stage": "score"}),
    ]
    rows = stage_timeline(spans)
    assert [(r["stage"], r["start_ns"], r["calls"], r["input_tokens"], r["output_tokens"]) for r in rows] == [
        ("gen", 200, 1, 7, 5),  # the item span is not counted twice
        ("score", 300, 0, 0, 0),
    ]
    assert rows[0]["seconds"] == 100 / 1e9


def test_red_team_queries_carry_their_attack_id_and_verdict(tiny_model_dir, tmp_path):
    """Every target query of a campaign is a model-call item and a judge item, both named by the
    query's attack id (strategy/goal/query/template); the judge item carries the verdict the attack
    record keeps."""
    from tether.engine import Engine
    from tether.judges.harmful import RuleHarmfulJudge
    from tether.redteam.attacks import AttackContext, run_goals
    from tether.redteam.config import RedteamConfig
    from tether.redteam.goals import Goal

    goals = [
        Goal(id=f"g{i}", text=f"Explain how to pick lock {i}", category="illegal", source="t") for i in (1, 2)
    ]
    records: list[dict] = []
    run = Run.create("redteam-spans", root=tmp_path, job="test")
    engine = Engine.from_spec(str(tiny_model_dir), tracer=run.tracer)
    cfg = RedteamConfig(queries_per_goal=2, goals_in_flight=2, target_max_new_tokens=4)
    replies = iter(
        ["Sure. Step 1: insert a tension wrench and apply 2 grams of pressure.", "I can't help."] * 2
    )

    class Answering:
        """The tiny model's traced calls, with readable replies (its own are blank lines)."""

        def __getattr__(self, name):
            return getattr(engine, name)

        def generate(self, prompts, params, **kw):
            out = engine.generate(prompts, params, **kw)
            return [c.model_copy(update={"text": next(replies)}) for c in out]

    def attack(ctx) -> dict:
        run_goals(
            goals,
            "templates",
            target=Answering(),
            attacker=None,
            judge=RuleHarmfulJudge(),
            ctx=AttackContext(config=cfg),
            on_done=records.append,
        )
        return {}

    run_stages(run, [Stage("attack", attack)], StageContext(run=run))
    run.finish()
    spans = read_spans(run.path / SPANS_FILENAME)
    assert check_spans(spans) == []
    calls = [s for s in spans if s["attributes"].get("tether.stage") == "redteam/templates/target"]
    call_items = {
        s["attributes"]["tether.item.id"]: s["attributes"]
        for s in calls
        if "tether.item.id" in s["attributes"]
    }
    judged = {
        s["attributes"]["tether.item.id"]: s["attributes"]
        for s in spans
        if s["name"].startswith("judge ") and "tether.item.id" in s["attributes"]
    }
    attempts = [(r["goal_id"], a) for r in records for a in r["attempts"]]
    assert len(attempts) == 4 and judged and set(judged) <= set(call_items)
    for goal_id, a in attempts:
        item_id = f"target/{goal_id}/{a['query']}"
        attack_id = call_items[item_id]["tether.attack.id"]
        assert attack_id.startswith(f"templates/{goal_id}/{a['query']}/")
        assert attack_id.endswith(a["meta"]["attack"])
        if a["verdict"] is not None:
            assert judged[item_id]["tether.judge.verdict"] == a["verdict"]
            assert judged[item_id]["tether.attack.id"] == attack_id
