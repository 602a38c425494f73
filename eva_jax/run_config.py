"""The run's sections of the config: data, optimizer, training, device mesh (eva_jax.config holds the model, how
it is computed, and the root `Config`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from eva_jax.config_checks import Dtype, check_choices, fraction, non_negative, require

ParamRules = Literal["zero1", "fsdp"]
PromptFormat = Literal["chat", "raw"]


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
        fraction("data.fim_rate", self.fim_rate)
        require(self.max_doc_chars >= 0, f"data.max_doc_chars={self.max_doc_chars} must be ≥ 0 (0: never cut)")
        require(0.0 < self.heldout_fraction < 1.0, f"data.heldout_fraction={self.heldout_fraction} must be in (0, 1)")


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
            fraction(f"optim.{name}", value)
        require(list(fracs) == sorted(fracs), f"optim phase ends must not decrease, got {fracs}")
        for name in ("lr_peak", "eps", "clip_norm"):
            non_negative(f"optim.{name}", getattr(self, name), positive=True)
        for name in ("lr_decayed", "lr_final", "weight_decay"):
            non_negative(f"optim.{name}", getattr(self, name))
        for name in ("b1", "b2"):
            require(0.0 <= getattr(self, name) < 1.0, f"optim.{name}={getattr(self, name)} must be in [0, 1)")
        check_choices("optim", self)


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
            require(getattr(self, name) > 0, f"train.{name}={getattr(self, name)} must be positive")
        for name in ("global_batch", "batch_start"):
            require(getattr(self, name) % self.micro_batch == 0,
                    f"train.{name}={getattr(self, name)} is not a multiple of train.micro_batch={self.micro_batch}")
        require(self.batch_start <= self.global_batch,
                f"train.batch_start={self.batch_start} exceeds train.global_batch={self.global_batch}")
        for name in ("batch_ramp_frac", "mtp_switch_frac", "bias_stop_frac"):
            fraction(f"train.{name}", getattr(self, name))
        for name in ("mtp_lambda", "mtp_lambda_late", "balance_alpha", "bias_gamma", "peak_flops"):
            non_negative(f"train.{name}", getattr(self, name))


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
            require(size == -1 or size >= 1, f"mesh.{axis}={size} must be a positive size or -1 (fill the rest)")
        require(sizes.count(-1) <= 1, f"only one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
        require(self.pipeline == 1, f"mesh.pipeline={self.pipeline}: pipeline parallelism is not implemented yet")
        for axis in ("data", "fsdp", "expert"):
            dcn, ici = getattr(self, f"dcn_{axis}"), getattr(self, axis)
            require(dcn >= 1, f"mesh.dcn_{axis}={dcn} must be >= 1")
            require(ici == -1 or ici % dcn == 0, f"mesh.{axis}={ici} is not divisible by mesh.dcn_{axis}={dcn}")
        check_choices("mesh", self)

    @property
    def shape(self) -> dict[str, int]:
        return {a: getattr(self, a) for a in MESH_AXES}

    @property
    def dcn_shape(self) -> dict[str, int]:
        return {a: getattr(self, f"dcn_{a}") if a in ("data", "fsdp", "expert") else 1 for a in MESH_AXES}


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """Group Relative Policy Optimization (DeepSeekMath §4.1; DeepSeek-V3 §5.2.2; docs/post_training.md). One
    train.steps step is one rollout batch: `prompts` prompts, `group_size` completions each, then `inner_steps`
    optimizer steps over it (μ), each over train.micro_batch rows at a time."""

    prompts: int = 8  # prompts per rollout batch
    group_size: int = 8  # G: completions per prompt, whose rewards normalise each other
    max_new_tokens: int = 64
    temperature: float = 1.0  # the rollouts' and the trainer's log-probabilities use the same one
    clip_eps: float = 0.2  # ε: the probability ratio is clipped to [1 - ε, 1 + ε]
    kl_beta: float = 0.04  # β: weight of the k3 KL to the frozen reference (DeepSeekMath: 0.04)
    inner_steps: int = 1  # μ: optimizer steps per rollout batch
    # Truncation of the importance weight exp(trainer − engine log-probability) that corrects rollouts the
    # trainer cannot reproduce exactly (bf16, kernels); 1 in fp32.
    max_importance_weight: float = 2.0
    heldout_prompts: int = 32  # prompts kept out of training; their reward is measured every train.eval_every steps
    # Completions per held-out prompt: 1 = greedy; more = sampled at grpo.temperature with fixed seeds (the
    # policy's expected reward, what GRPO maximises).
    heldout_samples: int = 1
    # A text prompt as one user turn of the chat template ("chat"), or the text itself after BOS ("raw").
    # A prompt given as a list of messages is always rendered with the template.
    prompt_format: PromptFormat = "chat"

    def __post_init__(self) -> None:
        for name in ("prompts", "group_size", "max_new_tokens", "inner_steps", "heldout_samples"):
            require(getattr(self, name) > 0, f"grpo.{name}={getattr(self, name)} must be positive")
        require(self.group_size >= 2, f"grpo.group_size={self.group_size} must be at least 2: advantages compare "
                                      "the completions of one prompt with each other")
        non_negative("grpo.temperature", self.temperature, positive=True)
        require(self.temperature <= 2.0, f"grpo.temperature={self.temperature} must be at most 2")
        require(0.0 < self.clip_eps < 1.0, f"grpo.clip_eps={self.clip_eps} must be in (0, 1)")
        non_negative("grpo.kl_beta", self.kl_beta)
        require(self.max_importance_weight >= 1.0,
                f"grpo.max_importance_weight={self.max_importance_weight} must be at least 1")
        require(self.heldout_prompts >= 0, f"grpo.heldout_prompts={self.heldout_prompts} must be >= 0")
        check_choices("grpo", self)

    @property
    def rows(self) -> int:
        """Sequences in one rollout batch."""
        return self.prompts * self.group_size

