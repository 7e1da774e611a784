"""Configs are pydantic models, loaded from YAML and overridden from the CLI with ``--set a.b=value``.

Validation reports every bad key at once, each with the file and line it came from, so a user fixes
a config in one pass instead of one failed run per typo.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tether.errors import ConfigError, TetherError
from tether.inputs import read_text

C = TypeVar("C", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServedConfig(StrictModel):
    """Where a served model (a spec ``openai:NAME``) is reached: any OpenAI-compatible endpoint,
    ``tether serve`` included. The API key itself is never a setting: only the name of the
    environment variable that holds it, so no run directory, manifest or trace can contain it."""

    base_url: str | None = Field(
        None,
        description="Endpoint root, e.g. http://localhost:8000/v1; unset: the OPENAI_BASE_URL environment variable.",
    )
    api_key_env: str | None = Field(
        None,
        description="NAME of the environment variable holding the API key (sent as a bearer token); "
        "None: no key.",
    )
    mode: Literal["auto", "chat", "completions"] = Field(
        "auto",
        description="Generation endpoint: 'auto' sends chat prompts to /chat/completions and raw "
        "prompts to /completions; 'chat' or 'completions' sends every prompt to that one.",
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(
        600.0,
        gt=0,
        description="Seconds one request may take before it is retried (the openai client's default: "
        "a batch of long generations on CPU can take minutes, and a retry only queues the same work again).",
    )
    max_retries: int = Field(
        4, ge=0, description="Retries of a request that timed out, failed to connect or got 429/5xx."
    )
    backoff_s: float = Field(
        0.5, ge=0, description="First retry's wait; each later retry waits twice as long (with jitter)."
    )


class VLLMConfig(StrictModel):
    """``engine.backend=vllm`` only: passed to ``vllm.LLM``."""

    gpu_memory_utilization: float = Field(
        0.85, gt=0.0, le=1.0, description="Fraction of GPU memory vLLM may take (weights + KV cache)."
    )
    max_model_len: int | None = Field(None, ge=16, description="Context length; default: the model's.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs to shard the model over.")
    enable_prefix_caching: bool = Field(
        True, description="Reuse a shared prefix's KV cache (scoring shares each item's context)."
    )
    seed: int = Field(0, description="vLLM's engine seed (each sampled request also gets its own).")


class EngineConfig(StrictModel):
    """How models run. Shared by every stage that generates or scores."""

    backend: Literal["hf", "vllm", "openai"] = Field(
        "hf",
        description="Generation backend: transformers (hf), vLLM (GPU extra), or openai (every model "
        "spec is a model NAME served at engine.served.base_url; a spec 'openai:NAME' is served whatever "
        "this says).",
    )
    served: ServedConfig = Field(
        default_factory=ServedConfig, description="Endpoint settings for served models (openai:NAME)."
    )
    vllm: VLLMConfig = Field(
        default_factory=VLLMConfig,
        description="vLLM settings (engine.backend=vllm; the transformers copy of the model then stays on "
        "the CPU, for tokenising, training and interpretability).",
    )
    batch_size: int = Field(
        16,
        ge=1,
        description="Prompts per generation batch (sorted by length first) where generation runs in "
        "batches: transformers' generate (sampling under decode_loop=auto) and vLLM.",
    )
    decode_slots: int = Field(
        128,
        ge=1,
        description="Sequences Tether's decode loop keeps in flight (a finished one's slot takes the next "
        "prompt), within kv_cache_mb. More slots share each read of the weights among more tokens: "
        "on a 2-core CPU 128 slots generate about twice the tokens/s of 16 (benchmarks/README.md). "
        "Greedy and seeded sampled outputs do not depend on it.",
    )
    kv_cache_mb: int = Field(
        1024,
        ge=1,
        description="Memory for the decode loop's key/value cache, in MiB: a call whose prompts are long "
        "runs fewer slots (each holds its prompt and max_new_tokens), never more memory.",
    )
    score_batch_size: int = Field(
        64, ge=1, description="Multiple-choice items per scoring batch, at most (see score_batch_tokens)."
    )
    score_batch_tokens: int = Field(
        4096,
        ge=1,
        description="Tokens per scoring forward, at most: each item's context plus its continuations "
        "(less their last token); an item larger than this runs alone.",
    )
    score_row_tokens: int = Field(
        512,
        ge=1,
        description="Tokens per packed scoring row: neighbouring items share one prefix tree (a shared "
        "prefix runs once) up to this size; an item larger than this gets a row of its own.",
    )
    device: str = Field(
        "auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ..."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="'auto' = float32 on CPU, bfloat16 on CUDA. bfloat16 on a CPU pays only with bf16 units "
        "(avx512_bf16, AMX): there it took about 0.6x float32's time (README 'Engine'); without them it is "
        "~7x slower. Another dtype gives other greedy text and its own fingerprint (cached results never mix).",
    )
    truncation: Literal["left", "error"] = Field(
        "left",
        description="A prompt longer than the context window minus max_new_tokens: keep its last tokens "
        "(with a warning) or raise an error.",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; default: all cores.")
    decode_loop: Literal["auto", "tether", "transformers"] = Field(
        "auto",
        description="Who runs generation. 'tether': Tether's decode loop (static KV cache, continuous "
        "batching) for greedy and sampled decoding; 'transformers': transformers' generate, batch by "
        "batch; 'auto': Tether's loop for greedy decoding and transformers' for sampling, which keeps "
        "the samples of earlier releases for a given seed and batch plan, except PPO's rollouts, which "
        "sample in Tether's loop.",
    )
    prefix_reuse: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Tether's decode loop prefills a long prompt on the keys and values of the prefix it "
        "shares with the prompt before it (long prompts then run in token order, so prompts with the "
        "same few-shot block sit side by side). The rest runs with fewer rows, so its floats may differ "
        "in the last bits: 'auto' reuses for sampled decoding only, so greedy text stays identical to "
        "transformers' generate; 'on' for greedy as well; 'off' never.",
    )
    prefix_cache_mb: int = Field(
        0,
        ge=0,
        description="Keys and values of long prompts kept across calls for prefix_reuse, in MiB: a "
        "multi-turn conversation (Crescendo, PAIR's attacker) then prefills only what its last turn "
        "did not have, whichever call it comes back in. Past the budget, prompts another stored prompt "
        "holds at least half of go first, then the least recently used. 0: only the previous "
        "prompt, within a call. "
        "Emptied whenever a weight, a hook or a PEFT adapter switch or scale of the model changes.",
    )
    packed_head: bool = Field(
        True,
        description="On a CPU in float32, Tether's decode loop computes each step's next-token logits "
        "with a copy of the LM head's weight packed for oneDNN, kept until the weight changes: the head is a step's "
        "largest matmul, and at a step's few rows plain F.linear runs it at a third of the CPU's matmul "
        "peak. Its logits differ from the plain head's in the last bits (about 1e-4), as a batch's do "
        "from one row's; false uses the plain head.",
    )
    merge_adapter: bool = Field(
        True,
        description="A LoRA adapter that an engine loads by its spec only to generate and score (an "
        "audit's checkpoints, a red-team target, tether serve) is merged into its base's weights once "
        "(PEFT's merge_and_unload), so each step runs the base's matmuls alone instead of every LoRA'd "
        "module's extra two and their casts: a 16-row decode step of the configs/tax.yaml adapter took "
        "0.79x the unmerged time on a 2-core CPU (benchmarks/README.md). Logits differ in the last bits "
        "(about 3e-4) in float32; in bfloat16 the merged sum is rounded once, another model whose results "
        "are cached apart (fingerprint +merged). Adapters being trained, and the frontier's scaled "
        "candidates, are never merged; false keeps every adapter unmerged.",
    )
    decode_step: Literal["auto", "eager", "compiled", "cuda_graph"] = Field(
        "auto",
        description="How Tether's decode loop runs a step: eagerly; through torch.compile (every step "
        "attends over the whole static cache; compiling takes minutes on a CPU and did not pay there, "
        "see benchmarks/README.md); or as one captured CUDA graph (CUDA only; recaptured when a hook, "
        "a tensor's identity or a PEFT adapter switch or scale changes; falls back to eager with a "
        "warning when capture fails). 'auto': the CUDA graph on a CUDA device, where eager steps of a "
        "small model wait on kernel launches (an H200 ran PPO's rollouts in 2.0 s with it, 6.3 s "
        "eagerly), eager elsewhere.",
    )
    cache_tokens: int | None = Field(
        None,
        ge=2,
        description="Tokens per sequence (prompt + new tokens) that the static KV cache holds; None: "
        "the model's context window. A longer prompt is truncated or refused per 'truncation'.",
    )

    @field_validator("prefix_reuse", mode="before")
    @classmethod
    def _on_off_from_yaml(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare on/off as a boolean, in a config file and in --set alike.
        return ("on" if value else "off") if isinstance(value, bool) else value


# ---------------------------------------------------------------------------------------------------
# YAML with line numbers


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key, keyed by its dotted path."""


def _load_with_lines(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from None

    def walk(node: yaml.Node, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                line = key_node.start_mark.line + 1
                if path + (key,) in lines:  # YAML would silently keep the last one
                    dotted = ".".join(str(p) for p in path + (key,))
                    raise ConfigError(
                        f"key '{dotted}' appears twice (first on line {lines[path + (key,)]})",
                        where=f"{source}:{line}",
                        hint="keep one of them",
                    )
                lines[path + (key,)] = line
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for index, child in enumerate(node.value):
                walk(child, path + (index,))

    if root is not None:
        walk(root, ())
    data = yaml.safe_load(text) if root is not None else {}
    return data, lines


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


Problem = tuple[tuple, str]
"""A problem found beyond the schema (a model that does not exist, a file that is missing): the
location of the key, as pydantic gives it, and what is wrong with its value."""


def check_value(key: str, check: Callable[[], object]) -> list[Problem]:
    """Run one check of a config value (``key`` dotted); a TetherError it raises becomes a Problem
    at that key, its hint kept. For the ``check`` functions of :func:`load_config`."""
    try:
        check()
    except TetherError as exc:
        where = f"{exc.where}: " if exc.where else ""
        return [(tuple(key.split(".")), where + exc.message + (f" ({exc.hint})" if exc.hint else ""))]
    return []


def _origin(loc: tuple, given: dict[tuple, str]) -> str | None:
    """How the user gave the value at ``loc`` on the command line (``--set key=value`` or a
    command's own flag), if they did: the longest given key that ``loc`` lies within."""
    for cut in range(len(loc), 0, -1):
        if tuple(str(p) for p in loc[:cut]) in given:
            return given[tuple(str(p) for p in loc[:cut])]
    return None


def validation_problems(
    exc: ValidationError | list[Problem],
    source: str,
    lines: dict[tuple, int] | None = None,
    given: dict[tuple, str] | None = None,
) -> list[str]:
    """One line per problem: where it came from (the command-line flag or ``--set`` that gave the
    value, else file:line), the dotted key and the message."""
    errors = (
        [
            (tuple(e["loc"]), "unknown key" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        ]
        if isinstance(exc, ValidationError)
        else exc
    )
    problems = []
    for loc, message in errors:
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        origin = _origin(loc, given or {})
        line = _line_for(loc, lines or {})
        where = origin or (f"{source}:{line}" if line else source)
        problems.append(f"{where}: {dotted}: {message.removeprefix('Value error, ')}")
    return problems


# ---------------------------------------------------------------------------------------------------
# Overrides


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(
            f"override '{item}' is not of the form key.path=value", hint="e.g. --set engine.batch_size=8"
        )
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def _field_default(model: type[BaseModel] | None, name: str) -> Any:
    """The default of ``model.name`` as plain data (a nested config's own default values, not
    its class defaults), or {} when there is none to start from."""
    field = model.model_fields.get(name) if model is not None else None
    if field is None or field.is_required():
        return {}
    default = field.get_default(call_default_factory=True)
    return default.model_dump(mode="python") if isinstance(default, BaseModel) else {}


def _nested_model(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    field = model.model_fields.get(name) if model is not None else None
    annotation = field.annotation if field is not None else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def apply_overrides(data: dict, overrides: list[str], model: type[BaseModel] | None = None) -> dict:
    """Set ``key.path=value`` items in ``data``. A nested section missing from ``data`` starts
    from the field's default (so ``--set loop.answer.max_new_tokens=64`` keeps the other defaults
    of ``loop.answer``) rather than from an empty mapping."""
    data = dict(data or {})
    for item in overrides:
        path, value = parse_override(item)
        node, node_model = data, model
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = _field_default(node_model, part)
            node[part] = child = dict(child)
            node, node_model = child, _nested_model(node_model, part)
        node[path[-1]] = value
    return data


def load_config(
    model: type[C],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    flags: Mapping[str, str] | None = None,
    check: Callable[[C], list[Problem]] | None = None,
    base: Mapping[str, Any] | None = None,
    base_source: str = "<defaults>",
) -> C:
    """Load ``model`` from a YAML file (optional) plus ``key.path=value`` overrides, reporting every
    invalid key at once, each with where its value came from: file:line, or the ``--set`` (or the
    command's flag, ``flags`` maps a dotted key to it) that gave it.

    ``check(config)`` looks past the schema (models and files that must exist, names that must be
    known) and returns its problems, reported the same way; it runs only on a config that validates.
    ``base`` (named ``base_source`` in errors) starts the data instead of a file: a run's recorded
    config, say."""
    data: dict = json.loads(json.dumps(dict(base))) if base is not None else {}
    lines: dict[tuple, int] = {}
    source = base_source
    if path is not None:
        path = Path(path)
        source = str(path)
        text = read_text(path, what="config file", error=ConfigError)
        data, lines = _load_with_lines(text, source)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("the top level must be a mapping of keys to values", where=source)
    data = apply_overrides(data, overrides or [], model)
    given = {tuple(parse_override(item)[0]): f"--set {item}" for item in overrides or []}
    given.update({tuple(key.split(".")): flag for key, flag in (flags or {}).items()})
    hint = f"see `tether config show {model.__name__}` for every field and its meaning"
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, source, lines, given)
        raise ConfigError(
            f"{len(problems)} problem(s) in the config:\n  " + "\n  ".join(problems), hint=hint
        ) from None
    found = check(config) if check is not None else []
    if found:
        problems = validation_problems(found, source, lines, given)
        raise ConfigError(f"{len(problems)} problem(s) in the config:\n  " + "\n  ".join(problems))
    return config


def describe_fields(
    model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None
) -> list[tuple[str, str, str, str]]:
    """(dotted name, type, default, description) for every field, nested configs flattened; a
    nested section shows its field's own default values, not its class defaults."""
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        dotted = f"{prefix}{name}"
        if defaults is not None:
            value, has_default = getattr(defaults, name), True
        else:
            has_default = not field.is_required()
            value = field.get_default(call_default_factory=True) if has_default else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = value if isinstance(value, BaseModel) else None
            rows.extend(describe_fields(annotation, prefix=f"{dotted}.", defaults=nested))
            continue
        type_name = getattr(annotation, "__name__", str(annotation)).replace("typing.", "")
        default = repr(value) if has_default else ""
        rows.append((dotted, type_name, default, field.description or ""))
    return rows
