"""`guardchat guard train`: build the data, train the classifiers, calibrate thresholds on held-back
dev rows for a target false-positive rate, evaluate per source, and write the artifact folder:

    ngram.joblib      the fast stage's weights
    encoder/          the fine-tuned MiniLM encoder (the cascade consults it when the fast stage is unsure)
    encoder_heads.joblib  its heads
    thresholds.json   per direction and head
    card.json/.md     data sources, counts, splits, metrics
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score
from tqdm import tqdm

from guard.classifiers.base import Classifier, score_readings
from guard.classifiers.cascade import CascadeClassifier
from guard.classifiers.encoder import ENCODER_DIR, Embedder, EncoderClassifier, FinetuneConfig, as_read, finetune
from guard.classifiers.ngram import NgramClassifier, NgramConfig
from guard.config import GuardSettings
from guard.datasets import Corpus, Example, build_corpus, dedup_key
from guard.normalize import canonical, is_chinese
from guard.refusal import is_refusal

log = logging.getLogger(__name__)
THRESHOLDS_FILE = "thresholds.json"
CARD_FILE = "card.json"


# Input thresholds are calibrated on benign rows that look like what chat users send (requests and
# questions), not on tweets or forum sentences, whose false-positive rates flatter the threshold.
CHAT_LIKE_SOURCES = ("own_inputs_everyday", "own_inputs_benign_lookalikes", "own_inputs_instruction_shapes",
                     "own_inputs_injection", "coconot", "coconot_contrast", "do_not_answer", "forbidden_questions",
                     "deepset_train", "hatecheck_en", "hatecheck_zh")
# The injection head is calibrated on those and on benign requests that carry instructions to the assistant
# (role-play, output formats, pasted documents and code, long requests): the false positives it makes.
INSTRUCTION_SOURCES = ("own_inputs_instructions_injection_en", "own_inputs_instructions_injection_zh",
                       "own_inputs_long_benign")


@dataclass(frozen=True)
class TrainConfig:
    target_fpr: float = 0.05          # macro false-positive rate over dev sources of the harm heads
    injection_fpr: float = 0.02       # ... and of the injection head (see calibrate)
    dev_fraction: float = 0.15        # rows of each training source held back for calibration and metrics
    source_cap: int = 1500            # a source's rows weigh as at most this many, so big sets do not drown small ones
    ngram: NgramConfig = field(default_factory=NgramConfig)
    encoder: bool = True              # train the MiniLM stage and serve the cascade (n-gram, then MiniLM when unsure)
    encoder_cap: int = 800            # training rows per (source, label) for the encoder and its heads: against
                                      # 400, mixed-set AUPRC 0.902 -> 0.911 and Davidson 0.18 -> 0.23 (2026-12-07)
    encoder_chinese: bool = True      # the encoder reads Chinese too, as an English gloss (guard/gloss.py)
    encoder_cap_zh: int = 400         # ... on at most this many Chinese rows per (source, label)
    finetune: FinetuneConfig | None = field(default_factory=FinetuneConfig)  # None: heads on the packaged encoder
    per_category: bool = False        # also calibrate a threshold per hazard category (see category_thresholds)
    lower_bars: tuple[tuple[str, float], ...] = (("suicide_self_harm", 0.8),)  # input categories blocked at a
                                      # fraction of the calibrated threshold (see calibrate)
    per_language: bool = True         # calibrate Chinese inputs on their own (see calibrate)
    openings: bool = True             # train the output direction on the first words of safe replies (see openings)


# Openings are the prefixes a streamed reply is checked at while it is shorter than the gate's
# min_block_chars (a flagged one is held back until it is that long).
OPENING_CHARS: int = GuardSettings.model_fields["min_block_chars"].default
ZH_OPENINGS = (1, 2, 3, 4, 6, 8, 12, 16)  # characters: Chinese has no spaces, a streamed token is 1-3 of them


def openings(rows: Sequence[Example]) -> list[Example]:
    """The openings of the safe replies, labelled safe (source `output_openings`), as often as they
    open a reply: a common opening weighs as much as it is seen at the start of a stream.

    A streamed reply is checked from its first word on. Trained on whole replies only, the n-gram
    stage flagged 11 of 43 common openings ("Here are some" 0.77, "Step" 0.71, "The" 0.90): a text
    of a word or two has few n-grams, and whichever lean unsafe decide. The gate then held such a
    start back until min_block_chars, which cost the time to first token. An opening decides nothing
    on its own: the words that follow do, and every later release is checked with them."""
    out: list[Example] = []
    for e in rows:
        if e.direction != "output" or e.unsafe:
            continue
        text = e.text.strip()
        if is_chinese(text):
            cuts = [n for n in ZH_OPENINGS if n < len(text)]
        else:
            cuts = [m.start() for m in re.finditer(r"\s+", text[: OPENING_CHARS + 1])]
        for n in cuts:
            prefix = text[:n].strip()
            if dedup_key(prefix):
                out.append(Example(prefix, False, None, e.lang, "output", "output_openings"))
    return out


def as_scored(rows: Sequence[Example]) -> list[Example]:
    """The rows as the classifiers will read them: serving scores the canonical form of a text
    (`guard.normalize.canonical`: NFKC, homoglyphs, spaced letters, whitespace), so training does too. Trained
    on the raw text, the n-gram stage met n-grams at serving time that it had seen in few rows: NFKC then
    turned Chinese full-width commas and question marks into ASCII ones (it no longer does), and Chinese
    harm scores rose by 0.04 on average over COLD's dev rows."""
    return [replace(e, text=canonical(e.text)) for e in rows]


def source_weights(rows: Sequence[Example], cap: int) -> np.ndarray:
    counts = Counter(e.source for e in rows)
    return np.array([min(1.0, cap / counts[e.source]) for e in rows])


def capped(rows: Sequence[Example], cap: int) -> list[Example]:
    """At most `cap` rows per (source, label), picked by a stable hash of the text."""
    groups: dict[tuple[str, bool], list[Example]] = defaultdict(list)
    for e in sorted(rows, key=lambda e: hashlib.sha256(f"encoder:{e.text}".encode()).hexdigest()):
        if len(groups[e.source, e.unsafe]) < cap:
            groups[e.source, e.unsafe].append(e)
    return [e for group in groups.values() for e in group]


def lowest_threshold(fpr: Callable[[float], float], target: float) -> float:
    """Smallest threshold in [0, 1] whose false-positive rate `fpr(threshold)` is <= target (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fpr(mid) > target else (lo, mid)
    return hi


def macro_fpr_threshold(scores: np.ndarray, sources: np.ndarray, target: float) -> float:
    """Smallest threshold whose mean per-source false-positive rate on safe rows is <= target."""
    groups = [scores[sources == s] for s in np.unique(sources)]
    return round(lowest_threshold(lambda t: np.mean([(g >= t).mean() for g in groups]), target), 4)


def category_thresholds(harm: np.ndarray, top: np.ndarray, sources: np.ndarray, target: float, default: float,
                        min_rows: int = 40, spread: float = 2.0) -> dict[str, float]:
    """A threshold per hazard category, for the safe rows whose top category it is: the smallest one whose
    false-positive rate on them (each source weighing as one, as in `macro_fpr_threshold`) is <= target.
    The safe rows are split among the categories, so the overall macro rate stays at the target, while a
    category that benign text seldom leans toward (self-harm, say) blocks at a lower score than one full
    of benign look-alikes (violent crimes: "how do I kill a process"). Categories with fewer than
    `min_rows` safe rows keep the direction's threshold (`default`), and none moves further than a factor
    `spread` from it: where the dev rows of a category all score near zero, a threshold near zero would
    block any text leaning that way on no evidence."""
    per_source = Counter(sources)
    weight = np.array([1.0 / per_source[s] for s in sources])
    out = {}
    for category in sorted(set(top) - {None}):
        group = top == category
        if group.sum() < min_rows:
            continue
        scores, w = harm[group], weight[group]
        t = lowest_threshold(lambda x: (w * (scores >= x)).sum() / w.sum(), target)
        out[category] = round(min(max(t, default / spread), default * spread, 0.99), 4)
    return out


ZH_SUFFIX = "_zh"  # thresholds.json: "unsafe_zh" is the input harm threshold of Chinese text


def for_language(thresholds: dict[str, float], chinese: bool) -> dict[str, float]:
    """A direction's thresholds for a text: Chinese text takes the `*_zh` ones where there are any."""
    if not chinese:
        return thresholds
    return {**thresholds, **{k[: -len(ZH_SUFFIX)]: v for k, v in thresholds.items() if k.endswith(ZH_SUFFIX)}}


def harm_threshold(thresholds: dict[str, float], category: str | None) -> float:
    """The unsafe-score threshold for a text whose top category is `category`: the category's own, else the
    direction's."""
    return thresholds.get(category, thresholds["unsafe"]) if category else thresholds["unsafe"]


def calibrate(model: Classifier, dev: Sequence[Example], target: float, per_category: bool = False,
              per_language: bool = False, injection_target: float | None = None,
              lower_bars: Sequence[tuple[str, float]] = ()) -> dict[str, dict[str, float]]:
    """Thresholds per direction for the target false-positive rate on the dev rows (the injection head's own
    target where given, else the same).

    An input is blocked when either head fires, so the two targets add up: at 5% each, 8.9% of the dev
    split's everyday English and Chinese prompts were blocked (2026-11-29), most of them long ones flagged
    by the injection head, which reads instructions to the assistant ("only output JSON", "act as a Linux
    terminal") as the jailbreaks it was trained on. With the injection head at 3% that fell to 4.2%, the
    deepset injection test's F1 rose from 0.831 to 0.867 (fewer benign German questions flagged), and
    XSTest and JBB moved by at most one prompt each way. With more own rows and the cascade's log-odds harm
    (later the same day) the injection threshold calibrated at 3% fell from 0.089 to 0.071 and the everyday
    prompts blocked rose from 2.8% to 6.1%, all by the injection head (long requests with code or context);
    at 2%, 3.8% (deepset F1 0.922 -> 0.959; the harm decisions are untouched). The injection threshold is
    calibrated on INSTRUCTION_SOURCES too, benign requests full of instructions to the assistant: on the chat-like
    rows alone the threshold (0.135) blocked 24% of the dev split's long benign requests and 44% / 32% of its
    English / Chinese instruction-rich ones; with them (0.294), 12% and 27% / 15%, everyday prompts 3.3% -> 1.4%,
    deepset F1 0.935 -> 0.940 (2026-11-29 night). The harm thresholds are calibrated as before.

    `per_language`: Chinese inputs also get a harm threshold of their own (`unsafe_zh`), calibrated on the
    Chinese rows for the same target. When only the n-gram stage scored Chinese (before the encoder read its
    gloss), a threshold over both languages held Chinese to a scale set mostly by the cascade's English
    scores, and a change to the English encoder moved Chinese decisions. The shared thresholds stay
    calibrated on all rows, as before: calibrated on the non-Chinese rows alone the harm threshold fell from
    0.62 to 0.53, which raised XSTest's safe-prompt false-positive rate from 0.128 to 0.196 and the PPO
    policy's over-refusal (the alignment recipe's guard costs read the input check) from 0.128 to 0.180. The
    injection threshold calibrated on Chinese rows alone fell to 0.006 (the head scores nearly all Chinese
    text near zero) and flagged 9% of the dev split's Chinese everyday prompts, against 1% at the shared one.

    `lower_bars`: (category, fraction) pairs: an input whose top category is one of these is blocked at that
    fraction of the input harm threshold (each language's). A policy, not a calibration: for self-harm a missed
    request costs more than an over-refusal, and a blocked one gets a reply that points to help
    (`serve.chat.refusal_text`). At 0.8, on the dev split (2026-12-07, artifact 78a0542b): English self-harm
    requests blocked 0.783 -> 0.855 (69 rows), Chinese 0.529 -> 0.706 (17), for 5 more of the English benign
    rows and none of the Chinese (macro FPR 0.0782 -> 0.0787); at 0.6, 0.884 / 0.824 for 15 and 5 more."""
    thresholds: dict[str, dict[str, float]] = {"input": {}, "output": {}}
    for direction in ("input", "output"):
        rows = [e for e in dev if e.direction == direction
                and (direction == "output" or e.unsafe or e.source in CHAT_LIKE_SOURCES + INSTRUCTION_SOURCES)]
        scores = score_readings(model, [e.text for e in rows], direction)
        chat_like = np.array([direction == "output" or e.source not in INSTRUCTION_SOURCES for e in rows], dtype=bool)
        safe = np.array([not e.unsafe for e in rows], dtype=bool) & chat_like  # the harm heads' benign rows
        # The project's own reply files count as one group: split into many small files (some of them contrast
        # pairs built to be hard), each would otherwise weigh as much as a public set of thousands of replies.
        sources = np.array(["own" if direction == "output" and e.source.startswith("own_") else e.source
                            for e in rows])
        harm = np.array([s.unsafe for s in scores])
        groups = [("", np.ones(len(rows), dtype=bool))]
        if per_language and direction == "input":
            groups.append((ZH_SUFFIX, np.array([is_chinese(e.text) for e in rows], dtype=bool)))
        for suffix, lang in groups:
            thresholds[direction]["unsafe" + suffix] = macro_fpr_threshold(harm[safe & lang], sources[safe & lang],
                                                                           target)
        if direction == "input":
            not_injection = np.array([e.category != "prompt_injection" for e in rows], dtype=bool)
            inj = np.array([s.injection for s in scores])
            thresholds[direction]["injection"] = macro_fpr_threshold(inj[not_injection], sources[not_injection],
                                                                     target if injection_target is None
                                                                     else injection_target)
        if per_category:
            top = np.array([s.top_category() for s in scores], dtype=object)
            thresholds[direction].update(category_thresholds(harm[safe], top[safe], sources[safe], target,
                                                             thresholds[direction]["unsafe"]))
        if direction == "input":
            for category, fraction in lower_bars:
                for suffix, _ in groups:
                    base = thresholds[direction].get(category + suffix, thresholds[direction]["unsafe" + suffix])
                    thresholds[direction][category + suffix] = round(fraction * base, 4)
    return thresholds


def blocked(texts: Sequence[str], scores, direction: str, thresholds: dict,
            injection: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(blocked?, a single score for ranking) for each scored text."""
    ts = [for_language(thresholds[direction], is_chinese(text)) for text in texts]
    harm = np.array([s.unsafe / harm_threshold(t, s.top_category()) for s, t in zip(scores, ts)])
    inj = (np.array([s.injection / t["injection"] for s, t in zip(scores, ts)])
           if injection and "injection" in thresholds[direction] else np.zeros(len(scores)))
    ranking = np.maximum(harm, inj)
    return ranking >= 1.0, ranking


def decisions(model: Classifier, examples: Sequence[Example], thresholds: dict,
              context: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(blocked?, ranking score) of each row as the guard decides it. Replies that come with their request are
    judged in context (`guard.pipeline.in_context`): one that does not decline a blocked request is blocked."""
    direction = examples[0].direction
    texts = [e.text for e in examples]
    decided, ranking = blocked(texts, score_readings(model, texts, direction), direction, thresholds)
    idx = [i for i, e in enumerate(examples) if context and direction == "output" and e.context
           and not is_refusal(e.text)]
    if idx:
        requests = [examples[i].context for i in idx]
        request, request_rank = blocked(requests, score_readings(model, requests, "input"), "input", thresholds,
                                        injection=False)
        decided[idx] |= request
        ranking[idx] = np.maximum(ranking[idx], request_rank)
    return decided, ranking


def metrics_by_source(model: Classifier, rows: Sequence[Example], thresholds: dict,
                      context: bool = True) -> dict[str, dict]:
    """Precision, recall, F1, FPR and AUPRC of the block decision, per source (replies in context, if asked)."""
    by_source: dict[str, list[Example]] = defaultdict(list)
    for e in rows:
        by_source[e.source].append(e)
    out = {}
    for source, examples in sorted(by_source.items()):
        direction = examples[0].direction
        decided, ranking = decisions(model, examples, thresholds, context)
        y = np.array([e.unsafe for e in examples])
        tp, fp = int((decided & y).sum()), int((decided & ~y).sum())
        fn, tn = int((~decided & y).sum()), int((~decided & ~y).sum())
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        out[source] = {
            "direction": direction, "n": len(examples), "unsafe": int(y.sum()),
            "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / (precision + recall), 4) if tp else 0.0,
            "fpr": round(fp / (fp + tn), 4) if fp + tn else float("nan"),
            "auprc": round(float(average_precision_score(y, ranking)), 4) if 0 < y.sum() < len(y) else float("nan"),
        }
    return out


def train_encoder(rows: Sequence[Example], folder: Path, config: TrainConfig) -> EncoderClassifier:
    """The MiniLM stage. The encoder is fine-tuned on the input rows, written to `folder / ENCODER_DIR`, then
    heads are fit on the embeddings it will serve (bf16 where the CPU has it natively, int8 elsewhere: see
    Embedder). Chinese rows are read as their English gloss (`config.encoder_chinese`; the packaged MiniLM knows
    244 CJK characters) and capped apart, so that in a source of both languages they do not take English rows'
    places. Fine-tuning on the glosses is what teaches the encoder to read them: with heads alone fit on the
    glosses of an English-only fine-tune, JADE v1 recall fell 0.880 -> 0.767 and COLD F1 0.819 -> 0.772."""
    sample = capped([e for e in rows if not is_chinese(e.text)], config.encoder_cap)
    if config.encoder_chinese:
        sample += capped([e for e in rows if is_chinese(e.text)], config.encoder_cap_zh)
    weights = source_weights(sample, config.encoder_cap)
    embedder = None
    if config.finetune is not None:
        tune = [i for i, e in enumerate(sample) if e.direction == "input"]
        injection = [sample[i].category == "prompt_injection" for i in tune]
        harm = [None if inj else sample[i].unsafe for i, inj in zip(tune, injection)]
        texts = [sample[i].text for i in tune]
        path = finetune(as_read(texts, config.encoder_chinese), harm, injection, weights[tune], folder / ENCODER_DIR,
                        config.finetune)
        embedder = Embedder(path)
    return EncoderClassifier.fit([e.text for e in sample], [e.direction for e in sample], [e.unsafe for e in sample],
                                 [e.category for e in sample], weights, embedder, chinese=config.encoder_chinese)


def train(out_dir: Path, mirror: Path | None, config: TrainConfig = TrainConfig(), fingerprint: str | None = None) -> dict:
    """Train, calibrate, evaluate and write the artifact folder; returns the card. The artifact is built
    in a staging folder beside `out_dir` and swapped in at the end: a failed run leaves the old one whole."""
    steps = tqdm(total=5, desc="guard train", unit="step")
    started = time.time()
    staging = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    corpus: Corpus = build_corpus(mirror, config.dev_fraction)
    steps.set_postfix_str(f"{len(corpus.train)} train / {len(corpus.dev)} dev / {len(corpus.eval)} eval rows")
    steps.update()
    rows = as_scored(corpus.train)
    rows += openings(rows) if config.openings else []
    ngram = NgramClassifier.fit([e.text for e in rows], [e.direction for e in rows], [e.unsafe for e in rows],
                                [e.category for e in rows], source_weights(rows, config.source_cap), config.ngram)
    model: Classifier = ngram
    encoder = None
    if config.encoder:
        encoder = train_encoder(rows, staging, config)
        model = CascadeClassifier(ngram, encoder, chinese=encoder.chinese)
    steps.update()
    thresholds = calibrate(model, corpus.dev, config.target_fpr, config.per_category, config.per_language,
                           config.injection_fpr, config.lower_bars)
    steps.update()
    card = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "train_seconds": None, "config": asdict(config),
        "classifier": model.name,
        "fingerprint": fingerprint,
        "data_mirror": str(mirror) if mirror else None, "skipped_sources": corpus.skipped,
        "counts": split_counts(corpus),
        "thresholds": thresholds,
        # Dev openings are measured (the rate at which a stream's start is held back), not calibrated on.
        "metrics": {"dev": metrics_by_source(model, corpus.dev + openings(corpus.dev), thresholds)},
    }
    steps.update()
    card["metrics"]["eval"] = metrics_by_source(model, corpus.eval, thresholds)
    card["train_seconds"] = round(time.time() - started, 1)
    ngram.save(staging)
    if encoder is not None:
        encoder.save(staging)
    (staging / THRESHOLDS_FILE).write_text(json.dumps(thresholds, indent=2))
    (staging / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False))
    (staging / "card.md").write_text(card_markdown(card))
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    steps.update()
    steps.close()
    return card


def split_counts(corpus: Corpus) -> dict[str, dict[str, int]]:
    """Rows per source and label ("source:unsafe", "source:safe") of each split, as the card lists them."""
    return {split: dict(sorted(Counter(f"{e.source}:{'unsafe' if e.unsafe else 'safe'}" for e in rows).items()))
            for split, rows in (("train", corpus.train), ("dev", corpus.dev), ("eval", corpus.eval))}


def card_markdown(card: dict) -> str:
    lines = ["# guard artifact", "", f"created {card['created']}, trained in {card['train_seconds']} s", "",
             "## thresholds", "", "```json", json.dumps(card["thresholds"], indent=2), "```", ""]
    for split in ("eval", "dev"):
        lines += [f"## metrics on {split} rows (never trained on)", "",
                  "| source | dir | n | unsafe | precision | recall | F1 | FPR | AUPRC |", "|---|---|---|---|---|---|---|---|---|"]
        for source, m in card["metrics"][split].items():
            lines.append(f"| {source} | {m['direction']} | {m['n']} | {m['unsafe']} | {m['precision']} | {m['recall']} "
                         f"| {m['f1']} | {m['fpr']} | {m['auprc']} |")
        lines.append("")
    lines += ["## data: rows per source and split (unsafe / safe)", "", f"mirror: {card['data_mirror']}", "",
              "| source | train | dev | eval |", "|---|---|---|---|"]
    counts = card["counts"]
    for source in sorted({key.rsplit(":", 1)[0] for split in counts.values() for key in split}):
        cells = [f"{counts[split].get(source + ':unsafe', 0)} / {counts[split].get(source + ':safe', 0)}"
                 for split in ("train", "dev", "eval")]
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    lines.append("")
    if card["skipped_sources"]:
        lines += ["## skipped (not in the mirror)", "", *[f"- {s}" for s in card["skipped_sources"]], ""]
    return "\n".join(lines)
