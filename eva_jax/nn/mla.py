"""Multi-head Latent Attention (reference §2.2): low-rank q, latent KV with its norm, decoupled shared rope key."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.config import ModelConfig
from eva_jax.nn.attention import causal_attention
from eva_jax.nn.layers import kernel, linear
from eva_jax.nn.norms import RMSNorm
from eva_jax.nn.rope import apply_rope

# HF builds q_a_layernorm and kv_a_layernorm without passing rms_norm_eps (reference §2.1).
LATENT_NORM_EPS = 1e-6


class MLA(nn.Module):
    cfg: ModelConfig

    def query(self, x: Float[Array, "B T D"]) -> Float[Array, "B T H NR"]:
        cfg = self.cfg
        heads = (cfg.num_heads, cfg.qk_head_dim)
        if cfg.q_lora_rank is None:
            w_q = kernel(self, cfg, "wq", (cfg.hidden_size, *heads), ("embed", "heads", "qk_head"))
            return linear(x, w_q.reshape(cfg.hidden_size, -1), cfg).reshape(*x.shape[:-1], *heads)
        w_dq = kernel(self, cfg, "wq_a", (cfg.hidden_size, cfg.q_lora_rank), ("embed", "q_lora"))
        c_q = RMSNorm(LATENT_NORM_EPS, cfg.param_dtype, "q_lora", name="q_norm")(linear(x, w_dq, cfg))
        w_uq = kernel(self, cfg, "wq_b", (cfg.q_lora_rank, *heads), ("q_lora", "heads", "qk_head"))
        return linear(c_q, w_uq.reshape(cfg.q_lora_rank, -1), cfg).reshape(*x.shape[:-1], *heads)

    def latent(self, x: Float[Array, "B T D"]) -> tuple[Float[Array, "B T C"], Float[Array, "B T R"]]:
        """The normalised KV latent c_n and the un-rotated shared rope key: what a decode cache keeps."""
        cfg = self.cfg
        w_dkv = kernel(self, cfg, "wkv_a", (cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim),
                       ("embed", "kv_lora_rope"))
        z = linear(x, w_dkv, cfg)
        c_kv, k_rope = z[..., :cfg.kv_lora_rank], z[..., cfg.kv_lora_rank:]
        return RMSNorm(LATENT_NORM_EPS, cfg.param_dtype, "kv_lora", name="kv_norm")(c_kv), k_rope

    @nn.compact
    def __call__(self, x: Float[Array, "B T D"], cos: Float[Array, "B T R2"], sin: Float[Array, "B T R2"],
                 segment_ids: Int[Array, "B T"] | None) -> Float[Array, "B T D"]:
        cfg = self.cfg
        n = cfg.qk_nope_head_dim
        with jax.named_scope("mla_projections"):
            q = self.query(x)
            q_nope, q_rope = q[..., :n], q[..., n:]
            latent_BTC, k_rope = self.latent(x)
            w_ukv = kernel(self, cfg, "wkv_b", (cfg.kv_lora_rank, cfg.num_heads, n + cfg.v_head_dim),
                           ("kv_lora", "heads", "kv_head"))
            kv = jnp.einsum("BTC,CHK->BTHK", latent_BTC, w_ukv)
            k_nope, v = kv[..., :n], kv[..., n:]
        q_rope = apply_rope(q_rope, cos[:, :, None, :], sin[:, :, None, :], cfg.rope_interleave)
        k_rope = apply_rope(k_rope, cos, sin, cfg.rope_interleave)
        with jax.named_scope("mla_core"):
            out_BTHV = causal_attention(cfg, q_nope, q_rope, k_nope, k_rope, v, segment_ids)
        w_o = kernel(self, cfg, "wo", (cfg.num_heads, cfg.v_head_dim, cfg.hidden_size), ("heads", "v_head", "embed"))
        return linear(out_BTHV.reshape(*out_BTHV.shape[:2], -1), w_o.reshape(-1, cfg.hidden_size), cfg)
