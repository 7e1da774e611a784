"""Bad inputs for every command in the README's table, and a harness that runs them in-process.

``make_inputs(root)`` writes the files the cases point at (bad encodings, directories where files
belong, corrupt JSON, databases that are not label databases, ...). ``CASES`` says, per invocation,
the exit code and the words the message must contain (the file, field or flag it names).
``invoke(argv)`` runs the CLI with every model load and server start replaced by a sentinel
exception, so a case that is not rejected before a model loads fails loudly instead of loading one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner


class ModelLoadReached(Exception):
    """A command got as far as loading a model (or starting a server): the bad input was not
    rejected up front. Not a TetherError, so the CLI's error boundary lets it through."""


LATIN1 = '{"id": "p1", "text": "caf\xe9"}\n'.encode("latin-1")


def _manifest(name: str, **extra) -> str:
    return json.dumps({"name": name, "job": "unit", "created": "2025-01-01T00:00:00", "stages": {}, **extra})


def make_inputs(root: Path) -> Path:
    """Write every input file the cases name into ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | bytes] = {
        "prompts.jsonl": '{"id": "p1", "text": "Hello"}\n{"id": "p2", "text": "Name a colour"}\n',
        "dup.jsonl": '{"id": "p1", "text": "Hello"}\n{"id": "p1", "text": "Hi again"}\n',
        "bad.jsonl": '{"id": "p1", "text": "Hello"}\n{"id": "p2", "text": oops}\n',
        "latin1.jsonl": LATIN1,
        "items.jsonl": '{"id": "1", "context": "1+1=", "continuations": [" 2", " 3"], "answer": 0}\n',
        "answer5.jsonl": '{"id": "1", "context": "1+1=", "continuations": [" 2", " 3"], "answer": 5}\n',
        "answer_neg.jsonl": '{"id": "1", "context": "1+1=", "continuations": [" 2", " 3"], "answer": -1}\n',
        "items_dup.jsonl": '{"id": "1", "context": "a", "continuations": [" b"]}\n'
        '{"id": "1", "context": "c", "continuations": [" d"]}\n',
        "cands.jsonl": json.dumps(
            {
                "doc_id": "d1",
                "document": "A text.",
                "candidates": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}],
            }
        )
        + "\n",
        "pairs.jsonl": json.dumps(
            {
                "prompt": "p",
                "chosen": "a",
                "rejected": "b",
                "doc_id": "d1",
                "annotator": "ai",
                "reason": "other",
                "chosen_id": "a",
                "rejected_id": "b",
            }
        )
        + "\n",  # fmt: skip
        "cands-bad.jsonl": json.dumps(
            {
                "doc_id": "d1",
                "document": "A text.",
                "candidates": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}],
            }
        )
        + "\n{oops\n",
        "pairs-bad.jsonl": '{"prompt": "p", "chosen": "a"}\n',
        "notdb.db": "this is not a database\n",
        "latin1.yaml": "model: caf\xe9\n".encode("latin-1"),
        "list.yaml": "- a\n- b\n",
        "cai-typo.yaml": "model: defualt\n",
        "cai-critic.yaml": "critic: gemma3-27m\n",
        "cai-sources.yaml": "prompts:\n  harmful_sources: [harmbenchh]\n  benign_sources: [sciq, trivia]\n",
        "cai-const.yaml": "constitution: missing-constitution.yaml\n",
        "cai-tag.yaml": "constitution: const-tag.yaml\n",
        "cai-tasks.yaml": "audit:\n  tasks: [harmfull_refusal]\n",
        "rlhf-typo.yaml": "policy: defualt\n",
        "redteam-strat.yaml": "strategies: [templates, pear]\n",
        "redteam-gcg.yaml": "strategies: [pair, gcg]\ntarget: openai:some-model\n",
        "redteam-typo.yaml": "target: defualt\n",
        "redteam-goals.yaml": "goals:\n  categories: [illegal]\n  exclude_categories: [illegal]\n",
        "redteam-cats.yaml": "goals:\n  categories: [ilegal]\n",
        "rlhf-docs.yaml": "documents:\n  source: no-such-docs.jsonl\n",
        "rlhf-pairs.yaml": "pairs: no-such-pairs.jsonl\n",
        "demo-typo.yaml": "model: ./no-such-model\n",
        "demo-tasks.yaml": "audit_tasks: [overrefusl]\n",
        "const-tag.yaml": "principles:\n  - name: harm\n    critique_request: Say what is harmful.\n"
        "    revision_request: Rewrite it.\n    tags: [harmfull]\n",
        "const-latin1.yaml": "principles:\n  - name: caf\xe9\n".encode("latin-1"),
        "report-bad.json": '{"models": [',
        "report-latin1.json": b'{"models": "\xff"}',
        "gate-latin1.yaml": "rules:\n  - metric: caf\xe9\n".encode("latin-1"),
        "task-latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
        "term.yaml": "lr: 0.001\n",
        "twice.yaml": "model: default\nseed: 1\nmodel: gemma3-270m\n",
        "empty_cont.jsonl": '{"id": "1", "context": "a", "continuations": [" b", ""]}\n',
        "empty.yaml": "{}\n",
    }
    for name, content in files.items():
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    (root / "adir").mkdir(exist_ok=True)
    (root / "model").mkdir(exist_ok=True)  # passes for an HF model directory until something loads it
    (root / "model" / "config.json").write_text("{}", encoding="utf-8")
    # A directory that looks like a reward model from outside, and one whose config is incomplete.
    (root / "rm").mkdir(exist_ok=True)
    meta = {"base": "default", "max_length": 8, "mean": 0.0, "std": 1.0}
    (root / "rm" / "reward_model.json").write_text(json.dumps(meta), encoding="utf-8")
    (root / "rm" / "reward_head.safetensors").write_bytes(b"")
    (root / "rm-broken").mkdir(exist_ok=True)
    (root / "rm-broken" / "reward_model.json").write_text("{}", encoding="utf-8")
    other = sqlite3.connect(root / "other.sqlite")
    other.execute("CREATE TABLE IF NOT EXISTS results (x TEXT)")
    other.commit()
    other.close()
    # An adapter whose config is not JSON, and one that names no base.
    (root / "adapter-bad").mkdir(exist_ok=True)
    (root / "adapter-bad" / "adapter_config.json").write_text("{", encoding="utf-8")
    (root / "adapter-nobase").mkdir(exist_ok=True)
    (root / "adapter-nobase" / "adapter_config.json").write_text("{}", encoding="utf-8")
    # Runs: one good, one with a corrupt manifest, one whose manifest is not a mapping.
    runs = root / "runs-mixed"
    for name, text in (("good", _manifest("good")), ("broken", "{"), ("listy", "[]")):
        (runs / name).mkdir(parents=True, exist_ok=True)
        (runs / name / "manifest.json").write_text(text, encoding="utf-8")
    (runs / "latin").mkdir(exist_ok=True)
    (runs / "latin" / "manifest.json").write_bytes(b'{"name": "\xff"}')
    (runs / "spansbad").mkdir(exist_ok=True)
    (runs / "spansbad" / "manifest.json").write_text(_manifest("spansbad"), encoding="utf-8")
    (runs / "spansbad" / "traces.otlp.jsonl").write_text(
        '{"resourceSpans": []}\nnot json\n', encoding="utf-8"
    )
    return root


@dataclass(frozen=True)
class Case:
    """One bad invocation: ``argv`` (``{d}`` is the inputs folder, ``{tiny}`` a model directory),
    the exit code it must give and words its message must hold. ``{tiny}`` may be a directory that
    only looks like a model (``{d}/model``): no case gets as far as loading it. ``''`` in ``argv`` is an empty
    argument."""

    id: str
    argv: tuple[str, ...]
    needs: tuple[str, ...]  # words the output must contain (the file, field or flag named)
    code: int = 1
    forbid: tuple[str, ...] = ()  # words it must not contain (a hint naming a flag the command lacks)

    def args(self, d: Path, tiny: str) -> list[str]:
        return ["" if a == "''" else a.format(d=d, tiny=tiny) for a in self.argv]


def case(id: str, cmd: str, *needs: str, code: int = 1, forbid: tuple[str, ...] = ()) -> Case:
    return Case(id, tuple(cmd.split()), needs, code, forbid)


T = "{tiny}"
P = "{d}/prompts.jsonl"
CASES: list[Case] = [
    # --- generate
    case("gen-latin1", f"generate {T} --prompts {{d}}/latin1.jsonl --out {{d}}/o.jsonl", "latin1.jsonl:1", "UTF-8"),
    case("gen-prompts-dir", f"generate {T} --prompts {{d}}/adir --out {{d}}/o.jsonl", "adir", "directory"),
    case("gen-out-dir", f"generate {T} --prompts {P} --out {{d}}/adir", "--out", "directory"),
    case("gen-out-unwritable", f"generate {T} --prompts {P} --out {P}/o.jsonl", "--out", "prompts.jsonl"),
    case("gen-n0", f"generate {T} -p hi -n 0", "-n"),
    case("gen-temp-neg", f"generate {T} -p hi --temperature -1", "--temperature"),
    case("gen-top-p-2", f"generate {T} -p hi --top-p 2", "--top-p"),
    case("gen-top-p-0", f"generate {T} -p hi --top-p 0", "--top-p"),
    case("gen-max-new-0", f"generate {T} -p hi --max-new-tokens 0", "--max-new-tokens"),
    case("gen-stop-empty", f"generate {T} -p hi --stop ''", "--stop"),
    case("gen-dup-ids", f"generate {T} --prompts {{d}}/dup.jsonl --out {{d}}/o.jsonl", "dup.jsonl:2", "p1"),
    case("gen-on-error", f"generate {T} --prompts {P} --out {{d}}/o.jsonl --on-error bogus", "--on-error"),
    case("gen-model-typo", "generate defualt -p hi", "defualt", "default"),
    case("gen-model-gemma-typo", "generate gemma3-207m -p hi", "gemma3-270m"),
    case("gen-model-missing-path", "generate ./no-such-model -p hi", "no-such-model"),
    case("gen-model-missing-gguf", "generate ./no-such.gguf -p hi", "no-such.gguf"),
    case("gen-model-adapter-bad", "generate {d}/adapter-bad -p hi", "adapter_config.json"),
    case("gen-model-adapter-nobase", "generate {d}/adapter-nobase -p hi", "adapter_config.json"),
    case("gen-model-empty-dir", "generate {d}/adir -p hi", "adir"),
    case("gen-model-not-gguf", f"generate {P} -p hi", "prompts.jsonl"),
    case("gen-set-bad", f"generate {T} -p hi --set batch_size=0", "batch_size"),
    case("gen-set-dtype", f"generate {T} -p hi --set engine.dtype=fp8", "dtype"),
    case("gen-no-model", "generate", "'model'"),
    case("gen-empty-prompt", f"generate {T} --prompt ''", "--prompt"),
    case("gen-both", f"generate {T} -p hi --prompts {P}", "--prompt"),
    case("gen-prompts-no-out", f"generate {T} --prompts {P}", "--out"),
    case("gen-unknown-flag", f"generate {T} -p hi --bogus", "--bogus"),
    case("gen-n-text", f"generate {T} -p hi -n abc", "-n"),
    case("gen-out-is-input", f"generate {T} --prompts {P} --out {P}", "--prompts", "overwrite"),
    case("gen-temp-inf", f"generate {T} -p hi --temperature inf", "--temperature"),
    case("gen-top-p-nan", f"generate {T} -p hi --top-p nan", "--top-p"),
    case("gen-bad-json-hint", f"generate {T} --prompts {{d}}/bad.jsonl --out {{d}}/o.jsonl", "bad.jsonl:2", "--on-error skip"),
    # --- score
    case("score-latin1", f"score {T} --items {{d}}/latin1.jsonl", "latin1.jsonl:1", "UTF-8"),
    case("score-dir", f"score {T} --items {{d}}/adir", "adir", "directory"),
    case("score-answer5", f"score {T} --items {{d}}/answer5.jsonl", "answer5.jsonl:1", "answer"),
    case("score-answer-neg", f"score {T} --items {{d}}/answer_neg.jsonl", "answer_neg.jsonl:1", "answer"),
    case("score-dup", f"score {T} --items {{d}}/items_dup.jsonl", "items_dup.jsonl:2", "'1'"),
    case("score-out-dir", f"score {T} --items {{d}}/items.jsonl --out {{d}}/adir", "--out", "directory"),
    case("score-on-error", f"score {T} --items {{d}}/items.jsonl --on-error bogus", "--on-error"),
    case("score-out-is-input", f"score {T} --items {{d}}/items.jsonl --out {{d}}/items.jsonl", "--items", "overwrite"),
    case("score-empty-continuation", f"score {T} --items {{d}}/empty_cont.jsonl", "empty_cont.jsonl:1", "continuation"),
    case("score-no-items", f"score {T}", "--items"),
    case("score-model-typo", "score defualt --items {d}/items.jsonl", "default"),
    # --- demo
    case("demo-latin1", "demo {d}/latin1.yaml", "latin1.yaml:1", "UTF-8"),
    case("demo-dir", "demo {d}/adir", "adir", "directory"),
    case("demo-missing", "demo {d}/no-such.yaml", "no-such.yaml"),
    case("demo-model-path", "demo {d}/demo-typo.yaml", "no-such-model"),
    case("demo-model-typo", "demo --set model=defualt", "default"),
    case("demo-tasks", "demo {d}/demo-tasks.yaml", "overrefusl"),
    case("demo-runs-file", f"demo --runs {P}", "--runs"),
    # --- models show
    case("models-typo", "models show defualt", "default"),
    case("models-adapter-bad", "models show {d}/adapter-bad", "adapter_config.json"),
    case("models-dir", "models show {d}/adir", "adir"),
    case("models-set", "models show default --set dtype=fp8", "dtype"),
    # --- runs
    case("runs-list-missing", "runs list --root {d}/no-such-runs", "no-such-runs"),
    case("runs-list-file", f"runs list --root {P}", "prompts.jsonl"),
    case("runs-show-broken", "runs show broken --root {d}/runs-mixed", "manifest.json"),
    case("runs-show-listy", "runs show listy --root {d}/runs-mixed", "manifest.json"),
    case("runs-show-latin", "runs show latin --root {d}/runs-mixed", "manifest.json"),
    case("runs-show-missing", "runs show nope --root {d}/runs-mixed", "nope"),
    case("runs-trace-missing", "runs trace nope --root {d}/runs-mixed", "nope"),
    case("runs-trace-no-spans", "runs trace good --root {d}/runs-mixed", "traces.otlp.jsonl"),
    case("runs-trace-bad-line", "runs trace spansbad --root {d}/runs-mixed", "traces.otlp.jsonl:2"),
    case("serve-missing-model", "serve {d}/nope", "nope"),
    case("serve-served-spec", "serve openai:x", "SPEC"),
    case("serve-key-env", "serve default --api-key-env TETHER_TEST_UNSET_KEY", "TETHER_TEST_UNSET_KEY"),
    case("serve-port", "serve default --port 99999", "--port"),
    # --- config
    case("config-show-typo", "config show enigne", "engine"),
    case("config-validate-latin1", "config validate {d}/latin1.yaml --kind demo", "latin1.yaml:1", "UTF-8"),
    case("config-validate-dir", "config validate {d}/adir --kind demo", "adir", "directory"),
    case("config-validate-missing", "config validate {d}/no-such.yaml --kind demo", "no-such.yaml"),
    case("config-validate-list", "config validate {d}/list.yaml --kind demo", "list.yaml"),
    case("config-validate-kind", "config validate {d}/list.yaml --kind bogus", "--kind"),
    case("config-validate-model", "config validate {d}/cai-typo.yaml", "cai-typo.yaml:1", "default"),
    case("config-validate-critic", "config validate {d}/cai-critic.yaml", "cai-critic.yaml:1", "gemma3-270m"),
    case("config-validate-sources", "config validate {d}/cai-sources.yaml", "harmbenchh", "trivia"),
    case("config-validate-const", "config validate {d}/cai-const.yaml", "missing-constitution.yaml"),
    case("config-validate-tag", "config validate {d}/cai-tag.yaml", "harmfull"),
    case("config-validate-tasks", "config validate {d}/cai-tasks.yaml", "harmfull_refusal"),
    case("config-validate-rlhf-policy", "config validate {d}/rlhf-typo.yaml", "rlhf-typo.yaml:1", "default"),
    case("config-validate-rlhf-docs", "config validate {d}/rlhf-docs.yaml", "no-such-docs.jsonl"),
    case("config-validate-rlhf-pairs", "config validate {d}/rlhf-pairs.yaml", "no-such-pairs.jsonl"),
    case("config-validate-twice", "config validate {d}/twice.yaml --kind demo", "twice.yaml:3", "'model' appears twice"),
    case("config-validate-set", "config validate {d}/rlhf-typo.yaml --set seed=x", "--set", "seed"),
    # --- frontier
    case("frontier-alpha", f"frontier {T} {T} --set interpolation.alphas=[0.5,1.5]", "interpolation.alphas"),
    case("frontier-empty", f"frontier {T} {T} --set interpolation.alphas=[] --set per_block.enabled=false", "no candidates"),
    case("frontier-replay", f"frontier {T} {T} --set replay.fractions=[1.5]", "replay.fractions", "between 0 and 1"),
    case("frontier-model-typo", f"frontier defualt {T}", "BASE", "default"),
    case("frontier-out-file", f"frontier {T} {T} --out {P}", "--out"),
    case("frontier-tasks", f"frontier {T} {T} --set tasks=harmfull_refusal", "harmful_refusal"),
    case("frontier-retrain-full", f"frontier {T} {T} --set retrain.steps=[5]", "retrain.steps", "not a LoRA adapter"),
    case("frontier-multi-full", f"frontier {T} {T} --set multi_objective.lambdas=[1]", "multi_objective.lambdas", "not a LoRA adapter"),
    case("frontier-multi-task", f"frontier {T} {T} --set multi_objective.lambdas=[1] --set multi_objective.safety_tasks=harmfull", "multi_objective.safety_tasks"),
    case("frontier-multi-mc", f"frontier {T} {T} --set multi_objective.lambdas=[1] --set multi_objective.safety_tasks=sciq", "multi_objective.safety_tasks", "generation task"),
    case("frontier-levels-off", f"frontier {T} {T} --set per_block.levels=5 --set per_block.enabled=false", "per_block.levels"),
    # --- audit
    case("audit-no-models", "audit --tasks mmlu", "model"),
    case("audit-model-typo", "audit defualt --tasks mmlu --limit 1 --out {d}/audit", "default"),
    case("audit-task-typo", f"audit {T} --tasks harmfull_refusal --out {{d}}/audit", "harmful_refusal"),
    case("audit-out-file", f"audit {T} --tasks mmlu --out {P}", "--out"),
    case("audit-out-unwritable", f"audit {T} --tasks mmlu --out {P}/x", "--out"),
    case("audit-cache-dir", f"audit {T} --tasks mmlu --out {{d}}/audit --cache {{d}}/adir", "--cache"),
    case("audit-cache-notdb", f"audit {T} --tasks mmlu --out {{d}}/audit --cache {{d}}/notdb.db", "--cache", "notdb.db"),
    case("audit-cache-other", f"audit {T} --tasks mmlu --out {{d}}/audit --cache {{d}}/other.sqlite", "--cache"),
    case("audit-limit-0", f"audit {T} --tasks mmlu --limit 0", "--limit"),
    case("audit-names", f"audit {T} --tasks mmlu --name a,b --out {{d}}/audit", "--name"),
    case("audit-axis", f"audit {T} --tasks mmlu --safety-axis bogus --out {{d}}/audit", "bogus"),
    case("audit-task-file-latin1", f"audit {T} --tasks {{d}}/task-latin1.yaml --out {{d}}/audit", "task-latin1.yaml"),
    case("audit-task-dir", f"audit {T} --tasks {{d}}/adir --out {{d}}/audit", "adir"),
    case("audit-set", f"audit {T} --tasks mmlu --out {{d}}/audit --set batch_size=0", "batch_size"),
    # --- cai
    case("cai-run-latin1", "cai run {d}/latin1.yaml --root {d}/runs", "latin1.yaml:1", "UTF-8"),
    case("cai-run-missing", "cai run {d}/no-such.yaml --root {d}/runs", "no-such.yaml"),
    case("cai-run-model", "cai run {d}/cai-typo.yaml --root {d}/runs", "default"),
    case("cai-run-set-model", "cai run {d}/term.yaml --root {d}/runs", "term.yaml"),
    case("cai-run-const", "cai run {d}/cai-const.yaml --root {d}/runs", "missing-constitution.yaml"),
    case("cai-run-tag", "cai run {d}/cai-tag.yaml --root {d}/runs", "harmfull"),
    case("cai-run-sources", "cai run {d}/cai-sources.yaml --root {d}/runs", "harmbenchh"),
    case("cai-run-root-file", f"cai run {{d}}/empty.yaml --root {P}", "--root"),
    case("cai-run-rounds", "cai run {d}/cai-typo.yaml --root {d}/runs --set rounds=-1", "--set", "rounds"),
    case("cai-run-name", "cai run {d}/empty.yaml --root {d}/runs --name ../escape", "'../escape'"),
    case("cai-validate-missing", "cai validate {d}/no-such.yaml", "no-such.yaml"),
    case("cai-validate-dir", "cai validate {d}/adir", "adir", "directory"),
    case("cai-validate-latin1", "cai validate {d}/const-latin1.yaml", "const-latin1.yaml:2", "UTF-8"),
    case("cai-validate-tag", "cai validate {d}/const-tag.yaml", "const-tag.yaml:5", "harmfull", "harmful"),
    # --- redteam
    case("redteam-run-strategy", "redteam run {d}/redteam-strat.yaml --out {d}/runs/rt", "redteam-strat.yaml:1", "strategies", "pear"),
    case("redteam-run-gcg", "redteam run {d}/redteam-gcg.yaml --out {d}/runs/rt", "target", "gcg needs the target's weights"),
    case("redteam-run-target", "redteam run {d}/redteam-typo.yaml --out {d}/runs/rt", "target", "default"),
    case("redteam-run-goals", "redteam run {d}/redteam-goals.yaml --out {d}/runs/rt", "goals", "empty"),
    case("redteam-run-cats", "redteam run {d}/redteam-cats.yaml --out {d}/runs/rt", "goals.categories", "ilegal"),
    case("redteam-run-set", "redteam run {d}/empty.yaml --out {d}/runs/rt --set queries_per_goal=0", "--set", "queries_per_goal"),
    case("redteam-run-out-file", f"redteam run {{d}}/empty.yaml --out {P}", "--out"),
    case("redteam-run-latin1", "redteam run {d}/latin1.yaml", "latin1.yaml:1", "UTF-8"),
    case("redteam-export-missing", "redteam export {d}/no-such-run", "no-such-run"),
    case("redteam-export-no-attacks", "redteam export {d}/runs-mixed/good", "attack records"),
    case("redteam-export-out-dir", "redteam export {d}/runs-mixed/good --out {d}/adir", "--out", "directory"),
    # --- interp
    case("interp-dir-model", "interp refusal-direction defualt", "MODEL 1", "default"),
    case("interp-dir-set", f"interp refusal-direction {T} --set split.n_tset=3", "--set", "n_tset"),
    case("interp-dir-source", f"interp refusal-direction {T} --set split.harmful_sources=[harmbench]", "harmful_sources"),
    case("interp-dir-task", f"interp refusal-direction {T} --set capability_tasks=arc_esy", "capability_tasks", "arc_easy"),
    case("interp-dir-out-file", f"interp refusal-direction {T} --out {P}", "--out"),
    # --- train
    case("train-sft-fields", f"train sft {P} --base {T} --out {{d}}/t", "prompts.jsonl:1", "completion"),
    case("train-dpo-latin1", f"train dpo {{d}}/latin1.jsonl --base {T} --out {{d}}/t", "latin1.jsonl:1", "UTF-8"),
    case("train-sft-base-typo", f"train sft {P} --base defualt --out {{d}}/t", "defualt", "default"),
    case("train-dpo-set", f"train dpo {P} --base {T} --set max_steps=0", "--set", "max_steps"),
    case("train-reward-fields", f"train reward {P} --base {T} --out {{d}}/t", "prompts.jsonl:1", "chosen"),
    case("train-reward-set", f"train reward {P} --base {T} --set epochs=0", "--set", "epochs"),
    case("train-sft-out-file", f"train sft {P} --base {T} --out {P}", "--out", "prompts.jsonl"),
    case("interp-trace-latin1", f"interp trace {T} --prompts {{d}}/latin1.jsonl", "latin1.jsonl:1", "UTF-8"),
    case("interp-trace-fields", f"interp trace {T} --prompts {P}", "prompts.jsonl:1", "subject"),
    case("interp-trace-model", "interp trace defualt", "MODEL", "default"),
    case("interp-trace-noise", f"interp trace {T} --set noise=0", "--set", "noise"),
    case("interp-patch-model", "interp patch defualt", "MODEL 1", "default"),
    case("interp-patch-pairs", f"interp patch {T} --set pairs=100", "--set", "pairs"),
    case("interp-patch-direction", f"interp patch {T} --set directions=[up]", "--set", "directions"),
    case("interp-reward-not-a-run", "interp reward {d}", "reward_model"),
    case("interp-reward-set", "interp reward {d} --set top=0", "--set", "top"),
    # --- rlhf
    case("rlhf-check-not-a-run", "rlhf check {d}", "compare/summaries"),
    case("rlhf-run-latin1", "rlhf run {d}/latin1.yaml", "latin1.yaml:1", "UTF-8"),
    case("rlhf-run-policy", "rlhf run {d}/rlhf-typo.yaml", "default"),
    case("rlhf-run-docs", "rlhf run {d}/rlhf-docs.yaml", "no-such-docs.jsonl"),
    case("rlhf-run-pairs", "rlhf run {d}/rlhf-pairs.yaml", "no-such-pairs.jsonl"),
    case("rlhf-run-set", "rlhf run {d}/rlhf-docs.yaml --set policy=defualt", "default"),
    case("rlhf-gen-out-dir", f"rlhf generate --policy {T} --out {{d}}/adir", "--out", "directory"),
    case("rlhf-gen-out-unwritable", f"rlhf generate --policy {T} --out {P}/c.jsonl", "--out"),
    case("rlhf-gen-policy", "rlhf generate --policy defualt --out {d}/c.jsonl", "--policy", "default"),
    case("rlhf-gen-docs", f"rlhf generate --policy {T} --docs {{d}}/no-such.jsonl --out {{d}}/c.jsonl", "no-such.jsonl"),
    case("rlhf-gen-docs-latin1", f"rlhf generate --policy {T} --docs {{d}}/latin1.jsonl --out {{d}}/c.jsonl", "latin1.jsonl:1"),
    case("rlhf-gen-k", f"rlhf generate --policy {T} --k 5 --out {{d}}/c.jsonl", "--k"),
    case("rlhf-gen-tmin", f"rlhf generate --policy {T} --t-min -1 --out {{d}}/c.jsonl", "--t-min"),
    case("rlhf-gen-tmin-tmax", f"rlhf generate --policy {T} --t-min 2 --t-max 1 --out {{d}}/c.jsonl", "--t-max", "t_min"),
    case("rlhf-label-latin1", "rlhf label-ai {d}/latin1.jsonl --out {d}/pairs-out.jsonl", "latin1.jsonl:1", "UTF-8"),
    case("rlhf-label-dir", "rlhf label-ai {d}/adir --out {d}/pairs-out.jsonl", "adir", "directory"),
    case("rlhf-label-bad-hint", "rlhf label-ai {d}/cands-bad.jsonl --out {d}/pairs-out.jsonl", "cands-bad.jsonl:2", forbid=("--on-error",)),
    case("rlhf-label-out-dir", "rlhf label-ai {d}/cands.jsonl --out {d}/adir", "--out", "directory"),
    case("rlhf-label-db", "rlhf label-ai {d}/cands.jsonl --out {d}/pairs-out.jsonl --db {d}/notdb.db", "notdb.db"),
    case("rlhf-label-db-missing", "rlhf label-ai {d}/cands.jsonl --out {d}/pairs-out.jsonl --db {d}/no.db", "no.db"),
    case("rlhf-label-out-is-input", "rlhf label-ai {d}/cands.jsonl --out {d}/cands.jsonl", "CANDIDATES", "overwrite"),
    case("rlhf-label-margin", "rlhf label-ai {d}/cands.jsonl --out {d}/pairs-out.jsonl --margin -1", "--margin"),
    case("rlhf-label-judge", "rlhf label-ai {d}/cands.jsonl --out {d}/pairs-out.jsonl --llm-judge --judge-model defualt", "default"),
    case("rlhf-reward-latin1", f"rlhf reward --policy {T} --pairs {{d}}/latin1.jsonl --out {{d}}/rm", "latin1.jsonl:1", "UTF-8"),
    case("rlhf-reward-dir", f"rlhf reward --policy {T} --pairs {{d}}/adir --out {{d}}/rm", "adir", "directory"),
    case("rlhf-reward-bad-hint", f"rlhf reward --policy {T} --pairs {{d}}/pairs-bad.jsonl --out {{d}}/rm", "pairs-bad.jsonl:1", forbid=("--on-error",)),
    case("rlhf-reward-missing", f"rlhf reward --policy {T} --pairs {{d}}/no-such.jsonl --out {{d}}/rm", "no-such.jsonl"),
    case("rlhf-reward-out-file", f"rlhf reward --policy {T} --pairs {{d}}/pairs.jsonl --out {P}", "--out"),
    case("rlhf-reward-policy", "rlhf reward --policy defualt --pairs {d}/pairs.jsonl --out {d}/rm", "default"),
    case("rlhf-reward-eval", f"rlhf reward --policy {T} --pairs {{d}}/pairs.jsonl --eval-pairs {{d}}/no.jsonl --out {{d}}/rm", "no.jsonl"),
    case("rlhf-reward-set", f"rlhf reward --policy {T} --pairs {{d}}/pairs.jsonl --out {{d}}/rm --set lr=-1", "--set", "lr"),
    case("rlhf-ppo-rm-missing", f"rlhf ppo --policy {T} --reward-model {{d}}/no-rm --out {{d}}/ppo", "--reward-model", "no-rm"),
    case("rlhf-ppo-rm-empty", f"rlhf ppo --policy {T} --reward-model {{d}}/adir --out {{d}}/ppo", "--reward-model", "adir"),
    case("rlhf-ppo-rm-broken", f"rlhf ppo --policy {T} --reward-model {{d}}/rm-broken --out {{d}}/ppo", "reward_model.json", "lacks base"),
    case("rlhf-ppo-out-file", f"rlhf ppo --policy {T} --reward-model {{d}}/rm --out {P}", "--out"),
    case("rlhf-ppo-config-latin1", f"rlhf ppo --policy {T} --reward-model {{d}}/rm --out {{d}}/ppo --config {{d}}/latin1.yaml", "latin1.yaml:1"),
    case("rlhf-ppo-term", f"rlhf ppo --policy {T} --reward-model {{d}}/rm --out {{d}}/ppo --term bogus=2", "--term", "bogus"),
    case("rlhf-ppo-term-weight", f"rlhf ppo --policy {T} --reward-model {{d}}/rm --out {{d}}/ppo --term coverage=x", "--term"),
    case("rlhf-ppo-policy", "rlhf ppo --policy defualt --reward-model {d}/rm --out {d}/ppo", "default"),
    case("rlhf-dpo-latin1", f"rlhf dpo --policy {T} --pairs {{d}}/latin1.jsonl --out {{d}}/dpo", "latin1.jsonl:1"),
    case("rlhf-dpo-missing", f"rlhf dpo --policy {T} --pairs {{d}}/no-such.jsonl --out {{d}}/dpo", "no-such.jsonl"),
    case("rlhf-dpo-out-file", f"rlhf dpo --policy {T} --pairs {{d}}/pairs.jsonl --out {P}", "--out"),
    case("rlhf-dpo-policy", "rlhf dpo --policy defualt --pairs {d}/pairs.jsonl --out {d}/dpo", "default"),
    case("rlhf-compare-noeq", "rlhf compare --model base --out {d}/cmp", "--model"),
    case("rlhf-compare-typo", "rlhf compare --model base=defualt --out {d}/cmp", "default"),
    case("rlhf-compare-dupe", f"rlhf compare --model a={T} --model a={T} --out {{d}}/cmp", "--model", "'a'"),
    case("rlhf-compare-out-file", f"rlhf compare --model a={T} --out {P}", "--out"),
    case("rlhf-compare-docs", f"rlhf compare --model a={T} --docs {{d}}/no-such.jsonl --out {{d}}/cmp", "no-such.jsonl"),
    # --- label
    case("label-import-latin1", "label import {d}/latin1.jsonl --db {d}/l.db", "latin1.jsonl:1", "UTF-8"),
    case("label-import-dir", "label import {d}/adir --db {d}/l.db", "adir", "directory"),
    case("label-import-bad-hint", "label import {d}/cands-bad.jsonl --db {d}/l.db", "cands-bad.jsonl:2", forbid=("--on-error",)),
    case("label-import-notdb", "label import {d}/cands.jsonl --db {d}/notdb.db", "notdb.db", "label database"),
    case("label-import-other", "label import {d}/cands.jsonl --db {d}/other.sqlite", "other.sqlite", "label database"),
    case("label-import-db-dir", "label import {d}/cands.jsonl --db {d}/adir", "adir", "directory"),
    case("label-import-db-unwritable", f"label import {{d}}/cands.jsonl --db {P}/l.db", "--db"),
    case("label-add-notdb", "label add-annotator ann --db {d}/notdb.db", "notdb.db", "label database"),
    case("label-add-missing", "label add-annotator --db {d}/l2.db", "'name'"),
    case("label-add-blank", "label add-annotator '' --db {d}/l2.db", "NAME"),
    case("label-serve-port", "label serve --db {d}/notdb.db --port 99999", "--port"),
    case("label-serve-port-neg", "label serve --db {d}/notdb.db --port -1", "--port"),
    case("label-serve-notdb", "label serve --db {d}/notdb.db", "notdb.db", "label database"),
    case("label-serve-host", "label serve --db {d}/no.db --host no-such-host.invalid", "--host"),
    case("label-serve-missing", "label serve --db {d}/no.db", "no.db"),
    case("label-serve-votes", "label serve --db {d}/no.db --votes-per-item 0", "--votes-per-item"),
    case("label-stats-notdb", "label stats --db {d}/notdb.db", "notdb.db", "label database"),
    case("label-stats-other", "label stats --db {d}/other.sqlite", "other.sqlite", "label database"),
    case("label-stats-missing", "label stats --db {d}/no.db", "no.db"),
    case("label-export-notdb", "label export --db {d}/notdb.db --out {d}/x.jsonl", "notdb.db"),
    case("label-export-out-is-db", "label export --db {d}/notdb.db --out {d}/notdb.db", "--db", "overwrite"),
    case("label-export-aggregate", "label export --db {d}/notdb.db --out {d}/x.jsonl --aggregate bogus", "--aggregate"),
    # --- gate
    case("gate-latin1", "gate {d}/report-latin1.json --min mmlu=0.5", "report-latin1.json", "UTF-8"),
    case("gate-dir", "gate {d}/adir --min mmlu=0.5", "adir", "directory"),
    case("gate-corrupt", "gate {d}/report-bad.json --min mmlu=0.5", "report-bad.json"),
    case("gate-config-latin1", "gate {d}/report-bad.json --config {d}/gate-latin1.yaml", "gate-latin1.yaml"),
    case("gate-config-dir", "gate {d}/report-bad.json --config {d}/adir", "adir"),
    case("gate-min-noeq", "gate {d}/report-bad.json --min mmlu", "--min"),
    case("gate-min-nan", "gate {d}/report-bad.json --min mmlu=abc", "--min"),
    case("gate-no-report", "gate", "'report'"),
]  # fmt: skip


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (sqlite side files excluded: reading a WAL database may
    create them), by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith(("-wal", "-shm")):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@contextmanager
def no_model_loads() -> Iterator[None]:
    """Every model load (and the label server) raises ModelLoadReached while inside."""
    import tether.engine.engine as engine_module
    import tether.models as models_package

    load_module = sys.modules["tether.models.load"]

    def refuse(*args, **kwargs):
        raise ModelLoadReached(f"a model load was reached: {args[:1]}")

    import uvicorn

    saved = [
        (load_module, "load", load_module.load),
        (models_package, "load", models_package.load),
        (engine_module, "load", engine_module.load),
        (uvicorn, "run", uvicorn.run),
    ]
    for owner, name, _ in saved:
        setattr(owner, name, refuse)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def invoke(argv: list[str], *, catch: bool = False):
    """Run ``tether ARGV`` in-process (stdout and stderr together in ``.output``)."""
    from tether.cli import app

    return CliRunner().invoke(app, argv, catch_exceptions=catch)
