"""DeepSeekMoE layer: router (fp32), dropless routed experts through the grouped matmul, shared experts."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.config import ModelConfig
from eva_jax.nn import grouped
from eva_jax.nn.layers import kernel, kernel_init, param
from eva_jax.nn.mlp import MLP
from eva_jax.nn.router import Routing, expert_counts, route, sequence_balance_loss
from eva_jax.parallel import experts as expert_parallel


def routed_experts(x: Float[Array, "N D"], routing: Routing, w_gate: Float[Array, "E D F"],
                   w_up: Float[Array, "E D F"], w_down: Float[Array, "E F D"], impl: str) -> Float[Array, "N D"]:
    """Σ_k w_k·Expert_{e_k}(x) for every token, no token dropped."""
    layout = grouped.plan(routing.experts, w_gate.shape[0], impl)
    rows = grouped.gather_rows(x, layout)
    hidden = jax.nn.silu(grouped.grouped_matmul(rows, w_gate, layout)) * grouped.grouped_matmul(rows, w_up, layout)
    return grouped.combine(grouped.grouped_matmul(hidden, w_down, layout), routing.weights, layout)


class MoE(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"]) -> tuple[Float[Array, "B T D"], dict[str, Array]]:
        cfg = self.cfg
        b, t, d = x.shape
        e, f = cfg.n_routed_experts, cfg.moe_intermediate_size
        # The gate stays fp32 whatever the compute dtype (DeepSeek keeps MoE gating out of low precision).
        w_router = param(self, "router", (d, e), ("embed", "router_experts"), kernel_init(cfg), jnp.float32)
        bias = None
        if cfg.uses_routing_bias:
            bias = param(self, "router_bias", (e,), ("router_experts",), nn.initializers.zeros, jnp.float32)
        with jax.named_scope("router"):
            logits = jnp.einsum("BTD,DE->BTE", x.astype(jnp.float32), w_router)
            routing = route(logits.reshape(b * t, e), bias, cfg)
        w_gate = kernel(self, cfg, "experts_gate", (e, d, f), ("expert", "embed", "expert_mlp"))
        w_up = kernel(self, cfg, "experts_up", (e, d, f), ("expert", "embed", "expert_mlp"))
        w_down = kernel(self, cfg, "experts_down", (e, f, d), ("expert", "expert_mlp", "embed"))
        with jax.named_scope("routed_experts"):
            mesh = expert_parallel.active_mesh()
            if expert_parallel.applies(mesh, b):
                # Inside a step run under jax.set_mesh with expert > 1: all-to-all dispatch over `expert`.
                k = routing.experts.shape[-1]
                routed = expert_parallel.routed_experts_ep(
                    x, routing.experts.reshape(b, t, k), routing.weights.reshape(b, t, k), w_gate, w_up, w_down,
                    cfg.moe_impl, mesh, cfg.moe_chunk_tokens)
            else:
                routed = routed_experts(x.reshape(b * t, d), routing, w_gate, w_up, w_down, cfg.moe_impl)
        out = routed.astype(x.dtype).reshape(b, t, d)
        if cfg.n_shared_experts:
            out = out + MLP(cfg, cfg.n_shared_experts * f, "shared_mlp", name="shared")(x)
        return out, moe_stats(routing, b, t, e)


def moe_stats(routing: Routing, b: int, t: int, e: int) -> dict[str, Array]:
    """Per-layer statistics for training: expert loads (for the bias update) and the sequence balance loss."""
    experts: Int[Array, "B T K"] = routing.experts.reshape(b, t, -1)
    return {
        "expert_counts": expert_counts(routing.experts, e),
        "balance_loss": sequence_balance_loss(routing.scores.reshape(b, t, e), experts),
    }
