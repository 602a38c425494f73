"""Multi-Token Prediction module (reference §5): h'_i = eh_proj([enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)]),
one MoE Block over the shifted sequence, then its own final norm; embedding and head are the main model's."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.nn.block import Block
from eva_jax.nn.kv_cache import Pages, Rows
from eva_jax.nn.layers import kernel, linear
from eva_jax.nn.norms import RMSNorm
from eva_jax.parallel.rules import MeshRules


class MTPModule(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig
    sharding: MeshRules | None = None

    @nn.compact
    def __call__(self, h_prev: Float[Array, "B T D"], emb: Float[Array, "B T D"], cos: Float[Array, "B T R2"],
                 sin: Float[Array, "B T R2"], segment_ids: Int[Array, "B T"] | None, cache: Pages | None = None,
                 rows: Rows | None = None, prefill: bool = False
                 ) -> tuple[Float[Array, "B T D"], dict[str, Array], Pages | None]:
        cfg, compute = self.cfg, self.compute
        eps, pdt = cfg.rms_norm_eps, compute.param_dtype
        # Embedding first: the order the released weights expect (reference §5).
        joined = jnp.concatenate([RMSNorm(eps, pdt, name="enorm")(emb), RMSNorm(eps, pdt, name="hnorm")(h_prev)], -1)
        w_eh = kernel(self, "eh_proj", (2 * cfg.hidden_size, cfg.hidden_size), ("mtp_concat", "embed"))
        x, stats, cache = Block(cfg, compute, moe=True, sharding=self.sharding, name="block")(
            linear(joined, w_eh, compute), cos, sin, segment_ids, cache, rows, prefill)
        return RMSNorm(eps, pdt, name="norm")(x), stats, cache
