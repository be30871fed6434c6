"""The stages of a recipe: data, sft, rm, ppo, dpo, eval. Each writes a folder under the recipe's
out_dir (model, the config it used, metrics JSONL, a plot of its curves) and a DONE marker; a
re-run skips finished stages, and an interrupted one resumes from its last checkpoint."""
from __future__ import annotations

import json
import logging
import random
import shutil
import time
import zlib
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, TrainerCallback

from alignment import data as D
from alignment.recipe import Recipe
from alignment.refusal import refusal
from alignment.reward import cut, save_settings
from guard.refusal import is_refusal
from serve.hardware import use_bf16

log = logging.getLogger(__name__)
STAGES = ("data", "sft", "rm", "ppo", "dpo", "eval")
NEEDS = {"sft": ("data",), "rm": ("sft",), "ppo": ("sft", "rm"), "dpo": ("sft",), "eval": ("sft",)}


def plot_curves(metrics: Path, out: Path, title: str) -> None:
    """One small panel per numeric series of a metrics JSONL file."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = D.read_jsonl(metrics) if metrics.is_file() else []
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k not in ("step", "epoch",
                   "iteration")})
    if not keys:
        return
    cols = min(4, len(keys))
    fig, axes = plt.subplots((len(keys) + cols - 1) // cols, cols, figsize=(3.2 * cols, 2.4 * ((len(keys) + cols - 1)
                             // cols)), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r.get("step", r.get("iteration", i)), r[key]) for i, r in enumerate(rows) if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


class MetricsLog(TrainerCallback):
    """TRL/transformers log lines -> metrics.jsonl, and a one-line summary per logging step."""

    def __init__(self, path: Path, stage: str):
        self.path, self.stage = path, stage

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step" and "runtime" not in k
                         and "per_second" not in k)
        tqdm.write(f"{self.stage} step {state.global_step}: {shown}")


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete TRL checkpoint (transformers writes trainer_state.json last; a run killed while
    saving leaves the previous one in place)."""
    checkpoints = sorted((p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                         key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else None


class Pipeline:
    def __init__(self, recipe: Recipe, recipe_text: str = ""):
        self.recipe = recipe
        self.recipe_text = recipe_text
        self.out = Path(recipe.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)

    # --- bookkeeping -------------------------------------------------------------------------
    def dir(self, stage: str) -> Path:
        return self.out / stage

    def done(self, stage: str) -> bool:
        return (self.dir(stage) / "DONE").is_file()

    def cache_dir(self) -> Path:
        from serve.settings import default_cache_dir
        return Path(self.recipe.cache_dir) if self.recipe.cache_dir else default_cache_dir()

    def base_dir(self) -> Path:
        if self.recipe.base_model == "default":
            from serve.default_model import ensure_default_model
            return ensure_default_model(self.cache_dir())
        return Path(self.recipe.base_model)

    def model_dir(self, stage: str) -> Path:
        return self.base_dir() if stage == "base" else self.dir(stage) / "model"

    def run(self, stages: list[str] | None = None, force: bool = False) -> None:
        for stage in stages or self.recipe.stages:
            self.stage(stage, force=force)

    def stage(self, stage: str, force: bool = False) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
        folder = self.dir(stage)
        if self.done(stage) and not force:
            tqdm.write(f"align: {stage} already done ({folder}), skipped")
            return folder
        for need in NEEDS.get(stage, ()):
            if not self.done(need):
                self.stage(need)
        if force and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        section = getattr(self.recipe, stage, None)
        used = {"recipe": self.recipe.name, "stage": stage,
                "config": section.model_dump(mode="json") if section is not None else None}
        (folder / "config.json").write_text(json.dumps(used, indent=2))
        started = time.time()
        tqdm.write(f"align: {stage} -> {folder}")
        getattr(self, f"run_{stage}")(folder)
        if (folder / "metrics.jsonl").is_file():
            plot_curves(folder / "metrics.jsonl", folder / "curves.png", f"{self.recipe.name}: {stage}")
        (folder / "DONE").write_text(json.dumps({"seconds": round(time.time() - started, 1)}))
        tqdm.write(f"align: {stage} done in {time.time() - started:.0f} s")
        return folder

    # --- data --------------------------------------------------------------------------------
    def run_data(self, folder: Path) -> None:
        cfg = self.recipe.data
        prompts = D.load_prompts(cfg.mirror)
        own = D.own_demonstrations()
        train = D.balanced(prompts.train, cfg.train_prompts, cfg.seed, cfg.zh_share, cfg.harmful_share,
                           cfg.lookalike_share, preferred=own)
        held = [p for p in prompts.eval if p.source != "xstest"]
        evals = D.balanced(held, self.recipe.data.eval_prompts, cfg.seed, cfg.zh_share)
        evals += [p for p in prompts.eval if p.source == "xstest" and not p.harmful][: self.recipe.eval.xstest_safe]
        D.Prompts(train, evals, prompts.skipped).save(folder)

        # Base-model answers: helpful demonstrations for benign prompts (those the guard's output
        # check passes and that do not refuse) and the losing side of rankings for harmful ones.
        # A benign prompt with an own demonstration learns that instead; for the reward model it
        # ranks above the refusal only (ranked above the base answers too, the RM preferred their
        # word salad and lost accuracy: see the README).
        answers = self.base_answers([p.text for p in train], folder / "base_answers.jsonl")
        guard = self.guard()
        demos: dict[str, str] = {}
        pairs: list[D.Pair] = []
        verdicts = {a: guard.decide(a, "output").blocked for outs in answers for a in outs}
        # A benign prompt's losing refusal borrows a harmful training prompt's category (by a stable
        # hash), so that every refusal wording is on both sides of the line and the reward model has
        # to read the prompt to rank it. With the generic wording only ever losing, PPO found a
        # refusal that mixed it with a category's wording and outscored every answer (README).
        categories = [p.category for p in train if p.harmful] or [None]
        for p, outs in zip(train, answers):
            category = p.category if p.harmful else categories[zlib.crc32(p.text.encode()) % len(categories)]
            decline = refusal(category, p.lang)
            passing = [a for a in outs if a and not verdicts[a] and not is_refusal(a)]
            others = [a for a in outs if a and a not in passing]
            if p.harmful:
                demos[p.text] = decline
                declined = [a for a in outs if a and is_refusal(a) and not verdicts[a]]
                ranked = [[decline], declined, [a for a in outs if a and a not in declined]]
            else:
                if p.text in own:
                    demos[p.text] = own[p.text]
                    pairs.append(D.Pair(p.text, own[p.text], decline, "rankings"))
                elif passing:
                    demos[p.text] = passing[0]
                ranked = [passing, others, [decline]]
            pairs += D.ranking_pairs(p.text, [g for g in ranked if g], "rankings")
        public, skipped = D.public_pairs(cfg.mirror)
        random.Random(cfg.seed).shuffle(public)
        pairs += public[: cfg.max_public_pairs]
        for path in cfg.feedback:
            pairs += D.feedback_pairs(Path(path))
        pairs_train, pairs_dev = D.split_pairs(pairs, [p.text for p in evals])
        D.write_jsonl(folder / "sft.jsonl", D.sft_rows(train, demos))
        D.write_jsonl(folder / "pairs_train.jsonl", D.preference_rows(pairs_train))
        D.write_jsonl(folder / "pairs_dev.jsonl", D.preference_rows(pairs_dev))
        ptx = D.ptx_texts(cfg.mirror, cfg.ptx_files, limit=cfg.ptx_texts + cfg.ptx_texts // 10, seed=cfg.seed)
        D.write_jsonl(folder / "ptx_train.jsonl", ({"text": t} for t in ptx[: cfg.ptx_texts]))
        D.write_jsonl(folder / "ptx_eval.jsonl", ({"text": t} for t in ptx[cfg.ptx_texts:]))
        summary = {
            "prompts_train": count(train, lambda p: f"{'harmful' if p.harmful else 'benign'}_{p.lang}"),
            "prompts_eval": count(evals, lambda p: f"{p.source}_{'harmful' if p.harmful else 'benign'}"),
            "demonstrations": {"refusals": sum(p.harmful and p.text in demos for p in train),
                               "own_answers": sum(not p.harmful and p.text in own for p in train),
                               "base_answers_kept": sum(not p.harmful and p.text in demos and p.text not in own
                                                        for p in train),
                               "benign_prompts": sum(not p.harmful for p in train)},
            "pairs_train": count(pairs_train, lambda p: p.source), "pairs_dev": count(pairs_dev, lambda p: p.source),
            "ptx": {"train": min(len(ptx), cfg.ptx_texts), "eval": max(0, len(ptx) - cfg.ptx_texts)},
            "skipped": sorted(set(prompts.skipped) | set(skipped)),
        }
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        tqdm.write("align data: " + json.dumps(summary, ensure_ascii=False))

    def base_answers(self, prompts: list[str], path: Path) -> list[list[str]]:
        """`base_samples` sampled answers per prompt, kept in the data folder (a resumed run reuses them)."""
        cfg = self.recipe.data
        if path.is_file():
            rows = D.read_jsonl(path)
            if [r["prompt"] for r in rows] == prompts:
                return [r["answers"] for r in rows]
        from alignment.generate import generate_answers
        answers = generate_answers(self.base_dir(), prompts, max_tokens=cfg.answer_tokens, temperature=0.8,
                                   n=cfg.base_samples, seed=cfg.seed, desc="base answers")
        D.write_jsonl(path, ({"prompt": p, "answers": a} for p, a in zip(prompts, answers)))
        return answers

    def guard(self):
        from guard.artifact import ensure_artifact
        from guard.config import GuardSettings
        from guard.pipeline import GuardPipeline

        settings = GuardSettings()
        return GuardPipeline.load(ensure_artifact(settings, self.cache_dir()), settings, threads=None)

    def dataset(self, name: str, max_rows: int | None = None, rows: list[dict] | None = None):
        """A data file (or given rows) as a datasets.Dataset, cut to a seeded sample of max_rows."""
        from datasets import Dataset
        rows = D.read_jsonl(self.dir("data") / name) if rows is None else rows
        if max_rows is not None and len(rows) > max_rows:
            rows = random.Random(self.recipe.data.seed).sample(rows, max_rows)
        return Dataset.from_list(rows)

    def tokenizer(self, folder: Path):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ValueError(f"{folder}: the tokenizer needs a pad token distinct from EOS")
        return tokenizer

    def common_args(self, folder: Path, cfg) -> dict:
        return dict(output_dir=str(folder / "trainer"), use_cpu=True, num_train_epochs=cfg.epochs,
                    learning_rate=cfg.lr, per_device_train_batch_size=cfg.batch_size,
                    gradient_accumulation_steps=cfg.grad_accum, max_length=cfg.max_length, logging_steps=5,
                    save_steps=cfg.save_steps, save_total_limit=1, report_to="none", seed=self.recipe.data.seed,
                    disable_tqdm=False, dataloader_num_workers=0, lr_scheduler_type="cosine", warmup_steps=0.05,
                    bf16=use_bf16(cfg.bf16))

    def finish_trainer(self, trainer, folder: Path, tokenizer) -> None:
        checkpoint = last_checkpoint(folder / "trainer")
        if checkpoint:
            tqdm.write(f"align: resuming from {checkpoint}")
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(str(folder / "model"))
        tokenizer.save_pretrained(folder / "model")
        shutil.rmtree(folder / "trainer", ignore_errors=True)

    # --- sft / rm / dpo (TRL) ----------------------------------------------------------------
    def run_sft(self, folder: Path) -> None:
        from trl import SFTConfig, SFTTrainer

        base = self.base_dir()
        tokenizer = self.tokenizer(base)
        rows = [{"prompt": r["messages"][:1], "completion": r["messages"][1:]}
                for r in D.read_jsonl(self.dir("data") / "sft.jsonl")]
        args = SFTConfig(**self.common_args(folder, self.recipe.sft), completion_only_loss=True)
        train = self.dataset("sft.jsonl", self.recipe.sft.max_rows, rows)
        trainer = SFTTrainer(model=str(base), args=args, train_dataset=train,
                             processing_class=tokenizer, callbacks=[MetricsLog(folder / "metrics.jsonl", "sft")])
        self.finish_trainer(trainer, folder, tokenizer)

    def run_rm(self, folder: Path) -> None:
        from transformers import AutoModelForSequenceClassification
        from trl import RewardConfig, RewardTrainer

        sft = self.model_dir("sft")
        tokenizer = self.tokenizer(sft)
        model = AutoModelForSequenceClassification.from_pretrained(sft, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
        cfg = self.recipe.rm
        args = RewardConfig(**self.common_args(folder, cfg))
        train = self.pairs(cfg)
        given = len(train)
        if cfg.response_tokens is not None:
            # The model reads each reply's first response_tokens tokens (PPO's replies are max_new_tokens
            # long): pairs are half as long, so two epochs cost what one of whole replies did. Together
            # they taught it to read the prompt (README, "The reward model reads the prompt now").
            train = train.map(lambda row: {side: [{**row[side][0], "content": cut(tokenizer, [row[side][0]["content"]],
                                                                               cfg.response_tokens)[0]}]
                                          for side in ("chosen", "rejected")})
            train = train.filter(lambda row: row["chosen"][0]["content"] != row["rejected"][0]["content"])
            tqdm.write(f"rm: replies cut to {cfg.response_tokens} tokens; {given - len(train)} of {given} pairs "
                       "tie after the cut and are left out")
        trainer = RewardTrainer(model=model, args=args, train_dataset=train,
                                processing_class=tokenizer, callbacks=[MetricsLog(folder / "metrics.jsonl", "rm")])
        # TRL's RewardTrainer drops (not truncates) a pair longer than max_length. SmolLM2's tokenizer
        # spends many tokens on Chinese: at 192 tokens a third of the pairs, most of the Chinese ones,
        # were silently left out. Say how many (its train_dataset is what is left).
        dropped = len(train) - len(trainer.train_dataset)
        (folder / "pairs.json").write_text(json.dumps({"rows": given, "response_tokens": cfg.response_tokens,
                                                        "tied_after_cut": given - len(train),
                                                        "max_length": cfg.max_length, "longer_rows_dropped": dropped}))
        if dropped:
            tqdm.write(f"rm: {dropped} of {len(train)} pairs are longer than max_length {cfg.max_length} tokens "
                       f"and are left out of training (TRL's RewardTrainer drops them)")
        self.finish_trainer(trainer, folder, tokenizer)
        save_settings(folder / "model", cfg.response_tokens)
        self.rm_accuracy(folder)

    def pairs(self, cfg):
        """The training pairs of a pair stage: max_rows of them, harmful_share from refusal rankings if set."""
        rows = None
        if cfg.harmful_share is not None and cfg.max_rows is not None:
            harmful = {p["text"] for p in D.read_jsonl(self.dir("data") / "prompts_train.jsonl") if p["harmful"]}
            rows = D.share_sample(D.read_jsonl(self.dir("data") / "pairs_train.jsonl"), harmful, cfg.max_rows,
                                  cfg.harmful_share, self.recipe.data.seed)
        return self.dataset("pairs_train.jsonl", cfg.max_rows, rows)

    def rm_accuracy(self, folder: Path) -> dict:
        """Held-out pairwise accuracy, overall and per source."""
        from alignment.reward import RewardModel

        rm = RewardModel(folder / "model", max_length=self.recipe.rm.max_length)
        dev = D.read_jsonl(self.dir("data") / "pairs_dev.jsonl")
        report: dict[str, dict] = {}
        for source in sorted({r["source"] for r in dev}) + ["all"]:
            rows = [r for r in dev if source in ("all", r["source"])]
            acc = rm.accuracy([r["prompt"][0]["content"] for r in rows], [r["chosen"][0]["content"] for r in rows],
                              [r["rejected"][0]["content"] for r in rows])
            report[source] = {"pairs": len(rows), "accuracy": round(acc, 4)}
        (folder / "heldout_accuracy.json").write_text(json.dumps(report, indent=2))
        tqdm.write(f"rm held-out pairwise accuracy: {json.dumps(report)}")
        return report

    def run_dpo(self, folder: Path) -> None:
        from trl import DPOConfig, DPOTrainer

        sft = self.model_dir("sft")
        tokenizer = self.tokenizer(sft)
        cfg = self.recipe.dpo
        args = DPOConfig(**self.common_args(folder, cfg), beta=cfg.beta)
        train = self.pairs(cfg)
        trainer = DPOTrainer(model=str(sft), args=args, train_dataset=train,
                             processing_class=tokenizer, callbacks=[MetricsLog(folder / "metrics.jsonl", "dpo")])
        self.finish_trainer(trainer, folder, tokenizer)

    # --- ppo (ours) --------------------------------------------------------------------------
    def run_ppo(self, folder: Path) -> None:
        from alignment.ppo.trainer import PPOTrainer
        from alignment.reward import RewardModel

        cfg = self.recipe.ppo
        sft = self.model_dir("sft")
        tokenizer = self.tokenizer(sft)
        rm = RewardModel(self.model_dir("rm"), max_length=self.recipe.rm.max_length)
        guard = self.guard() if cfg.guard_cost > 0 or cfg.refusal_cost > 0 else None

        def reward(prompts: list[str], responses: list[str], _ids) -> list[float]:
            scores = rm.score(prompts, responses) / cfg.reward_scale
            if guard is not None:
                unsafe, over_refused = guard_costs(guard, prompts, responses)
                scores = scores - cfg.guard_cost * unsafe - cfg.refusal_cost * over_refused
            return scores.tolist()

        prompts = [r["text"] for r in D.read_jsonl(self.dir("data") / "prompts_train.jsonl")]
        ptx = [r["text"] for r in D.read_jsonl(self.dir("data") / "ptx_train.jsonl")]
        trainer = PPOTrainer(cfg, sft, tokenizer, reward, prompts, folder, ptx_texts=ptx)
        try:
            trainer.train()
        finally:
            trainer.close()
        trainer.policy.model.save_pretrained(folder / "model", safe_serialization=True)
        tokenizer.save_pretrained(folder / "model")
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)

    # --- eval --------------------------------------------------------------------------------
    def run_eval(self, folder: Path) -> None:
        from alignment.evaluate import evaluate
        evaluate(self, folder)


def guard_costs(guard, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per response: (unsafe, over-refused). `unsafe` is judged as the guard judges replies: the output
    classifier's unsafe probability, or 1 when the reply goes along with (does not decline) a request the
    input check blocks; `over-refused` is 1 when the reply declines a request the input check allows."""
    from guard.classifiers.base import score_readings

    unsafe = torch.tensor([s.unsafe for s in score_readings(guard.classifier, responses, "output")])
    asked = {p: guard.decide(p, "input", injection=False).blocked for p in set(prompts)}
    declined = [is_refusal(r) for r in responses]
    complied = torch.tensor([asked[p] and not d for p, d in zip(prompts, declined)])
    over_refused = torch.tensor([float(d and not asked[p]) for p, d in zip(prompts, declined)])
    return torch.where(complied, torch.ones_like(unsafe), unsafe), over_refused


def count(rows, key) -> dict[str, int]:
    return dict(sorted(Counter(map(key, rows)).items()))
