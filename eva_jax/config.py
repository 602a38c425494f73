"""Typed, frozen configuration for Eva.

`Config` is the root. `ModelConfig` is the architecture with DeepSeek's own vocabulary (reference §1): exactly
what round-trips with a Hugging Face config.json. `ComputeConfig` is how that model is computed (dtypes,
remat, kernel and layout choices, memory chunking), the same switches for training and generation.
Validation lives next to the fields and fails with a sentence naming the field and what was expected; a string
option is a `Literal` type, the one source of its allowed values (checked by `_check_choices`).
Named configs live in `configs/`; `eva_jax.load_config(name, **overrides)` resolves them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Literal

ScoringFunc = Literal["sigmoid", "softmax"]
# noaux_tc: V3 (bias for selection, group score = sum of the group's top-2);
# group_limited_greedy: V2 (group score = max in group); greedy: plain top-k over all experts.
TopkMethod = Literal["noaux_tc", "group_limited_greedy", "greedy"]
Dtype = Literal["float32", "bfloat16", "float16"]
RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]
MoeImpl = Literal["auto", "ragged", "padded", "tiled", "slab"]
AttentionImpl = Literal["xla", "pallas", "auto"]
Matmul = Literal["bf16", "fp8"]
ParamRules = Literal["zero1", "fsdp"]


class ConfigError(ValueError):
    """A configuration that cannot describe a working model."""


def _require(condition: bool, sentence: str) -> None:
    if not condition:
        raise ConfigError(sentence)


@functools.cache
def _choices(cls: type) -> dict[str, tuple]:
    """The Literal-typed fields of a config dataclass and their allowed values."""
    hints = typing.get_type_hints(cls)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(cls)
            if typing.get_origin(hints[f.name]) is Literal}


def _check_choices(section: str, owner: object) -> None:
    """Each Literal field of `owner` holds one of its values, else a sentence naming the field and the options."""
    for name, allowed in _choices(type(owner)).items():
        value = getattr(owner, name)
        _require(value in allowed, f"{section}.{name}={value!r}: expected one of {allowed}")


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
            _require(isinstance(value, int) and value > 0, f"model.{name}={value!r} must be a positive integer")
        _require(self.q_lora_rank is None or self.q_lora_rank > 0,
                 f"model.q_lora_rank={self.q_lora_rank} must be positive or None (no q compression)")
        _require(self.n_shared_experts >= 0, f"model.n_shared_experts={self.n_shared_experts} must be >= 0")
        _require(self.num_mtp_layers >= 0, f"model.num_mtp_layers={self.num_mtp_layers} must be >= 0")
        _require(self.qk_rope_head_dim % 2 == 0, f"model.qk_rope_head_dim={self.qk_rope_head_dim} must be even")
        _require(0 <= self.first_k_dense_replace <= self.num_layers,
                 f"model.first_k_dense_replace={self.first_k_dense_replace} must lie in "
                 f"[0, num_layers={self.num_layers}]")
        self._validate_routing()
        _check_choices("model", self)
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
        _check_choices("compute", self)
        _require(self.attention_chunk >= 0 and self.moe_chunk_tokens >= 0,
                 f"compute.attention_chunk={self.attention_chunk} and compute.moe_chunk_tokens="
                 f"{self.moe_chunk_tokens} must be ≥ 0 (0: no chunking)")
        _require(self.scan_unroll >= 1, f"compute.scan_unroll={self.scan_unroll} must be a positive integer")
        _require(self.max_route_nodes >= 0,
                 f"compute.max_route_nodes={self.max_route_nodes} must be >= 0 (0 = no node limit)")

    def check_routing(self, model: ModelConfig) -> None:
        """The node limit leaves every token enough experts to choose from."""
        nodes, groups, experts = self.max_route_nodes, model.n_group, model.n_routed_experts
        if 0 < nodes < groups:
            reachable = nodes * (experts // groups)
            _require(model.num_experts_per_tok <= reachable,
                     f"num_experts_per_tok={model.num_experts_per_tok} is larger than the {reachable} experts on "
                     f"compute.max_route_nodes={nodes} nodes of {experts // groups} experts each")


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """g(s, m) = 0.1·m·ln s + 1, and 1 when s ≤ 1 (reference §3, step 6)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _fraction(name: str, value: float) -> None:
    _require(0.0 <= value <= 1.0, f"{name}={value} must be a fraction of the run's tokens in [0, 1]")


def _non_negative(name: str, value: float, positive: bool = False) -> None:
    """A finite rate or weight (nan and inf compare false, so they fail too)."""
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    _require(ok, f"{name}={value} must be a finite number {'> 0' if positive else '>= 0'}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where tokens come from and how documents become packed rows."""

    # "stdlib" (the running interpreter's standard library), a directory, a glob of text/code files,
    # a .jsonl file (with `text_field`) or a .parquet file.
    source: str = "stdlib"
    text_field: str = "text"
    # "auto": DeepSeek-V3's tokenizer when the vocabulary fits it, else a BPE trained on the corpus;
    # "deepseek_v3"; "bpe"; or the path of a saved tokenizer directory.
    tokenizer: str = "auto"
    fim_rate: float = 0.1  # Fill-in-the-Middle rate, PSM form (reference §8)
    isolate_documents: bool = False  # DeepSeek pre-training packs without cross-document masking
    heldout_fraction: float = 0.02  # share of files kept for held-out loss
    seed: int = 0
    bpe_train_bytes: int = 12_000_000  # corpus bytes used to train a BPE tokenizer
    # Documents longer than this many characters are cut at line ends into pieces that are shuffled (and get
    # BOS/EOS and FIM) as documents of their own: one 700 KB file would otherwise fill dozens of consecutive
    # batches of a small run. 0: never cut.
    max_doc_chars: int = 16_384

    def __post_init__(self) -> None:
        _fraction("data.fim_rate", self.fim_rate)
        _require(self.max_doc_chars >= 0, f"data.max_doc_chars={self.max_doc_chars} must be ≥ 0 (0: never cut)")
        _require(0.0 < self.heldout_fraction < 1.0, f"data.heldout_fraction={self.heldout_fraction} must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW and DeepSeek's learning-rate shape (reference §8); phase ends are fractions of the run's tokens."""

    lr_peak: float = 2.2e-4
    lr_decayed: float = 2.2e-5  # end of the cosine decay, and the first constant tail
    lr_final: float = 7.3e-6  # the last tail
    warmup_frac: float = 0.00182  # 2K steps of DeepSeek's ramping batch ≈ 27B of 14.8T tokens
    constant_until_frac: float = 0.6757  # 10T / 14.8T
    decay_until_frac: float = 0.9662  # 14.3T / 14.8T
    tail_until_frac: float = 0.98875  # +333B at 2.2e-5, then 167B at 7.3e-6
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    moment_dtype: Dtype = "float32"  # DeepSeek kept AdamW moments in bfloat16

    def __post_init__(self) -> None:
        fracs = (self.warmup_frac, self.constant_until_frac, self.decay_until_frac, self.tail_until_frac)
        for name, value in zip(("warmup_frac", "constant_until_frac", "decay_until_frac", "tail_until_frac"), fracs):
            _fraction(f"optim.{name}", value)
        _require(list(fracs) == sorted(fracs), f"optim phase ends must not decrease, got {fracs}")
        for name in ("lr_peak", "eps", "clip_norm"):
            _non_negative(f"optim.{name}", getattr(self, name), positive=True)
        for name in ("lr_decayed", "lr_final", "weight_decay"):
            _non_negative(f"optim.{name}", getattr(self, name))
        for name in ("b1", "b2"):
            _require(0.0 <= getattr(self, name) < 1.0, f"optim.{name}={getattr(self, name)} must be in [0, 1)")
        _check_choices("optim", self)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Run length, batch ramp, objective weights and their token schedules, checkpoints and evaluation."""

    steps: int = 200  # optimizer steps
    seq_len: int = 256
    global_batch: int = 16  # sequences per optimizer step after the ramp
    batch_start: int = 4  # sequences per step at the start of the ramp (DeepSeek: 3072 -> 15360)
    batch_ramp_frac: float = 0.0317  # 469B / 14.8T tokens
    micro_batch: int = 4  # sequences per accumulation step
    mtp_lambda: float = 0.3
    mtp_lambda_late: float = 0.1
    mtp_switch_frac: float = 0.6757  # 10T / 14.8T
    balance_alpha: float = 1e-4
    bias_update: bool = True  # auxiliary-loss-free load balancing
    bias_gamma: float = 0.001
    bias_stop_frac: float = 0.9662  # γ = 0 for the last 500B of 14.8T tokens
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    eval_every: int = 50
    eval_batches: int = 4
    peak_flops: float = 0.0  # per device, for MFU; 0 = look up the device kind
    # Steps in a row whose loss, gradient norm or updated parameters are not finite (each is skipped, not
    # applied) before the run stops: a spike may pass, a diverged run must not go on.
    max_bad_steps: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "seq_len", "global_batch", "batch_start", "micro_batch", "checkpoint_every",
                     "keep_checkpoints", "eval_every", "max_bad_steps"):
            _require(getattr(self, name) > 0, f"train.{name}={getattr(self, name)} must be positive")
        for name in ("global_batch", "batch_start"):
            _require(getattr(self, name) % self.micro_batch == 0,
                     f"train.{name}={getattr(self, name)} is not a multiple of train.micro_batch={self.micro_batch}")
        _require(self.batch_start <= self.global_batch,
                 f"train.batch_start={self.batch_start} exceeds train.global_batch={self.global_batch}")
        for name in ("batch_ramp_frac", "mtp_switch_frac", "bias_stop_frac"):
            _fraction(f"train.{name}", getattr(self, name))
        for name in ("mtp_lambda", "mtp_lambda_late", "balance_alpha", "bias_gamma", "peak_flops"):
            _non_negative(f"train.{name}", getattr(self, name))


MESH_AXES = ("data", "fsdp", "expert", "tensor", "pipeline")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The device mesh and how parameters and optimizer state lie on it (eva_jax.parallel).

    Axis sizes multiply to the device count; one of them may be -1 to take the rest. `dcn_*` sizes split an
    axis across slices (multi-slice TPU: the outer part of the axis crosses the data-centre network); they
    multiply to the slice count and divide the matching axis."""

    data: int = -1
    fsdp: int = 1
    expert: int = 1
    tensor: int = 1
    pipeline: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    dcn_expert: int = 1
    # "zero1": parameters replicated except routed experts (over `expert`) and tensor-parallel dims, as
    # DeepSeek-V3 trained. "fsdp": parameters also sharded on their `embed` dimension over `fsdp` (and over
    # `expert` where the expert dimension does not already use it) — ZeRO-3.
    rules: ParamRules = "zero1"
    # Shard each optimizer-state leaf further over the data-parallel axes its parameter is replicated on
    # (ZeRO-1). False: optimizer state lies exactly like its parameter.
    zero1: bool = True

    def __post_init__(self) -> None:
        sizes = [getattr(self, a) for a in MESH_AXES]
        for axis, size in zip(MESH_AXES, sizes):
            _require(size == -1 or size >= 1, f"mesh.{axis}={size} must be a positive size or -1 (fill the rest)")
        _require(sizes.count(-1) <= 1, f"only one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
        _require(self.pipeline == 1, f"mesh.pipeline={self.pipeline}: pipeline parallelism is not implemented yet")
        for axis in ("data", "fsdp", "expert"):
            dcn, ici = getattr(self, f"dcn_{axis}"), getattr(self, axis)
            _require(dcn >= 1, f"mesh.dcn_{axis}={dcn} must be >= 1")
            _require(ici == -1 or ici % dcn == 0, f"mesh.{axis}={ici} is not divisible by mesh.dcn_{axis}={dcn}")
        _check_choices("mesh", self)

    @property
    def shape(self) -> dict[str, int]:
        return {a: getattr(self, a) for a in MESH_AXES}

    @property
    def dcn_shape(self) -> dict[str, int]:
        return {a: getattr(self, f"dcn_{a}") if a in ("data", "fsdp", "expert") else 1 for a in MESH_AXES}


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

    def __post_init__(self) -> None:
        self.compute.check_routing(self.model)
        _require(self.train.seq_len <= self.model.max_position_embeddings,
                 f"train.seq_len={self.train.seq_len} exceeds model.max_position_embeddings="
                 f"{self.model.max_position_embeddings}: the model has no positions past that")
