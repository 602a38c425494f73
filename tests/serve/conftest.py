"""A real uvicorn server on a free port, over the tiny model of tests/infer and its byte-level BPE."""

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from eva_jax.serve.app import create_app
from tests.infer.conftest import ENGINE, main_model, tokenizer  # noqa: F401  (fixtures)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(main_model, tokenizer):  # noqa: F811
    cfg, params = main_model
    app = create_app(cfg, params, tokenizer, "tiny", ENGINE)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server[0], timeout=120) as c:
        yield c
