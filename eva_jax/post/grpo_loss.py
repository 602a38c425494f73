"""GRPO's objective (DeepSeekMath §4.1, eq. 3; docs/post_training.md), as pure functions of arrays.

For the G completions o_i of one prompt with rewards r_i, the advantage of every token of o_i is
Â_i = (r_i − mean r) / (std r + δ) (std over the group, population form; a group whose rewards are all equal
teaches nothing: Â = 0). Per token, with ρ = π_θ / π_old:

    J = mean_i 1/|o_i| Σ_t [ w · min(ρ Â_i, clip(ρ, 1 − ε, 1 + ε) Â_i) − β · KL_t ],
    KL_t = π_ref/π_θ − log(π_ref/π_θ) − 1        (the k3 estimator: unbiased, ≥ 0, 0 when π_θ = π_ref)

and the loss is −J. π_old is the trainer's own log-probability at the rollout's parameters; w = min(π_old / π_engine,
C) corrects for sampling by the engine where its arithmetic differs from the trainer's (bf16, kernels) — it is
1 in fp32, where the two agree to ~1e-6 — and carries no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from eva_jax.arrays import HostOrDevice
from eva_jax.config import Config
from eva_jax.nn.model import Transformer
from eva_jax.parallel.rules import MeshRules

STD_FLOOR = 1e-4  # δ: keeps near-equal rewards from blowing advantages up


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """[P, G] rewards -> [P, G] advantages, normalised within each prompt's group."""
    rewards = np.asarray(rewards, np.float64)
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    return (centred / (rewards.std(axis=1, keepdims=True) + STD_FLOOR)).astype(np.float32)


def token_logprobs(params, inputs: Int[HostOrDevice, "B T"], targets: Int[HostOrDevice, "B T"], cfg: Config,
                   sharding: MeshRules | None = None) -> tuple[Float[Array, "B T"], Float[Array, "B T"]]:
    """(log π(target), entropy of π) at every position, π = softmax(logits / grpo.temperature): the distribution
    the engine samples rollouts from (eva_jax.infer.sampling.sample without top-k / top-p)."""
    out = Transformer(cfg.model, cfg.compute, sharding).apply({"params": params}, inputs, with_mtp=False)
    logp = jax.nn.log_softmax(out["logits"].astype(jnp.float32) / cfg.grpo.temperature, axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return picked, entropy


def k3(logp: Float[Array, "B T"], ref_logp: Float[HostOrDevice, "B T"]) -> Float[Array, "B T"]:
    d = ref_logp - logp
    return jnp.exp(d) - d - 1.0


def token_objective(logp: Float[Array, "B T"], old_logp: Float[HostOrDevice, "B T"],
                    ref_logp: Float[HostOrDevice, "B T"], advantages: Float[HostOrDevice, " B"],
                    mask: Float[HostOrDevice, "B T"], weights: Float[HostOrDevice, "B T"], clip_eps: float,
                    kl_beta: float) -> tuple[Float[Array, ""], dict]:
    """(−J, {kl, clip_fraction}) for a batch of completions (mask: which positions are completion tokens)."""
    ratio = jnp.exp(logp - old_logp)
    a = advantages[:, None]
    surrogate = jnp.minimum(ratio * a, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * a)
    kl = k3(logp, ref_logp)
    per_token = jax.lax.stop_gradient(weights) * surrogate - kl_beta * kl
    lengths = jnp.maximum(mask.sum(axis=-1), 1.0)
    loss = -jnp.mean((per_token * mask).sum(axis=-1) / lengths)
    clipped = ((a > 0) & (ratio > 1.0 + clip_eps)) | ((a < 0) & (ratio < 1.0 - clip_eps))
    tokens = jnp.maximum(mask.sum(), 1.0)
    return loss, {"kl": (kl * mask).sum() / tokens, "clip_fraction": (clipped * mask).sum() / tokens}


def grpo_loss(params, micro: dict, cfg: Config, sharding: MeshRules | None = None) -> tuple[Float[Array, ""], dict]:
    """The loss of one micro-batch of rollout rows (eva_jax/post/grpo_rollout.py builds them) and its metrics."""
    logp, entropy = token_logprobs(params, micro["inputs"], micro["targets"], cfg, sharding)
    g = cfg.grpo
    loss, metrics = token_objective(logp, micro["old_logp"], micro["ref_logp"], micro["advantages"], micro["mask"],
                                    micro["weights"], g.clip_eps, g.kl_beta)
    tokens = jnp.maximum(micro["mask"].sum(), 1.0)
    return loss, {"loss": loss, **metrics, "entropy": (entropy * micro["mask"]).sum() / tokens}
