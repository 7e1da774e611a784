"""``tether train sft|dpo|reward DATA --base SPEC --out DIR``: one trainer on a JSONL file, outside any
pipeline, so that it can be launched data-parallel with accelerate:

    accelerate launch --num_processes 8 $(which tether) train sft runs/cai/round1/sft_data.jsonl \\
        --base default --out adapters/sft --set max_steps=200

TRL's trainers run under accelerate as they are (one process per device, gradients all-reduced);
only the main process writes the adapter and ``train_log.json`` (which records the process count).
On CPUs, ``accelerate launch --cpu`` starts one process only (it needs MPI for more); ``torchrun
--nproc_per_node N -m tether.cli train ...`` starts N, and accelerate runs them over gloo (this is
how the test checks the data-parallel path without a GPU).
A pipeline (``tether cai run``) trains in its own single process; its training data is in its run
directory (``round1/sft_data.jsonl``, ``rlaif/pairs.jsonl``) for this command.

SFT lines are ``{"prompt", "completion"}``; DPO and reward lines ``{"prompt", "chosen",
"rejected"}`` (reward: an optional ``doc_id``). The reward model's own loop splits each step's
prompt groups over the processes and sums their gradients, so a step is the one a single process
takes. A bad line
is an error naming file:line before any model loads. stdout is one JSON object (the adapter
directory and the numbers of the run); messages go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tether.plain import out
from tether.train.examples import DPOLine, SFTLine, read_lines

app = typer.Typer(
    help="Train one adapter on a JSONL file (SFT, DPO, reward model); runs under accelerate launch.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Trainer config YAML (see `tether config show`).")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config field: key.path=value (repeatable).")
]
BaseOption = Annotated[
    str, typer.Option("--base", help="Model spec to train from (default, a directory, an adapter).")
]
OutOption = Annotated[
    Path, typer.Option("--out", help="Adapter directory to write (must not hold an adapter yet).")
]


def _check_out(out_dir: Path) -> None:
    from tether.errors import ConfigError

    if (out_dir / "adapter_config.json").exists():
        raise ConfigError(
            f"{out_dir} already holds an adapter",
            where="--out",
            hint="pass a new directory; nothing was overwritten",
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file", where="--out")


def _preference_pairs(rows: list[dict]) -> list:
    import hashlib

    from tether.data.records import PreferencePair

    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    return [
        PreferencePair(
            prompt=r["prompt"],
            chosen=r["chosen"],
            rejected=r["rejected"],
            doc_id=r.get("doc_id") or key(r["prompt"]),
            annotator="file",
            reason="",
            chosen_id=key(r["chosen"]),
            rejected_id=key(r["rejected"]),
        )  # fmt: skip
        for r in rows
    ]


def _train_reward(
    data: Path, base: str, out_dir: Path, config_path: Path | None, overrides: list[str] | None, device: str
) -> None:
    import sys

    from accelerate import PartialState

    from tether.config import load_config
    from tether.errors import ConfigError
    from tether.models.spec import check_spec
    from tether.train.reward import REWARD_HEAD, RewardConfig, train_reward_model

    config = load_config(RewardConfig, config_path, overrides)
    if (out_dir / REWARD_HEAD).exists():
        raise ConfigError(
            f"{out_dir} already holds a reward model", where="--out", hint="pass a new directory"
        )
    _check_out(out_dir)
    check_spec(base, where="--base")
    pairs = _preference_pairs(read_lines(data, DPOLine))
    report = train_reward_model(
        base, pairs, out_dir, config, log=lambda m: print(m, file=sys.stderr), device=device
    )
    state = PartialState()
    if state.is_main_process:
        out(
            json.dumps(
                {
                    "reward_model": str(out_dir),
                    "pairs": len(pairs),
                    "processes": state.num_processes,
                    "steps": report.steps,
                    "final_loss": report.final_loss,
                    "eval_accuracy": report.eval_accuracy,
                    "seconds": report.seconds,
                }
            )
        )


def _train(
    kind: str, data: Path, base: str, out_dir: Path, config_path: Path | None, overrides: list[str] | None
) -> None:
    from tether.config import load_config
    from tether.models.spec import check_spec

    if kind == "sft":
        from tether.train.sft import SFTTrainConfig as Config
        from tether.train.sft import train_sft as train
    else:
        from tether.train.dpo import DPOTrainConfig as Config
        from tether.train.dpo import train_dpo as train
    config = load_config(Config, config_path, overrides)
    _check_out(out_dir)
    check_spec(base, where="--base")
    rows = read_lines(data, SFTLine if kind == "sft" else DPOLine)
    adapter = train(base, rows, out_dir, config)
    from accelerate import PartialState

    if PartialState().is_main_process:
        log = json.loads((adapter / "train_log.json").read_text())
        losses = [h["loss"] for h in log["log_history"] if "loss" in h]
        out(
            json.dumps(
                {
                    "adapter": str(adapter),
                    "trainer": kind,
                    "examples": len(rows),
                    "processes": log.get("processes", 1),
                    "steps": config.max_steps,
                    "first_loss": losses[0] if losses else None,
                    "last_loss": losses[-1] if losses else None,
                    "seconds": log.get("seconds"),
                }
            )
        )


@app.command("sft")
def sft_command(
    data: Annotated[Path, typer.Argument(help="JSONL of {prompt, completion}.")],
    base: BaseOption = "default",
    out_dir: OutOption = Path("adapters/sft"),
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Supervised fine-tuning of a LoRA adapter on prompt/completion pairs (loss on the completion)."""
    _train("sft", data, base, out_dir, config, set_)


@app.command("dpo")
def dpo_command(
    data: Annotated[Path, typer.Argument(help="JSONL of {prompt, chosen, rejected}.")],
    base: BaseOption = "default",
    out_dir: OutOption = Path("adapters/dpo"),
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """DPO of a LoRA adapter on preference pairs."""
    _train("dpo", data, base, out_dir, config, set_)


@app.command("reward")
def reward_command(
    data: Annotated[Path, typer.Argument(help="JSONL of {prompt, chosen, rejected[, doc_id]}.")],
    base: BaseOption = "default",
    out_dir: OutOption = Path("adapters/reward"),
    config: ConfigOption = None,
    set_: SetOption = None,
    device: Annotated[
        str,
        typer.Option("--device", help="auto (each process its own GPU under accelerate), cpu, cuda, cuda:N."),
    ] = "auto",
) -> None:
    """A Bradley-Terry reward model (LoRA backbone + scalar head) on preference pairs; the pairs of
    one document (doc_id, default the prompt) are held out together."""
    _train_reward(data, base, out_dir, config, set_, device)
