"""The DeepSeek-V3 transformer: embedding, a scanned dense stack, a scanned MoE stack, final norm, untied head,
and D MTP modules sharing embedding and head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.config import ModelConfig
from eva_jax.nn.block import layer_stack
from eva_jax.nn.layers import compute_dtype, kernel_init, param
from eva_jax.nn.mtp import MTPModule
from eva_jax.nn.norms import RMSNorm
from eva_jax.nn.rope import rope_tables


class Transformer(nn.Module):
    cfg: ModelConfig

    def setup(self) -> None:
        cfg = self.cfg
        pdt = jnp.dtype(cfg.param_dtype)
        self.embedding = param(self, "embed", (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), kernel_init(cfg), pdt)
        if cfg.num_dense_layers:
            self.dense_layers = layer_stack(cfg, False, cfg.num_dense_layers, "dense_layers")
        if cfg.num_moe_layers:
            self.moe_layers = layer_stack(cfg, True, cfg.num_moe_layers, "moe_layers")
        self.final_norm = RMSNorm(cfg.rms_norm_eps, cfg.param_dtype)
        self.lm_head = param(self, "lm_head", (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), kernel_init(cfg), pdt)
        self.mtp = [MTPModule(cfg, name=f"mtp_{k}") for k in range(cfg.num_mtp_layers)]

    def embed(self, tokens: Int[Array, "B T"]) -> Float[Array, "B T D"]:
        return jnp.take(self.embedding, tokens, axis=0).astype(compute_dtype(self.cfg))

    def head(self, h: Float[Array, "B T D"]) -> Float[Array, "B T V"]:
        return jnp.einsum("BTD,DV->BTV", h, self.lm_head.astype(h.dtype), preferred_element_type=jnp.float32)

    def __call__(self, tokens: Int[Array, "B T"], positions: Int[Array, "B T"] | None = None,
                 segment_ids: Int[Array, "B T"] | None = None, with_mtp: bool = True) -> dict:
        """Returns {"logits": [B,T,V] f32, "hidden": post-norm [B,T,D], "moe": per-layer stats stacked on L,
        "mtp_logits": [ [B,T-k,V] for k=1..D ], "mtp_hidden": what each depth feeds the head, "mtp_moe": [stats
        per depth]}. Under jit, logits nobody reads are never computed (the training loss reads the hidden
        states: eva_jax/train/head_loss.py)."""
        b, t = tokens.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        cos, sin = rope_tables(self.cfg, positions)
        # `perturb` is the identity unless the "perturbations" collection is requested: it exposes gradients
        # with respect to the embedded inputs (used by the causality tests and saliency tools).
        h = self.perturb("embed_main", self.embed(tokens))
        if self.cfg.num_dense_layers:
            h, _ = self.dense_layers(h, cos, sin, segment_ids)
        moe_stats = {}
        if self.cfg.num_moe_layers:
            h, moe_stats = self.moe_layers(h, cos, sin, segment_ids)
        h = self.final_norm(h)
        out = {"logits": self.head(h), "hidden": h, "moe": moe_stats, "mtp_logits": [], "mtp_hidden": [],
               "mtp_moe": []}
        if with_mtp:
            for k, module in enumerate(self.mtp, start=1):
                with jax.named_scope(f"mtp_{k}"):
                    # Depth k at position i sees h^{k-1}_i and token i+k, and predicts token i+k+1.
                    emb = self.perturb(f"embed_mtp_{k}", self.embed(tokens[:, k:]))
                    seg = None if segment_ids is None else segment_ids[:, k:]
                    h, stats = module(h[:, : t - k], emb, cos[:, k:], sin[:, k:], seg)
                out["mtp_logits"].append(self.head(h))
                out["mtp_hidden"].append(h)
                out["mtp_moe"].append(stats)
        return out
