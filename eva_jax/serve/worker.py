"""The engine on its own thread, and an async view of one request's tokens for the HTTP handlers.

Device steps block, so they run on a thread; handlers await an asyncio queue that the engine's listener fills
from that thread. A handler that goes away (client disconnected) cancels its request, which returns the
request's pages to the pool before the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterable

from eva_jax.infer.batching import Engine, Request
from eva_jax.infer.sampling import SamplingParams

log = logging.getLogger("eva_jax.serve")


class Worker:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="eva-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopping:
            if self.engine.idle:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                self.engine.step()
            except Exception as err:  # keep serving: fail what was in flight, not the process
                log.exception("engine step failed")
                self.engine.fail_all(f"{type(err).__name__}: {err}")

    async def tokens(self, prompt: list[int], max_tokens: int, sampling: SamplingParams,
                     stop: Iterable[int]) -> AsyncIterator[tuple[list[int], bool, Request]]:
        """Yields (new token ids, whether they are the last, request) as the engine makes them. The flag is the
        request's state when the tokens were made: `request.done` may already be ahead of the queue."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[list[int], bool]] = asyncio.Queue()

        def listener(request: Request, new: list[int]) -> None:
            try:  # `done` is read here, on the engine thread, so the last batch of tokens is never missed
                loop.call_soon_threadsafe(queue.put_nowait, (new, request.done))
            except RuntimeError:  # the event loop has closed: nobody is listening any more
                pass

        request = self.engine.submit(prompt, max_tokens, sampling, stop, listener=listener)
        self._wake.set()
        try:
            while True:
                new, done = await queue.get()
                yield new, done, request
                if done:
                    return
        finally:
            if not request.done:
                self.engine.cancel(request)
                self._wake.set()
