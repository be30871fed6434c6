from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.ppo.policy import PolicyWithValue


@pytest.fixture
def tiny_policy(tiny_model_dir):
    """A policy (perturbed away from its reference) and the frozen reference, on the tiny model."""
    torch.manual_seed(0)
    policy = PolicyWithValue.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return policy, reference, tokenizer
