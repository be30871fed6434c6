"""An alignment recipe: one YAML file naming the base model, the data and every stage's settings."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from alignment.ppo.trainer import PPOConfig
from guard.config import default_mirror

RECIPES = Path(__file__).resolve().parent / "recipes"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    mirror: Path | None = Field(default_factory=default_mirror, description="Local mirror of the public data "
                                "sets (default: $GUARDCHAT_DATA_MIRROR, else ../shared/data beside the repo).")
    train_prompts: int = Field(600, ge=2, description="Training prompts drawn (see harmful_share).")
    eval_prompts: int = Field(200, ge=2, description="Held-out harmful/benign prompts for `eval` (plus XSTest safe).")
    zh_share: float = Field(0.3, ge=0, le=1, description="Share of Chinese prompts.")
    harmful_share: float = Field(0.35, ge=0, le=1, description="Share of harmful training prompts (the rest "
                                 "benign): refusals are easy to learn, so fewer of them keep the policy helpful.")
    lookalike_share: float = Field(0.5, ge=0, le=1, description="Share of the benign training prompts taken "
                                   "from look-alikes of harmful ones (against over-refusal).")
    base_samples: int = Field(2, ge=1, description="Base-model answers sampled per training prompt (for "
                              "demonstrations and rankings).")
    answer_tokens: int = Field(160, ge=8, description="Length cap of generated answers.")
    max_public_pairs: int = Field(1200, ge=0, description="Public comparison pairs used (HH-RLHF, JADE v3, CoCoNot).")
    feedback: list[Path] = Field(default_factory=list, description="Exported feedback pairs (JSONL in TRL's "
                                 "preference format, `guardchat feedback export`) added to the comparisons.")
    ptx_files: list[Path] = Field(default_factory=list, description="Extra plain-text files for the ptx corpus.")
    ptx_texts: int = Field(2000, ge=0, description="Documents in the ptx corpus (a tenth more is held out for "
                           "the perplexity in `eval`).")
    seed: int = 0


class TrainerStage(Strict):
    """A TRL trainer's settings (transformers' TrainingArguments underneath)."""

    epochs: float = Field(1.0, gt=0, description="Passes over the training rows.")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (cosine schedule, 5% warm-up).")
    batch_size: int = Field(8, ge=1, description="Rows per forward/backward pass.")
    grad_accum: int = Field(1, ge=1, description="Passes per optimizer step.")
    max_length: int = Field(384, ge=16, description="Tokens per row (longer rows are truncated).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps (resume point).")
    max_rows: int | None = Field(None, ge=1, description="Use at most this many training rows (a seeded sample).")
    bf16: bool | None = Field(None, description="bf16 autocast (fp32 master weights): ~4x faster matmuls on CPUs "
                              "with AVX512-BF16/AMX, and on GPUs; far slower where emulated (AVX2). Default: where "
                              "native.")


class SFTStage(TrainerStage):
    pass


class PairStage(TrainerStage):
    """A stage that trains on preference pairs."""

    harmful_share: float | None = Field(
        None, ge=0, le=1, description="With max_rows: share of the rows drawn from the rankings of harmful "
        "prompts (refusal over compliance); the rest from every other pair. None: a plain seeded sample.")


class RMStage(PairStage):
    lr: float = 3e-5
    max_length: int = Field(384, ge=16, description="Tokens per pair side; TRL's RewardTrainer leaves longer "
                            "pairs out of training (the stage writes how many to pairs.json).")
    response_tokens: int | None = Field(
        None, ge=1, description="Replies are cut to their first N tokens, in training and wherever the model "
        "scores (held-out accuracy, PPO, eval): it ranks how a reply begins, at a fraction of the cost. Pairs "
        "whose cut replies are equal are left out. None: whole replies.")


class DPOStage(PairStage):
    beta: float = Field(0.1, gt=0, description="Strength of the pull toward the reference.")
    lr: float = 5e-6


class PPOStage(PPOConfig):
    model_config = ConfigDict(extra="forbid")
    guard_cost: float = Field(0.0, ge=0, description="Subtracted from the reward, times the guard output "
                              "classifier's unsafe probability (0: the reward model alone).")
    refusal_cost: float = Field(0.0, ge=0, description="Subtracted from the reward when a reply declines "
                                "(the refusal detector) a request the guard's input check allows: over-refusal "
                                "(0: off). With guard_cost, a rule-based reward on both sides of the line.")
    reward_scale: float = Field(1.0, gt=0, description="Reward model scores are divided by this.")


class EvalStage(Strict):
    max_new_tokens: int = 128
    xstest_safe: int = Field(250, ge=0, description="XSTest safe prompts for the over-refusal rate (all 250).")
    kl_prompts: int = Field(100, ge=1, description="Prompts whose sampled answers estimate the KL to SFT.")
    kl_tokens: int = Field(64, ge=1, description="Length cap of those samples.")


class Recipe(Strict):
    name: str = "recipe"
    base_model: str = Field("default", description="'default' (SmolLM2-135M-Instruct from the PyPI package) or "
                            "a local HF-format folder.")
    out_dir: Path = Field(Path("runs/recipe"), description="Where stage folders go (relative to the working dir).")
    cache_dir: Path | None = Field(None, description="guardchat's cache (default model, guard artifact).")
    stages: list[str] = Field(["sft", "rm", "ppo", "dpo", "eval"], description="What `run` runs, in order.")
    data: DataConfig = DataConfig()
    sft: SFTStage = SFTStage()
    rm: RMStage = RMStage()
    ppo: PPOStage = PPOStage()
    dpo: DPOStage = DPOStage()
    eval: EvalStage = EvalStage()

    @classmethod
    def load(cls, path: Path) -> Recipe:
        path = Path(path)
        if not path.is_file() and (RECIPES / f"{path}.yaml").is_file():
            path = RECIPES / f"{path}.yaml"
        return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
