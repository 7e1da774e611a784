"""``tether interp reward RUN_DIR``: what drives an RLHF run's reward model.

Read from the RLHF run directory: ``reward_model/`` (:class:`tether.train.reward.RewardModel`),
``heldout_docs.jsonl`` and ``compare/summaries/*.jsonl`` (every model's greedy summaries of the
held-out documents). Then:

* **features**: each summary's reward (the reward model's normalised score, as PPO sees it) against
  its length in tokens, the fraction of its word bigrams copied from the document, and truncation
  (the summary hit the length cap: ``finish_reason == "length"``, no EOS). Spearman correlations
  with percentile bootstrap 95% CIs over the summaries, and n;
* **attributions**: gradient × input on the input embeddings (the gradient of the reward with
  respect to each token's embedding, dotted with the embedding) for the ``top`` highest- and lowest-
  reward summaries: which response tokens push the reward up or down, and the share of the
  attribution mass on the response vs the prompt (document).

Writes ``reward_attribution.json`` and ``interp.html`` into the interp run directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from tether.errors import DataError
from tether.interp.config import RewardAttributionConfig

_WORD = re.compile(r"\w+")


class SummaryRow(BaseModel):
    """One line of ``compare/summaries/<model>.jsonl``."""

    model_config = ConfigDict(extra="ignore")

    doc_id: str
    text: str
    model: str | None = None
    tokens: int | None = None
    finish_reason: str | None = None


def read_rlhf_run(run_dir: str | Path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """(reward model directory, held-out documents by id, every summary with its model and file:line).
    A missing part is a DataError naming it, before any model loads."""
    from tether.data.jsonl import iter_numbered, read_jsonl
    from tether.rlhf.documents import SummaryDocument

    run_dir = Path(run_dir)
    reward_dir = run_dir / "reward_model"
    if not (reward_dir / "reward_model.json").is_file():
        raise DataError(
            "no reward model (reward_model/reward_model.json)",
            where=str(run_dir),
            hint="pass an RLHF run directory whose reward stage finished (tether rlhf run)",
        )
    docs_path = run_dir / "heldout_docs.jsonl"
    if not docs_path.is_file():
        raise DataError("no heldout_docs.jsonl", where=str(run_dir), hint="pass an RLHF run directory")
    docs = {d.id: d for d in read_jsonl(docs_path, SummaryDocument, unique="id")}
    files = sorted((run_dir / "compare" / "summaries").glob("*.jsonl"))
    if not files:
        raise DataError(
            "no compare/summaries/*.jsonl",
            where=str(run_dir),
            hint="finish the run's compare stage first (tether rlhf run resumes it)",
        )
    rows = []
    for path in files:
        for lineno, row in iter_numbered(path, SummaryRow):
            if row.doc_id not in docs:
                raise DataError(f"doc_id {row.doc_id!r} is not a held-out document", where=f"{path}:{lineno}")
            rows.append(
                {**row.model_dump(), "model": row.model or path.stem, "where": f"{path.name}:{lineno}"}
            )
    if not rows:
        raise DataError("the summary files are empty", where=str(run_dir / "compare" / "summaries"))
    return reward_dir, docs, rows


def copied_bigrams(document: str, summary: str) -> float | None:
    """Share of the summary's word bigrams (lower-cased) that occur in the document; None for a
    summary of fewer than two words."""
    words = [w.lower() for w in _WORD.findall(summary)]
    if len(words) < 2:
        return None
    source = [w.lower() for w in _WORD.findall(document)]
    have = set(zip(source, source[1:], strict=False))
    pairs = list(zip(words, words[1:], strict=False))
    return sum(p in have for p in pairs) / len(pairs)


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def spearman_ci(
    x: Sequence[float], y: Sequence[float], *, bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Spearman's rho of (x, y) with a percentile bootstrap 95% CI over the pairs, and n. rho is
    None when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)

    def rho(idx: np.ndarray) -> np.ndarray:  # [B, n] -> [B]
        rx, ry = _ranks(x[idx]), _ranks(y[idx])
        rx -= rx.mean(-1, keepdims=True)
        ry -= ry.mean(-1, keepdims=True)
        den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (rx * ry).sum(-1) / den

    point = float(rho(np.arange(n)[None])[0]) if n >= 2 else float("nan")
    if not np.isfinite(point):
        return {"rho": None, "ci": None, "n": n, "note": "constant: no correlation"}
    draws = rho(np.random.default_rng(seed).integers(0, n, size=(bootstrap, n)))
    draws = draws[np.isfinite(draws)]
    return {"rho": point, "ci": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))], "n": n}


def attribution(model: Any, prompt: str, response: str) -> dict[str, Any]:
    """Gradient × input of ``model``'s reward for (prompt, response) on the input embeddings: one
    number per token (positive: the token raises the reward), the tokens as the model reads them
    (``encode_pair``: prompt, response, EOS), and where the response starts."""
    from tether.train.reward import _causal_lm, encode_pair

    tok = model.tokenizer
    ids = encode_pair(tok, prompt, response, model.max_length)
    n_response = len(tok(response, add_special_tokens=False)["input_ids"][: model.max_length * 3 // 4]) + 1
    lm = _causal_lm(model.backbone)
    device = model.device
    input_ids = torch.tensor([ids], device=device)
    with torch.enable_grad():
        embeds = lm.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        hidden = lm.get_decoder()(
            inputs_embeds=embeds, attention_mask=torch.ones_like(input_ids), use_cache=False
        ).last_hidden_state
        reward = model.head(hidden[0, -1].to(model.head.weight.dtype)).squeeze()
        (grad,) = torch.autograd.grad(reward, embeds)
    scores = (grad * embeds.detach()).float().sum(-1)[0].cpu()
    start = len(ids) - n_response
    mass = scores.abs()
    total = float(mass.sum()) or 1.0
    return {
        "reward_raw": float(reward.detach()),
        "tokens": [tok.decode([i]) for i in ids],
        "scores": scores.tolist(),
        "response_start": start,
        "response_share": float(mass[start:].sum()) / total,
    }


def feature_table(
    rows: Sequence[dict[str, Any]], docs: dict[str, Any], tokenizer: Any
) -> list[dict[str, Any]]:
    """Per summary: length in tokens, copied bigram fraction, truncated."""
    out = []
    for row in rows:
        text = row["text"]
        tokens = (
            row["tokens"]
            if row["tokens"] is not None
            else len(tokenizer(text, add_special_tokens=False)["input_ids"])
        )
        out.append(
            {
                "length_tokens": tokens,
                "copied_bigrams": copied_bigrams(docs[row["doc_id"]].text, text),
                "truncated": None
                if row["finish_reason"] is None
                else float(row["finish_reason"] == "length"),
            }
        )
    return out


FEATURES = {
    "length_tokens": "length of the summary in tokens",
    "copied_bigrams": "fraction of the summary's word bigrams copied from the document",
    "truncated": "summary hit the length cap (no EOS): 1, else 0",
}


def reward_attribution(
    model: Any,
    docs: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    config: RewardAttributionConfig,
    *,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Rewards, feature correlations and the top/bottom attributions (the JSON of the report)."""
    prompts = [docs[r["doc_id"]].prompt for r in rows]
    texts = [r["text"] for r in rows]
    say(f"scoring {len(rows)} summaries")
    rewards = model.score(prompts, texts, batch_size=config.batch_size, normalize=True)
    features = feature_table(rows, docs, model.tokenizer)
    correlations = {}
    for name, label in FEATURES.items():
        keep = [i for i, f in enumerate(features) if f[name] is not None]
        correlations[name] = {
            "description": label,
            **spearman_ci(
                [features[i][name] for i in keep],
                [rewards[i] for i in keep],
                bootstrap=config.bootstrap,
                seed=config.seed,
            ),
            "missing": len(rows) - len(keep),
        }
    trunc = [i for i, f in enumerate(features) if f["truncated"] is not None]
    split = {
        label: [rewards[i] for i in trunc if features[i]["truncated"] == value]
        for label, value in (("truncated", 1.0), ("ended", 0.0))
    }
    order = sorted(range(len(rows)), key=lambda i: rewards[i])
    top = min(config.top, len(rows))
    picked = [("highest", i) for i in reversed(order[-top:])] + [("lowest", i) for i in order[:top]]
    examples = []
    for end, i in picked:
        say(f"attributing the {end}-reward summary {rows[i]['where']}")
        attr = attribution(model, prompts[i], texts[i])
        examples.append(
            {
                "end": end,
                "model": rows[i]["model"],
                "doc_id": rows[i]["doc_id"],
                "where": rows[i]["where"],
                "reward": rewards[i],
                **features[i],
                **attr,
            }
        )
    by_model: dict[str, list[float]] = {}
    for r, reward in zip(rows, rewards, strict=True):
        by_model.setdefault(r["model"], []).append(reward)
    return {
        "reward": "the reward model's normalised score (mean 0, std 1 on its training responses), as PPO sees it",
        "n": len(rows),
        "models": {m: {"n": len(v), "mean_reward": float(np.mean(v))} for m, v in by_model.items()},
        "correlations": correlations,
        "truncation": {
            k: {"n": len(v), "mean_reward": float(np.mean(v)) if v else None} for k, v in split.items()
        },
        "method": "gradient x input on the input embeddings: (d reward / d e_t) . e_t per token t",
        "examples": examples,
        "summaries": [
            {"model": r["model"], "doc_id": r["doc_id"], "reward": rw, **f}
            for r, rw, f in zip(rows, rewards, features, strict=True)
        ],
    }


def token_spans(tokens: Sequence[str], scores: Sequence[float], start: int) -> list[dict[str, Any]]:
    """The response's tokens with a background colour by attribution (red raises the reward, blue
    lowers it; opacity by |score| over the response's largest). The style is built here from numbers
    only; the text is escaped by the template."""
    part = list(scores[start:])
    top = max((abs(s) for s in part), default=0.0) or 1.0
    spans = []
    for text, s in zip(tokens[start:], part, strict=True):
        alpha = min(1.0, abs(s) / top)
        rgb = "220,50,47" if s > 0 else "38,139,210"
        spans.append({"text": text, "style": f"background: rgba({rgb},{alpha:.2f})", "score": s})
    return spans


def write_reward_report(report: dict[str, Any], run: Any) -> Path:
    from tether.interp.report import _render

    for ex in report["examples"]:
        ex["spans"] = token_spans(ex["tokens"], ex["scores"], ex["response_start"])
    out = run.artifact("interp.html")
    out.write_text(_render("reward", report=report, figures={}), encoding="utf-8")
    for ex in report["examples"]:
        ex.pop("spans")
    return out


def run_reward_attribution(
    run_dir: str | Path,
    config: RewardAttributionConfig,
    run: Any,
    *,
    say: Callable[[str], None] = print,
    load_model: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Load the run's reward model, write ``reward_attribution.json`` and ``interp.html``."""
    from tether.train.reward import RewardModel

    reward_dir, docs, rows = read_rlhf_run(run_dir)
    say(f"loading the reward model {reward_dir}")
    load_model = load_model or RewardModel.load
    model = load_model(reward_dir, device=config.engine.device, dtype=config.engine.dtype)
    data = reward_attribution(model, docs, rows, config, say=say)
    report = {
        "run": run.name,
        "created": run.manifest.get("created"),
        "rlhf_run": str(run_dir),
        "reward_model": str(reward_dir),
        "config": config.model_dump(mode="json"),
        **data,
    }
    run.artifact("reward_attribution.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    write_reward_report(report, run)
    return {
        "n": data["n"],
        "correlations": {
            k: {"rho": v["rho"], "ci": v["ci"], "n": v["n"]} for k, v in data["correlations"].items()
        },
    }


__all__ = [
    "FEATURES",
    "RewardAttributionConfig",
    "attribution",
    "copied_bigrams",
    "read_rlhf_run",
    "reward_attribution",
    "run_reward_attribution",
    "spearman_ci",
]
