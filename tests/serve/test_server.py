"""The OpenAI-compatible server: concurrent mixed requests agree with the API, bad requests get a 400 and the
server keeps serving, a client that disconnects mid-stream frees its pages."""

import asyncio
import json
import time

import httpx
import pytest

from eva_jax.infer.api import generate
from tests.infer.conftest import ENGINE

PROMPTS = ["the quick brown fox", "to be or not", "hello world", "a journey of", "all that glitters", "the lazy dog"]


def expected_text(main_model, tokenizer, prompt_ids, max_tokens, temperature, seed):
    cfg, params = main_model
    out = generate(cfg, params, [prompt_ids], max_tokens, temperature=temperature, seed=seed,
                   stop_tokens=(tokenizer.eos_id,), engine_config=ENGINE)[0]
    return tokenizer.decode([t for t in out if t != tokenizer.eos_id])


def case(i):
    chat = i % 3 == 0
    return dict(chat=chat, stream=i % 2 == 0, temperature=[0.0, 0.7, 1.3][i % 3], seed=100 + i,
                max_tokens=6 + i % 7, text=PROMPTS[i % len(PROMPTS)] + (" and" if i % 4 == 1 else ""))


async def call(base, c):
    if c["chat"]:
        url, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": c["text"]}]}
    else:
        url, body = "/v1/completions", {"prompt": c["text"]}
    body.update(model="tiny", max_tokens=c["max_tokens"], temperature=c["temperature"], seed=c["seed"],
                stream=c["stream"])
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        if not c["stream"]:
            r = await client.post(url, json=body)
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            return choice["message"]["content"] if c["chat"] else choice["text"]
        text = ""
        async with client.stream("POST", url, json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        for line in lines[:-1]:
            choice = json.loads(line[6:])["choices"][0]
            text += choice["delta"].get("content", "") if c["chat"] else choice["text"]
        assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")
        return text


def test_32_concurrent_mixed_requests_match_the_api(server, main_model, tokenizer):
    base, _ = server
    cases = [case(i) for i in range(32)]

    async def all_calls():
        return await asyncio.gather(*(call(base, c) for c in cases))

    texts = asyncio.run(all_calls())
    for c, text in zip(cases, texts):
        ids = (tokenizer.encode_chat([{"role": "user", "content": c["text"]}]) if c["chat"]
               else tokenizer.encode(c["text"]))
        assert text == expected_text(main_model, tokenizer, ids, c["max_tokens"], c["temperature"], c["seed"]), c
    assert len(set(texts)) > 16


def test_stop_strings_cut_the_text(client, main_model, tokenizer):
    body = {"prompt": "the quick brown fox", "max_tokens": 12, "temperature": 0.0}
    full = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    stop = full[len(full) // 2: len(full) // 2 + 2]
    r = client.post("/v1/completions", json={**body, "stop": [stop]}).json()["choices"][0]
    assert r["text"] == full[: full.find(stop)] and r["finish_reason"] == "stop"


BAD = [
    ("malformed JSON", "/v1/completions", b'{"prompt": "hi", "max_tokens": ', None),
    ("unknown model", "/v1/completions", {"model": "gpt-5", "prompt": "hi"}, "model"),
    ("prompt longer than the context", "/v1/completions", {"prompt": list(range(2, 202))}, "prompt"),
    ("zero max_tokens", "/v1/completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ("negative max_tokens", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                     "max_tokens": -3}, "max_tokens"),
    ("too large max_tokens", "/v1/completions", {"prompt": "hi", "max_tokens": 1000}, "max_tokens"),
    ("temperature above 2", "/v1/completions", {"prompt": "hi", "temperature": 2.5}, "temperature"),
    ("negative temperature", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                      "temperature": -0.1}, "temperature"),
    ("top_p of 0", "/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p"),
    ("top_p above 1", "/v1/completions", {"prompt": "hi", "top_p": 1.5}, "top_p"),
    ("no messages", "/v1/chat/completions", {"messages": []}, "messages"),
    ("token outside the vocabulary", "/v1/completions", {"prompt": [5, 100000]}, "prompt"),
]


@pytest.mark.parametrize("name,url,body,param", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_400_and_the_server_keeps_serving(client, name, url, body, param):
    r = (client.post(url, content=body, headers={"content-type": "application/json"}) if isinstance(body, bytes)
         else client.post(url, json=body))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param:
        assert error["param"] == param
    ok = client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


def test_models_and_health(client):
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny"] and models["data"][0]["context_length"] == 128
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["total_pages"] > 0


def test_a_client_disconnecting_mid_stream_frees_its_pages(server, client):
    base, app = server
    engine = app.state.service.engine
    before = engine.totals["tokens"]
    with httpx.Client(base_url=base, timeout=60) as c:
        with c.stream("POST", "/v1/completions", json={"prompt": "hello world", "max_tokens": 90, "stream": True,
                                                        "temperature": 0}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            assert engine.running  # mid-stream: the request holds pages
        # leaving the block closes the connection mid-stream
    deadline = time.time() + 20
    while time.time() < deadline:
        health = client.get("/health").json()
        if health["free_pages"] == health["total_pages"] and health["running"] == 0:
            break
        time.sleep(0.05)
    assert health["free_pages"] == health["total_pages"] and health["running"] == 0
    assert engine.totals["tokens"] - before < 90  # cancelled, not run to the end
