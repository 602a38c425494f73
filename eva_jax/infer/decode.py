"""The model as pure functions over the trained parameter tree, reading and writing the paged latent cache.

Same math as `eva_jax.nn` (the same rms_norm, rope, router, grouped matmul), arranged for generation:
  * prefill: a whole prompt attends to itself in the training form (K/V expanded from the latent) and
    leaves its latents in the cache;
  * decode / verify: a few new tokens per row attend to the cache in the absorbed form (reference §2.4):
    W_UK is folded into the query, so scores are taken against the C-dim latent directly, and W_UV is applied
    after the attention-weighted sum of latents. K and V are never materialised.
When model.attention_impl picks Pallas, prefill runs the flash kernel and decode / verify the paged decode
kernel (paged_kernel.py), which reads the latents straight from the pages.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from eva_jax.config import ModelConfig
from eva_jax.infer import cache, paged_kernel
from eva_jax.nn import grouped
from eva_jax.nn.attention import causal_attention
from eva_jax.nn.layers import linear
from eva_jax.nn.mla import LATENT_NORM_EPS
from eva_jax.nn.mlp import swiglu
from eva_jax.nn.moe import routed_experts
from eva_jax.nn.norms import rms_norm
from eva_jax.nn.rope import apply_rope, rope_tables
from eva_jax.nn.router import route

Params = dict[str, Any]
DENSE_PAIRS = 8  # see `moe`


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


def _linear(cfg: ModelConfig, x: Array, w: Array) -> Array:
    """x @ w over w's leading axis (its trailing axes flattened) through the model's `linear`: FP8 when
    model.matmul is "fp8", so decoding multiplies exactly where and how the forward does."""
    out = linear(x, _w(cfg, w).reshape(w.shape[0], -1), cfg)
    return out.reshape(*x.shape[:-1], *w.shape[1:])


def _query(cfg: ModelConfig, p: Params, x: Float[Array, "B T D"]) -> Float[Array, "B T H NR"]:
    if cfg.q_lora_rank is None:
        return _linear(cfg, x, p["wq"])
    c_q = rms_norm(_linear(cfg, x, p["wq_a"]), p["q_norm"]["scale"], LATENT_NORM_EPS)
    return _linear(cfg, c_q, p["wq_b"])


def attention(cfg: ModelConfig, p: Params, x: Float[Array, "B T D"], cos: Array, sin: Array, pages: cache.Pages,
              rows: Rows, prefill: bool) -> tuple[Float[Array, "B T D"], cache.Pages]:
    """MLA for tokens at `rows.positions` (contiguous per row); stores their (c_n, rotated k_r) in this layer's
    pages."""
    n, c = cfg.qk_nope_head_dim, cfg.kv_lora_rank
    q = _query(cfg, p, x)
    q_nope, q_rope = q[..., :n], apply_rope(q[..., n:], cos[:, :, None], sin[:, :, None], cfg.rope_interleave)
    z = _linear(cfg, x, p["wkv_a"])
    latent_BTC = rms_norm(z[..., :c], p["kv_norm"]["scale"], LATENT_NORM_EPS)
    k_rope_BTR = apply_rope(z[..., c:], cos, sin, cfg.rope_interleave)
    if prefill:
        out_BTHV = _prefill_attention(cfg, p, q_nope, q_rope, latent_BTC, k_rope_BTR)
        pages = cache.write(pages, latent_BTC, k_rope_BTR, rows.positions, rows.valid, rows.page_table)
    else:
        out_BTHV, pages = _cached_attention(cfg, p, q_nope, q_rope, latent_BTC, k_rope_BTR, pages, rows)
    b, t = out_BTHV.shape[:2]
    return _linear(cfg, out_BTHV.reshape(b, t, -1), p["wo"].reshape(-1, cfg.hidden_size)), pages


def _new_token_mask(valid: Bool[Array, "B T"]) -> Bool[Array, "B T T"]:
    """The new tokens see each other causally, and only the ones that are real (not padding)."""
    t = valid.shape[1]
    return jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]


def _prefill_attention(cfg: ModelConfig, p: Params, q_nope: Array, q_rope: Array, latent_BTC: Array,
                       k_rope_BTR: Array) -> Float[Array, "B T H V"]:
    """A prompt starts at position 0, so its keys are its own tokens: the training-path computation (the flash
    kernel when model.attention_impl picks Pallas, else XLA with the causal key skipping; right padding sits
    after every real query, so causality alone hides it from them)."""
    k_nope = jnp.einsum("BTC,HNC->BTHN", latent_BTC, p["w_uk"])
    v = jnp.einsum("BTC,HCV->BTHV", latent_BTC, p["w_uv"])
    return causal_attention(cfg, q_nope, q_rope, k_nope, k_rope_BTR, v, None)


def _cached_attention(cfg: ModelConfig, p: Params, q_nope: Array, q_rope: Array, latent_BTC: Array,
                      k_rope_BTR: Array, pages: cache.Pages,
                      rows: Rows) -> tuple[Float[Array, "B T H V"], cache.Pages]:
    """New tokens against the cache plus each other, in the absorbed form: through the Pallas paged kernel
    (paged_kernel.py) or in XLA, where the pages are read before they are written so that XLA updates them in
    place instead of copying."""
    f32 = jnp.float32
    q_latent = jnp.einsum("BTHN,HNC->BTHC", q_nope, p["w_uk"])
    kernel = paged_kernel.kernel_choice(cfg, pages.latent.shape[1])
    if kernel is not None:
        # The kernel reads the new tokens' keys from the cache, so they are stored first.
        pages = cache.write(pages, latent_BTC, k_rope_BTR, rows.positions, rows.valid, rows.page_table)
        out_BTHC = paged_kernel.attend(cfg, kernel, q_latent, q_rope, pages, rows.positions, rows.page_table)
        return jnp.einsum("BTHC,HCV->BTHV", out_BTHC, p["w_uv"]), pages
    latent_BSC, k_rope_BSR = cache.read(pages, rows.page_table)
    # Scores are laid out [B, S, T, H] so the cached latent is the matmul's left operand as stored: no
    # copy of it is transposed, whatever the context length.
    old = (jnp.einsum("BSC,BTHC->BSTH", latent_BSC, q_latent, preferred_element_type=f32)
           + jnp.einsum("BSR,BTHR->BSTH", k_rope_BSR, q_rope, preferred_element_type=f32))
    new = (jnp.einsum("BUC,BTHC->BUTH", latent_BTC, q_latent, preferred_element_type=f32)
           + jnp.einsum("BUR,BTHR->BUTH", k_rope_BTR, q_rope, preferred_element_type=f32))
    # Cached slots before the first new position; later ones may hold stale entries.
    (b, s), t = latent_BSC.shape[:2], q_latent.shape[1]
    mask_old = jnp.broadcast_to(jnp.arange(s)[None, :, None] < rows.positions[:, None, :1], (b, s, t))
    mask = jnp.concatenate([mask_old, jnp.swapaxes(_new_token_mask(rows.valid), 1, 2)], 1)[..., None]
    scores = jnp.where(mask, jnp.concatenate([old, new], 1) * cfg.softmax_scale, jnp.finfo(f32).min)
    probs = jax.nn.softmax(scores, axis=1).astype(q_latent.dtype)  # [B, S+U, T, H]
    out_BTHC = (jnp.einsum("BSTH,BSC->BTHC", probs[:, :s], latent_BSC)
                + jnp.einsum("BUTH,BUC->BTHC", probs[:, s:], latent_BTC))
    out_BTHV = jnp.einsum("BTHC,HCV->BTHV", out_BTHC, p["w_uv"])
    # The write must come after the read. Without a data dependency XLA cannot order them and copies the
    # whole pool (every step, every layer); making the stored flags depend on the output orders them.
    # As a side effect a token whose attention output is not finite is not cached.
    valid = rows.valid & jnp.isfinite(out_BTHV).all(axis=(2, 3))
    return out_BTHV, cache.write(pages, latent_BTC, k_rope_BTR, rows.positions, valid, rows.page_table)


def _mlp(cfg: ModelConfig, p: Params, x: Array) -> Array:
    if cfg.matmul == "fp8":
        return _linear(cfg, jax.nn.silu(_linear(cfg, x, p["gate"])) * _linear(cfg, x, p["up"]), p["down"])
    return swiglu(x, _w(cfg, p["gate"]), _w(cfg, p["up"]), _w(cfg, p["down"]))


def moe(cfg: ModelConfig, p: Params, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
    """DeepSeekMoE for the N = B·T tokens of a step, by the cheapest exact layout for N:
      * N·K ≤ E/2: gather only the chosen experts' weights (batch-1 decode reads K experts, not E; past E/2
        the gathered copies cost more than reading every expert once);
      * N·K ≤ DENSE_PAIRS·E where the grouped matmul is the padded one (CPU): every expert on every token,
        weighted by the (mostly zero) routing weights: each weight is read once and the matmuls are plain
        dense ones. On the 2-core CPU of docs/performance.md, 32 tokens × 32 experts take half the time of the
        padded layout this way. Accelerators have ragged_dot and FLOPs to spare on neither, so they skip it;
      * otherwise: the dropless grouped matmul of training."""
    b, t, d = x.shape
    e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    logits = jnp.einsum("ND,DE->NE", x.reshape(b * t, d).astype(jnp.float32), p["router"])
    routing = route(logits, p.get("router_bias"), cfg)
    x_ND = x.reshape(b * t, d)
    w_gate, w_up, w_down = (_w(cfg, p[name]) for name in ("experts_gate", "experts_up", "experts_down"))
    if 2 * b * t * k <= e:
        # One row per (token, choice), each against its own expert's gathered weights: a batched matmul whose
        # operands are already in the [batch, contract, out] order, so nothing is transposed.
        chosen = routing.experts.reshape(-1)
        rows_M1D = jnp.repeat(x_ND, k, axis=0)[:, None, :]
        gate = jnp.einsum("MiD,MDF->MiF", rows_M1D, jnp.take(w_gate, chosen, axis=0))
        up = jnp.einsum("MiD,MDF->MiF", rows_M1D, jnp.take(w_up, chosen, axis=0))
        out = jnp.einsum("MiF,MFD->MiD", jax.nn.silu(gate) * up, jnp.take(w_down, chosen, axis=0))
        routed = jnp.einsum("NKD,NK->ND", out.reshape(b * t, k, d).astype(jnp.float32), routing.weights)
    elif b * t * k <= DENSE_PAIRS * e and grouped.resolve_impl(cfg.moe_impl) != "ragged":
        one_hot = jax.nn.one_hot(routing.experts, e, dtype=jnp.float32)
        combine_NE = jnp.einsum("NK,NKE->NE", routing.weights, one_hot)
        # Batched over E with the tokens broadcast: the weights are read as stored ([E, D, F]); the einsum
        # "ND,EDF->ENF" would be lowered to one matmul over a transposed copy of them.
        x_END = jnp.broadcast_to(x_ND, (e, *x_ND.shape))
        batched = (((2,), (1,)), ((0,), (0,)))
        hidden = (jax.nn.silu(jax.lax.dot_general(x_END, w_gate, batched))
                  * jax.lax.dot_general(x_END, w_up, batched))
        out_END = jax.lax.dot_general(hidden, w_down, batched)
        routed = jnp.einsum("END,NE->ND", out_END.astype(jnp.float32), combine_NE)
    else:
        routed = routed_experts(x_ND, routing, w_gate, w_up, w_down, cfg.moe_impl)
    out = routed.astype(x.dtype).reshape(b, t, d)
    if cfg.n_shared_experts:
        out = out + _mlp(cfg, p["shared"], x)
    return out


def block(cfg: ModelConfig, p: Params, h: Float[Array, "B T D"], cos: Array, sin: Array, pages: Array,
          rows: Rows, is_moe: bool, prefill: bool) -> tuple[Float[Array, "B T D"], Array]:
    eps = cfg.rms_norm_eps
    attn, pages = attention(cfg, p["attn"], rms_norm(h, p["attn_norm"]["scale"], eps), cos, sin, pages, rows,
                            prefill)
    x = h + attn
    normed = rms_norm(x, p["ffn_norm"]["scale"], eps)
    y = moe(cfg, p["moe"], normed) if is_moe else _mlp(cfg, p["mlp"], normed)
    return x + y, pages


def unstack(cfg: ModelConfig, params: Params) -> Params:
    """The tree the decode functions take, made once before decoding:
      * the scanned stacks split into one entry per layer ("layers": [...], dense first) — slicing a layer out
        of a stacked weight inside a step copies it, which costs more than the layer's useful reads;
      * wkv_b split into W_UK as [H, N, C] and W_UV as [H, C, V], the layouts the absorbed products read
        without transposing;
      * weights in the compute dtype (the router stays fp32)."""
    dt = jnp.dtype(cfg.dtype)
    n = cfg.qk_nope_head_dim

    def cast(path, x):
        return x if getattr(path[-1], "key", "") in ("router", "router_bias") else jnp.asarray(x).astype(dt)

    def split_kv(tree):
        if isinstance(tree, dict):
            tree = {k: split_kv(v) for k, v in tree.items()}
            if "wkv_b" in tree:
                w = tree.pop("wkv_b")  # [..., C, H, N + V]
                tree["w_uk"] = jnp.moveaxis(w[..., :n], -3, -1)  # [..., H, N, C]
                tree["w_uv"] = jnp.swapaxes(w[..., n:], -3, -2)  # [..., H, C, V]
        return tree

    params = split_kv(jax.tree_util.tree_map_with_path(cast, params))
    layers = []
    for name, count in (("dense_layers", cfg.num_dense_layers), ("moe_layers", cfg.num_moe_layers)):
        layers += [jax.tree.map(lambda a, i=i: a[i], params[name]) for i in range(count)]
    out = {k: v for k, v in params.items() if k not in ("dense_layers", "moe_layers")}
    return {**out, "layers": layers}


def forward(cfg: ModelConfig, params: Params, pool: list[Array], tokens: Int[Array, "B T"], rows: Rows,
            prefill: bool) -> tuple[Float[Array, "B T D"], list[Array]]:
    """Hidden states after the final norm (what the head and the MTP modules read), and the updated pool.
    `params` is the `unstack`ed tree; layers run one after another (unrolled: decode steps are small, and
    each layer's weights stay separate buffers that its matmuls read directly)."""
    cos, sin = rope_tables(cfg, rows.positions)
    h = embed(cfg, params, tokens)
    pool = list(pool)
    for i, p in enumerate(params["layers"]):
        h, pool[i] = block(cfg, p, h, cos, sin, pool[i], rows, i >= cfg.num_dense_layers, prefill)
    return rms_norm(h, params["final_norm"]["scale"], cfg.rms_norm_eps), pool


def mtp_forward(cfg: ModelConfig, params: Params, depth: int, pool: list[Array], h_prev: Float[Array, "B T D"],
                tokens: Int[Array, "B T"], rows: Rows, prefill: bool) -> tuple[Float[Array, "B T D"], list[Array]]:
    """MTP module `depth` (1-based) at slots j: reads h^{depth-1}_j and token j+depth, rotates by position
    j+depth as the training forward does (reference §5), caches at slot j of layer L+depth-1."""
    p = params[f"mtp_{depth - 1}"]
    eps = cfg.rms_norm_eps
    cos, sin = rope_tables(cfg, rows.positions + depth)
    joined = jnp.concatenate([rms_norm(embed(cfg, params, tokens), p["enorm"]["scale"], eps),
                              rms_norm(h_prev, p["hnorm"]["scale"], eps)], -1)
    pool = list(pool)
    layer = cfg.num_layers + depth - 1
    x, pool[layer] = block(cfg, p["block"], _linear(cfg, joined, p["eh_proj"]), cos, sin, pool[layer], rows, True,
                           prefill)
    return rms_norm(x, p["norm"]["scale"], eps), pool
