"""PPO with a per-token KL penalty and a pretraining-loss mix (InstructGPT's "PPO-ptx").

One iteration: sample `batch_size` prompts, generate responses with the current policy (vLLM with
synced weights, or HF generate), score them (reward model, optionally minus a guard cost), build
per-token rewards (-beta * KL to the frozen reference on every response token, plus the score on
the last), GAE advantages, then `epochs` passes of clipped-surrogate + value + ptx updates over
shuffled mini-batches. Stops early when KL or response length runs away (reward hacking).
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from alignment.ppo import core
from alignment.ppo.policy import PolicyWithValue
from alignment.ppo.rollout import HFRollout, VLLMRollout
from serve.hardware import fast_dtype, use_bf16

log = logging.getLogger(__name__)

RewardFn = Callable[[list[str], list[str], list[list[int]]], Sequence[float]]
"""(prompts, decoded responses, response token ids) -> one score per response."""


class PPOConfig(BaseModel):
    iterations: int = Field(40, ge=1, description="Rollout + update iterations.")
    batch_size: int = Field(32, ge=1, description="Prompts (and responses) per iteration.")
    mini_batch_size: int = Field(8, ge=1, description="Rollouts per gradient step.")
    epochs: int = Field(2, ge=1, description="PPO epochs over each iteration's rollouts.")
    max_new_tokens: int = Field(64, ge=1, description="Response length cap.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts.")
    lr: float = Field(1e-6, gt=0, description="Adam learning rate (policy and value head).")
    beta: float = Field(0.02, ge=0, description="Per-token KL penalty to the frozen reference (InstructGPT: 0.02).")
    gamma: float = Field(1.0, description="Discount of GAE.")
    lam: float = Field(0.95, description="GAE lambda.")
    clip: float = Field(0.2, gt=0, description="Clip range of the policy ratio.")
    clip_value: float = Field(0.2, gt=0, description="Clip range of the value update.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    ptx_coef: float = Field(27.8, ge=0, description="Weight of the pretraining log-likelihood term "
                            "(InstructGPT's gamma, 27.8); 0 is plain PPO.")
    ptx_batch_size: int = Field(4, ge=1, description="Pretraining sequences per gradient step.")
    ptx_max_len: int = Field(128, ge=8, description="Tokens per pretraining sequence.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    whiten_advantages: bool = Field(True, description="Normalize advantages per iteration.")
    stop_kl: float = Field(25.0, gt=0, description="Early stop when the mean KL per response (nats) exceeds this.")
    stop_length_factor: float = Field(
        2.5, gt=1, description="Early stop when the mean response length exceeds this multiple of the first "
        "iteration's (and is near max_new_tokens).")
    rollout_engine: str = Field("vllm", pattern="^(vllm|hf)$", description="vllm (weights synced each "
                                "iteration) or hf (transformers generate).")
    vllm_dtype: str | None = Field(None, description="dtype of the rollout engine. Default: bfloat16 where this "
                                   "machine computes it natively, else float32 (serve.hardware.fast_dtype).")
    save_every: int = Field(10, ge=1, description="Checkpoint every this many iterations (resume point).")
    bf16: bool | None = Field(None, description="bf16 autocast for forward/backward passes (fp32 master weights, "
                              "log-probabilities in fp32). Default: where native (serve.hardware.native_bf16).")
    seed: int = 0


@dataclass
class Batch:
    """Rollouts laid out for training: prompts left-padded to a common end, so every response
    starts at column `start`; per-token tensors are (B, R) over response tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    start: int
    response_ids: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def build(cls, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad: int) -> Batch:
        p_len = max(map(len, prompts))
        r_len = max(1, max(map(len, responses)))
        rows, attn, mask = [], [], []
        for p, r in zip(prompts, responses):
            rows.append([pad] * (p_len - len(p)) + list(p) + list(r) + [pad] * (r_len - len(r)))
            attn.append([0] * (p_len - len(p)) + [1] * (len(p) + len(r)) + [0] * (r_len - len(r)))
            mask.append([1.0] * len(r) + [0.0] * (r_len - len(r)))
        input_ids, attention_mask = torch.tensor(rows), torch.tensor(attn)
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        return cls(input_ids, attention_mask, position_ids, p_len, input_ids[:, p_len:], torch.tensor(mask))

    @property
    def window(self) -> slice:
        """The positions whose next-token logits predict the response tokens."""
        return slice(self.start - 1, self.start - 1 + self.response_ids.shape[1])

    def select(self, idx: torch.Tensor) -> Batch:
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx], self.start,
                     self.response_ids[idx], self.mask[idx])


def response_logprobs(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """log p of each response token: the logits one position earlier predict it."""
    return core.token_logprobs(logits[:, batch.window], batch.response_ids) * batch.mask


def forward(policy: PolicyWithValue, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log p of response tokens, values of the states before each, next-token logits there)."""
    logits, values = policy(batch.input_ids, batch.attention_mask, batch.position_ids)
    return response_logprobs(logits, batch), values[:, batch.window] * batch.mask, logits[:, batch.window]


@torch.no_grad()
def reference_logprobs(reference: torch.nn.Module, batch: Batch) -> torch.Tensor:
    logits = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids, use_cache=False).logits
    return response_logprobs(logits, batch)


def ptx_loss(model: torch.nn.Module, chunks: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of pretraining text (full, unpadded chunks)."""
    return model(input_ids=chunks, labels=chunks, use_cache=False).loss


class PPOTrainer:
    def __init__(self, config: PPOConfig, policy_dir: Path, tokenizer: PreTrainedTokenizerBase, reward_fn: RewardFn,
                 prompts: Sequence[str], out_dir: Path, ptx_texts: Sequence[str] = (),
                 reference_dir: Path | None = None):
        self.config, self.tokenizer, self.reward_fn, self.out_dir = config, tokenizer, reward_fn, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        checkpoint = self.out_dir / "checkpoint"
        self.start_iteration = 0
        resume = (checkpoint / "state.pt").is_file()
        self.policy = PolicyWithValue.from_pretrained(checkpoint if resume else policy_dir)
        self.reference = AutoModelForCausalLM.from_pretrained(reference_dir or policy_dir, dtype=torch.float32).eval()
        self.reference.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr, eps=1e-5)
        if resume:
            state = torch.load(checkpoint / "state.pt", weights_only=False)
            self.optimizer.load_state_dict(state["optimizer"])
            self.start_iteration = state["iteration"]
            self.first_length = state.get("first_length")
            log.info("ppo: resuming at iteration %d", self.start_iteration)
        else:
            self.first_length = None
        self.pad = tokenizer.pad_token_id
        self.eos = tokenizer.eos_token_id
        self.prompts = list(prompts)
        self.prompt_ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=True,
                                                         add_generation_prompt=True, return_dict=False)
                           for p in self.prompts]
        self.ptx_chunks = self._chunk(ptx_texts) if config.ptx_coef > 0 else None
        if config.rollout_engine == "vllm":
            self.rollout = VLLMRollout(checkpoint if resume else policy_dir, self.eos,
                                       dtype=config.vllm_dtype or fast_dtype(), seed=config.seed)
        else:
            self.rollout = HFRollout(self.eos, self.pad)
        self.metrics_path = self.out_dir / "metrics.jsonl"

    def autocast(self):
        device = next(self.policy.parameters()).device.type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16(self.config.bf16))

    def _chunk(self, texts: Sequence[str]) -> torch.Tensor | None:
        """Pretraining text as fixed-length token chunks (documents joined by EOS)."""
        ids: list[int] = []
        for text in texts:
            ids += self.tokenizer.encode(text, add_special_tokens=False) + [self.eos]
        n = len(ids) // self.config.ptx_max_len
        if n == 0:
            raise ValueError("ptx_coef > 0 needs pretraining text of at least ptx_max_len tokens")
        return torch.tensor(ids[: n * self.config.ptx_max_len]).view(n, self.config.ptx_max_len)

    def _prompt_order(self, iteration: int) -> list[int]:
        """Prompts of an iteration: a fixed shuffled pass over all prompts, repeated (resumable)."""
        per_epoch = len(self.prompts)
        first = iteration * self.config.batch_size
        order: list[int] = []
        while len(order) < self.config.batch_size:
            epoch, offset = divmod(first + len(order), per_epoch)
            perm = list(range(per_epoch))
            random.Random(self.config.seed + epoch).shuffle(perm)
            order += perm[offset: offset + self.config.batch_size - len(order)]
        return order

    def rollouts(self, iteration: int) -> tuple[list[int], list[list[int]]]:
        self.rollout.sync(self.policy.model)
        idx = self._prompt_order(iteration)
        self.policy.eval()
        responses = self.rollout.generate([self.prompt_ids[i] for i in idx], self.config.max_new_tokens,
                                          self.config.temperature, seed=self.config.seed * 100_003 + iteration)
        return idx, [r if r else [self.eos] for r in responses]

    def step(self, iteration: int) -> dict[str, float]:
        c = self.config
        started = time.perf_counter()
        idx, responses = self.rollouts(iteration)
        generated = time.perf_counter()
        batch = Batch.build([self.prompt_ids[i] for i in idx], responses, self.pad)
        texts = [self.tokenizer.decode(r, skip_special_tokens=True) for r in responses]
        scores = torch.tensor(list(self.reward_fn([self.prompts[i] for i in idx], texts, responses)),
                              dtype=torch.float32)
        with torch.no_grad(), self.autocast():
            old_logp, old_values, _ = forward(self.policy, batch)
            ref_logp = reference_logprobs(self.reference, batch)
        with torch.no_grad():
            old_values = old_values.float()
            rewards = core.per_token_rewards(scores, old_logp, ref_logp, batch.mask, c.beta)
            advantages, returns = core.gae(rewards, old_values, batch.mask, c.gamma, c.lam)
            if c.whiten_advantages:
                advantages = core.whiten(advantages, batch.mask)
        self.policy.train()
        totals: dict[str, list[float]] = {k: [] for k in ("pg_loss", "vf_loss", "ptx_loss", "clipfrac", "entropy")}
        g = torch.Generator().manual_seed(c.seed * 7919 + iteration)
        for _ in range(c.epochs):
            perm = torch.randperm(len(idx), generator=g)
            for mb in perm.split(c.mini_batch_size):
                sub = batch.select(mb)
                with self.autocast():
                    logp, values, logits = forward(self.policy, sub)
                    values = values.float()
                pg, clipfrac = core.policy_loss(logp, old_logp[mb], advantages[mb], sub.mask, c.clip)
                vf = core.value_loss(values, old_values[mb], returns[mb], sub.mask, c.clip_value)
                loss = pg + c.vf_coef * vf
                if self.ptx_chunks is not None:
                    pick = torch.randint(len(self.ptx_chunks), (c.ptx_batch_size,), generator=g)
                    with self.autocast():
                        ptx = ptx_loss(self.policy.model, self.ptx_chunks[pick]).float()
                    loss = loss + c.ptx_coef * ptx
                    totals["ptx_loss"].append(ptx.item())
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    totals["entropy"].append(core.masked_mean(core.entropy_from_logits(logits), sub.mask).item())
                totals["pg_loss"].append(pg.item())
                totals["vf_loss"].append(vf.item())
                totals["clipfrac"].append(clipfrac.item())
        kl = core.per_token_kl(old_logp, ref_logp, batch.mask).sum(1)
        elapsed = time.perf_counter() - started
        return {
            "iteration": iteration + 1,
            "reward": scores.mean().item(),
            "kl": kl.mean().item(),
            "response_length": batch.mask.sum(1).mean().item(),
            **{k: (sum(v) / len(v) if v else 0.0) for k, v in totals.items()},
            "rollout_seconds": generated - started,
            "seconds": elapsed,
            "samples_per_second": len(idx) / elapsed,
        }

    def runaway(self, stats: dict[str, float]) -> str | None:
        """Why training should stop early (reward hacking), or None."""
        c = self.config
        if stats["kl"] > c.stop_kl:
            return f"KL ran away: {stats['kl']:.1f} nats per response > stop_kl {c.stop_kl}"
        if self.first_length is None:
            self.first_length = stats["response_length"]
        long = stats["response_length"] > c.stop_length_factor * self.first_length
        if long and stats["response_length"] >= 0.9 * c.max_new_tokens:
            return (f"response length ran away: {stats['response_length']:.0f} tokens > {c.stop_length_factor}x "
                    f"the first iteration's {self.first_length:.0f}")
        return None

    def save(self, folder: Path, iteration: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        torch.save({"optimizer": self.optimizer.state_dict(), "iteration": iteration,
                    "first_length": self.first_length}, folder / "state.pt")

    def train(self) -> list[dict[str, float]]:
        history: list[dict[str, float]] = []
        bar = tqdm(range(self.start_iteration, self.config.iterations), desc="ppo", unit="it",
                   initial=self.start_iteration, total=self.config.iterations)
        for iteration in bar:
            stats = self.step(iteration)
            history.append(stats)
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(stats) + "\n")
            bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.2f}",
                            len=f"{stats['response_length']:.0f}")
            tqdm.write(f"ppo it {iteration + 1}: reward {stats['reward']:+.3f} kl {stats['kl']:.3f} "
                       f"entropy {stats['entropy']:.2f} clipfrac {stats['clipfrac']:.3f} "
                       f"vf {stats['vf_loss']:.4f} ptx {stats['ptx_loss']:.3f} len {stats['response_length']:.1f} "
                       f"{stats['samples_per_second']:.1f} samples/s")
            reason = self.runaway(stats)
            if reason:
                tqdm.write(f"ppo: early stop at iteration {iteration + 1}: {reason}")
                stats["early_stop"] = reason  # type: ignore[assignment]
                self.save(self.out_dir / "checkpoint", iteration + 1)
                break
            if (iteration + 1) % self.config.save_every == 0:
                self.save(self.out_dir / "checkpoint", iteration + 1)
        return history

    def close(self) -> None:
        if isinstance(self.rollout, VLLMRollout):
            self.rollout.close()
