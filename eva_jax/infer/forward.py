"""The engine's three calls into the one model (eva_jax.nn.model.Transformer, per-layer form): the main
forward over a step's tokens, the head, and one MTP depth. Nothing here restates the model's math; the
engine owns only where tokens sit (kv_cache.Rows) and which pages they use."""

from __future__ import annotations

from typing import Any

from jaxtyping import Array, Float, Int

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.nn.kv_cache import Pool, Rows
from eva_jax.nn.model import Transformer

Params = dict[str, Any]


def _model(cfg: ModelConfig, compute: ComputeConfig) -> Transformer:
    return Transformer(cfg, compute, scan_layers=False)


def main(cfg: ModelConfig, compute: ComputeConfig, params: Params, pool: Pool, tokens: Int[Array, "B T"], rows: Rows,
         prefill: bool) -> tuple[Float[Array, "B T D"], Pool]:
    """Hidden states after the final norm (what the head and the MTP modules read), and the updated pool."""
    out = _model(cfg, compute).apply({"params": params}, tokens, cache=pool, rows=rows, prefill=prefill)
    return out["hidden"], out["cache"]


def head(cfg: ModelConfig, compute: ComputeConfig, params: Params, h: Float[Array, "... D"]) -> Float[Array, "... V"]:
    return _model(cfg, compute).apply({"params": params}, h, method=Transformer.head)


def mtp(cfg: ModelConfig, compute: ComputeConfig, params: Params, depth: int, pool: Pool, h_prev: Float[Array, "B T D"],
        tokens: Int[Array, "B T"], rows: Rows, prefill: bool) -> tuple[Float[Array, "B T D"], Pool]:
    return _model(cfg, compute).apply({"params": params}, depth, h_prev, tokens, pool, rows, prefill,
                             method=Transformer.mtp_step)
