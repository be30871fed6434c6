"""Batch generation of chat answers with vLLM's offline engine (data building and evaluation)."""
from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoTokenizer

from alignment.ppo.rollout import offline_llm
from serve.hardware import fast_dtype


def chat_prompt_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                         add_generation_prompt=True, return_dict=False)


class Generator:
    """One vLLM offline engine on a model folder, for several batches of answers (an engine start costs
    tens of seconds on a CPU). Use as a context manager; the engine is freed on exit."""

    def __init__(self, model_dir: Path, *, seed: int = 0, kv_cache_gib: float = 0.5, dtype: str | None = None):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.llm = offline_llm(model_dir, dtype=dtype or fast_dtype(), kv_cache_gib=kv_cache_gib, seed=seed)

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        del self.llm
        gc.collect()

    def __call__(self, prompts: Sequence[str], *, max_tokens: int = 128, temperature: float = 0.0, n: int = 1,
                 top_p: float = 0.95, repetition_penalty: float = 1.1, desc: str = "generating") -> list[list[str]]:
        """`n` answers per prompt (greedy when temperature is 0), in prompt order. The defaults
        (top_p 0.95, repetition penalty 1.1) keep a small model out of loops; pass 1.0 and 1.0 to
        sample from the policy's own distribution."""
        from vllm import SamplingParams, TokensPrompt

        # No per-request seed (see offline_llm).
        params = SamplingParams(n=n, temperature=temperature, top_p=1.0 if temperature == 0 else top_p,
                                max_tokens=max_tokens, repetition_penalty=repetition_penalty)
        answers: list[list[str]] = []
        chunk = 64
        with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
            for start in range(0, len(prompts), chunk):
                batch = [TokensPrompt(prompt_token_ids=chat_prompt_ids(self.tokenizer, p)[-1536:])
                         for p in prompts[start: start + chunk]]
                for out in self.llm.generate(batch, params, use_tqdm=False):
                    answers.append([o.text.strip() for o in out.outputs])
                bar.update(len(batch))
        return answers


def generate_answers(model_dir: Path, prompts: Sequence[str], *, seed: int = 0, kv_cache_gib: float = 0.5,
                     dtype: str | None = None, **sampling) -> list[list[str]]:
    """Answers from a fresh engine (see Generator for the sampling arguments)."""
    with Generator(model_dir, seed=seed, kv_cache_gib=kv_cache_gib, dtype=dtype) as generate:
        return generate(prompts, **sampling)
