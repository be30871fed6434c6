"""The PPO policy: a causal LM with a scalar value head on its last hidden state (shared trunk)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

VALUE_HEAD = "value_head.pt"


class PolicyWithValue(nn.Module):
    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        self.value_head = nn.Linear(model.config.hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / (model.config.hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_pretrained(cls, folder: Path, dtype: torch.dtype = torch.float32) -> PolicyWithValue:
        policy = cls(AutoModelForCausalLM.from_pretrained(folder, dtype=dtype))
        head = Path(folder) / VALUE_HEAD
        if head.is_file():  # resuming: the head trained so far
            policy.value_head.load_state_dict(torch.load(head, weights_only=True))
        return policy.to(dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, L, V) and values (B, L): the value at position t estimates the return of the
        state that ends with token t."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         output_hidden_states=True, use_cache=False)
        values = self.value_head(out.hidden_states[-1]).squeeze(-1)
        return out.logits, values

    def save_pretrained(self, folder: Path) -> None:
        """An HF-format policy folder (what `guardchat serve --policy` hosts) plus the value head."""
        self.model.save_pretrained(folder, safe_serialization=True)
        torch.save(self.value_head.state_dict(), Path(folder) / VALUE_HEAD)
