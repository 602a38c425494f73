"""DeepSeekMoE routing (reference §4.1): scores, group-limited top-k, weights from the unbiased scores."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from eva_jax.config import ModelConfig


class Routing(NamedTuple):
    weights: Float[Array, "N K"]  # combine weights (fp32), normalised and scaled
    experts: Int[Array, "N K"]  # chosen expert ids
    scores: Float[Array, "N E"]  # unbiased affinities s (sigmoid or softmax), for the balance loss


def affinities(logits: Float[Array, "N E"], scoring_func: str) -> Float[Array, "N E"]:
    if scoring_func == "sigmoid":
        return jax.nn.sigmoid(logits)
    return jax.nn.softmax(logits, axis=-1)


def group_mask(choice: Float[Array, "N E"], n_group: int, topk_group: int, method: str) -> Bool[Array, "N E"]:
    """True for experts in the topk_group best groups; a group scores the sum of its top-2 (noaux_tc)
    or its maximum (group_limited_greedy)."""
    n, e = choice.shape
    grouped = choice.reshape(n, n_group, e // n_group)
    if method == "noaux_tc":
        group_scores = jax.lax.top_k(grouped, 2)[0].sum(-1)
    else:
        group_scores = grouped.max(-1)
    _, kept = jax.lax.top_k(group_scores, topk_group)
    kept_groups = jax.nn.one_hot(kept, n_group, dtype=jnp.bool_).any(axis=1)
    return jnp.repeat(kept_groups, e // n_group, axis=1)


def node_mask(choice: Float[Array, "N E"], nodes: int, max_nodes: int, k: int) -> Bool[Array, "N E"]:
    """True for experts on the max_nodes best of `nodes` contiguous expert blocks (reference §4.3): a node
    scores the sum of its top ceil(K/M) biased affinities, the rule DeepSeek-V3 trained with."""
    n, e = choice.shape
    per_node = choice.reshape(n, nodes, e // nodes)
    top = min(-(-k // max_nodes), e // nodes)
    node_scores = jax.lax.top_k(per_node, top)[0].sum(-1)
    _, kept = jax.lax.top_k(node_scores, max_nodes)
    kept_nodes = jax.nn.one_hot(kept, nodes, dtype=jnp.bool_).any(axis=1)
    return jnp.repeat(kept_nodes, e // nodes, axis=1)


def route(logits: Float[Array, "N E"], bias: Float[Array, " E"] | None, cfg: ModelConfig,
          max_nodes: int = 0) -> Routing:
    """Selects K experts per token. The bias steers *selection* only; weights use the unbiased scores.
    `max_nodes` > 0 limits a token to that many expert groups (compute.max_route_nodes)."""
    scores = affinities(logits.astype(jnp.float32), cfg.scoring_func)
    choice = scores if bias is None else scores + jax.lax.stop_gradient(bias.astype(jnp.float32))
    if 0 < max_nodes < cfg.n_group:
        # Node-limited routing: the groups are nodes (experts lie contiguously over the `expert` mesh axis).
        keep = node_mask(choice, cfg.n_group, max_nodes, cfg.num_experts_per_tok)
        choice = jnp.where(keep, choice, -jnp.inf)
    if cfg.topk_method != "greedy" and cfg.n_group > 1:
        keep = group_mask(choice, cfg.n_group, cfg.topk_group, cfg.topk_method)
        choice = jnp.where(keep, choice, -jnp.inf)
    _, experts = jax.lax.top_k(choice, cfg.num_experts_per_tok)
    weights = jnp.take_along_axis(scores, experts, axis=-1)
    if cfg.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
    return Routing(weights * cfg.routed_scaling_factor, experts.astype(jnp.int32), scores)


def expert_counts(experts: Int[Array, "N K"], num_experts: int) -> Int[Array, " E"]:
    """Tokens assigned to each expert: the load that drives the bias update."""
    return jnp.zeros((num_experts,), jnp.int32).at[experts.reshape(-1)].add(1)


def sequence_balance_loss(scores: Float[Array, "B T E"], experts: Int[Array, "B T K"]) -> Float[Array, ""]:
    """Σ_i f_i·P_i averaged over sequences (reference §4.3, without α); gradients flow only through P."""
    _, t, e = scores.shape
    k = experts.shape[-1]
    picked = jax.nn.one_hot(experts, e, dtype=jnp.float32).sum(axis=2)  # [B, T, E]
    f = jax.lax.stop_gradient(picked.sum(axis=1) * (e / (k * t)))
    p = (scores / scores.sum(-1, keepdims=True)).mean(axis=1)
    return (f * p).sum(-1).mean()
