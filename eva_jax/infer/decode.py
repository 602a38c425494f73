"""The model as pure functions over the trained parameter tree, reading and writing the paged latent cache.

Same math as `eva_jax.nn` (the same rms_norm, rope, router, grouped matmul), arranged for generation:
  * prefill: a whole prompt attends to itself in the training form (K/V expanded from the latent) and
    leaves its latents in the cache;
  * decode / verify: a few new tokens per row attend to the cache in the absorbed form (reference §2.4):
    W_UK is folded into the query, so scores are taken against the C-dim latent directly, and W_UV is applied
    after the attention-weighted sum of latents. K and V are never materialised.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from eva_jax.config import ModelConfig
from eva_jax.infer import cache
from eva_jax.nn.attention import mla_attention
from eva_jax.nn.mla import LATENT_NORM_EPS
from eva_jax.nn.mlp import swiglu
from eva_jax.nn.moe import routed_experts
from eva_jax.nn.norms import rms_norm
from eva_jax.nn.rope import apply_rope, rope_tables
from eva_jax.nn.router import route

Params = dict[str, Any]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Rows:
    """Where a forward's tokens sit: absolute positions (cache slots), which ones to store, each row's pages."""

    positions: Int[Array, "B T"]
    valid: Bool[Array, "B T"]
    page_table: Int[Array, "B P"]


def _w(cfg: ModelConfig, w: Array) -> Array:
    return w.astype(jnp.dtype(cfg.dtype))


def embed(cfg: ModelConfig, params: Params, tokens: Int[Array, "B T"]) -> Float[Array, "B T D"]:
    return jnp.take(params["embed"], tokens, axis=0).astype(jnp.dtype(cfg.dtype))


def head(cfg: ModelConfig, params: Params, h: Float[Array, "... D"]) -> Float[Array, "... V"]:
    return jnp.einsum("...D,DV->...V", h, _w(cfg, params["lm_head"]), preferred_element_type=jnp.float32)


def _query(cfg: ModelConfig, p: Params, x: Float[Array, "B T D"]) -> Float[Array, "B T H NR"]:
    if cfg.q_lora_rank is None:
        return jnp.einsum("BTD,DHK->BTHK", x, _w(cfg, p["wq"]))
    c_q = rms_norm(x @ _w(cfg, p["wq_a"]), p["q_norm"]["scale"], LATENT_NORM_EPS)
    return jnp.einsum("BTQ,QHK->BTHK", c_q, _w(cfg, p["wq_b"]))


def _softmax_probs(scores: Float[Array, "B H T S"], mask: Bool[Array, "B T S"], scale: float) -> Array:
    scores = jnp.where(mask[:, None], scores * scale, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1)


def attention(cfg: ModelConfig, p: Params, x: Float[Array, "B T D"], cos: Array, sin: Array, pool: Array,
              layer: Int[Array, ""], rows: Rows, prefill: bool) -> tuple[Float[Array, "B T D"], Array]:
    """MLA for tokens at `rows.positions`; stores their (c_n, rotated k_r) at `layer` of the pool first."""
    n, c = cfg.qk_nope_head_dim, cfg.kv_lora_rank
    q = _query(cfg, p, x)
    q_nope, q_rope = q[..., :n], apply_rope(q[..., n:], cos[:, :, None], sin[:, :, None], cfg.rope_interleave)
    z = x @ _w(cfg, p["wkv_a"])
    latent_BTC = rms_norm(z[..., :c], p["kv_norm"]["scale"], LATENT_NORM_EPS)
    k_rope_BTR = apply_rope(z[..., c:], cos, sin, cfg.rope_interleave)
    pool = cache.write(pool, layer, jnp.concatenate([latent_BTC, k_rope_BTR], -1), rows.positions, rows.valid,
                       rows.page_table)
    w_kv = _w(cfg, p["wkv_b"])  # [C, H, N + V]: W_UK then W_UV per head
    if prefill:
        # A prompt starts at position 0, so its keys are its own tokens: the training-path computation.
        t = x.shape[1]
        mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (x.shape[0], t, t))
        kv = jnp.einsum("BTC,CHK->BTHK", latent_BTC, w_kv)
        out_BTHV = mla_attention(q_nope, q_rope, kv[..., :n], k_rope_BTR, kv[..., n:], mask, cfg.softmax_scale)
    else:
        keys = cache.read(pool, layer, rows.page_table).astype(x.dtype)
        latent_BSC, k_rope_BSR = keys[..., :c], keys[..., c:]
        # Every slot up to a query's own position has been written by now (this call wrote the new ones).
        mask = jnp.arange(keys.shape[1])[None, None, :] <= rows.positions[:, :, None]
        q_latent = jnp.einsum("BTHN,CHN->BTHC", q_nope, w_kv[..., :n])
        scores = jnp.einsum("BTHC,BSC->BHTS", q_latent, latent_BSC, preferred_element_type=jnp.float32)
        scores += jnp.einsum("BTHR,BSR->BHTS", q_rope, k_rope_BSR, preferred_element_type=jnp.float32)
        probs = _softmax_probs(scores, mask, cfg.softmax_scale).astype(x.dtype)
        out_BTHC = jnp.einsum("BHTS,BSC->BTHC", probs, latent_BSC)
        out_BTHV = jnp.einsum("BTHC,CHV->BTHV", out_BTHC, w_kv[..., n:])
    return jnp.einsum("BTHV,HVD->BTD", out_BTHV, _w(cfg, p["wo"])), pool


def _mlp(cfg: ModelConfig, p: Params, x: Array) -> Array:
    return swiglu(x, _w(cfg, p["gate"]), _w(cfg, p["up"]), _w(cfg, p["down"]))


def moe(cfg: ModelConfig, p: Params, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
    """DeepSeekMoE for a few tokens. When the N·K (token, expert) pairs are fewer than the experts, only the
    chosen experts' weights are gathered and read; otherwise the dropless grouped matmul of training."""
    b, t, d = x.shape
    e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    logits = jnp.einsum("ND,DE->NE", x.reshape(b * t, d).astype(jnp.float32), p["router"])
    routing = route(logits, p.get("router_bias"), cfg)
    x_ND = x.reshape(b * t, d)
    w_gate, w_up, w_down = (_w(cfg, p[name]) for name in ("experts_gate", "experts_up", "experts_down"))
    if b * t * k <= e:
        gate = jnp.einsum("ND,NKDF->NKF", x_ND, jnp.take(w_gate, routing.experts, axis=0))
        up = jnp.einsum("ND,NKDF->NKF", x_ND, jnp.take(w_up, routing.experts, axis=0))
        out = jnp.einsum("NKF,NKFD->NKD", jax.nn.silu(gate) * up, jnp.take(w_down, routing.experts, axis=0))
        routed = jnp.einsum("NKD,NK->ND", out.astype(jnp.float32), routing.weights)
    else:
        routed = routed_experts(x_ND, routing, w_gate, w_up, w_down, cfg.moe_impl)
    out = routed.astype(x.dtype).reshape(b, t, d)
    if cfg.n_shared_experts:
        out = out + _mlp(cfg, p["shared"], x)
    return out


def block(cfg: ModelConfig, p: Params, h: Float[Array, "B T D"], cos: Array, sin: Array, pool: Array,
          layer: Int[Array, ""], rows: Rows, is_moe: bool, prefill: bool) -> tuple[Float[Array, "B T D"], Array]:
    eps = cfg.rms_norm_eps
    attn, pool = attention(cfg, p["attn"], rms_norm(h, p["attn_norm"]["scale"], eps), cos, sin, pool, layer, rows,
                           prefill)
    x = h + attn
    normed = rms_norm(x, p["ffn_norm"]["scale"], eps)
    y = moe(cfg, p["moe"], normed) if is_moe else _mlp(cfg, p["mlp"], normed)
    return x + y, pool


def _stack(cfg: ModelConfig, stack: Params, first_layer: int, h: Array, cos: Array, sin: Array, pool: Array,
           rows: Rows, is_moe: bool, prefill: bool) -> tuple[Array, Array]:
    """The layers of one scanned stack (parameters carry a leading layer axis), the pool in the carry so
    each layer's cache write is in place."""
    length = jax.tree.leaves(stack)[0].shape[0]

    def one(carry, xs):
        h, pool = carry
        p, i = xs
        h, pool = block(cfg, p, h, cos, sin, pool, first_layer + i, rows, is_moe, prefill)
        return (h, pool), None

    (h, pool), _ = jax.lax.scan(one, (h, pool), (stack, jnp.arange(length)), unroll=False)
    return h, pool


def forward(cfg: ModelConfig, params: Params, pool: Array, tokens: Int[Array, "B T"], rows: Rows,
            prefill: bool) -> tuple[Float[Array, "B T D"], Array]:
    """Hidden states after the final norm (what the head and the MTP modules read), and the updated pool."""
    cos, sin = rope_tables(cfg, rows.positions)
    h = embed(cfg, params, tokens)
    if cfg.num_dense_layers:
        h, pool = _stack(cfg, params["dense_layers"], 0, h, cos, sin, pool, rows, False, prefill)
    if cfg.num_moe_layers:
        h, pool = _stack(cfg, params["moe_layers"], cfg.num_dense_layers, h, cos, sin, pool, rows, True, prefill)
    return rms_norm(h, params["final_norm"]["scale"], cfg.rms_norm_eps), pool


def mtp_forward(cfg: ModelConfig, params: Params, depth: int, pool: Array, h_prev: Float[Array, "B T D"],
                tokens: Int[Array, "B T"], rows: Rows, prefill: bool) -> tuple[Float[Array, "B T D"], Array]:
    """MTP module `depth` (1-based) at slots j: reads h^{depth-1}_j and token j+depth, rotates by position
    j+depth as the training forward does (reference §5), caches at slot j of layer L+depth-1."""
    p = params[f"mtp_{depth - 1}"]
    eps = cfg.rms_norm_eps
    cos, sin = rope_tables(cfg, rows.positions + depth)
    joined = jnp.concatenate([rms_norm(embed(cfg, params, tokens), p["enorm"]["scale"], eps),
                              rms_norm(h_prev, p["hnorm"]["scale"], eps)], -1)
    x, pool = block(cfg, p["block"], joined @ _w(cfg, p["eh_proj"]), cos, sin, pool,
                    jnp.asarray(cfg.num_layers + depth - 1), rows, True, prefill)
    return rms_norm(x, p["norm"]["scale"], eps), pool
