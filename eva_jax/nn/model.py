"""The DeepSeek-V3 transformer: embedding, a dense stack, a MoE stack, final norm, untied head, and D MTP
modules sharing embedding and head.

One definition for training and generation. `scan_layers=True` (training) runs each stack under nn.scan with
its parameters stacked on a leading layer axis; `scan_layers=False` holds one Block per layer
(`dense_layers_0`, ...), the form generation runs so that every layer's weights are separate buffers its
matmuls read in place (slicing a layer out of a stacked weight inside a step copies it). `unstack_layers` and
`stack_layers` convert the parameters between the two; the numbers are the same.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.arrays import HostOrDevice
from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.nn.block import Block, layer_stack
from eva_jax.nn.kv_cache import Pool, Rows
from eva_jax.nn.layers import compute_dtype, kernel_init, param
from eva_jax.nn.mtp import MTPModule
from eva_jax.nn.norms import RMSNorm
from eva_jax.nn.rope import rope_tables
from eva_jax.parallel.rules import MeshRules

Params = dict[str, Any]
STACKS = ("dense_layers", "moe_layers")


def mtp_segments(segment_ids: Int[HostOrDevice, "B T"], k: int) -> Int[Array, "B Tk"]:
    """Segment ids of MTP depth k's slots. Slot i joins h^{k-1}_i (the chain from token i) with token i+k; when
    the two lie in different documents the slot belongs to neither, so it gets an id of its own (negative,
    never a document's) and nothing else attends to it: otherwise document A's hidden state would reach
    document B under B's id. Packed documents are contiguous, so comparing the ends covers the whole chain."""
    t = segment_ids.shape[1]
    head, tail = segment_ids[:, : t - k], segment_ids[:, k:]
    own = -1 - jnp.arange(t - k, dtype=segment_ids.dtype)[None]
    return jnp.where(head == tail, tail, own)


class Transformer(nn.Module):
    cfg: ModelConfig
    compute: ComputeConfig
    sharding: MeshRules | None = None  # the mesh and rules of a sharded step (eva_jax.parallel.rules)
    scan_layers: bool = True

    def setup(self) -> None:
        cfg, compute, sh = self.cfg, self.compute, self.sharding
        pdt = jnp.dtype(compute.param_dtype)
        self.embedding = param(self, "embed", (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), kernel_init(cfg),
                               pdt)
        counts = {"dense_layers": cfg.num_dense_layers, "moe_layers": cfg.num_moe_layers}
        for name, count in counts.items():
            if self.scan_layers:
                setattr(self, name, layer_stack(cfg, compute, name == "moe_layers", count, sh, name) if count else None)
            else:
                setattr(self, name, [Block(cfg, compute, name == "moe_layers", sh) for _ in range(count)])
        self.final_norm = RMSNorm(cfg.rms_norm_eps, compute.param_dtype)
        self.lm_head = param(self, "lm_head", (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), kernel_init(cfg),
                             pdt)
        self.mtp = [MTPModule(cfg, compute, sh, name=f"mtp_{k}") for k in range(cfg.num_mtp_layers)]

    def embed(self, tokens: Int[Array, "B T"]) -> Float[Array, "B T D"]:
        return jnp.take(self.embedding, tokens, axis=0).astype(compute_dtype(self.compute))

    def head(self, h: Float[Array, "... D"]) -> Float[Array, "... V"]:
        return jnp.einsum("...D,DV->...V", h, self.lm_head.astype(h.dtype), preferred_element_type=jnp.float32)

    def __call__(self, tokens: Int[HostOrDevice, "B T"], positions: Int[HostOrDevice, "B T"] | None = None,
                 segment_ids: Int[HostOrDevice, "B T"] | None = None, with_mtp: bool = True,
                 cache: Pool | None = None, rows: Rows | None = None, prefill: bool = False) -> dict:
        """Returns {"logits": [B,T,V] f32, "hidden": post-norm [B,T,D], "moe": per-layer stats stacked on L,
        "mtp_logits": [ [B,T-k,V] for k=1..D ], "mtp_hidden": what each depth feeds the head, "mtp_moe": [stats
        per depth]}. Under jit, logits nobody reads are never computed (the training loss reads the hidden
        states: eva_jax/train/head_loss.py).

        Generation passes `cache` (one Pages per cache layer: the L main layers, then the D MTP blocks) and
        `rows` (where the tokens sit; positions default to rows.positions); `prefill` says the tokens are a
        prompt from position 0 (training-form attention, latents stored) rather than new tokens against the
        cache (absorbed form). The output then also holds "cache", the updated list. The MTP modules run in
        generation through `mtp_step`, at slots of their own."""
        tokens, positions, segment_ids = (None if a is None else jnp.asarray(a)
                                          for a in (tokens, positions, segment_ids))
        b, t = tokens.shape
        if cache is not None:
            if self.scan_layers:
                raise ValueError("generation runs the per-layer form: build Transformer(cfg, compute, "
                                 "scan_layers=False) and pass eva_jax.nn.model.unstack_layers(cfg, params)")
            return self._generate_forward(tokens, cache, rows, prefill)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        cos, sin = rope_tables(self.cfg, positions)
        # `perturb` is the identity unless the "perturbations" collection is requested: it exposes gradients
        # with respect to the embedded inputs (used by the causality tests and saliency tools).
        h = self.perturb("embed_main", self.embed(tokens))
        h, moe_stats = self._layers(h, cos, sin, segment_ids)
        h = self.final_norm(h)
        out = {"logits": self.head(h), "hidden": h, "moe": moe_stats, "mtp_logits": [], "mtp_hidden": [],
               "mtp_moe": []}
        if with_mtp:
            for k, module in enumerate(self.mtp, start=1):
                with jax.named_scope(f"mtp_{k}"):
                    # Depth k at position i sees h^{k-1}_i and token i+k, and predicts token i+k+1.
                    emb = self.perturb(f"embed_mtp_{k}", self.embed(tokens[:, k:]))
                    seg = None if segment_ids is None else mtp_segments(segment_ids, k)
                    h, stats, _ = module(h[:, : t - k], emb, cos[:, k:], sin[:, k:], seg)
                out["mtp_logits"].append(self.head(h))
                out["mtp_hidden"].append(h)
                out["mtp_moe"].append(stats)
        return out

    def _layers(self, h: Float[Array, "B T D"], cos: Array, sin: Array,
                segment_ids: Int[Array, "B T"] | None) -> tuple[Float[Array, "B T D"], dict]:
        moe_stats: dict = {}
        for name in STACKS:
            stack = getattr(self, name)
            if self.scan_layers:
                if stack is not None:
                    h, stats = stack(h, cos, sin, segment_ids)
                    moe_stats = stats if name == "moe_layers" else moe_stats
                continue
            per_layer = []
            for block in stack:
                h, stats, _ = block(h, cos, sin, segment_ids)
                per_layer.append(stats)
            if name == "moe_layers" and per_layer:
                moe_stats = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
        return h, moe_stats

    def _generate_forward(self, tokens: Int[Array, "B T"], cache: Pool, rows: Rows, prefill: bool) -> dict:
        cos, sin = rope_tables(self.cfg, rows.positions)
        h = self.embed(tokens)
        cache = list(cache)
        for i, block in enumerate([*self.dense_layers, *self.moe_layers]):
            h, _, cache[i] = block(h, cos, sin, None, cache[i], rows, prefill)
        h = self.final_norm(h)
        return {"logits": self.head(h), "hidden": h, "cache": cache}

    def mtp_step(self, depth: int, h_prev: Float[Array, "B T D"], tokens: Int[Array, "B T"], cache: Pool,
                 rows: Rows, prefill: bool) -> tuple[Float[Array, "B T D"], Pool]:
        """MTP module `depth` (1-based) at slots j = rows.positions: reads h^{depth-1}_j and token j+depth,
        rotates by position j+depth as the training forward does (reference §5), caches at slot j of cache
        layer L+depth-1. Returns what the head reads and the updated cache."""
        cos, sin = rope_tables(self.cfg, rows.positions + depth)
        layer = self.cfg.num_layers + depth - 1
        cache = list(cache)
        h, _, cache[layer] = self.mtp[depth - 1](h_prev, self.embed(tokens), cos, sin, None, cache[layer], rows,
                                                  prefill)
        return h, cache


def unstack_layers(cfg: ModelConfig, params: Params) -> Params:
    """Parameters of the scanned form -> the per-layer form (`dense_layers_0`, ..., `moe_layers_0`, ...)."""
    out = {k: v for k, v in params.items() if k not in STACKS}
    for name, count in zip(STACKS, (cfg.num_dense_layers, cfg.num_moe_layers)):
        for i in range(count):
            out[f"{name}_{i}"] = jax.tree.map(lambda a, i=i: a[i], params[name])
    return out


def stack_layers(cfg: ModelConfig, params: Params) -> Params:
    """The inverse of `unstack_layers`."""
    out = {k: v for k, v in params.items() if not any(k.startswith(f"{s}_") for s in STACKS)}
    for name, count in zip(STACKS, (cfg.num_dense_layers, cfg.num_moe_layers)):
        if count:
            out[name] = jax.tree.map(lambda *xs: jnp.stack(xs), *[params[f"{name}_{i}"] for i in range(count)])
    return out


def generation_params(cfg: ModelConfig, compute: ComputeConfig, params: Params) -> Params:
    """The per-layer form with every weight already in the compute dtype (the router and its bias stay fp32,
    as the modules keep them): what the modules would cast at each use, cast once. Same numbers."""
    dt = compute_dtype(compute)

    def cast(path, x):
        return x if getattr(path[-1], "key", "") in ("router", "router_bias") else jnp.asarray(x).astype(dt)

    return jax.tree_util.tree_map_with_path(cast, unstack_layers(cfg, params))
