"""A causal LM (plain or PEFT/LoRA) with a scalar value head on its last hidden state.

The head is a single ``Linear(hidden, 1)`` kept in float32 whatever the model's dtype: value targets
are unnormalised returns and bf16 loses too much of them. It saves as ``value_head.safetensors``
beside the adapter (or full model) files so a checkpoint directory holds the whole policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tether.errors import ModelLoadError

VALUE_HEAD_WEIGHTS = "value_head.safetensors"
VALUE_HEAD_CONFIG = "value_head.json"


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0: PPO ratios must be exactly 1 before the first update."""
    for sub in module.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = 0.0
        # HF attention layers keep their dropout as a float attribute, not an nn.Dropout module.
        if isinstance(getattr(sub, "attention_dropout", None), float):
            sub.attention_dropout = 0.0


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, matching what generation used for the same tokens."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class PolicyWithValueHead(nn.Module):
    """Wraps ``model`` (an HF causal LM, optionally a PEFT model) and adds a value head.

    ``forward`` returns ``(logits, values)``: logits ``(B, K, V)`` for the last ``K = logits_to_keep``
    positions (all positions when 0) and values ``(B, T)`` for every position, where the value at
    position ``t`` is the value of the prefix ending at ``t`` (the state from which token ``t+1`` is
    sampled).
    """

    def __init__(self, model: nn.Module, *, head_init_std: float | None = None, dropout_off: bool = True):
        super().__init__()
        self.model = model
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.hidden_size = int(config.hidden_size)
        param = next(model.parameters())
        self.value_head = nn.Linear(self.hidden_size, 1, device=param.device, dtype=torch.float32)
        # A near-zero head starts every value at ~0 so early value errors are the returns themselves,
        # not the noise of a random projection of large hidden states.
        nn.init.normal_(
            self.value_head.weight,
            std=head_init_std if head_init_std is not None else 1.0 / (self.hidden_size + 1),
        )
        nn.init.zeros_(self.value_head.bias)
        if dropout_off:
            disable_dropout(model)

    @property
    def config(self):
        return self.model.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=logits_to_keep,
        )
        hidden = out.hidden_states[-1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values

    def save(self, directory: str | Path, *, save_model: bool = True) -> Path:
        """Write the value head (and, with ``save_model``, the model or adapter) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if save_model:
            self.model.save_pretrained(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(state, directory / VALUE_HEAD_WEIGHTS)
        (directory / VALUE_HEAD_CONFIG).write_text(json.dumps({"hidden_size": self.hidden_size}) + "\n")
        return directory

    def load_value_head(self, directory: str | Path) -> None:
        """Load ``value_head.safetensors`` from ``directory`` into this head."""
        path = Path(directory) / VALUE_HEAD_WEIGHTS
        if not path.is_file():
            raise ModelLoadError(
                "no value head found",
                where=str(path),
                hint="point at a directory written by PolicyWithValueHead.save, or start a fresh head",
            )
        state = load_file(path)
        saved = tuple(state["weight"].shape)
        if saved != (1, self.hidden_size):
            raise ModelLoadError(
                f"value head has shape {saved} but the model's hidden size is {self.hidden_size}",
                where=str(path),
                hint="load the value head with the same base model it was trained on",
            )
        self.value_head.load_state_dict({k: v.to(self.value_head.weight.device) for k, v in state.items()})

    @classmethod
    def from_pretrained(cls, model: nn.Module, directory: str | Path, **kwargs) -> PolicyWithValueHead:
        """Wrap an already-loaded ``model`` and restore the value head saved in ``directory``."""
        policy = cls(model, **kwargs)
        policy.load_value_head(directory)
        return policy
