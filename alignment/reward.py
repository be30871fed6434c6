"""Scoring with a trained reward model (a sequence classifier with one scalar output)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from serve.hardware import use_bf16

SETTINGS_FILE = "reward.json"  # how the model reads replies, written beside its weights by the rm stage


def by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of like lengths, so that padding stays small."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def cut(tokenizer, texts: Sequence[str], tokens: int | None) -> list[str]:
    """Each text cut to its first `tokens` tokens (None: whole)."""
    if tokens is None:
        return list(texts)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [t if len(i) <= tokens else tokenizer.decode(i[:tokens]) for t, i in zip(texts, ids)]


def save_settings(folder: Path, response_tokens: int | None) -> None:
    (folder / SETTINGS_FILE).write_text(json.dumps({"response_tokens": response_tokens}))


class RewardModel:
    """Scores (prompt, reply) pairs. A model trained on replies cut to their first N tokens (see the rm
    stage's `response_tokens`) reads replies cut the same way: its folder says so."""

    def __init__(self, folder: Path, max_length: int = 512, batch_size: int = 16, bf16: bool | None = None):
        self.bf16 = use_bf16(bf16)
        settings = Path(folder) / SETTINGS_FILE
        self.response_tokens = json.loads(settings.read_text())["response_tokens"] if settings.is_file() else None
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = max_length
        self.batch_size = batch_size

    def texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        """The conversations as the reward trainer saw them (chat template, no generation prompt)."""
        responses = cut(self.tokenizer, responses, self.response_tokens)
        return [self.tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                                   tokenize=False) for p, r in zip(prompts, responses)]

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        texts = self.texts(prompts, responses)
        if not texts:
            return torch.zeros(0)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=False)["input_ids"]
        scores = torch.empty(len(ids))
        for idx in by_length([len(i) for i in ids], self.batch_size):
            enc = self.tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                scores[idx] = self.model(**enc).logits[:, 0].float()
        return scores

    def accuracy(self, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]) -> float:
        """Pairwise accuracy: how often the chosen answer outscores the rejected one."""
        if not prompts:
            return float("nan")
        return (self.score(prompts, chosen) > self.score(prompts, rejected)).float().mean().item()
