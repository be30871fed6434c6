"""Our PPO on the tiny model: it raises a learnable synthetic reward, a larger beta keeps the policy
closer to the reference, and weights synced into vLLM give the same greedy tokens as HF."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from alignment.ppo.policy import PolicyWithValue
from alignment.ppo.rollout import HFRollout, VLLMRollout
from alignment.ppo.trainer import PPOConfig, PPOTrainer

PROMPTS = ["Tell me a story.", "What is the weather like?", "How do I bake bread?", "Name a colour.",
           "讲个故事。", "今天天气怎么样？", "Give me a number.", "Say something nice."]


@pytest.fixture(scope="module")
def favoured(tiny_model_dir) -> torch.Tensor:
    """Half of the vocabulary, split by a random direction in the tiny model's embedding space: a
    preference the policy can learn (one direction of its last hidden state) from the start."""
    from safetensors.torch import load_file

    embeddings = load_file(tiny_model_dir / "model.safetensors")["model.embed_tokens.weight"]
    direction = torch.randn(embeddings.shape[1], generator=torch.Generator().manual_seed(0))
    return embeddings @ direction > 0


def share_reward(favoured: torch.Tensor):
    def reward(_prompts, _texts, ids) -> list[float]:
        return [favoured[torch.tensor(r)].float().mean().item() for r in ids]
    return reward


def train(tmp_path, tiny_model_dir, favoured, beta: float, iterations: int = 8) -> list[dict]:
    config = PPOConfig(iterations=iterations, batch_size=32, mini_batch_size=8, epochs=4, max_new_tokens=4,
                       lr=1e-2, beta=beta, ptx_coef=0.0, rollout_engine="hf", save_every=100, seed=1,
                       stop_kl=1e9)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = PPOTrainer(config, tiny_model_dir, tokenizer, share_reward(favoured), PROMPTS, tmp_path / f"beta{beta}")
    return trainer.train()


def test_ppo_raises_reward_and_beta_bounds_kl(tmp_path, tiny_model_dir, favoured):
    free = train(tmp_path, tiny_model_dir, favoured, beta=0.0)
    first = sum(s["reward"] for s in free[:2]) / 2
    last = sum(s["reward"] for s in free[-2:]) / 2
    assert last > first + 0.25, [round(s["reward"], 3) for s in free]
    held = train(tmp_path, tiny_model_dir, favoured, beta=0.5)
    kl_free = sum(s["kl"] for s in free[-3:]) / 3
    kl_held = sum(s["kl"] for s in held[-3:]) / 3
    assert kl_held < kl_free, (kl_held, kl_free)
    assert (tmp_path / "beta0.0" / "metrics.jsonl").read_text().count("\n") == len(free)


def test_ppo_resumes_from_checkpoint(tmp_path, tiny_model_dir, favoured):
    config = PPOConfig(iterations=2, batch_size=4, mini_batch_size=4, epochs=1, max_new_tokens=6, lr=1e-4,
                       ptx_coef=1.0, ptx_max_len=16, rollout_engine="hf", save_every=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ptx = ["The quick brown fox jumps over the lazy dog. " * 4]
    PPOTrainer(config, tiny_model_dir, tokenizer, share_reward(favoured), PROMPTS, tmp_path, ptx_texts=ptx).train()
    again = PPOTrainer(config.model_copy(update={"iterations": 3}), tiny_model_dir, tokenizer, share_reward(favoured),
                       PROMPTS, tmp_path, ptx_texts=ptx)
    assert again.start_iteration == 2
    history = again.train()
    assert [s["iteration"] for s in history] == [3] and history[0]["ptx_loss"] > 0


def test_early_stop_names_runaway_kl(tmp_path, tiny_model_dir, favoured):
    config = PPOConfig(iterations=8, batch_size=32, mini_batch_size=8, epochs=4, max_new_tokens=4, lr=1e-2,
                       beta=0.0, ptx_coef=0.0, rollout_engine="hf", stop_kl=5.0, seed=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    history = PPOTrainer(config, tiny_model_dir, tokenizer, share_reward(favoured), PROMPTS, tmp_path).train()
    assert len(history) < 8 and "KL ran away" in history[-1]["early_stop"]


def test_weights_synced_into_vllm_match_hf_greedy(tiny_model_dir):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = PolicyWithValue.from_pretrained(tiny_model_dir)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for p in PROMPTS[:4]]
    engine = VLLMRollout(tiny_model_dir, tokenizer.eos_token_id, dtype="float32", kv_cache_gib=0.125)
    hf = HFRollout(tokenizer.eos_token_id, tokenizer.pad_token_id)
    try:
        before = engine.generate(prompts, 8, temperature=0)
        optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)  # one large step: greedy tokens change
        ids = torch.tensor([prompts[0] + before[0]])
        policy.model(ids, labels=ids).loss.neg().backward()
        optimizer.step()
        engine.sync(policy.model)
        hf.sync(policy.model.eval())
        after_vllm = engine.generate(prompts, 8, temperature=0)
        after_hf = hf.generate(prompts, 8, temperature=0)
    finally:
        engine.close()
    assert after_vllm == after_hf
    assert after_vllm != before
