"""Guard settings: which artifact, what to do with each kind of finding, how streaming is held back."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

REPO_MIRROR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def default_mirror() -> Path | None:
    """The local mirror of public data sets: $GUARDCHAT_DATA_MIRROR, else ../shared/data beside the repo."""
    env = os.environ.get("GUARDCHAT_DATA_MIRROR")
    if env:
        return Path(env)
    return REPO_MIRROR if REPO_MIRROR.is_dir() else None


class JudgeSettings(BaseModel):
    """An LLM judge (Llama Guard / Qwen3Guard-Gen served by vLLM, e.g. `vllm serve meta-llama/Llama-Guard-3-1B`)
    consulted where the trained classifiers are unsure; its reading then decides. Off unless `url` is set."""

    model_config = {"extra": "forbid"}

    url: str | None = Field(None, description="OpenAI-compatible base URL of the judge, e.g. http://127.0.0.1:8001/v1.")
    model: str = Field("meta-llama/Llama-Guard-3-1B", description="Model name the judge server serves.")
    format: Literal["llama_guard", "qwen3guard"] = Field("llama_guard", description="How the judge answers.")
    api_key: str | None = Field(None, description="Bearer token for the judge server, if it wants one.")
    timeout_s: float = Field(10.0, gt=0, description="Per-request timeout; a timeout is a guard error.")
    band: tuple[float, float] = Field((0.08, 0.97), description="Fast-stage scores in this range ask the judge "
                                      "((0, 1): every text).")
    directions: list[Literal["input", "output"]] = Field(["input"], description="Which checks may ask the "
                                                         "judge (output checks run at every streamed release).")


class GuardSettings(BaseModel):
    """The filter layer around every request."""

    model_config = {"extra": "forbid"}

    enabled: bool = Field(True, description="Check inputs and outputs. Off: /health says 'not configured'.")
    artifact: Path | None = Field(
        None, description="Trained guard folder; default <cache-dir>/guard. Trained on first start if missing.")
    data_mirror: Path | None = Field(
        default_factory=default_mirror, description="Folder with the public data sets for training.")
    fail_closed: bool = Field(True, description="A classifier error blocks the request (off: it is let through, "
                                                "counted and logged).")
    output_pii: Literal["redact", "block", "allow"] = Field("redact", description="PII in model output.")
    input_pii: Literal["redact", "block", "allow"] = Field(
        "allow", description="PII in user input (their own data, by default passed on).")
    hold_chars: int = Field(
        48, ge=1, description="Streaming: text is released after the output check at a sentence end or once this "
        "many characters are held back.")
    first_hold_chars: int = Field(
        1, ge=1, description="Streaming: the first release of a reply comes once this many characters have "
        "passed the check (then hold_chars): by default the first word goes out as soon as it is checked, so "
        "the guard adds no hold-back to the time to first token.")
    min_block_chars: int = Field(
        32, ge=0, description="Streaming: a flagged reply shorter than this is held (not released, not yet "
        "stopped) until more text or the end of the reply decides.")
    unsafe_threshold_scale: float = Field(
        1.0, gt=0, description="Multiplies every calibrated threshold (<1 blocks more, >1 blocks less).")
    thresholds: dict[Literal["input", "output"], dict[str, float]] = Field(
        default_factory=dict, description="Overrides of the artifact's calibrated thresholds (scores in 0-1), per "
        "direction: a hazard category (e.g. {\"output\": {\"suicide_self_harm\": 0.3}}), 'unsafe' (the default "
        "of every category without its own), 'injection' (input), or 'unsafe_zh' / 'injection_zh' / a category + "
        "'_zh' (input, for Chinese text). Applied as given, after unsafe_threshold_scale.")
    compile_encoder: bool = Field(True, description="Compile the MiniLM encoder with torch.compile where it runs in "
                                  "bf16 (CPUs with AMX/AVX512-BF16), in the background after load (~30 s; "
                                  "the eager encoder serves meanwhile): faster checks of English text the n-gram "
                                  "stage is unsure of.")
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="Optional LLM judge.")
    audit_db: Path | None = Field(None, description="SQLite file for the audit of blocks; default <cache-dir>/audit.db.")
    audit_raw_text: bool = Field(False, description="Store the blocked text itself in the audit table.")

    @field_validator("thresholds")
    @classmethod
    def _known_thresholds(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        from guard.taxonomy import Category

        categories = {c.value for c in Category if c is not Category.PROMPT_INJECTION}
        known = {"unsafe", "injection", "unsafe_zh", "injection_zh"} | categories | {c + "_zh" for c in categories}
        for direction, overrides in value.items():
            for key, threshold in overrides.items():
                if key not in known:
                    raise ValueError(f"thresholds.{direction}.{key}: not a threshold (one of {', '.join(sorted(known))})")
                if not 0 < threshold <= 1:
                    raise ValueError(f"thresholds.{direction}.{key}: {threshold} is not in (0, 1]")
        return value
