"""Continuous batching over the paged latent cache.

Requests join and leave between device steps. A request is admitted when a decode slot is free and the pool
holds the pages for its whole life (prompt + max_tokens + D draft slots); otherwise it waits in FIFO order.
Pages go back to the pool the moment a request finishes or is cancelled. Shapes are bucketed to powers of two
(rows, prompt length, page-table width) so a handful of compiled steps serve every mix of requests.

`submit` and `cancel` may be called from any thread; `step` runs on one thread (the engine loop).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from eva_jax.api import split_config
from eva_jax.config import Config, ModelConfig
from eva_jax.infer import cache, steps
from eva_jax.infer.requests import EngineConfig, Listener, Request, bucket
from eva_jax.infer.sampling import RowSampling, SamplingParams
from eva_jax.nn.model import generation_params


class Engine:
    """Requests in, tokens out: `submit` queues a request, `step` advances every running one, `run` drains."""

    def __init__(self, cfg: Config | ModelConfig, params: Any, config: EngineConfig = EngineConfig()) -> None:
        self.cfg, compute = split_config(cfg)
        # remat_policy only shapes training; dropping it lets configs that differ only there share compiled steps.
        self.compute = dataclasses.replace(compute, remat_policy="none")
        self.config = config
        if config.speculative and self.cfg.num_mtp_layers == 0:
            raise ValueError("speculative decoding drafts with the MTP modules, and this model has none "
                             "(model.num_mtp_layers=0)")
        self.draft_depth = self.cfg.num_mtp_layers if config.speculative else 0
        # The per-layer form in the compute dtype, made once per engine.
        self.params = generation_params(self.cfg, self.compute, params)
        self.pages = cache.PagePool(config.pages(self.cfg))
        self.pool = cache.init_pool(self.cfg, self.pages.num_pages, config.page_size, self.compute.dtype)
        # One extra row: padding rows of a bucket write their draft state there.
        self.state = None
        if config.speculative:
            self.state = steps.empty_draft_state(self.cfg, self.compute, config.max_batch + 1)
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: dict[int, Request] = {}
        self._ids = itertools.count()
        self._lock = threading.RLock()
        self.totals = collections.Counter()

    # ---- requests ------------------------------------------------------------------------------
    def check(self, prompt_len: int, max_tokens: int) -> None:
        """Raises ValueError with a sentence when a request can never be served."""
        limit = self.config.seq_len(self.cfg)
        if prompt_len < 1:
            raise ValueError("the prompt is empty; give at least one token")
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens} must be at least 1")
        if prompt_len + max_tokens > limit:
            raise ValueError(f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceeds the context of "
                             f"{limit} tokens")
        if self._pages_needed(prompt_len, max_tokens) > self.pages.num_pages:
            raise ValueError(f"prompt + max_tokens needs more cache pages than the pool has ({self.pages.num_pages})")

    def _pages_needed(self, prompt_len: int, max_tokens: int) -> int:
        return cache.pages_for(prompt_len + max_tokens + self.draft_depth, self.config.page_size)

    def submit(self, prompt: Iterable[int], max_tokens: int, sampling: SamplingParams = SamplingParams(),
               stop: Iterable[int] = (), stream: int = 0, listener: Listener | None = None) -> Request:
        prompt = [int(t) for t in prompt]
        self.check(len(prompt), max_tokens)
        bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {self.cfg.vocab_size})")
        request = Request(next(self._ids), prompt, max_tokens, sampling, frozenset(stop), stream, listener)
        with self._lock:
            self.waiting.append(request)
        return request

    def cancel(self, request: Request) -> None:
        """Marks the request; its pages return to the pool before the next device step (or now, if waiting)."""
        with self._lock:
            request.cancelled = True
            if request in self.waiting:
                self.waiting.remove(request)
                self._finish(request, "cancelled")

    def fail_all(self, reason: str) -> None:
        """Ends every request after a failed device step; the cache pool may be lost, so it is rebuilt."""
        with self._lock:
            for request in [*self.running.values(), *self.waiting]:
                request.error = reason
                self._finish(request, "error")
            self.waiting.clear()
            self.pool = cache.init_pool(self.cfg, self.pages.num_pages, self.config.page_size,
                                         self.compute.dtype)
            if self.config.speculative:
                self.state = steps.empty_draft_state(self.cfg, self.compute, self.config.max_batch + 1)

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def _finish(self, request: Request, reason: str, new: list[int] | None = None) -> None:
        request.finish_reason = reason
        if request.pages:
            self.pages.release(request.pages)
            request.pages = []
        if request.slot is not None:
            self.running.pop(request.slot, None)
            request.slot = None
        if request.listener is not None:
            request.listener(request, new or [])

    def _emit(self, request: Request, tokens: Iterable[int | np.integer],
              logprobs: Iterable[float | np.floating] = ()) -> None:
        new, logprobs = [], iter(logprobs)
        for token in map(int, tokens):
            request.output.append(token)
            request.logprobs.extend(float(lp) for lp in itertools.islice(logprobs, 1))
            new.append(token)
            if token in request.stop:
                request.finish_reason = "stop"
            elif len(request.output) >= request.max_tokens:
                request.finish_reason = "length"
            if request.finish_reason:
                break
        self.totals["tokens"] += len(new)
        if request.finish_reason:
            self._finish(request, request.finish_reason, new)
        elif request.listener is not None:
            request.listener(request, new)

    # ---- the loop ------------------------------------------------------------------------------
    def _admit(self) -> list[Request]:
        admitted = []
        with self._lock:
            for request in [r for r in self.running.values() if r.cancelled]:
                self._finish(request, "cancelled")
            free_slots = [s for s in range(self.config.max_batch) if s not in self.running]
            while self.waiting and free_slots:
                request = self.waiting[0]
                need = self._pages_needed(len(request.prompt), request.max_tokens)
                if need > self.pages.free:
                    break
                self.waiting.popleft()
                request.pages = self.pages.allocate(need)
                request.slot = free_slots.pop(0)
                self.running[request.slot] = request
                admitted.append(request)
        return admitted

    def step(self) -> bool:
        """Admits what fits, prefills it, then advances every running request by one device step."""
        admitted = self._admit()
        if admitted:
            self._prefill(admitted)
        active = [r for r in sorted(self.running.values(), key=lambda r: r.slot) if not r.done and not r.cancelled]
        if active:
            self._speculate(active) if self.config.speculative else self._decode(active)
        return bool(admitted or active)

    def run(self) -> None:
        while not self.idle:
            self.step()

    def _sampling(self, requests: list[Request], rows: int) -> RowSampling:
        pad = [requests[0]] * (rows - len(requests))
        rs = requests + pad
        samp = RowSampling(np.array([r.sampling.temperature for r in rs], np.float32),
                           np.array([r.sampling.top_k for r in rs], np.int32),
                           np.array([r.sampling.top_p for r in rs], np.float32),
                           np.array([r.sampling.seed % 2**32 for r in rs], np.uint32).view(np.int32),
                           np.array([r.stream for r in rs], np.int32))
        return samp

    def _table(self, requests: list[Request], rows: int, width: int) -> np.ndarray:
        return cache.page_table([r.pages for r in requests] + [[]] * (rows - len(requests)), width)

    def _slots(self, requests: list[Request], rows: int) -> np.ndarray:
        return np.array([r.slot for r in requests] + [self.config.max_batch] * (rows - len(requests)), np.int32)

    def _prefill(self, requests: list[Request]) -> None:
        limit = -(-self.config.seq_len(self.cfg) // 16) * 16
        t = bucket(max(len(r.prompt) for r in requests), self.config.min_prefill_len, limit)
        rows = self.config.rows(len(requests))
        tokens = np.zeros((rows, t), np.int32)
        lengths = np.ones((rows,), np.int32)
        for i, r in enumerate(requests):
            tokens[i, : len(r.prompt)] = r.prompt
            lengths[i] = len(r.prompt)
        samp = self._sampling(requests, rows)
        table = self._table(requests, rows, cache.pages_for(t, self.config.page_size))
        self.pool, self.state, first, logprobs = steps.prefill(
            self.cfg, self.compute, self.params, self.pool, self.state, tokens, lengths, table, samp,
            self._slots(requests, rows), speculate=self.config.speculative)
        self.totals["prefill_tokens"] += sum(len(r.prompt) for r in requests)
        for r, token, logprob in zip(requests, np.asarray(first), np.asarray(logprobs)):
            self._emit(r, [token], [logprob])

    def _width(self, requests: list[Request]) -> int:
        # Sized by the pages the rows hold for their whole life, not by today's length: a batch keeps one
        # compiled shape from its first step to its last.
        return bucket(max(len(r.pages) for r in requests), self.config.min_table_pages)

    def _decode(self, requests: list[Request]) -> None:
        rows = self.config.rows(len(requests))
        tokens = np.zeros((rows,), np.int32)
        positions = np.zeros((rows,), np.int32)
        for i, r in enumerate(requests):
            tokens[i], positions[i] = r.output[-1], r.position
        samp = self._sampling(requests, rows)
        table = self._table(requests, rows, self._width(requests))
        self.pool, nxt, logprobs = steps.decode_step(self.cfg, self.compute, self.params, self.pool, tokens,
                                                     positions, table, samp)
        self.totals["main_steps"] += 1
        for r, token, logprob in zip(requests, np.asarray(nxt), np.asarray(logprobs)):
            r.main_steps += 1
            self._emit(r, [token], [logprob])

    def _speculate(self, requests: list[Request]) -> None:
        rows = self.config.rows(len(requests))
        n = np.zeros((rows,), np.int32)
        n[: len(requests)] = [r.position for r in requests]
        samp = self._sampling(requests, rows)
        table = self._table(requests, rows, self._width(requests))
        self.pool, self.state, tokens, accepted = steps.verify_step(
            self.cfg, self.compute, self.params, self.pool, self.state, self._slots(requests, rows), n, table, samp)
        self.totals["main_steps"] += 1
        tokens, accepted = np.asarray(tokens), np.asarray(accepted)
        for i, r in enumerate(requests):
            a = int(accepted[i])
            r.main_steps += 1
            r.drafted += self.draft_depth
            r.accepted += a
            self.totals["drafted"] += self.draft_depth
            self.totals["accepted"] += a
            self.totals["row_steps"] += 1
            self._emit(r, tokens[i, : a + 1])

    def stats(self) -> dict[str, int | float]:
        t = self.totals
        out = {"free_pages": self.pages.free, "total_pages": self.pages.num_pages, "running": len(self.running),
               "waiting": len(self.waiting), "generated_tokens": t["tokens"], "main_steps": t["main_steps"]}
        if t["drafted"]:
            out["acceptance_rate"] = t["accepted"] / t["drafted"]
            out["tokens_per_main_step"] = (t["accepted"] + t["row_steps"]) / t["row_steps"]
        return out

