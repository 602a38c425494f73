"""Builders for the Hugging Face reference models used by the parity tests: tiny random DeepSeek-V3/V2
models with non-trivial weights, saved as checkpoints in DeepSeek's published layout (MTP at layer L)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

BASE_V3 = dict(
    vocab_size=97, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=3,
    n_group=4, topk_group=2, first_k_dense_replace=1, routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=24,
    qk_rope_head_dim=8, v_head_dim=12, qk_nope_head_dim=12, norm_topk_prob=True, max_position_embeddings=256,
    rms_norm_eps=1e-5, rope_interleave=True, num_mtp_layers=1, tie_word_embeddings=False,
)


def v3_config(**overrides):
    from transformers import DeepseekV3Config

    kwargs = {**BASE_V3, **overrides}
    kwargs.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 10000.0})
    return DeepseekV3Config(**kwargs, attn_implementation="eager", experts_implementation="eager")


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that every path matters; norm gains away from 1; a non-zero routing bias."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "inv_freq" in name:
                continue
            if name.endswith("norm.weight") or "layernorm" in name:
                tensor.copy_(1.0 + 0.2 * torch.randn(tensor.shape, generator=gen))
            elif "e_score_correction_bias" in name:
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
            else:
                fan_in = tensor.shape[-1]
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (1.5 / fan_in**0.5))


def build_v3(seed: int = 0, **overrides):
    """(main model, MtpModel or None) in float32 eval mode."""
    from transformers import DeepseekV3ForCausalLM
    from transformers.modeling_layers import MtpModel

    torch.manual_seed(seed)
    config = v3_config(**overrides)
    model = DeepseekV3ForCausalLM(config).eval()
    randomize(model, seed)
    mtp = None
    if config.num_mtp_layers:
        mtp = MtpModel(model, config.num_mtp_layers).eval()
        randomize(mtp.layers, seed + 1)
    return model, mtp


def build_v2(seed: int = 0, **overrides):
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

    kwargs = {k: v for k, v in BASE_V3.items() if k not in ("rope_interleave", "num_mtp_layers", "norm_topk_prob")}
    kwargs.update(q_lora_rank=None, n_group=1, topk_group=1, topk_method="greedy", routed_scaling_factor=1.0,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = DeepseekV2ForCausalLM(DeepseekV2Config(**kwargs, attn_implementation="eager",
                                                   experts_implementation="eager")).eval()
    randomize(model, seed)
    return model


def _mtp_checkpoint_tensors(mtp, num_layers: int) -> dict[str, torch.Tensor]:
    """MtpModel's weights under DeepSeek's checkpoint names (layer num_layers + k, per-expert tensors)."""
    out = {}
    for name, value in mtp.layers.state_dict().items():
        k, rest = name.split(".", 1)
        prefix = f"model.layers.{num_layers + int(k)}"
        rest = rest.replace("mtp_block.", "").replace("post_norm.", "shared_head.norm.")
        if rest.endswith("mlp.experts.gate_up_proj"):
            gate, up = value.chunk(2, dim=1)
            for e in range(value.shape[0]):
                out[f"{prefix}.mlp.experts.{e}.gate_proj.weight"] = gate[e]
                out[f"{prefix}.mlp.experts.{e}.up_proj.weight"] = up[e]
        elif rest.endswith("mlp.experts.down_proj"):
            for e in range(value.shape[0]):
                out[f"{prefix}.mlp.experts.{e}.down_proj.weight"] = value[e]
        else:
            out[f"{prefix}.{rest}"] = value
    return {k: v.contiguous().clone() for k, v in out.items()}


def save_checkpoint(model, mtp, directory: Path) -> Path:
    """save_pretrained (per-expert layout) plus the MTP layers in a second safetensors file."""
    model.save_pretrained(directory)
    if mtp is not None:
        save_file(_mtp_checkpoint_tensors(mtp, model.config.num_hidden_layers), str(directory / "mtp.safetensors"))
        index = directory / "model.safetensors.index.json"
        assert not index.exists(), "tiny checkpoints are expected in one file"
    return directory


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


def hf_mtp_logits(model, mtp, tokens: np.ndarray) -> list[np.ndarray]:
    """Logits of every MTP depth over the full sequence: depth k sees tokens shifted by k (HF's forward_layer)."""
    ids = torch.as_tensor(tokens)
    b, t = ids.shape
    positions = torch.arange(t)[None].expand(b, t)
    out = []
    with torch.no_grad():
        hidden = model.model(ids).last_hidden_state
        for k in range(1, mtp.num_mtp_layers + 1):
            hidden = mtp.forward_layer(k - 1, hidden[:, : t - k], positions[:, k:], None, input_ids=ids[:, k:])
            out.append(mtp._project_to_logits(hidden).float().numpy())
    return out
