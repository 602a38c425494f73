"""Multi-head Latent Attention (reference §2.2): low-rank q, latent KV with its norm, decoupled shared rope key.

One module for every form, chosen by its arguments:
  * training (no cache): K and V expanded from the latent, causal self-attention with segment ids;
  * prefill (cache, prefill=True): the same computation over a prompt that starts at position 0, and the
    prompt's latents stored in the cache;
  * decode / verify (cache, prefill=False): the absorbed form over the cache (eva_jax/nn/cached_attention.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.nn import kv_cache
from eva_jax.nn.attention import causal_attention
from eva_jax.nn.cached_attention import absorbed_attention
from eva_jax.nn.kv_cache import Pages, Rows
from eva_jax.nn.layers import kernel, linear
from eva_jax.nn.norms import RMSNorm
from eva_jax.nn.rope import apply_rope
from eva_jax.parallel.rules import MeshRules

# HF builds q_a_layernorm and kv_a_layernorm without passing rms_norm_eps (reference §2.1).
LATENT_NORM_EPS = 1e-6


class MLA(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig
    sharding: MeshRules | None = None

    def query(self, x: Float[Array, "B T D"]) -> Float[Array, "B T H NR"]:
        cfg, compute = self.cfg, self.compute
        heads = (cfg.num_heads, cfg.qk_head_dim)
        if cfg.q_lora_rank is None:
            w_q = kernel(self, "wq", (cfg.hidden_size, *heads), ("embed", "heads", "qk_head"))
            return linear(x, w_q.reshape(cfg.hidden_size, -1), compute).reshape(*x.shape[:-1], *heads)
        w_dq = kernel(self, "wq_a", (cfg.hidden_size, cfg.q_lora_rank), ("embed", "q_lora"))
        c_q = RMSNorm(LATENT_NORM_EPS, compute.param_dtype, "q_lora", name="q_norm")(linear(x, w_dq, compute))
        w_uq = kernel(self, "wq_b", (cfg.q_lora_rank, *heads), ("q_lora", "heads", "qk_head"))
        return linear(c_q, w_uq.reshape(cfg.q_lora_rank, -1), compute).reshape(*x.shape[:-1], *heads)

    def latent(self, x: Float[Array, "B T D"]) -> tuple[Float[Array, "B T C"], Float[Array, "B T R"]]:
        """The normalised KV latent c_n and the un-rotated shared rope key: what a decode cache keeps."""
        cfg, compute = self.cfg, self.compute
        w_dkv = kernel(self, "wkv_a", (cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim),
                       ("embed", "kv_lora_rope"))
        z = linear(x, w_dkv, compute)
        c_kv, k_rope = z[..., :cfg.kv_lora_rank], z[..., cfg.kv_lora_rank:]
        return RMSNorm(LATENT_NORM_EPS, compute.param_dtype, "kv_lora", name="kv_norm")(c_kv), k_rope

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"], cos: Float[Array, "B T R2"], sin: Float[Array, "B T R2"],
                 segment_ids: Int[Array, "B T"] | None, cache: Pages | None = None, rows: Rows | None = None,
                 prefill: bool = False) -> tuple[Float[Array, "B T D"], Pages | None]:
        """The attention output and the layer's cache pages after storing this step's tokens (None without a
        cache). With a cache, `rows` says where the tokens sit."""
        cfg, compute = self.cfg, self.compute
        n = cfg.qk_nope_head_dim
        with jax.named_scope("mla_projections"):
            q = self.query(x)
            latent_BTC, k_rope = self.latent(x)
            # Per head, W_UK's rows then W_UV's: [H, N + V, C], as DeepSeek's reference views kv_b_proj.
            w_kv = kernel(self, "wkv_b", (cfg.num_heads, n + cfg.v_head_dim, cfg.kv_lora_rank),
                          ("heads", "kv_head", "kv_lora"))
        q_nope = q[..., :n]
        q_rope = apply_rope(q[..., n:], cos[:, :, None, :], sin[:, :, None, :], cfg.rope_interleave)
        k_rope = apply_rope(k_rope, cos, sin, cfg.rope_interleave)
        with jax.named_scope("mla_core"):
            if cache is None or prefill:
                kv = jnp.einsum("BTC,HKC->BTHK", latent_BTC, w_kv)
                k_nope, v = kv[..., :n], kv[..., n:]
                # A prompt starts at position 0 and right padding sits after every real query, so causality
                # alone hides the padding: prefill needs no segment ids.
                out_BTHV = causal_attention(cfg, compute, q_nope, q_rope, k_nope, k_rope, v, segment_ids)
                if cache is not None:
                    cache = kv_cache.write(cache, latent_BTC, k_rope, rows.positions, rows.valid, rows.page_table)
            else:
                out_BTHV, cache = absorbed_attention(cfg, compute, q_nope, q_rope, latent_BTC, k_rope, w_kv, cache,
                                                     rows)
        w_o = kernel(self, "wo", (cfg.num_heads, cfg.v_head_dim, cfg.hidden_size), ("heads", "v_head", "embed"))
        out = linear(out_BTHV.reshape(*out_BTHV.shape[:2], -1), w_o.reshape(-1, cfg.hidden_size), compute)
        return out, cache
