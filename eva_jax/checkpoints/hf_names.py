"""The name and layout map between Hugging Face DeepSeek checkpoints and Eva's parameter tree.

HF stores PyTorch Linear weights as [out, in]; Eva stores kernels [in, out] with heads split out, and the
layers of each stack (dense / MoE) stacked on a leading axis. Each `Entry` says which HF tensor fills which
slot of which Eva leaf and how its layout changes. MTP module k lives at HF layer num_hidden_layers + k.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from eva_jax.config import ModelConfig


class Entry(NamedTuple):
    hf_name: str
    path: tuple[str, ...]  # Eva leaf path
    index: tuple[int, ...]  # slot inside the leaf: (layer,), (layer, expert), (expert,) or ()
    layout: str  # copy | linear | heads_out | heads_in | heads_rows


def to_eva(x: np.ndarray, layout: str, heads: int) -> np.ndarray:
    """HF tensor -> Eva slot."""
    if layout == "copy":
        return x
    if layout == "linear":
        return x.T
    if layout == "heads_out":  # [H*K, In] -> [In, H, K]
        return x.reshape(heads, -1, x.shape[-1]).transpose(2, 0, 1)
    if layout == "heads_in":  # [D, H*V] -> [H, V, D]
        return x.reshape(x.shape[0], heads, -1).transpose(1, 2, 0)
    if layout == "heads_rows":  # [H*K, In] -> [H, K, In]: per head, the rows as stored
        return x.reshape(heads, -1, x.shape[-1])
    raise ValueError(layout)


def to_hf(x: np.ndarray, layout: str) -> np.ndarray:
    """Eva slot -> HF tensor (inverse of `to_eva`)."""
    if layout == "copy":
        return x
    if layout == "linear":
        return x.T
    if layout == "heads_out":  # [In, H, K] -> [H*K, In]
        return x.transpose(1, 2, 0).reshape(-1, x.shape[0])
    if layout == "heads_in":  # [H, V, D] -> [D, H*V]
        return x.transpose(2, 0, 1).reshape(x.shape[-1], -1)
    if layout == "heads_rows":  # [H, K, In] -> [H*K, In]
        return x.reshape(-1, x.shape[-1])
    raise ValueError(layout)


def hf_shape(eva_slot_shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return to_hf(np.empty(eva_slot_shape, np.uint8), layout).shape


def _attention(cfg: ModelConfig, hf: str, path: tuple[str, ...], idx: tuple[int, ...]) -> Iterator[Entry]:
    a = f"{hf}.self_attn"
    if cfg.q_lora_rank is None:
        yield Entry(f"{a}.q_proj.weight", (*path, "attn", "wq"), idx, "heads_out")
    else:
        yield Entry(f"{a}.q_a_proj.weight", (*path, "attn", "wq_a"), idx, "linear")
        yield Entry(f"{a}.q_a_layernorm.weight", (*path, "attn", "q_norm", "scale"), idx, "copy")
        yield Entry(f"{a}.q_b_proj.weight", (*path, "attn", "wq_b"), idx, "heads_out")
    yield Entry(f"{a}.kv_a_proj_with_mqa.weight", (*path, "attn", "wkv_a"), idx, "linear")
    yield Entry(f"{a}.kv_a_layernorm.weight", (*path, "attn", "kv_norm", "scale"), idx, "copy")
    yield Entry(f"{a}.kv_b_proj.weight", (*path, "attn", "wkv_b"), idx, "heads_rows")
    yield Entry(f"{a}.o_proj.weight", (*path, "attn", "wo"), idx, "heads_in")
    yield Entry(f"{hf}.input_layernorm.weight", (*path, "attn_norm", "scale"), idx, "copy")
    yield Entry(f"{hf}.post_attention_layernorm.weight", (*path, "ffn_norm", "scale"), idx, "copy")


def _swiglu(hf: str, path: tuple[str, ...], idx: tuple[int, ...]) -> Iterator[Entry]:
    for proj, name in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
        yield Entry(f"{hf}.{proj}.weight", (*path, name), idx, "linear")


def _moe(cfg: ModelConfig, hf: str, path: tuple[str, ...], idx: tuple[int, ...]) -> Iterator[Entry]:
    m, p = f"{hf}.mlp", (*path, "moe")
    yield Entry(f"{m}.gate.weight", (*p, "router"), idx, "linear")
    if cfg.uses_routing_bias:
        yield Entry(f"{m}.gate.e_score_correction_bias", (*p, "router_bias"), idx, "copy")
    for e in range(cfg.n_routed_experts):
        for proj, name in (("gate_proj", "experts_gate"), ("up_proj", "experts_up"), ("down_proj", "experts_down")):
            yield Entry(f"{m}.experts.{e}.{proj}.weight", (*p, name), (*idx, e), "linear")
    if cfg.n_shared_experts:
        yield from _swiglu(f"{m}.shared_experts", (*p, "shared"), idx)


def entries(cfg: ModelConfig) -> Iterator[Entry]:
    """Every HF tensor of the model, in checkpoint order."""
    yield Entry("model.embed_tokens.weight", ("embed",), (), "copy")
    for layer in range(cfg.num_layers):
        hf = f"model.layers.{layer}"
        if layer < cfg.first_k_dense_replace:
            path, idx = ("dense_layers",), (layer,)
            yield from _attention(cfg, hf, path, idx)
            yield from _swiglu(f"{hf}.mlp", (*path, "mlp"), idx)
        else:
            path, idx = ("moe_layers",), (layer - cfg.first_k_dense_replace,)
            yield from _attention(cfg, hf, path, idx)
            yield from _moe(cfg, hf, path, idx)
    yield Entry("model.norm.weight", ("final_norm", "scale"), (), "copy")
    yield Entry("lm_head.weight", ("lm_head",), (), "linear")
    for k in range(cfg.num_mtp_layers):
        hf, path = f"model.layers.{cfg.num_layers + k}", (f"mtp_{k}",)
        yield Entry(f"{hf}.enorm.weight", (*path, "enorm", "scale"), (), "copy")
        yield Entry(f"{hf}.hnorm.weight", (*path, "hnorm", "scale"), (), "copy")
        yield Entry(f"{hf}.eh_proj.weight", (*path, "eh_proj"), (), "linear")
        yield Entry(f"{hf}.shared_head.norm.weight", (*path, "norm", "scale"), (), "copy")
        yield from _attention(cfg, hf, (*path, "block"), ())
        yield from _moe(cfg, hf, (*path, "block"), ())


def ignored_names(cfg: ModelConfig) -> set[str]:
    """Tensors a published checkpoint carries that Eva does not load: the MTP layers' copies of the
    embedding and head."""
    out = set()
    for k in range(cfg.num_mtp_layers):
        hf = f"model.layers.{cfg.num_layers + k}"
        out |= {f"{hf}.embed_tokens.weight", f"{hf}.shared_head.head.weight"}
    return out
