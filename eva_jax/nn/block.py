"""One pre-norm decoder layer, and the scanned stacks of them (reference §2.1)."""

from __future__ import annotations

import flax.linen as nn
import jax
from jaxtyping import Array, Float, Int

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.nn.kv_cache import Pages, Rows
from eva_jax.nn.mla import MLA
from eva_jax.nn.mlp import MLP
from eva_jax.nn.moe import MoE
from eva_jax.nn.norms import RMSNorm
from eva_jax.parallel.rules import MeshRules

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
    """x = h + MLA(norm(h)); h' = x + FFN(norm(x)), FFN a dense SwiGLU or DeepSeekMoE.

    Returns (h', MoE statistics, the layer's cache pages after this step — None without a cache)."""

    cfg: ModelConfig
    compute: ComputeConfig
    moe: bool
    sharding: MeshRules | None = None

    @nn.compact
    def __call__(self, h: Float[Array, "B T D"], cos: Float[Array, "B T R2"], sin: Float[Array, "B T R2"],
                 segment_ids: Int[Array, "B T"] | None, cache: Pages | None = None, rows: Rows | None = None,
                 prefill: bool = False) -> tuple[Float[Array, "B T D"], dict[str, Array], Pages | None]:
        cfg, compute, sh = self.cfg, self.compute, self.sharding
        with jax.named_scope("attention"):
            normed = RMSNorm(cfg.rms_norm_eps, compute.param_dtype, name="attn_norm")(h)
            attn, cache = MLA(cfg, compute, sh, name="attn")(normed, cos, sin, segment_ids, cache, rows, prefill)
            x = h + attn
        normed = RMSNorm(cfg.rms_norm_eps, compute.param_dtype, name="ffn_norm")(x)
        if self.moe:
            with jax.named_scope("moe"):
                y, stats = MoE(cfg, compute, sh, name="moe")(normed)
        else:
            with jax.named_scope("mlp"):
                y, stats = MLP(cfg, compute, cfg.intermediate_size, sharding=sh, name="mlp")(normed), {}
        return x + y, stats, cache


class ScannedBlock(Block):
    """Block in nn.scan's (carry, ys) form for the training stacks: the residual stream is carried, the MoE
    statistics stack on the layer axis. Same parameters as Block (a subclass adds no scope)."""

    def __call__(self, h: Float[Array, "B T D"], cos: Float[Array, "B T R2"], sin: Float[Array, "B T R2"],
                 segment_ids: Int[Array, "B T"] | None) -> tuple[Float[Array, "B T D"], dict[str, Array]]:
        h, stats, _ = super().__call__(h, cos, sin, segment_ids)
        return h, stats


def layer_stack(cfg: ModelConfig, compute: ComputeConfig, moe: bool, length: int, sharding: MeshRules | None,
                name: str) -> nn.Module:
    """`length` Blocks under nn.scan (parameters stacked on a leading "layers" axis) and the remat policy,
    so compile time does not grow with depth."""
    block = ScannedBlock
    if compute.remat_policy != "none":
        block = nn.remat(ScannedBlock, policy=REMAT_POLICIES[compute.remat_policy], prevent_cse=False)
    scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=length,
                      metadata_params={nn.PARTITION_NAME: "layers"}, unroll=min(compute.scan_unroll, max(length, 1)))
    return scanned(cfg, compute, moe, sharding, name=name)
