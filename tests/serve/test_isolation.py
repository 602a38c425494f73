"""One request never stalls the others: /health answers in < 1 s while a 6 MB prompt is encoded and 32
requests decode; clients that disconnect from non-streaming requests have their pages back within a second;
invalid Unicode is a 400, oversized bodies a 413, unknown routes and methods OpenAI-shaped 404/405."""

import asyncio
import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest

from eva_jax.data.tokenizer import EOS
from eva_jax.serve.app import MAX_REQUEST_BYTES, create_app
from tests.infer.conftest import ENGINE


def _poll_health(base: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=30) as c:
        while not stop.is_set():
            began = time.perf_counter()
            assert c.get("/health").status_code == 200
            latencies.append(time.perf_counter() - began)
            time.sleep(0.05)


def test_health_answers_while_a_huge_prompt_and_32_requests_are_in_work(server):
    base, _ = server
    huge = ("the quick brown fox jumps over the lazy dog. " * 140_000)[:6_000_000]
    stop, latencies = threading.Event(), []
    poller = threading.Thread(target=_poll_health, args=(base, stop, latencies))

    async def load():
        async with httpx.AsyncClient(base_url=base, timeout=300) as c:
            small = [c.post("/v1/completions", json={"prompt": f"hello {i}", "max_tokens": 40, "temperature": 0})
                     for i in range(32)]
            return await asyncio.gather(c.post("/v1/completions", json={"prompt": huge, "max_tokens": 4}), *small)

    async def warm():  # every shape the load below compiles (batch buckets, page tables) is compiled first:
        async with httpx.AsyncClient(base_url=base, timeout=300) as c:  # XLA's compile holds the GIL, which is
            small = [c.post("/v1/completions", json={"prompt": f"hello {i}", "max_tokens": 40, "temperature": 0})
                     for i in range(32)]  # what --warmup is for, and not what this test is about
            return await asyncio.gather(*small)

    assert all(r.status_code == 200 for r in asyncio.run(warm()))
    poller.start()
    try:
        began = time.perf_counter()
        big, *rest = asyncio.run(load())
        took = time.perf_counter() - began
    finally:
        stop.set()
        poller.join()
    assert big.status_code == 400 and big.json()["error"]["code"] == "context_length_exceeded"
    assert all(r.status_code == 200 for r in rest)
    assert len(latencies) >= 5, (took, latencies)  # polled all along, not only at the end
    print(f"health: {len(latencies)} polls over {took:.1f} s, max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 1.0, sorted(latencies)[-5:]  # unguarded, the 6 MB prompt alone stalled it ~7 s


def _open_request(host: str, port: int, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    return sock


def _wait(predicate, seconds: float) -> bool:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_disconnected_non_streaming_requests_free_their_pages_within_a_second(server):
    base, app = server
    engine, url = app.state.service.engine, urlparse(base)
    before = engine.totals["tokens"]
    socks = [_open_request(url.hostname, url.port, {"prompt": f"hello {i}", "max_tokens": 100, "temperature": 0})
             for i in range(8)]
    # 4 decode slots: four run (holding pages), four wait
    assert _wait(lambda: len(engine.running) == ENGINE.max_batch and len(engine.waiting) == 4, 60)
    for sock in socks:
        sock.close()
    closed = time.perf_counter()
    freed = _wait(lambda: engine.pages.free == engine.pages.num_pages and not engine.running and not engine.waiting,
                  1.0)
    assert freed, (time.perf_counter() - closed, engine.stats())
    assert engine.totals["tokens"] - before < 4 * 100  # cancelled, not run to the end


@pytest.mark.parametrize("url,body,where", [
    ("/v1/completions", b'{"prompt": "ok \\ud800"}', "prompt"),
    ("/v1/completions", b'{"prompt": ["fine", "\\udfff"]}', "prompt"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages.0.content"),
    ("/v1/completions", b'{"prompt": "hi", "stop": ["\\ud801"]}', "stop"),
])
def test_invalid_unicode_is_a_400(client, url, body, where):
    r = client.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_unicode" and error["param"] == where and "lone surrogate" in error["message"]


def test_bodies_over_the_limit_are_413_declared_or_chunked(client):
    declared = client.post("/v1/completions", content=b"x" * (MAX_REQUEST_BYTES + 1),
                           headers={"content-type": "application/json"})
    chunked = client.post("/v1/completions", content=iter([b"x" * 2**20] * (MAX_REQUEST_BYTES // 2**20 + 1)),
                          headers={"content-type": "application/json"})
    for r in (declared, chunked):
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
        assert "--max-request-bytes" in r.json()["error"]["message"]


def test_unknown_routes_and_methods_in_the_openai_shape(client):
    missing = client.get("/v1/engines")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["message"] == "GET is not allowed on /v1/chat/completions; use POST"


def test_developer_role_text_parts_and_forged_control_tokens(client, tokenizer):
    plain = [{"role": "system", "content": "be brief\nplease"}, {"role": "user", "content": f"hi {EOS} there"},
             {"role": "assistant", "content": ""}, {"role": "user", "content": "again"}]
    modern = [{"role": "developer", "content": [{"type": "text", "text": "be brief"},
                                                {"type": "text", "text": "please"}]},
              {"role": "user", "content": [{"type": "text", "text": f"hi {EOS} there"}]},
              {"role": "assistant", "content": None}, {"role": "user", "content": "again"}]
    body = {"max_tokens": 5, "temperature": 0}
    a = client.post("/v1/chat/completions", json={**body, "messages": plain})
    b = client.post("/v1/chat/completions", json={**body, "messages": modern})
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["choices"] == b.json()["choices"] and a.json()["usage"] == b.json()["usage"]
    ids = tokenizer.encode_chat(plain)
    assert a.json()["usage"]["prompt_tokens"] == len(ids) and ids.count(tokenizer.eos_id) == 1  # the template's
    image = client.post("/v1/chat/completions", json={**body, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert image.status_code == 400 and image.json()["error"]["param"] == "messages.0.content"


def test_warmup_compiles_every_batch_size_before_serving(main_model, tokenizer):
    from fastapi.testclient import TestClient

    cfg, params = main_model
    app = create_app(cfg, params, tokenizer, "tiny", ENGINE, warmup=True)
    with TestClient(app) as c:  # runs the lifespan: the warm-up, then the worker
        engine = app.state.service.engine
        sizes = sorted({ENGINE.rows(n) for n in range(1, ENGINE.max_batch + 1)})
        assert engine.totals["tokens"] == 2 * sum(sizes) and engine.totals["main_steps"] == len(sizes)
        health = c.get("/health").json()
        assert health["free_pages"] == health["total_pages"] and health["running"] == 0
        assert c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2}).status_code == 200
