"""The engine's three calls into the one model (eva_jax.nn.model.Transformer, per-layer form): the main
forward over a step's tokens, the head, and one MTP depth. Nothing here restates the model's math; the
engine owns only where tokens sit (kv_cache.Rows) and which pages they use."""

from __future__ import annotations

from typing import Any

from jaxtyping import Array, Float, Int

from eva_jax.config import ModelConfig
from eva_jax.nn.kv_cache import Pages, Rows
from eva_jax.nn.model import Transformer, generation_params

Params = dict[str, Any]


def prepare_params(cfg: ModelConfig, params: Params) -> Params:
    """The trained (scanned) parameters as the generation steps take them: the per-layer form, in the
    compute dtype (eva_jax.nn.model.generation_params). Made once per engine."""
    return generation_params(cfg, params)


def _model(cfg: ModelConfig) -> Transformer:
    return Transformer(cfg, scan_layers=False)


def main(cfg: ModelConfig, params: Params, pool: list[Pages], tokens: Int[Array, "B T"], rows: Rows,
         prefill: bool) -> tuple[Float[Array, "B T D"], list[Pages]]:
    """Hidden states after the final norm (what the head and the MTP modules read), and the updated pool."""
    out = _model(cfg).apply({"params": params}, tokens, cache=pool, rows=rows, prefill=prefill)
    return out["hidden"], out["cache"]


def head(cfg: ModelConfig, params: Params, h: Float[Array, "... D"]) -> Float[Array, "... V"]:
    return _model(cfg).apply({"params": params}, h, method=Transformer.head)


def mtp(cfg: ModelConfig, params: Params, depth: int, pool: list[Pages], h_prev: Float[Array, "B T D"],
        tokens: Int[Array, "B T"], rows: Rows, prefill: bool) -> tuple[Float[Array, "B T D"], list[Pages]]:
    return _model(cfg).apply({"params": params}, depth, h_prev, tokens, pool, rows, prefill,
                             method=Transformer.mtp_step)
