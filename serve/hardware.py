"""Which number format this machine computes fast, for the dtype defaults of the engine and of training.

bf16 halves memory traffic, and on GPUs and on CPUs with AVX512-BF16 or AMX its matmuls run natively
(~1.5x the float32 serving throughput, ~4x the training matmuls). On an AVX2-only CPU torch and vLLM
emulate it, and it is far slower than float32 (measured on a 2-core AVX2 EPYC: a MiniLM fine-tuning
step 8.0 s against 0.5 s; SmolLM2-135M in vLLM at 16 streams, 36 against 132 tokens/s). So bf16 is the
default only where it is native."""
from __future__ import annotations

import functools


@functools.cache
def native_bf16() -> bool:
    """A CUDA device, or a CPU with AVX512-BF16 or AMX tiles."""
    import torch

    if torch.cuda.is_available():
        return True
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own checks (private API)
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def fast_dtype() -> str:
    """The engine dtype to use when none is asked for: "bfloat16" where it is native, else "float32"."""
    return "bfloat16" if native_bf16() else "float32"


def use_bf16(asked: bool | None) -> bool:
    """bf16 autocast as asked, or (None) where it is native."""
    return native_bf16() if asked is None else asked
