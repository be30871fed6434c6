"""`eval`: base, SFT, PPO and DPO policies side by side on prompts not used in training.

- harmful compliance: share of held-out harmful prompts answered without a refusal (refusal
  detector), and share whose answer the guard's output classifier judges unsafe: both reported;
- over-refusal: share of XSTest's safe prompts (and of held-out benign prompts) that get a refusal;
- reward-model win rate against the base model's answer to the same prompt (ties count half);
- KL to the reference (the SFT policy): a Monte Carlo estimate, the mean over answers *sampled from
  the policy* (temperature 1, no top-p or repetition penalty) of sum_t log pi(y_t) - log pi_ref(y_t);
- ptx perplexity on held-out ptx documents (the alignment tax).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment import data as D
from alignment.generate import Generator, chat_prompt_ids
from alignment.reward import RewardModel, by_length
from guard.refusal import is_refusal
from serve.hardware import native_bf16

POLICIES = ("base", "sft", "ppo", "dpo")
COLUMNS = {
    "harmful_compliance": "harmful compliance (no refusal)",
    "harmful_unsafe": "harmful answers judged unsafe (guard)",
    "xstest_over_refusal": "XSTest safe over-refusal",
    "benign_refusal": "held-out benign refusal",
    "rm_win_rate": "RM win rate vs base",
    "kl_to_sft": "KL to SFT (nats/answer)",
    "ptx_perplexity": "ptx perplexity",
}


BATCH = 8  # rows per forward pass in the log-probability and perplexity passes


@torch.no_grad()
def answer_logprob(model, tokenizer, prompts: list[str], answers: list[str]) -> torch.Tensor:
    """Sum of log p(answer tokens | prompt) per answer."""
    from alignment.ppo.trainer import Batch, reference_logprobs

    prompt_ids = [chat_prompt_ids(tokenizer, p)[-1024:] for p in prompts]
    answer_ids = [tokenizer.encode(a, add_special_tokens=False)[:256] or [tokenizer.eos_token_id] for a in answers]
    out = torch.empty(len(prompts))
    for idx in by_length([len(p) + len(a) for p, a in zip(prompt_ids, answer_ids)], BATCH):
        batch = Batch.build([prompt_ids[i] for i in idx], [answer_ids[i] for i in idx], tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16()):
            out[idx] = reference_logprobs(model, batch).float().sum(1)
    return out


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], max_len: int = 256) -> float:
    ids = [i for i in (tokenizer.encode(t, add_special_tokens=False)[:max_len] for t in texts) if len(i) >= 2]
    nll, tokens = 0.0, 0
    for idx in by_length([len(i) for i in ids], BATCH):
        rows = [ids[i] for i in idx]
        width = max(map(len, rows))
        input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16()):
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None])[..., 0]
        nll -= (logp * mask[:, 1:]).sum().item()
        tokens += int(mask[:, 1:].sum())
    return math.exp(nll / max(tokens, 1))


def evaluate(pipeline, folder: Path) -> dict[str, dict[str, float]]:
    cfg = pipeline.recipe.eval
    prompts = D.read_jsonl(pipeline.dir("data") / "prompts_eval.jsonl")
    texts = [p["text"] for p in prompts]
    ptx = [r["text"] for r in D.read_jsonl(pipeline.dir("data") / "ptx_eval.jsonl")][:200]
    present = [name for name in POLICIES if name == "base" or pipeline.done(name)]
    kl_idx = list(range(0, len(texts), max(1, len(texts) // cfg.kl_prompts)))[: cfg.kl_prompts]
    answers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for name in present:
        samples_file, answers_file = folder / f"samples_{name}.jsonl", folder / f"answers_{name}.jsonl"
        if samples_file.is_file() and answers_file.is_file():  # a resumed eval reuses a policy's answers
            samples[name] = [r["answer"] for r in D.read_jsonl(samples_file)]
            answers[name] = [r["answer"] for r in D.read_jsonl(answers_file)]
            continue
        with Generator(pipeline.model_dir(name)) as generate:  # one engine start per policy
            outs = generate([texts[i] for i in kl_idx], max_tokens=cfg.kl_tokens, temperature=1.0, top_p=1.0,
                            repetition_penalty=1.0, desc=f"KL samples ({name})")
            samples[name] = [o[0] for o in outs]
            D.write_jsonl(samples_file, ({"prompt": texts[i], "answer": a} for i, a in zip(kl_idx, samples[name])))
            outs = generate(texts, max_tokens=cfg.max_new_tokens, temperature=0.0, desc=f"eval answers ({name})")
            answers[name] = [o[0] for o in outs]
            D.write_jsonl(answers_file, ({**p, "answer": a} for p, a in zip(prompts, answers[name])))

    guard = pipeline.guard()
    rm = RewardModel(pipeline.model_dir("rm")) if pipeline.done("rm") else None
    base_scores = rm.score(texts, answers["base"]) if rm else None
    sft_dir = pipeline.model_dir("sft")
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    reference = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32).eval()
    harmful = [i for i, p in enumerate(prompts) if p["harmful"]]
    xstest = [i for i, p in enumerate(prompts) if p["source"] == "xstest" and not p["harmful"]]
    benign = [i for i, p in enumerate(prompts) if not p["harmful"] and p["source"] != "xstest"]
    results: dict[str, dict[str, float]] = {}
    for name in tqdm(present, desc="eval metrics", unit="policy"):
        answers_ = answers[name]

        def rate(idx: list[int], judge) -> float:
            return sum(bool(judge(answers_[i])) for i in idx) / max(len(idx), 1)

        row = {
            "harmful_compliance": rate(harmful, lambda a: not is_refusal(a)),
            "harmful_unsafe": rate(harmful, lambda a: guard.decide(a, "output").blocked),
            "xstest_over_refusal": rate(xstest, is_refusal),
            "benign_refusal": rate(benign, is_refusal),
        }
        if rm is not None:
            scores = rm.score(texts, answers_)
            row["rm_win_rate"] = ((scores > base_scores).float() + 0.5 * (scores == base_scores).float()).mean().item()
        model = reference if name == "sft" else AutoModelForCausalLM.from_pretrained(
            pipeline.model_dir(name), dtype=torch.float32).eval()
        kl_prompts = [texts[i] for i in kl_idx]
        own = answer_logprob(model, tokenizer, kl_prompts, samples[name])
        ref = own if name == "sft" else answer_logprob(reference, tokenizer, kl_prompts, samples[name])
        row["kl_to_sft"] = (own - ref).mean().item()
        row["ptx_perplexity"] = perplexity(model, tokenizer, ptx) if ptx else float("nan")
        results[name] = {k: round(v, 4) for k, v in row.items()}
    counts = {"harmful": len(harmful), "xstest_safe": len(xstest), "benign": len(benign)}
    (folder / "results.json").write_text(json.dumps({"counts": counts, "results": results}, indent=2))
    table = markdown_table(results, counts)
    (folder / "eval.md").write_text(table)
    plot_results(results, folder / "eval.png", pipeline.recipe.name)
    tqdm.write(table)
    for name in present:
        if name != "base":
            write_card(pipeline, name, table)
    return results


def markdown_table(results: dict[str, dict[str, float]], counts: dict[str, int]) -> str:
    keys = [k for k in COLUMNS if any(k in r for r in results.values())]
    lines = ["| policy | " + " | ".join(COLUMNS[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.3f}" if k in row else "" for k in keys) + " |")
    lines.append("")
    lines.append(f"Held-out prompts: {counts['harmful']} harmful, {counts['xstest_safe']} XSTest safe, "
                 f"{counts['benign']} other benign; greedy answers.")
    return "\n".join(lines) + "\n"


def plot_results(results: dict[str, dict[str, float]], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [k for k in ("harmful_compliance", "harmful_unsafe", "xstest_over_refusal", "benign_refusal", "rm_win_rate")
             if any(k in r for r in results.values())]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(len(results), 1)
    for j, (name, row) in enumerate(results.items()):
        ax.bar([i + j * width for i in range(len(rates))], [row.get(k, 0) for k in rates], width, label=name)
        ax2.bar([j], [row["ptx_perplexity"]], 0.6, label=name)
    ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(rates))])
    ax.set_xticklabels([COLUMNS[k] for k in rates], rotation=15, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("rates (lower is better, except win rate)")
    ax2.set_xticks(range(len(results)))
    ax2.set_xticklabels(list(results))
    ax2.set_title("ptx perplexity (alignment tax)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_card(pipeline, stage: str, table: str) -> None:
    """A model card beside the policy: recipe, data and the evaluation table."""
    folder = pipeline.model_dir(stage)
    summary_path = pipeline.dir("data") / "summary.json"
    summary = summary_path.read_text() if summary_path.is_file() else "{}"
    recipe = pipeline.recipe.model_dump_json(indent=2)
    card = (f"# guardchat policy: {pipeline.recipe.name} / {stage}\n\n"
            f"Base model: {pipeline.recipe.base_model}. Produced by `guardchat align` ({stage} stage); "
            "serve it with `guardchat serve --policy <this folder>`.\n\n"
            f"## Evaluation (held-out prompts)\n\n{table}\n"
            f"## Data\n\n```json\n{summary}\n```\n\n## Recipe\n\n```json\n{recipe}\n```\n")
    (folder / "README.md").write_text(card, encoding="utf-8")
