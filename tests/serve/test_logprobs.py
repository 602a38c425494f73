"""/v1/completions as evaluation clients use it: `logprobs`, `echo`, `max_tokens: 0`, and `prompt` as a batch
(strings or token-id lists, one choice per prompt). The echoed log-probs are eva_jax.eval's own scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eva_jax.eval.loglik import Scorer, encode_pair
from eva_jax.infer.api import generate
from eva_jax.serve.logprobs import token_text
from tests.infer.conftest import ENGINE

TEXT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def scorer(main_model):
    cfg, params = main_model
    return Scorer(cfg, params, batch_size=4)  # the training form of the weights, not the server's copy


def greedy_ids(main_model, tokenizer, prompt_ids, n):
    cfg, params = main_model
    out = generate(cfg, params, [prompt_ids], n, stop_tokens=(tokenizer.eos_id,), engine_config=ENGINE)[0]
    return [t for t in out if t != tokenizer.eos_id]


def test_echo_log_probs_are_the_eval_scores(client, scorer, tokenizer):
    r = client.post("/v1/completions", json={"prompt": TEXT, "echo": True, "logprobs": 2, "max_tokens": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["text"] == TEXT and choice["finish_reason"] == "length"
    ids = tokenizer.encode(TEXT)
    lp = choice["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert lp["tokens"] == [token_text(tokenizer, t) for t in ids] == [tokenizer.decode([t]) for t in ids]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # nothing predicts the first token
    ours = scorer.score_tokens([ids], top_k=2)[0]
    np.testing.assert_allclose(lp["token_logprobs"][1:], ours.logprobs, rtol=1e-5, atol=1e-5)
    for j, top in enumerate(lp["top_logprobs"][1:], start=1):
        assert lp["tokens"][j] in top and 2 <= len(top) <= 3
        best = [token_text(tokenizer, int(t)) for t in ours.top_ids[j - 1]]
        assert list(top)[:2] == best
    # Offsets into the echoed text (BOS adds none): each token's text sits at its offset.
    assert lp["text_offset"][:2] == [0, 0]
    for token, at in zip(lp["tokens"][1:], lp["text_offset"][1:]):
        assert choice["text"][at: at + len(token)] == token
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
    # A continuation's log-likelihood, as a client sums it, is eva_jax.eval's.
    ctx, cont = encode_pair(tokenizer, "the quick brown fox", " jumps over the lazy dog")
    assert ctx + cont == ids
    (ll, _), = scorer.loglikelihood([(ctx, cont)])
    assert sum(lp["token_logprobs"][len(ctx):]) == pytest.approx(ll, rel=1e-5)


def test_batched_token_ids_with_echo_logprobs_1_and_max_tokens_0(client, scorer, tokenizer):
    """The request lm-evaluation-harness's OpenAI-compatible client sends to score log-likelihoods."""
    prompts = [tokenizer.encode(t) for t in ("to be or not to be", "hello world", "a journey of a thousand miles")]
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": prompts, "echo": True, "logprobs": 1,
                                             "max_tokens": 0, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    for ids, choice, ours in zip(prompts, body["choices"], scorer.score_tokens(prompts, top_k=1)):
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(ids) and lp["token_logprobs"][0] is None
        np.testing.assert_allclose(lp["token_logprobs"][1:], ours.logprobs, rtol=1e-5, atol=1e-5)
        greedy = [max(top, key=top.get) == tok for top, tok in zip(lp["top_logprobs"][1:], lp["tokens"][1:])]
        assert greedy == ours.greedy.tolist()
        assert choice["text"] == tokenizer.decode(ids, skip_special=True)
    assert body["usage"]["prompt_tokens"] == sum(map(len, prompts)) and body["usage"]["completion_tokens"] == 0


def test_a_batch_of_strings_gets_one_completion_each(client, scorer, main_model, tokenizer):
    texts = ["the quick brown fox", "to be or not", "hello world"]
    r = client.post("/v1/completions", json={"prompt": texts, "max_tokens": 5, "temperature": 0, "logprobs": 0})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    for text, choice in zip(texts, choices):
        ids = tokenizer.encode(text)
        new = greedy_ids(main_model, tokenizer, ids, 5)
        assert choice["text"] == tokenizer.decode(new)
        lp = choice["logprobs"]  # the completion's tokens only, each the greedy choice (logprobs=0: itself only)
        assert lp["tokens"] == [token_text(tokenizer, t) for t in new]
        ours = scorer.score_tokens([ids + new])[0]
        np.testing.assert_allclose(lp["token_logprobs"], ours.logprobs[len(ids) - 1:], rtol=1e-5, atol=1e-5)
        assert all(len(top) == 1 for top in lp["top_logprobs"])
        assert lp["text_offset"][0] == len(text)


def test_echo_with_generation_puts_the_prompt_first(client, main_model, tokenizer):
    r = client.post("/v1/completions", json={"prompt": "hello world", "echo": True, "max_tokens": 4,
                                             "temperature": 0, "logprobs": 1})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    ids = tokenizer.encode("hello world")
    new = greedy_ids(main_model, tokenizer, ids, 4)
    assert choice["text"] == "hello world" + tokenizer.decode(new)
    assert choice["logprobs"]["tokens"] == [token_text(tokenizer, t) for t in ids + new]
    plain = client.post("/v1/completions", json={"prompt": "hello world", "echo": True, "max_tokens": 0}).json()
    assert plain["choices"][0] == {"index": 0, "text": "hello world", "logprobs": None, "finish_reason": "length"}


def test_a_streamed_batch_tags_each_chunk_with_its_prompt(client, main_model, tokenizer):
    texts = ["all that glitters", "the lazy dog"]
    body = {"prompt": texts, "max_tokens": 6, "temperature": 0, "stream": True}
    got = {0: "", 1: ""}
    finished = set()
    with client.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        choice = json.loads(line[6:])["choices"][0]
        got[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finished.add(choice["index"])
    assert finished == {0, 1}
    for i, text in enumerate(texts):
        assert got[i] == tokenizer.decode(greedy_ids(main_model, tokenizer, tokenizer.encode(text), 6))


BAD = [
    ("logprobs above 20", {"prompt": "hi", "logprobs": 21}, "logprobs", "less than or equal to 20"),
    ("negative logprobs", {"prompt": "hi", "logprobs": -1}, "logprobs", "greater than or equal to 0"),
    ("empty prompt list", {"prompt": []}, "prompt", "empty"),
    ("an empty token list in a batch", {"prompt": [[5, 6], []]}, "prompt", "prompt 1 is an empty list"),
    ("floats as token ids", {"prompt": [1.5, 2]}, "prompt", "a list of token-id lists"),
    ("a number as the prompt", {"prompt": 7}, "prompt", "must be a string"),
    ("mixed strings and ids", {"prompt": ["hi", [5]]}, "prompt", "must be a string"),
    ("max_tokens 0 without echo", {"prompt": [[5, 6]], "max_tokens": 0}, "max_tokens", "echo=true"),
    ("stream with echo", {"prompt": "hi", "stream": True, "echo": True, "max_tokens": 0}, "stream", "stream"),
    ("stream with logprobs", {"prompt": "hi", "stream": True, "logprobs": 1}, "stream", "stream"),
    ("one prompt of a batch too long", {"prompt": [[5, 6], list(range(2, 202))], "echo": True, "max_tokens": 0},
     "prompt", "prompt 1: the prompt is 200 tokens"),
    ("a token outside the vocabulary in a batch", {"prompt": [[5], [6, 100000]], "echo": True, "max_tokens": 0},
     "prompt", "prompt 1: token id 100000"),
]


@pytest.mark.parametrize("name,body,param,message", BAD, ids=[b[0] for b in BAD])
def test_bad_values_get_400_with_a_sentence(client, name, body, param, message):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert message in error["message"], error["message"]


def test_tokens_that_split_a_character_are_named_by_their_bytes(tokenizer):
    names = {token_text(tokenizer, t) for t in range(tokenizer.vocab_size)}
    assert len(names) == tokenizer.vocab_size  # top_logprobs keys never collide
    ids = tokenizer.encode("héllo", bos=False)
    pieces = [token_text(tokenizer, t) for t in ids]
    assert "".join(pieces) == "héllo" or any(p.startswith("bytes:\\x") for p in pieces)


def test_a_full_context_prompt_can_still_be_scored(client, scorer):
    ids = [int(t) for t in np.random.default_rng(0).integers(2, 300, ENGINE.max_seq_len)]
    r = client.post("/v1/completions", json={"prompt": ids, "echo": True, "logprobs": 0, "max_tokens": 0})
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]["token_logprobs"]
    np.testing.assert_allclose(lp[1:], scorer.score_tokens([ids])[0].logprobs, rtol=1e-5, atol=1e-5)
    r = client.post("/v1/completions", json={"prompt": ids, "echo": True, "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
