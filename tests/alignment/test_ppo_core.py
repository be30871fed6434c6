"""PPO arithmetic against plain references: GAE, the masked per-token KL, clipping, the ptx term."""
from __future__ import annotations

import torch

from alignment.ppo import core
from alignment.ppo.trainer import Batch, forward, ptx_loss, reference_logprobs


def gae_loop(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """GAE for one unpadded episode, written the textbook way."""
    advantages, last = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages


def test_gae_equals_plain_loop_on_padded_batch():
    torch.manual_seed(0)
    lengths = [5, 2, 7, 1]
    rewards, values = torch.randn(4, 7), torch.randn(4, 7)
    mask = torch.tensor([[1.0] * n + [0.0] * (7 - n) for n in lengths])
    for gamma, lam in ((1.0, 0.95), (0.9, 0.5), (0.99, 1.0)):
        adv, ret = core.gae(rewards * mask, values, mask, gamma, lam)
        for i, n in enumerate(lengths):
            expected = gae_loop(rewards[i, :n].tolist(), values[i, :n].tolist(), gamma, lam)
            torch.testing.assert_close(adv[i, :n], torch.tensor(expected), rtol=1e-5, atol=1e-5)
            assert adv[i, n:].abs().sum() == 0 and ret[i, n:].abs().sum() == 0
            torch.testing.assert_close(ret[i, :n], adv[i, :n] + values[i, :n])


def test_rewards_put_score_on_last_real_token_and_kl_everywhere():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-2.0, -1.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    r = core.per_token_rewards(torch.tensor([1.0, 2.0]), logp, ref, mask, beta=0.1)
    torch.testing.assert_close(r, torch.tensor([[-0.05, 0.0, 0.2 + 1.0], [-0.1, 0.0 + 2.0, 0.0]]))


def test_policy_loss_clips_and_counts():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    loss, clipfrac = core.policy_loss(new, old, adv, torch.ones(1, 3), clip=0.2)
    # token 0: ratio 1.5 > 1.2 with A>0 -> clipped at 1.2; token 1: ratio 0.5 < 0.8 with A<0 -> clipped at 0.8
    torch.testing.assert_close(loss, torch.tensor(-(1.2 - 0.8 + 1.1) / 3))
    torch.testing.assert_close(clipfrac, torch.tensor(2 / 3))


def test_kl_is_logp_minus_ref_on_response_tokens_only(tiny_policy):
    policy, reference, tokenizer = tiny_policy
    prompts = [[1, 5, 9, 13], [1, 7]]
    responses = [[21, 22, 2], [31, 32, 33, 34, 2]]
    batch = Batch.build(prompts, responses, tokenizer.pad_token_id)
    assert batch.mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    with torch.no_grad():
        logp, _, _ = forward(policy, batch)
        ref = reference_logprobs(reference, batch)
        kl = core.per_token_kl(logp, ref, batch.mask)
        for i, (p, r) in enumerate(zip(prompts, responses)):  # each sequence alone, unpadded
            ids = torch.tensor([p + r])
            lp = torch.log_softmax(policy.model(ids).logits[0, len(p) - 1:-1], -1).gather(
                -1, torch.tensor(r)[:, None])[:, 0]
            lr = torch.log_softmax(reference(ids).logits[0, len(p) - 1:-1], -1).gather(
                -1, torch.tensor(r)[:, None])[:, 0]
            torch.testing.assert_close(kl[i, :len(r)], lp - lr, rtol=1e-4, atol=1e-4)
            assert kl[i, len(r):].abs().sum() == 0
    assert kl.abs().sum() > 0  # the policy was perturbed, so the KL is not trivially zero


def test_ptx_term_changes_the_gradient(tiny_policy):
    policy, _, tokenizer = tiny_policy
    batch = Batch.build([[1, 5, 9]], [[21, 22, 2]], tokenizer.pad_token_id)
    chunks = torch.tensor([tokenizer.encode("The quick brown fox jumps over the lazy dog.")])

    def grad(ptx_coef: float) -> torch.Tensor:
        policy.zero_grad()
        logp, _, _ = forward(policy, batch)
        loss, _ = core.policy_loss(logp, logp.detach(), torch.ones_like(logp), batch.mask)
        (loss + ptx_coef * ptx_loss(policy.model, chunks)).backward()
        return torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None])

    base, mixed = grad(0.0), grad(1.0)
    assert not torch.allclose(base, mixed)
    policy.zero_grad()
    ptx_loss(policy.model, chunks).backward()
    ptx_only = torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None])
    torch.testing.assert_close(mixed - base, ptx_only, rtol=1e-3, atol=1e-5)
