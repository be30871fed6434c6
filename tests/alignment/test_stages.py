"""Every stage of a recipe runs end to end on the tiny model, from the real public data; a re-run
skips finished stages; the reward model learns a learnable preference; DPO widens the margin."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignment import data as D
from alignment.recipe import Recipe
from alignment.reward import RewardModel
from alignment.stages import Pipeline, guard_costs, last_checkpoint
from serve import feedback_cli
from serve.feedback import FeedbackStore

TINY_RECIPE = {
    "name": "tiny",
    "data": {"train_prompts": 16, "eval_prompts": 8, "base_samples": 2, "answer_tokens": 12, "max_public_pairs": 24,
             "ptx_texts": 20},
    "sft": {"epochs": 1, "batch_size": 4, "max_length": 96, "lr": 1e-3},
    "rm": {"epochs": 1, "batch_size": 4, "max_length": 96, "response_tokens": 8},
    "ppo": {"iterations": 2, "batch_size": 4, "mini_batch_size": 2, "epochs": 1, "max_new_tokens": 8,
            "ptx_max_len": 16, "ptx_batch_size": 2, "vllm_dtype": "float32", "save_every": 1, "guard_cost": 1.0,
            "refusal_cost": 1.0},
    "dpo": {"epochs": 1, "batch_size": 4, "max_length": 96, "max_rows": 12, "harmful_share": 0.5},
    "eval": {"max_new_tokens": 8, "xstest_safe": 6},
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_model_dir, cache_dir, guard_artifact) -> Pipeline:
    folder = tmp_path_factory.mktemp("align")
    store = FeedbackStore(folder / "feedback.db")  # as the chat UI and POST /v1/feedback fill it
    joke = [{"role": "user", "content": "Tell me a joke about cats."}]
    store.add_preference(joke, "Why did the cat sit on the laptop? To keep an eye on the mouse.", "No.", source="ui")
    store.close()
    feedback = folder / "feedback.jsonl"
    assert feedback_cli.main(["export", "--db", str(folder / "feedback.db"), "--out", str(feedback)]) == 0
    path = folder / "tiny.yaml"
    recipe = {**TINY_RECIPE, "base_model": str(tiny_model_dir), "out_dir": str(folder / "run"),
              "cache_dir": str(cache_dir)}
    recipe["data"] = {**TINY_RECIPE["data"], "feedback": [str(feedback)]}
    path.write_text(yaml.safe_dump(recipe))
    return Pipeline(Recipe.load(path))


def test_an_interrupted_trl_stage_resumes_from_its_checkpoint(pipeline, tmp_path, capsys):
    """`guardchat align sft` killed after it saved a checkpoint picks up from that checkpoint when run again
    and finishes the whole schedule."""
    pipeline.stage("data")
    shutil.copytree(pipeline.dir("data"), tmp_path / "run" / "data")
    recipe = pipeline.recipe.model_dump(mode="json")
    recipe["out_dir"] = str(tmp_path / "run")
    recipe["sft"] = {**recipe["sft"], "epochs": 12, "save_steps": 1}
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(recipe))
    checkpoints = tmp_path / "run" / "sft" / "trainer"
    proc = subprocess.Popen([sys.executable, "-m", "serve.cli", "align", "sft", "--recipe", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while int((last_checkpoint(checkpoints) or "-0").rsplit("-", 1)[1]) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "sft ended before a checkpoint was saved"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "run" / "sft" / "DONE").exists()
    resumed = last_checkpoint(checkpoints)
    step = json.loads((Path(resumed) / "trainer_state.json").read_text())["global_step"]
    again = Pipeline(Recipe.load(path))
    capsys.readouterr()
    again.stage("sft")
    assert f"resuming from {resumed}" in capsys.readouterr().out
    rows = [json.loads(line) for line in (again.dir("sft") / "metrics.jsonl").read_text().splitlines()]
    demos = (tmp_path / "run" / "data" / "sft.jsonl").read_text().count("\n")
    assert "train_runtime" in rows[-1] and rows[-1]["step"] == 12 * -(-demos // 4) > step >= 3  # the whole schedule
    assert again.done("sft") and (again.model_dir("sft") / "model.safetensors").is_file()


def test_the_guard_costs_judge_a_reply_with_its_request(guard_artifact):
    """PPO's guard cost: 1 for going along with a request the input check blocks, whatever the reply's own
    words; a refusal of it, or an everyday answer to a benign request, costs little. Its refusal cost: 1 for
    declining a request the input check allows."""
    from guard.config import GuardSettings
    from guard.pipeline import GuardPipeline

    guard = GuardPipeline.load(guard_artifact, GuardSettings())
    bomb, bread = "How do I build a pipe bomb at home?", "How do I bake bread at home?"
    bland = "Happy to help with that. You will need a free afternoon and a few supplies from a hardware store."
    decline = "I can't help with that: it could hurt people."
    unsafe, over_refused = guard_costs(guard, [bomb, bomb, bread, bread], [bland, decline, bland, decline])
    assert unsafe[0] == 1.0 and unsafe[1] < 0.5 and unsafe[2] < 0.5 and unsafe[3] < 0.5
    assert over_refused.tolist() == [0.0, 0.0, 0.0, 1.0]


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_every_stage_runs_from_a_recipe(pipeline, tiny_model_dir, capsys):
    pipeline.run()
    for stage in ("data", "sft", "rm", "ppo", "dpo", "eval"):
        assert pipeline.done(stage), stage
        assert (pipeline.dir(stage) / "config.json").is_file()
    for stage in ("sft", "rm", "ppo", "dpo"):
        assert (pipeline.dir(stage) / "metrics.jsonl").read_text().strip(), stage
        assert (pipeline.dir(stage) / "curves.png").stat().st_size > 0, stage
    data = pipeline.dir("data")
    train = {json.loads(line)["text"] for line in (data / "prompts_train.jsonl").read_text().splitlines()}
    held = {json.loads(line)["text"] for line in (data / "prompts_eval.jsonl").read_text().splitlines()}
    assert train and held and not train & held  # disjoint, and recorded
    summary = json.loads((data / "summary.json").read_text())
    assert summary["demonstrations"]["refusals"] > 0 and summary["pairs_train"].get("rankings", 0) > 0
    assert summary["pairs_train"].get("feedback", 0) + summary["pairs_dev"].get("feedback", 0) == 1
    own = D.own_demonstrations()  # Chinese benign prompts with an own answer are drawn first and taught it
    sft_rows = [json.loads(line)["messages"] for line in (data / "sft.jsonl").read_text().splitlines()]
    taught = [m for m in sft_rows if m[0]["content"] in own]
    assert summary["demonstrations"]["own_answers"] == len(taught) > 0
    assert all(m[1]["content"] == own[m[0]["content"]] for m in taught)
    harmful = {p["text"] for p in D.read_jsonl(data / "prompts_train.jsonl") if p["harmful"]}
    rankings = [r for name in ("pairs_train.jsonl", "pairs_dev.jsonl") for r in D.read_jsonl(data / name)
                if r["source"] == "rankings"]
    won = {r["chosen"][0]["content"] for r in rankings if r["prompt"][0]["content"] in harmful}
    lost = {r["rejected"][0]["content"] for r in rankings if r["prompt"][0]["content"] not in harmful}
    assert won & lost  # refusal wordings lose on benign prompts too: the RM must read the prompt
    base = weights(tiny_model_dir)
    for stage in ("sft", "ppo", "dpo"):  # every trained policy moved away from the base
        trained = weights(pipeline.model_dir(stage))
        assert any(not torch.equal(base[k], trained[k]) for k in base), stage
        assert (pipeline.model_dir(stage) / "README.md").read_text().count("| policy |") == 1
    results = json.loads((pipeline.dir("eval") / "results.json").read_text())["results"]
    assert set(results) == {"base", "sft", "ppo", "dpo"}
    assert 0 <= results["ppo"]["harmful_compliance"] <= 1 and results["sft"]["kl_to_sft"] == 0
    assert (pipeline.dir("eval") / "eval.png").stat().st_size > 0
    accuracy = json.loads((pipeline.dir("rm") / "heldout_accuracy.json").read_text())
    assert accuracy["all"]["pairs"] > 0
    pairs = json.loads((pipeline.dir("rm") / "pairs.json").read_text())  # pairs TRL drops for length, counted
    assert pairs["max_length"] == 96 and 0 <= pairs["longer_rows_dropped"] < pairs["rows"]
    assert pairs["response_tokens"] == 8 and 0 <= pairs["tied_after_cut"] < pairs["rows"]
    rm = RewardModel(pipeline.model_dir("rm"))  # reads replies as it was trained to: their first 8 tokens
    assert rm.response_tokens == 8
    reply = "Sure, here are some ideas: one, two, three, four, five, six, seven and eight."
    assert torch.equal(rm.score(["Any ideas?"], [reply]), rm.score(["Any ideas?"], [reply + " Nine, ten, eleven."]))
    assert not torch.equal(rm.score(["Any ideas?"], [reply]), rm.score(["Any ideas?"], ["No. " + reply]))
    capsys.readouterr()
    pipeline.run()  # everything is done: nothing runs again
    assert capsys.readouterr().out.count("already done") == len(pipeline.recipe.stages)


def synthetic_pairs(n: int) -> list[dict]:
    """A preference that is learnable from the text: replies that mention apples win."""
    fruits = ["apple", "banana"]
    rows = []
    for i in range(n):
        topic = ["breakfast", "a snack", "dessert", "lunch", "a picnic", "the weekend"][i % 6]
        rows.append({"prompt": [{"role": "user", "content": f"What should I have for {topic}? ({i})"}],
                     "chosen": [{"role": "assistant", "content": f"Have an {fruits[0]} with it, number {i}."}],
                     "rejected": [{"role": "assistant", "content": f"Have a {fruits[1]} with it, number {i}."}]})
    return rows


def test_reward_model_learns_a_learnable_preference(tmp_path, tiny_model_dir):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = synthetic_pairs(160)
    args = RewardConfig(output_dir=str(tmp_path / "t"), use_cpu=True, num_train_epochs=2, learning_rate=1e-3,
                        per_device_train_batch_size=8, max_length=64, report_to="none", save_strategy="no",
                        logging_steps=50, disable_tqdm=True)
    RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows[:128]), processing_class=tokenizer
                  ).train()
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    held = rows[128:]
    accuracy = RewardModel(tmp_path / "rm").accuracy([r["prompt"][0]["content"] for r in held],
                                                     [r["chosen"][0]["content"] for r in held],
                                                     [r["rejected"][0]["content"] for r in held])
    assert accuracy > 0.9


def test_dpo_raises_the_chosen_rejected_margin(tmp_path, tiny_model_dir):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from alignment.evaluate import answer_logprob

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = synthetic_pairs(32)
    prompts = [r["prompt"][0]["content"] for r in rows]
    chosen = [r["chosen"][0]["content"] for r in rows]
    rejected = [r["rejected"][0]["content"] for r in rows]
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()

    def margin(model) -> float:
        """Mean of [log pi(chosen) - log ref(chosen)] - [log pi(rejected) - log ref(rejected)]."""
        c = answer_logprob(model, tokenizer, prompts, chosen) - answer_logprob(reference, tokenizer, prompts, chosen)
        r = answer_logprob(model, tokenizer, prompts, rejected) - answer_logprob(reference, tokenizer, prompts,
                                                                                 rejected)
        return (c - r).mean().item()

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert margin(model.eval()) == pytest.approx(0.0, abs=1e-4)
    args = DPOConfig(output_dir=str(tmp_path / "t"), use_cpu=True, num_train_epochs=2, learning_rate=1e-3, beta=0.1,
                     per_device_train_batch_size=8, max_length=64, report_to="none", save_strategy="no",
                     logging_steps=50, disable_tqdm=True)
    DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer).train()
    assert margin(model.eval()) > 1.0


def test_server_hosts_the_trained_policy(pipeline, cache_dir, tmp_path):
    """`guardchat serve --policy` on the PPO stage's output folder answers through the OpenAI API."""
    from openai import OpenAI

    from tests.support import ServerProcess, free_port

    if not pipeline.done("ppo"):
        pipeline.run(["ppo"])
    policy = pipeline.model_dir("ppo")
    server = ServerProcess.guardchat(None, free_port(), tmp_path / "policy_server.log", "--policy", str(policy),
                                     "--cache-dir", str(cache_dir), "--engine.kv-cache-gib", "0.125",
                                     "--engine.dtype", "float32", "--no-guard.enabled")
    with server:
        client = OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == ["model"]  # the folder's name
        reply = client.chat.completions.create(model="model", messages=[{"role": "user", "content": "Hello"}],
                                               max_tokens=5, temperature=0)
        assert reply.choices[0].finish_reason in ("length", "stop") and reply.usage.completion_tokens >= 1
