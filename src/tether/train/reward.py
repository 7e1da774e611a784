"""A reward model for RLHF: a scalar head on a pretrained backbone, trained on preference pairs.

Shape: the policy's own causal LM (so it shares the tokenizer and chat template), LoRA on every
linear layer of the last ``lora_layers`` transformer blocks (all blocks with ``None``), and a float32
``Linear(hidden, 1)`` read at the last real token (the EOS after the response), value-head style.
The LM head never runs, and the backward pass stops at the lowest adapted block.

Training minimises the Bradley–Terry loss ``-log σ(r_chosen - r_rejected)`` with owned code (a short
loop; TRL's RewardTrainer would add a Trainer and bf16 defaults that fight the CPU), listwise as in
InstructGPT §3.5: pairs are grouped by prompt, each *distinct* response of a group runs through the
backbone once, and the group's loss is the mean over all its pairs (up to K-choose-2 from K
candidates), one batch element per prompt. With K = 4 that is 4 sequences for 6 pairs instead of 12,
and no completion is seen in several optimizer steps per epoch (which overfits).

Evaluation on held-out pairs scores each distinct (prompt, response) once and reports pairwise
accuracy and calibration: the expected calibration error of the model's confidence
``max(p, 1 - p)`` with ``p = σ(r_c - r_r)``, over reliability bins.

A checkpoint directory holds the LoRA adapter, ``reward_head.safetensors``, the tokenizer and
``reward_model.json`` (base spec, max length, reward mean/std for normalisation, tokenizer hashes).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from tether.config import StrictModel
from tether.data.jsonl import JsonlAppender
from tether.data.records import PreferencePair
from tether.errors import DataError, ModelLoadError
from tether.train.lora import LoRAConfig, peft_config

REWARD_CONFIG = "reward_model.json"
REWARD_HEAD = "reward_head.safetensors"


class RewardConfig(StrictModel):
    """Reward-model training settings."""

    epochs: int = Field(2, ge=1, description="Passes over the training pairs.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (None: all epochs)."
    )
    batch_size: int = Field(
        4,
        ge=1,
        description="Prompts per optimizer step. A prompt's pairs form one group (all K-choose-2 "
        "comparisons of its K candidates) whose loss is the mean over its pairs; the step's loss is the "
        "mean over its groups.",
    )
    micro_batch_size: int = Field(
        4,
        ge=1,
        description="Sequences (distinct responses) per forward/backward: whole prompt groups are packed "
        "up to this many, a larger group runs alone; gradients accumulate over the step. Bounds memory "
        "(on CPU at most ~2.5 MB per token with gradients: 4 x 512 tokens ~ 5 GB), not the result.",
    )
    lora_layers: int | None = Field(
        8,
        ge=1,
        description="LoRA only on the last N transformer blocks: the backward pass stops below them "
        "(~2x cheaper a step on a 30-block model, fewer weights to overfit). null: every block.",
    )
    lr: float = Field(1e-4, gt=0, description="Learning rate of the LoRA weights.")
    head_lr: float = Field(1e-3, gt=0, description="Learning rate of the scalar head (starts from scratch).")
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(
        768, ge=32, description="Tokens per sequence; the prompt is cut from the left to fit."
    )
    lora: LoRAConfig = Field(
        default_factory=lambda: LoRAConfig(dropout=0.0),
        description="LoRA on the backbone (the head is always trained).",
    )
    eval_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of documents whose pairs are held out for evaluation (by doc_id hash).",
    )
    calibration_bins: int = Field(5, ge=1, description="Reliability bins over confidence [0.5, 1].")
    seed: int = 0


# ---------------------------------------------------------------------------------------------------
# Loss and metrics (pure functions)
# ---------------------------------------------------------------------------------------------------


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log σ(r_chosen - r_rejected)``: the negative log-likelihood that chosen wins."""
    return -nn.functional.logsigmoid(r_chosen - r_rejected).mean()


@dataclass(frozen=True)
class PromptGroup:
    """The preference pairs of one prompt over its distinct responses.

    ``pairs`` holds ``(chosen, rejected)`` indices into ``responses``; a repeated pair stays repeated
    (two annotators agreeing weigh twice).
    """

    prompt: str
    responses: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...]


def group_pairs(pairs: Sequence[PreferencePair]) -> list[PromptGroup]:
    """Pairs grouped by prompt (first-seen order), each response text kept once per group."""
    by_prompt: dict[str, tuple[dict[str, int], list[tuple[int, int]]]] = {}
    for pair in pairs:
        index, members = by_prompt.setdefault(pair.prompt, ({}, []))
        chosen = index.setdefault(pair.chosen, len(index))
        rejected = index.setdefault(pair.rejected, len(index))
        members.append((chosen, rejected))
    return [
        PromptGroup(prompt, tuple(index), tuple(members)) for prompt, (index, members) in by_prompt.items()
    ]


def group_loss(rewards: torch.Tensor, group: PromptGroup) -> torch.Tensor:
    """Mean Bradley–Terry loss over the group's pairs, from the rewards ``(len(responses),)`` of its responses."""
    chosen = torch.tensor([c for c, _ in group.pairs], device=rewards.device)
    rejected = torch.tensor([r for _, r in group.pairs], device=rewards.device)
    return bradley_terry_loss(rewards[chosen], rewards[rejected])


def pack_groups(groups: Sequence[PromptGroup], max_sequences: int) -> list[list[PromptGroup]]:
    """Consecutive groups packed into micro-batches of at most ``max_sequences`` responses (a larger
    group gets one of its own: groups are never split, their loss needs all their rewards)."""
    packs: list[list[PromptGroup]] = []
    size = 0
    for group in groups:
        if packs and size + len(group.responses) <= max_sequences:
            packs[-1].append(group)
            size += len(group.responses)
        else:
            packs.append([group])
            size = len(group.responses)
    return packs


def pairwise_accuracy(diffs: Sequence[float]) -> float:
    """Share of pairs with ``r_chosen > r_rejected``; an exact tie counts half."""
    if not diffs:
        return float("nan")
    return sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diffs) / len(diffs)


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    confidence: float  # mean max(p, 1-p) of the pairs in the bin
    accuracy: float  # share of them the model got right


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error over confidence bins, and the bins (empty ones left out)."""

    ece: float
    bins: list[ReliabilityBin]


def calibration(diffs: Sequence[float], n_bins: int = 5) -> Calibration:
    """ECE of the reward model as a pairwise classifier.

    With ``p = σ(d)`` the model predicts chosen wins when ``p > 0.5``, with confidence
    ``max(p, 1 - p)`` in [0.5, 1]. Bins split [0.5, 1] evenly; ECE = Σ_b (n_b / N) |acc_b - conf_b|.
    """
    if not diffs:
        return Calibration(float("nan"), [])
    width = 0.5 / n_bins
    members: list[list[tuple[float, float]]] = [[] for _ in range(n_bins)]
    for d in diffs:
        p = 1.0 / (1.0 + math.exp(-d))
        conf = max(p, 1.0 - p)
        correct = 1.0 if d > 0 else 0.5 if d == 0 else 0.0
        members[min(int((conf - 0.5) / width), n_bins - 1)].append((conf, correct))
    bins, ece = [], 0.0
    for i, rows in enumerate(members):
        if not rows:
            continue
        conf = sum(c for c, _ in rows) / len(rows)
        acc = sum(a for _, a in rows) / len(rows)
        ece += len(rows) / len(diffs) * abs(acc - conf)
        bins.append(ReliabilityBin(0.5 + i * width, 0.5 + (i + 1) * width, len(rows), conf, acc))
    return Calibration(ece, bins)


# ---------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------


def tokenizer_hashes(tokenizer) -> dict[str, str]:
    """sha256 of the vocabulary (token -> id, added tokens included) and of the chat template."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    template = getattr(tokenizer, "chat_template", None) or ""
    if not isinstance(template, str):
        template = json.dumps(template, sort_keys=True)
    return {
        "vocab_sha256": hashlib.sha256(vocab.encode()).hexdigest(),
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
    }


def check_same_tokenizer(reward_hashes: dict[str, str], policy_tokenizer, *, where: str) -> None:
    """Raise when the reward model would read the policy's samples with another tokenizer or template.

    PPO hands the reward model the policy's own rendering of prompt + response; a different vocabulary
    or chat template means the reward model scores text shaped unlike anything it was trained on.
    """
    policy = tokenizer_hashes(policy_tokenizer)
    for key, what in (("vocab_sha256", "vocabulary"), ("chat_template_sha256", "chat template")):
        if reward_hashes.get(key) != policy[key]:
            raise ModelLoadError(
                f"the reward model's tokenizer {what} differs from the policy's "
                f"({reward_hashes.get(key, '?')[:12]} vs {policy[key][:12]})",
                where=where,
                hint="train the reward model from the policy's base model: tether rlhf reward --policy <policy spec>",
            )


def render_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of the user turn exactly as the engine renders it for generation."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def encode_pair(tokenizer, prompt: str, response: str, max_length: int) -> list[int]:
    """``prompt ids + response ids + EOS``; the prompt loses tokens from its left end when too long.

    Left truncation keeps the document's end and the generation prompt; the response is capped so at
    least a quarter of the budget shows context.
    """
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"][: max_length * 3 // 4]
    response_ids = response_ids + [tokenizer.eos_token_id]
    prompt_ids = render_prompt(tokenizer, prompt)
    budget = max_length - len(response_ids)
    return prompt_ids[-budget:] + response_ids


# ---------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------


def _causal_lm(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class RewardModel(nn.Module):
    """A causal LM backbone (LoRA-adapted) with a scalar head on the last real token."""

    def __init__(self, backbone: nn.Module, tokenizer, *, base: str, max_length: int = 768):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.base = base
        self.max_length = max_length
        config = _causal_lm(backbone).config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.hidden_size = int(config.hidden_size)
        param = next(backbone.parameters())
        self.head = nn.Linear(self.hidden_size, 1, device=param.device, dtype=torch.float32)
        nn.init.normal_(self.head.weight, std=1.0 / (self.hidden_size + 1))
        nn.init.zeros_(self.head.bias)
        self.mean, self.std = 0.0, 1.0
        self.hashes = tokenizer_hashes(tokenizer)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @classmethod
    def from_spec(
        cls, spec: str, config: RewardConfig | None = None, *, device: str = "auto", dtype: str = "auto"
    ) -> RewardModel:
        """A fresh reward model on the weights of ``spec`` (an adapter spec is merged into its base first)."""
        from peft import get_peft_model

        from tether.models import load

        config = config or RewardConfig()
        loaded = load(spec, device=device, dtype=dtype)
        backbone = loaded.model
        if hasattr(backbone, "merge_and_unload"):
            backbone = backbone.merge_and_unload()
        backbone = get_peft_model(
            backbone, peft_config(config.lora, model=backbone, last_layers=config.lora_layers)
        )
        return cls(backbone, loaded.tokenizer, base=_portable_spec(spec), max_length=config.max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards ``(B,)`` for right-padded ``input_ids``."""
        hidden = (
            _causal_lm(self.backbone)
            .get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            .last_hidden_state
        )
        last = attention_mask.long().sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)

    def batch(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``(ids, mask)`` for prompt/response pairs."""
        rows = [
            encode_pair(self.tokenizer, p, r, self.max_length)
            for p, r in zip(prompts, responses, strict=True)
        ]
        pad = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    def adapted_layers(self) -> list[int] | None:
        """Indices of the transformer blocks carrying LoRA (``None``: every block)."""
        peft = getattr(self.backbone, "peft_config", {}).get("default")
        layers = getattr(peft, "layers_to_transform", None)
        return [layers] if isinstance(layers, int) else (list(layers) if layers else None)

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        *,
        batch_size: int = 8,
        normalize: bool = False,
    ) -> list[float]:
        """Scalar rewards; with ``normalize`` shifted and scaled by the training responses' mean/std.
        Traced (when a run stage is open) as one ``reward MODEL`` span per call, a child per pair
        carrying its reward (``tether.reward``)."""
        from tether import tracing

        was_training = self.training
        self.eval()
        out: list[float] = []
        name = f"reward {self.base}"
        attributes = {"gen_ai.operation.name": "reward", "gen_ai.request.model": str(self.base)}
        with tracing.span(name, {**attributes, "tether.batch.items": len(prompts)}, client=True) as call:
            tokens = 0
            for start in range(0, len(prompts), batch_size):
                began = time.time_ns()
                ids, mask = self.batch(
                    prompts[start : start + batch_size], responses[start : start + batch_size]
                )
                rewards = self(ids, mask).float().tolist()
                out += rewards
                tokens += int(mask.sum())
                if call is not None:
                    ended = time.time_ns()
                    for k, (reward, row) in enumerate(zip(rewards, mask.sum(dim=1).tolist(), strict=True)):
                        tracing.item_span(
                            name,
                            began,
                            ended,
                            {
                                **attributes,
                                "gen_ai.usage.input_tokens": int(row),
                                "tether.item.id": f"#{start + k}",
                                "tether.reward": reward,
                                "tether.latency.kind": "batch",
                            },
                        )
            tracing.set_attributes(
                call, {"gen_ai.usage.input_tokens": tokens, "gen_ai.usage.output_tokens": 0}
            )
        self.train(was_training)
        if normalize:
            out = [(r - self.mean) / self.std for r in out]
        return out

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
            directory / REWARD_HEAD,
        )
        meta = {
            "base": self.base,
            "max_length": self.max_length,
            "hidden_size": self.hidden_size,
            "mean": self.mean,
            "std": self.std,
            **self.hashes,
        }
        (directory / REWARD_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "auto", dtype: str = "auto") -> RewardModel:
        """Restore a reward model saved by :meth:`save` (frozen: no gradients)."""
        from peft import PeftModel

        from tether.models import load

        directory = Path(directory)
        meta_path = directory / REWARD_CONFIG
        if not meta_path.is_file():
            raise ModelLoadError(
                "not a reward model directory (no reward_model.json)",
                where=str(directory),
                hint="train one with: tether rlhf reward --pairs PAIRS.jsonl --out DIR",
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        loaded = load(meta["base"], device=device, dtype=dtype)
        base = loaded.model.merge_and_unload() if hasattr(loaded.model, "merge_and_unload") else loaded.model
        backbone = PeftModel.from_pretrained(base, str(directory), is_trainable=False)
        model = cls(backbone, loaded.tokenizer, base=meta["base"], max_length=meta["max_length"])
        check_same_tokenizer(meta, loaded.tokenizer, where=str(meta_path))
        model.head.load_state_dict(
            {k: v.to(model.device) for k, v in load_file(directory / REWARD_HEAD).items()}
        )
        model.mean, model.std = float(meta["mean"]), float(meta["std"])
        model.requires_grad_(False)
        return model.eval()


def _portable_spec(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


@dataclass
class RewardReport:
    """What training did and how the model does on held-out pairs."""

    train_pairs: int
    eval_pairs: int
    steps: int
    seconds: float
    final_loss: float
    train_accuracy: float
    eval_accuracy: float | None
    eval_loss: float | None
    eval_ece: float | None
    reliability: list[ReliabilityBin] = field(default_factory=list)
    reward_mean: float = 0.0
    reward_std: float = 1.0
    history: list[dict] = field(default_factory=list)  # per-epoch eval
    train_groups: int = 0  # prompts: one batch element each
    pairs_per_group: float = 0.0  # mean
    sequences_per_epoch: int = 0  # distinct (prompt, response) forwards: what an epoch costs
    seconds_per_epoch: float = 0.0  # mean training time of an epoch (held-out evaluation excluded)
    epoch_seconds: list[float] = field(default_factory=list)
    lora_layers: list[int] | None = None  # blocks carrying LoRA (None: all)

    def to_dict(self) -> dict:
        return asdict(self)


def split_pairs(
    pairs: Sequence[PreferencePair], eval_fraction: float, salt: str = "tether-reward-eval"
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Hold out whole documents (by ``doc_id`` hash), so no eval pair shares a document with training."""
    train = [p for p in pairs if _hash_fraction(p.doc_id, salt) >= eval_fraction]
    held = [p for p in pairs if _hash_fraction(p.doc_id, salt) < eval_fraction]
    return train, held


def _hash_fraction(key: str, salt: str) -> float:
    # Same recipe as tether.rlhf.documents.hash_fraction (training must not import the pipeline).
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def score_distinct(
    model: RewardModel, pairs: Sequence[PreferencePair], batch_size: int = 8
) -> dict[tuple[str, str], float]:
    """Rewards of every distinct ``(prompt, response)`` of ``pairs``, each scored once.

    Sorted by length before batching, so a batch pads little."""
    keys = list(dict.fromkeys(key for p in pairs for key in ((p.prompt, p.chosen), (p.prompt, p.rejected))))
    keys.sort(key=lambda k: len(k[0]) + len(k[1]))
    rewards = model.score([k[0] for k in keys], [k[1] for k in keys], batch_size=batch_size)
    return dict(zip(keys, rewards, strict=True))


def reward_diffs(model: RewardModel, pairs: Sequence[PreferencePair], batch_size: int = 8) -> list[float]:
    """``r(chosen) - r(rejected)`` per pair (each distinct response scored once)."""
    rewards = score_distinct(model, pairs, batch_size)
    return [rewards[p.prompt, p.chosen] - rewards[p.prompt, p.rejected] for p in pairs]


def _score_batch(config: RewardConfig) -> int:
    # No gradients, so no activations kept: twice the training micro-batch fits.
    return 2 * config.micro_batch_size


def _evaluate(model: RewardModel, pairs: Sequence[PreferencePair], config: RewardConfig) -> dict:
    diffs = reward_diffs(model, pairs, batch_size=_score_batch(config))
    calib = calibration(diffs, config.calibration_bins)
    loss = sum(math.log1p(math.exp(-d)) if d > -30 else -d for d in diffs) / len(diffs)
    return {"accuracy": pairwise_accuracy(diffs), "loss": loss, "ece": calib.ece, "bins": calib.bins}


def train_reward_model(
    policy_spec: str,
    pairs: Sequence[PreferencePair],
    out_dir: str | Path,
    config: RewardConfig | None = None,
    *,
    eval_pairs: Sequence[PreferencePair] | None = None,
    log: Callable[[str], None] | None = None,
    model: RewardModel | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> RewardReport:
    """Train a reward model on ``pairs`` from ``policy_spec``'s weights, evaluate, save to ``out_dir``.

    Pairs are grouped by prompt (:func:`group_pairs`); a step takes ``config.batch_size`` groups, runs
    each distinct response once and minimises the mean over groups of each group's mean pair loss.
    Without ``eval_pairs`` a ``config.eval_fraction`` share of documents is held out by hash.
    ``model`` lets a caller pass a ready :class:`RewardModel` (tests, custom backbones); otherwise the
    backbone loads on ``device`` in ``dtype`` (the engine's settings, so one ``engine.device`` places
    every stage).
    """
    config = config or RewardConfig()
    log = log or (lambda _msg: None)
    if eval_pairs is None:
        train, held = split_pairs(pairs, config.eval_fraction)
    else:
        train, held = list(pairs), list(eval_pairs)
    if not train:
        raise DataError(
            f"no training pairs ({len(pairs)} given, {len(held)} held out)",
            hint="label more candidates, or lower reward.eval_fraction",
        )
    groups = group_pairs(train)
    sequences = sum(len(g.responses) for g in groups)
    log(
        f"reward: {len(train)} pairs in {len(groups)} prompt groups "
        f"({len(train) / len(groups):.1f} pairs, {sequences / len(groups):.1f} responses a group)"
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Under `accelerate launch` / torchrun, every process takes its share of each step's prompt
    # groups and the gradients are summed across processes, so a step is the same step as in one
    # process (same order, same loss); the main process alone writes.
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")  # on CPUs, accelerate joins torchrun's processes only when told
    world, rank, main = state.num_processes, state.process_index, state.is_main_process
    if world > 1 and device in ("auto", "cuda"):
        device = str(state.device)
    torch.manual_seed(config.seed)
    model = model or RewardModel.from_spec(policy_spec, config, device=device, dtype=dtype)
    model.train()
    lora_params = [p for n, p in model.backbone.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_params, "lr": config.lr},
            {"params": list(model.head.parameters()), "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator().manual_seed(config.seed)
    began = time.perf_counter()
    step, losses, history, epoch_seconds = 0, [], [], []
    final = None  # the last evaluation: every epoch (the last included) ends with one
    train_log = out_dir / "reward_train_log.jsonl"
    if main:
        train_log.unlink(missing_ok=True)
    trained = [*lora_params, *model.head.parameters()]
    with JsonlAppender(train_log) if main else nullcontext() as appender:
        for epoch in range(config.epochs):
            epoch_began = time.perf_counter()
            order = torch.randperm(len(groups), generator=generator).tolist()
            for start in range(0, len(order), config.batch_size):
                batch = [groups[i] for i in order[start : start + config.batch_size]]
                optimizer.zero_grad(set_to_none=True)
                loss_value = 0.0
                for pack in pack_groups(batch[rank::world], config.micro_batch_size):
                    ids, mask = model.batch(
                        [g.prompt for g in pack for _ in g.responses], [r for g in pack for r in g.responses]
                    )
                    rewards = model(ids, mask)
                    loss, offset = rewards.new_zeros(()), 0
                    for group in pack:
                        loss = loss + group_loss(rewards[offset : offset + len(group.responses)], group)
                        offset += len(group.responses)
                    # Each group weighs 1 / len(batch): the packs' losses sum to the mean over groups.
                    loss = loss / len(batch)
                    loss.backward()
                    loss_value += loss.item()
                if world > 1:
                    loss_value = _sum_across_processes(trained, loss_value, model.device)
                torch.nn.utils.clip_grad_norm_(trained, 1.0)
                optimizer.step()
                step += 1
                losses.append(loss_value)
                if main:
                    appender.write(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": loss_value,
                            "groups": len(batch),
                            "pairs": sum(len(g.pairs) for g in batch),
                            "sequences": sum(len(g.responses) for g in batch),
                        }
                    )
                if config.max_steps is not None and step >= config.max_steps:
                    break
            epoch_seconds.append(round(time.perf_counter() - epoch_began, 2))
            if held and main:
                eval_began = time.perf_counter()
                result = final = _evaluate(model, held, config)
                history.append(
                    {
                        "epoch": epoch,
                        "step": step,
                        **{k: v for k, v in result.items() if k != "bins"},
                        "train_seconds": epoch_seconds[-1],
                        "eval_seconds": round(time.perf_counter() - eval_began, 2),
                    }
                )
                log(
                    f"reward epoch {epoch}: loss {losses[-1]:.4f}, held-out accuracy {result['accuracy']:.3f}, "
                    f"ECE {result['ece']:.3f} ({epoch_seconds[-1]:.0f} s training)"
                )
            if config.max_steps is not None and step >= config.max_steps:
                break

    if not main:
        state.wait_for_everyone()
        return None  # type: ignore[return-value]  # the main process evaluates, saves and reports
    # Normalisation constants from the distinct training responses, so PPO sees rewards of unit scale.
    scores = score_distinct(model, train, batch_size=_score_batch(config))
    values = list(scores.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((r - mean) ** 2 for r in values) / max(len(values) - 1, 1)) or 1.0
    model.mean, model.std = mean, std
    train_acc = pairwise_accuracy([scores[p.prompt, p.chosen] - scores[p.prompt, p.rejected] for p in train])
    model.save(out_dir)
    report = RewardReport(
        train_pairs=len(train),
        eval_pairs=len(held),
        steps=step,
        seconds=round(time.perf_counter() - began, 2),
        final_loss=sum(losses[-5:]) / len(losses[-5:]),
        train_accuracy=train_acc,
        eval_accuracy=final["accuracy"] if final else None,
        eval_loss=final["loss"] if final else None,
        eval_ece=final["ece"] if final else None,
        reliability=final["bins"] if final else [],
        reward_mean=mean,
        reward_std=std,
        history=history,
        train_groups=len(groups),
        pairs_per_group=round(len(train) / len(groups), 3),
        sequences_per_epoch=sequences,
        seconds_per_epoch=round(sum(epoch_seconds) / len(epoch_seconds), 2),
        epoch_seconds=epoch_seconds,
        lora_layers=model.adapted_layers(),
    )
    (out_dir / "reward_report.json").write_text(
        json.dumps({**report.to_dict(), "processes": world}, indent=2) + "\n", encoding="utf-8"
    )
    state.wait_for_everyone()
    return report


def _sum_across_processes(params: Sequence[torch.Tensor], loss: float, device: torch.device) -> float:
    """Sum each parameter's gradient (a process without a group this step contributes zeros) and
    the loss over the processes; returns the summed loss."""
    from accelerate.utils import reduce

    for param in params:
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        param.grad = reduce(grad, reduction="sum")
    return float(reduce(torch.tensor(loss, device=device), reduction="sum"))
