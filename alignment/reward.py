"""Scoring with a trained reward model (a sequence classifier with one scalar output)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class RewardModel:
    def __init__(self, folder: Path, max_length: int = 512, batch_size: int = 16, bf16: bool = True):
        self.bf16 = bf16
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = max_length
        self.batch_size = batch_size

    def texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        """The conversations as the reward trainer saw them (chat template, no generation prompt)."""
        return [self.tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                                   tokenize=False) for p, r in zip(prompts, responses)]

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        texts = self.texts(prompts, responses)
        scores = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start: start + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_length, add_special_tokens=False)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                scores.append(self.model(**enc).logits[:, 0].float())
        return torch.cat(scores) if scores else torch.zeros(0)

    def accuracy(self, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str]) -> float:
        """Pairwise accuracy: how often the chosen answer outscores the rejected one."""
        if not prompts:
            return float("nan")
        return (self.score(prompts, chosen) > self.score(prompts, rejected)).float().mean().item()
