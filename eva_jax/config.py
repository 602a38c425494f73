"""Typed, frozen configuration for Eva.

`Config` is the root. `ModelConfig` is the architecture with DeepSeek's own vocabulary (reference §1): exactly
what round-trips with a Hugging Face config.json. `ComputeConfig` is how that model is computed (dtypes,
remat, kernel and layout choices, memory chunking), the same switches for training and generation.
Validation lives next to the fields and fails with a sentence naming the field and what was expected; a string
option is a `Literal` type, the one source of its allowed values (checked by `eva_jax.config_checks.check_choices`).
Named configs live in `configs/`; `eva_jax.load_config(name, **overrides)` resolves them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from eva_jax.config_checks import ConfigError, Dtype, check_choices, require
from eva_jax.run_config import MESH_AXES, DataConfig, GRPOConfig, MeshConfig, OptimConfig, TrainConfig

__all__ = ["MESH_AXES", "ComputeConfig", "Config", "ConfigError", "DataConfig", "GRPOConfig", "MeshConfig",
           "ModelConfig", "OptimConfig", "TrainConfig", "YarnConfig", "yarn_mscale"]

ScoringFunc = Literal["sigmoid", "softmax"]
# noaux_tc: V3 (bias for selection, group score = sum of the group's top-2);
# group_limited_greedy: V2 (group score = max in group); greedy: plain top-k over all experts.
TopkMethod = Literal["noaux_tc", "group_limited_greedy", "greedy"]
RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]
MoeImpl = Literal["auto", "ragged", "padded", "tiled", "slab"]
AttentionImpl = Literal["xla", "pallas", "auto"]
Matmul = Literal["bf16", "fp8"]


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
        require(self.factor > 0, f"rope_scaling.factor={self.factor} must be positive")
        require(
            self.original_max_position_embeddings > 0,
            f"rope_scaling.original_max_position_embeddings={self.original_max_position_embeddings} must be positive",
        )
        require(self.beta_fast > 0 and self.beta_slow > 0, "rope_scaling.beta_fast and beta_slow must be positive")


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
    scoring_func: ScoringFunc = "sigmoid"
    topk_method: TopkMethod = "noaux_tc"
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

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "kv_lora_rank", "qk_nope_head_dim",
                     "qk_rope_head_dim", "v_head_dim", "intermediate_size", "moe_intermediate_size",
                     "n_routed_experts", "num_experts_per_tok", "n_group", "topk_group"):
            value = getattr(self, name)
            require(isinstance(value, int) and value > 0, f"model.{name}={value!r} must be a positive integer")
        require(self.q_lora_rank is None or self.q_lora_rank > 0,
                f"model.q_lora_rank={self.q_lora_rank} must be positive or None (no q compression)")
        require(self.n_shared_experts >= 0, f"model.n_shared_experts={self.n_shared_experts} must be >= 0")
        require(self.num_mtp_layers >= 0, f"model.num_mtp_layers={self.num_mtp_layers} must be >= 0")
        require(self.qk_rope_head_dim % 2 == 0, f"model.qk_rope_head_dim={self.qk_rope_head_dim} must be even")
        require(0 <= self.first_k_dense_replace <= self.num_layers,
                f"model.first_k_dense_replace={self.first_k_dense_replace} must lie in "
                f"[0, num_layers={self.num_layers}]")
        self._validate_routing()
        check_choices("model", self)
        require(self.rms_norm_eps > 0, f"model.rms_norm_eps={self.rms_norm_eps} must be positive")
        require(self.rope_theta > 1, f"model.rope_theta={self.rope_theta} must be > 1")

    def _validate_routing(self) -> None:
        experts, groups = self.n_routed_experts, self.n_group
        require(experts % groups == 0, f"n_routed_experts={experts} is not divisible by n_group={groups}")
        require(self.topk_group <= groups, f"topk_group={self.topk_group} is larger than n_group={groups}")
        reachable = self.topk_group * (experts // groups)
        require(self.num_experts_per_tok <= reachable,
                f"num_experts_per_tok={self.num_experts_per_tok} is larger than the {reachable} experts in the "
                f"topk_group={self.topk_group} selected groups of {experts // groups} experts each")
        if self.topk_method == "noaux_tc" and groups > 1:
            require(experts // groups >= 2,
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


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """How the model is computed: the same switches for training, prefill and decode (none is in a checkpoint).
    Accepted as `model.<field>` in overrides too (eva_jax.overrides.ALIASES)."""

    dtype: Dtype = "bfloat16"  # activation / matmul dtype
    param_dtype: Dtype = "float32"
    remat_policy: RematPolicy = "full"
    # Layers per iteration of the layer scan: 1 keeps compile time flat in depth (the large configs); a small
    # model on CPU runs faster fully unrolled (no stacked residual buffers), at a longer compile.
    scan_unroll: int = 1
    moe_impl: MoeImpl = "auto"  # auto: ragged_dot on GPU/TPU, "slab" on CPU (eva_jax/nn/grouped.py)
    # "pallas": the flash MLA kernel (GPU/TPU, or interpret mode); "auto": the kernel where it compiles.
    attention_impl: AttentionImpl = "xla"
    # "fp8": dense projections through the block-scaled FP8 kernel (its jnp reference where no kernel runs).
    matmul: Matmul = "bf16"
    kernel_interpret: bool = False  # run Pallas kernels in interpret mode (CPU tests)
    # Memory bounds, same numbers either way (0: off). XLA attention over query blocks of this many rows
    # (scores [B, H, chunk, T], recomputed in the backward pass; at 4K × 128 heads whole fp32 scores are 8.6 GB);
    # expert-parallel dispatch over blocks of this many tokens (the dropless buffers hold P·n·K rows).
    attention_chunk: int = 0
    moe_chunk_tokens: int = 0
    # Node-limited routing (reference §4.3), a constraint of the expert-parallel deployment rather than of the
    # checkpoint: a token's experts come from at most this many of the n_group expert groups (a group = the
    # experts one node hosts when the `expert` mesh axis spans n_group nodes), groups scored by the sum of
    # their top ceil(K/M) biased affinities. 0 = no node limit.
    max_route_nodes: int = 0

    def __post_init__(self) -> None:
        check_choices("compute", self)
        require(self.attention_chunk >= 0 and self.moe_chunk_tokens >= 0,
                f"compute.attention_chunk={self.attention_chunk} and compute.moe_chunk_tokens="
                f"{self.moe_chunk_tokens} must be ≥ 0 (0: no chunking)")
        require(self.scan_unroll >= 1, f"compute.scan_unroll={self.scan_unroll} must be a positive integer")
        require(self.max_route_nodes >= 0,
                f"compute.max_route_nodes={self.max_route_nodes} must be >= 0 (0 = no node limit)")

    def check_routing(self, model: ModelConfig) -> None:
        """The node limit leaves every token enough experts to choose from."""
        nodes, groups, experts = self.max_route_nodes, model.n_group, model.n_routed_experts
        if 0 < nodes < groups:
            reachable = nodes * (experts // groups)
            require(model.num_experts_per_tok <= reachable,
                    f"num_experts_per_tok={model.num_experts_per_tok} is larger than the {reachable} experts on "
                    f"compute.max_route_nodes={nodes} nodes of {experts // groups} experts each")


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """g(s, m) = 0.1·m·ln s + 1, and 1 when s ≤ 1 (reference §3, step 6)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


@dataclasses.dataclass(frozen=True)
class Config:
    """The root configuration: the model, how it is computed, the device mesh and how to train it."""

    name: str
    model: ModelConfig
    compute: ComputeConfig = ComputeConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    mesh: MeshConfig = MeshConfig()
    grpo: GRPOConfig = GRPOConfig()

    def __post_init__(self) -> None:
        self.compute.check_routing(self.model)
        require(self.train.seq_len <= self.model.max_position_embeddings,
                f"train.seq_len={self.train.seq_len} exceeds model.max_position_embeddings="
                f"{self.model.max_position_embeddings}: the model has no positions past that")
