"""Typed, frozen configuration for Eva.

`Config` is the root; `ModelConfig` holds the architecture with DeepSeek's own vocabulary (reference §1).
Validation lives next to the fields and fails with a sentence naming the field and what was expected.
Named configs live in `configs/`; `eva_jax.load_config(name, **overrides)` resolves them.
"""

from __future__ import annotations

import dataclasses
import math

SCORING_FUNCS = ("sigmoid", "softmax")
# noaux_tc: V3 (bias for selection, group score = sum of the group's top-2);
# group_limited_greedy: V2 (group score = max in group); greedy: plain top-k over all experts.
TOPK_METHODS = ("noaux_tc", "group_limited_greedy", "greedy")
DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
MOE_IMPLS = ("auto", "ragged", "padded", "dense")


class ConfigError(ValueError):
    """A configuration that cannot describe a working model."""


def _require(condition: bool, sentence: str) -> None:
    if not condition:
        raise ConfigError(sentence)


@dataclasses.dataclass(frozen=True)
class YarnConfig:
    """YaRN context extension (reference §3); the HF `rope_scaling` block."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    # 0 means "absent": HF then applies no softmax temperature (reference §2.2).
    mscale_all_dim: float = 0.0
    # Explicit cos/sin amplitude; None derives it from factor/mscale as HF does.
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        _require(self.factor > 0, f"rope_scaling.factor={self.factor} must be positive")
        _require(
            self.original_max_position_embeddings > 0,
            f"rope_scaling.original_max_position_embeddings={self.original_max_position_embeddings} must be positive",
        )
        _require(self.beta_fast > 0 and self.beta_slow > 0, "rope_scaling.beta_fast and beta_slow must be positive")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """DeepSeek-V3-family architecture. Letters in comments follow DESIGN.md's dimension legend."""

    vocab_size: int
    hidden_size: int  # D
    num_layers: int  # L, main model only (MTP modules are extra)
    num_heads: int  # H
    q_lora_rank: int | None  # Q; None = direct q projection (V2-Lite)
    kv_lora_rank: int  # C
    qk_nope_head_dim: int  # N
    qk_rope_head_dim: int  # R
    v_head_dim: int  # V
    intermediate_size: int  # F of the dense SwiGLU layers
    moe_intermediate_size: int  # F of each routed / shared expert
    n_routed_experts: int  # E
    n_shared_experts: int
    num_experts_per_tok: int  # K
    n_group: int  # G
    topk_group: int
    first_k_dense_replace: int
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"
    num_mtp_layers: int = 0  # MTP depth D of reference §5
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: YarnConfig | None = None
    # True: DeepSeek's adjacent-pair rotation (real checkpoints). False: rotate-half over the two halves.
    rope_interleave: bool = True
    initializer_range: float = 0.006
    bos_token_id: int = 0
    eos_token_id: int = 1
    dtype: str = "bfloat16"  # activation / matmul dtype
    param_dtype: str = "float32"
    remat_policy: str = "full"
    moe_impl: str = "auto"  # auto: ragged_dot on GPU/TPU, padded tiles on CPU

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "kv_lora_rank", "qk_nope_head_dim",
                     "qk_rope_head_dim", "v_head_dim", "intermediate_size", "moe_intermediate_size",
                     "n_routed_experts", "num_experts_per_tok", "n_group", "topk_group"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value > 0, f"model.{name}={value!r} must be a positive integer")
        _require(self.q_lora_rank is None or self.q_lora_rank > 0,
                 f"model.q_lora_rank={self.q_lora_rank} must be positive or None (no q compression)")
        _require(self.n_shared_experts >= 0, f"model.n_shared_experts={self.n_shared_experts} must be >= 0")
        _require(self.num_mtp_layers >= 0, f"model.num_mtp_layers={self.num_mtp_layers} must be >= 0")
        _require(self.qk_rope_head_dim % 2 == 0, f"model.qk_rope_head_dim={self.qk_rope_head_dim} must be even")
        _require(0 <= self.first_k_dense_replace <= self.num_layers,
                 f"model.first_k_dense_replace={self.first_k_dense_replace} must lie in [0, num_layers={self.num_layers}]")
        self._validate_routing()
        _require(self.scoring_func in SCORING_FUNCS, f"model.scoring_func={self.scoring_func!r}: expected one of {SCORING_FUNCS}")
        _require(self.topk_method in TOPK_METHODS, f"model.topk_method={self.topk_method!r}: expected one of {TOPK_METHODS}")
        _require(self.dtype in DTYPES, f"model.dtype={self.dtype!r}: expected one of {DTYPES}")
        _require(self.param_dtype in DTYPES, f"model.param_dtype={self.param_dtype!r}: expected one of {DTYPES}")
        _require(self.remat_policy in REMAT_POLICIES, f"model.remat_policy={self.remat_policy!r}: expected one of {REMAT_POLICIES}")
        _require(self.moe_impl in MOE_IMPLS, f"model.moe_impl={self.moe_impl!r}: expected one of {MOE_IMPLS}")
        _require(self.rms_norm_eps > 0, f"model.rms_norm_eps={self.rms_norm_eps} must be positive")
        _require(self.rope_theta > 1, f"model.rope_theta={self.rope_theta} must be > 1")

    def _validate_routing(self) -> None:
        experts, groups = self.n_routed_experts, self.n_group
        _require(experts % groups == 0, f"n_routed_experts={experts} is not divisible by n_group={groups}")
        _require(self.topk_group <= groups, f"topk_group={self.topk_group} is larger than n_group={groups}")
        reachable = self.topk_group * (experts // groups)
        _require(self.num_experts_per_tok <= reachable,
                 f"num_experts_per_tok={self.num_experts_per_tok} is larger than the {reachable} experts in the "
                 f"topk_group={self.topk_group} selected groups of {experts // groups} experts each")
        if self.topk_method == "noaux_tc" and groups > 1:
            _require(experts // groups >= 2,
                     f"topk_method='noaux_tc' scores a group by its top-2 experts, but n_group={groups} leaves "
                     f"{experts // groups} expert per group")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_k_dense_replace

    @property
    def num_dense_layers(self) -> int:
        return self.first_k_dense_replace

    @property
    def uses_routing_bias(self) -> bool:
        """DeepSeek-V3's auxiliary-loss-free correction bias exists only with the noaux_tc method."""
        return self.topk_method == "noaux_tc"

    @property
    def softmax_scale(self) -> float:
        """qk_head_dim^-1/2, times the YaRN temperature m² when mscale_all_dim is set (reference §2.2)."""
        scale = self.qk_head_dim ** -0.5
        yarn = self.rope_scaling
        if yarn is not None and yarn.mscale_all_dim:
            m = yarn_mscale(yarn.factor, yarn.mscale_all_dim)
            scale *= m * m
        return scale


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """g(s, m) = 0.1·m·ln s + 1, and 1 when s ≤ 1 (reference §3, step 6)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


@dataclasses.dataclass(frozen=True)
class Config:
    """The root configuration. Later subsystems (train, data, mesh) add their sections here."""

    name: str
    model: ModelConfig
