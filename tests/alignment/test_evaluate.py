"""The eval's batched passes (rows of like lengths padded together) give each row what it gets alone.
Log-probabilities are checked on the real default model: a random tiny one predicts nearly uniformly,
so it reads much the same whether padding is masked or not."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from alignment.evaluate import answer_logprob, perplexity
from alignment.reward import RewardModel, by_length

PROMPTS = ["Hi", "How do I boil an egg so the yolk stays soft?", "什么是光合作用？请简单解释一下。", "Name a colour.",
           "Write two sentences about the sea, one sad and one happy, for a poem I am drafting tonight.",
           "Why?", "列出三种水果。", "What is the capital of France, and how many people live there today?",
           "Tell me a joke about cats.", "ok"]
ANSWERS = ["Hello! How can I help?", "Put it in boiling water for six minutes, then in cold water.",
           "光合作用是植物利用阳光把二氧化碳和水变成糖和氧气的过程。", "Blue.",
           "The sea took everything she loved. The sea gave her back a morning of light.", "Because.",
           "苹果、香蕉、橙子。", "Paris, with about two million people in the city itself.",
           "Why did the cat sit on the computer? To keep an eye on the mouse.", ""]


def test_batches_group_like_lengths_and_cover_every_row_once():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = by_length(lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [[lengths[i] for i in b] for b in batches] == [[1, 2, 3], [3, 5, 7], [9]]


@pytest.fixture(scope="module")
def smollm2(default_model_dir):
    return (AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(default_model_dir))


def test_answer_logprob_in_batches_equals_one_row_at_a_time(smollm2):
    reference, tokenizer = smollm2
    batched = answer_logprob(reference, tokenizer, PROMPTS, ANSWERS)
    alone = torch.cat([answer_logprob(reference, tokenizer, [p], [a]) for p, a in zip(PROMPTS, ANSWERS)])
    # bf16 autocast (where native): padded shapes round differently (up to 0.34 nats here); attending to the padding
    # moved a row by 10.8
    torch.testing.assert_close(batched, alone, rtol=0.005, atol=1.0)


def test_perplexity_in_batches_equals_the_token_weighted_one_of_single_texts(smollm2):
    reference, tokenizer = smollm2
    texts = [p + " " + a for p, a in zip(PROMPTS, ANSWERS)]
    nll = tokens = 0.0
    for text in texts:
        n = len(tokenizer.encode(text, add_special_tokens=False)) - 1
        nll += math.log(perplexity(reference, tokenizer, [text])) * n
        tokens += n
    assert math.isclose(perplexity(reference, tokenizer, texts), math.exp(nll / tokens), rel_tol=0.01)


def test_reward_scores_come_back_in_the_callers_order(tmp_path, tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    rm = RewardModel(tmp_path, batch_size=4)
    scores = rm.score(PROMPTS, ANSWERS)
    alone = torch.cat([rm.score([p], [a]) for p, a in zip(PROMPTS, ANSWERS)])
    torch.testing.assert_close(scores, alone, rtol=0.02, atol=0.02)
    assert len(set(scores.tolist())) > 5  # the rows score differently, so a mixed-up order would show
