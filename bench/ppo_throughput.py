"""PPO throughput: our PPO iteration vs TRL 1.12.0's PPOTrainer (the last TRL release with PPO) on the
same tiny random-weight model, reward model, batch, response length and number of PPO epochs.
Prints rollout samples per second for both and the ratio (goal: ours >= 2x).

TRL 1.12.0 is installed into a separate virtual environment (.cache/bench-trl112) that reuses this
project's packages and shadows only `trl`. Both runs use both cores, one after the other. Run one
heavy job at a time.

    .venv/bin/python bench/ppo_throughput.py [--iterations 6] [--batch 32] [--response-length 32]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from serve.hardware import native_bf16  # noqa: E402

TRL_VENV = REPO / ".cache" / "bench-trl112"
PROMPTS = ["Tell me a story about a dragon.", "What is the weather like on Mars?", "How do I bake bread at home?",
           "Name three colours and describe them.", "讲一个关于猫的故事。", "今天天气怎么样？",
           "Give me a tip for learning Python.", "Say something nice about autumn."]

TRL_SCRIPT = r'''
import json, sys, time
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
import trl
from trl.experimental.ppo import PPOConfig, PPOTrainer

cfg = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(cfg["policy"])
ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                               return_dict=False) for p in cfg["prompts"]]
data = Dataset.from_list([{"input_ids": ids[i % len(ids)]} for i in range(cfg["batch"] * (cfg["iterations"] + 1))])
args = PPOConfig(output_dir=cfg["out"], use_cpu=True, per_device_train_batch_size=cfg["micro"],
                 gradient_accumulation_steps=cfg["batch"] // cfg["micro"], num_mini_batches=1,
                 num_ppo_epochs=cfg["epochs"], response_length=cfg["response_length"], temperature=1.0,
                 total_episodes=cfg["batch"] * (cfg["iterations"] + 1), kl_coef=cfg["beta"], learning_rate=1e-5,
                 local_rollout_forward_batch_size=cfg["batch"], num_sample_generations=0, report_to="none",
                 save_strategy="no", logging_steps=1, stop_token="eos", missing_eos_penalty=None, seed=0,
                 bf16=cfg["bf16"])
policy = AutoModelForCausalLM.from_pretrained(cfg["policy"])
ref = AutoModelForCausalLM.from_pretrained(cfg["policy"])
reward = AutoModelForSequenceClassification.from_pretrained(cfg["reward"], num_labels=1)
value = AutoModelForSequenceClassification.from_pretrained(cfg["reward"], num_labels=1)
trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                     train_dataset=data, value_model=value)
times = []
class Clock(__import__("transformers").TrainerCallback):
    def on_step_end(self, *a, **k):
        times.append(time.perf_counter())
trainer.add_callback(Clock())
start = time.perf_counter()
trainer.train()
# the first iteration is warm-up, as for ours
print("RESULT " + json.dumps({"trl": trl.__version__, "seconds": times[-1] - times[0], "iterations": len(times) - 1}))
'''


def trl_env() -> Path:
    """A venv whose only own package is trl==1.12.0; everything else comes from this project's venv."""
    python = TRL_VENV / "bin" / "python"
    if not (TRL_VENV / ".ready").is_file():
        shutil.rmtree(TRL_VENV, ignore_errors=True)
        subprocess.run(["python3.11", "-m", "venv", str(TRL_VENV)], check=True)
        site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       text=True).strip()
        Path(site, "guardchat-main.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        print("bench: installing trl==1.12.0 into", TRL_VENV, flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "trl==1.12.0"], check=True)
        (TRL_VENV / ".ready").touch()
    return python


def build_models(folder: Path) -> tuple[Path, Path]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from serve.default_model import ensure_default_model
    from serve.settings import default_cache_dir
    from tests.support import build_tiny_llama

    policy = build_tiny_llama(folder / "policy", ensure_default_model(default_cache_dir()), layers=4, hidden=256)
    reward = folder / "reward"
    if not (reward / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1)
        model.config.pad_token_id = 0
        model.save_pretrained(reward)
        AutoTokenizer.from_pretrained(policy).save_pretrained(reward)
    return policy, reward


def run_ours(policy: Path, reward_dir: Path, args, engine: str) -> dict:
    from transformers import AutoTokenizer

    from alignment.ppo.trainer import PPOConfig, PPOTrainer
    from alignment.reward import RewardModel

    rm = RewardModel(reward_dir)
    config = PPOConfig(iterations=args.iterations + 1, batch_size=args.batch, mini_batch_size=args.micro,
                       epochs=args.epochs, max_new_tokens=args.response_length, lr=1e-5, beta=args.beta,
                       ptx_coef=0.0, rollout_engine=engine, vllm_dtype="float32", save_every=10_000, stop_kl=1e9,
                       bf16=args.bf16)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    with tempfile.TemporaryDirectory() as out:
        trainer = PPOTrainer(config, policy, tokenizer, lambda p, t, _ids: rm.score(p, t).tolist(),
                             PROMPTS, Path(out))
        try:
            history = trainer.train()
        finally:
            trainer.close()
    steady = history[1:]  # the first iteration is warm-up
    seconds = sum(s["seconds"] for s in steady)
    return {"seconds": seconds, "iterations": len(steady),
            "rollout_share": sum(s["rollout_seconds"] for s in steady) / seconds}


def run_trl(policy: Path, reward_dir: Path, args) -> dict:
    python = trl_env()
    with tempfile.TemporaryDirectory() as out:
        cfg = {"policy": str(policy), "reward": str(reward_dir), "prompts": PROMPTS, "batch": args.batch,
               "micro": args.micro, "epochs": args.epochs, "response_length": args.response_length,
               "iterations": args.iterations, "beta": args.beta, "out": out, "bf16": args.bf16}
        proc = subprocess.run([str(python), "-c", TRL_SCRIPT, json.dumps(cfg)], capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"TRL 1.12.0 run failed:\n{proc.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=6, help="timed iterations (after one warm-up)")
    parser.add_argument("--batch", type=int, default=32, help="rollouts per iteration")
    parser.add_argument("--micro", type=int, default=8, help="rollouts per forward/backward pass")
    parser.add_argument("--epochs", type=int, default=4, help="PPO epochs per iteration (TRL's default)")
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--fp32", action="store_true",
                        help="no bf16 autocast in either trainer (default: both use it where the CPU has native bf16)")
    args = parser.parse_args()
    args.bf16 = native_bf16() and not args.fp32
    folder = REPO / ".cache" / "bench-ppo-models"
    policy, reward = build_models(folder)
    results = {}
    for name, fn in (("trl 1.12.0", lambda: run_trl(policy, reward, args)),
                     ("ours (vllm rollouts)", lambda: run_ours(policy, reward, args, "vllm")),
                     ("ours (hf rollouts)", lambda: run_ours(policy, reward, args, "hf"))):
        started = time.perf_counter()
        r = fn()
        r["samples_per_second"] = args.batch * r["iterations"] / r["seconds"]
        results[name] = r
        print(f"  {name:22s}: {r['samples_per_second']:6.2f} samples/s over {r['iterations']} iterations "
              f"({time.perf_counter() - started:.0f} s with set-up)", flush=True)
    base = results["trl 1.12.0"]["samples_per_second"]
    print(f"\nPPO iteration: batch {args.batch}, response {args.response_length} tokens, {args.epochs} PPO epochs, "
          f"micro-batch {args.micro}, {'bf16 autocast' if args.bf16 else 'fp32'} in both, tiny Llama (4 layers, "
          f"hidden 256), 2 CPU cores")
    print(f"{'trainer':22s} | {'samples/s':>9} | {'vs TRL 1.12.0':>13}")
    for name, r in results.items():
        print(f"{name:22s} | {r['samples_per_second']:9.2f} | {r['samples_per_second'] / base:12.2f}x")


if __name__ == "__main__":
    main()
