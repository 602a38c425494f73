"""DeepSeekMoE layer: router (fp32), dropless routed experts, shared experts.

The routed experts of N tokens run in the cheapest exact layout for N (all give the same numbers):
  * "gather" (N·K ≤ E/2): only the chosen experts' weights are gathered (batch-1 decode reads K experts, not
    E; past E/2 the gathered copies cost more than reading every expert once);
  * "dense" (N·K ≤ DENSE_PAIRS·E where the grouped matmul is not ragged_dot, i.e. on CPU): every expert on
    every token, weighted by the (mostly zero) routing weights — each weight is read once and the matmuls are
    plain dense ones; 32 tokens × 32 experts take half the time of the padded layout on the 2-core CPU of
    docs/performance.md. Accelerators have ragged_dot and no FLOPs to spare, so they skip it;
  * "grouped": the dropless grouped matmul of eva_jax/nn/grouped.py (training sizes);
  * expert parallel, when the model was given a mesh with expert > 1: all_to_all dispatch over `expert`
    (eva_jax/parallel/experts.py) around the grouped matmul on each shard's experts.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.nn import grouped
from eva_jax.nn.layers import kernel, kernel_init, param
from eva_jax.nn.mlp import MLP
from eva_jax.nn.router import Routing, expert_counts, route, sequence_balance_loss
from eva_jax.parallel import experts as expert_parallel
from eva_jax.parallel.rules import MeshRules

DENSE_PAIRS = 8
Layout = Literal["gather", "dense", "grouped"]


def choose_layout(tokens: int, k: int, e: int, impl: str) -> Layout:
    if 2 * tokens * k <= e:
        return "gather"
    if tokens * k <= DENSE_PAIRS * e and grouped.resolve_impl(impl) != "ragged":
        return "dense"
    return "grouped"


def routed_experts(x: Float[Array, "N D"], routing: Routing, w_gate: Float[Array, "E D F"],
                   w_up: Float[Array, "E D F"], w_down: Float[Array, "E F D"], impl: str,
                   layout: Layout | None = None) -> Float[Array, "N D"]:
    """Σ_k w_k·Expert_{e_k}(x) for every token in float32, no token dropped; `layout` None picks by size."""
    n, d = x.shape
    e, k = w_gate.shape[0], routing.experts.shape[-1]
    layout = layout or choose_layout(n, k, e, impl)
    if layout == "gather":
        # One row per (token, choice), each against its own expert's gathered weights: a batched matmul whose
        # operands are already in the [batch, contract, out] order, so nothing is transposed.
        chosen = routing.experts.reshape(-1)
        rows_M1D = jnp.repeat(x, k, axis=0)[:, None, :]
        gate = jnp.einsum("MiD,MDF->MiF", rows_M1D, jnp.take(w_gate, chosen, axis=0))
        up = jnp.einsum("MiD,MDF->MiF", rows_M1D, jnp.take(w_up, chosen, axis=0))
        out = jnp.einsum("MiF,MFD->MiD", jax.nn.silu(gate) * up, jnp.take(w_down, chosen, axis=0))
        return jnp.einsum("NKD,NK->ND", out.reshape(n, k, d).astype(jnp.float32), routing.weights)
    if layout == "dense":
        combine_NE = jnp.einsum("NK,NKE->NE", routing.weights, jax.nn.one_hot(routing.experts, e, dtype=jnp.float32))
        # Batched over E with the tokens broadcast: the weights are read as stored ([E, D, F]); the einsum
        # "ND,EDF->ENF" would be lowered to one matmul over a transposed copy of them.
        x_END = jnp.broadcast_to(x, (e, n, d))
        batched = (((2,), (1,)), ((0,), (0,)))
        hidden = jax.nn.silu(jax.lax.dot_general(x_END, w_gate, batched)) * jax.lax.dot_general(x_END, w_up, batched)
        out_END = jax.lax.dot_general(hidden, w_down, batched)
        return jnp.einsum("END,NE->ND", out_END.astype(jnp.float32), combine_NE)
    plan = grouped.plan(routing.experts, e, impl)
    rows = grouped.gather_rows(x, plan)
    hidden = jax.nn.silu(grouped.grouped_matmul(rows, w_gate, plan)) * grouped.grouped_matmul(rows, w_up, plan)
    return grouped.combine(grouped.grouped_matmul(hidden, w_down, plan), routing.weights, plan)


def local_experts(impl: str) -> expert_parallel.LocalExperts:
    """One expert shard's compute for the expert-parallel dispatch: the grouped matmul with the shard's last
    id as the null expert (padding rows, never computed, zero out), combined in the compute dtype with fp32
    accumulation (grouped.combine's fp32 copy of [P·n, K', D] is the largest buffer of the layer at
    DeepSeek's sizes); identical to it in float32."""
    def run(rows_x: Float[Array, "M D"], local_e: Int[Array, "M K"], local_w: Float[Array, "M K"],
            w_gate: Float[Array, "El D F"], w_up: Float[Array, "El D F"], w_down: Float[Array, "El F D"]
            ) -> Float[Array, "M D"]:
        plan = grouped.plan(local_e, w_gate.shape[0] + 1, impl, null_expert=True)
        rows = grouped.gather_rows(rows_x, plan)
        hidden = jax.nn.silu(grouped.grouped_matmul(rows, w_gate, plan)) * grouped.grouped_matmul(rows, w_up, plan)
        picked = jnp.take(grouped.grouped_matmul(hidden, w_down, plan), plan.slot_row, axis=0)
        return jnp.einsum("NKD,NK->ND", picked, local_w.astype(picked.dtype), preferred_element_type=jnp.float32)

    return run


class MoE(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig
    sharding: MeshRules | None = None

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"]) -> tuple[Float[Array, "B T D"], dict[str, Array]]:
        cfg, compute = self.cfg, self.compute
        b, t, d = x.shape
        e, f = cfg.n_routed_experts, cfg.moe_intermediate_size
        # The gate stays fp32 whatever the compute dtype (DeepSeek keeps MoE gating out of low precision).
        w_router = param(self, "router", (d, e), ("embed", "router_experts"), kernel_init(cfg), jnp.float32)
        bias = None
        if cfg.uses_routing_bias:
            bias = param(self, "router_bias", (e,), ("router_experts",), nn.initializers.zeros, jnp.float32)
        with jax.named_scope("router"):
            logits = jnp.einsum("BTD,DE->BTE", x.astype(jnp.float32), w_router)
            routing = route(logits.reshape(b * t, e), bias, cfg, compute.max_route_nodes)
        w_gate = kernel(self, "experts_gate", (e, d, f), ("expert", "embed", "expert_mlp"))
        w_up = kernel(self, "experts_up", (e, d, f), ("expert", "embed", "expert_mlp"))
        w_down = kernel(self, "experts_down", (e, f, d), ("expert", "expert_mlp", "embed"))
        with jax.named_scope("routed_experts"):
            if expert_parallel.applies(self.sharding, b):
                k = routing.experts.shape[-1]
                routed = expert_parallel.routed_experts_ep(
                    x, routing.experts.reshape(b, t, k), routing.weights.reshape(b, t, k), w_gate, w_up, w_down,
                    local_experts(compute.moe_impl), self.sharding.mesh, compute.moe_chunk_tokens)
            else:
                routed = routed_experts(x.reshape(b * t, d), routing, w_gate, w_up, w_down, compute.moe_impl)
        out = routed.astype(x.dtype).reshape(b, t, d)
        if cfg.n_shared_experts:
            shared = MLP(cfg, compute, cfg.n_shared_experts * f, "shared_mlp", sharding=self.sharding, name="shared")
            out = out + shared(x)
        return out, moe_stats(routing, b, t, e)


def moe_stats(routing: Routing, b: int, t: int, e: int) -> dict[str, Array]:
    """Per-layer statistics for training: expert loads (for the bias update) and the sequence balance loss."""
    experts: Int[Array, "B T K"] = routing.experts.reshape(b, t, -1)
    return {
        "expert_counts": expert_counts(routing.experts, e),
        "balance_loss": sequence_balance_loss(routing.scores.reshape(b, t, e), experts),
    }
