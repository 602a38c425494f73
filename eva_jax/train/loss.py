"""DeepSeek-V3's objective: next-token CE + λ·mean MTP CE over depths + α·Σ_layers sequence balance loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.config import Config
from eva_jax.nn.model import Transformer
from eva_jax.parallel.rules import MeshRules
from eva_jax.train.head_loss import head_cross_entropy


def cross_entropy(logits: Float[Array, "B T V"], targets: Int[Array, "B T"],
                  mask: Float[Array, "B T"] | None = None) -> Float[Array, ""]:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    if mask is None:
        return nll.mean()
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def target_mask(batch: dict, depth: int = 0) -> Float[Array, "B T"]:
    """Which predictions count: never padding; with document isolation, never across a document boundary
    (depth k at position i predicts target i + k)."""
    t = batch["targets"].shape[1]
    mask = batch["target_mask"][:, depth:]
    if "segment_ids" in batch:
        mask = mask & (batch["segment_ids"][:, : t - depth] == batch["target_segment_ids"][:, depth:])
    return jnp.asarray(mask, jnp.float32)


def objective(params, batch: dict, mtp_lambda: Float[Array, ""], cfg: Config,
              sharding: MeshRules | None = None) -> tuple[Float[Array, ""], dict]:
    """(total loss, aux) for one micro-batch; aux carries the parts and the per-layer expert counts (the
    structure `aux_zeros` builds). `sharding`: the mesh and rules of a sharded step."""
    model = Transformer(cfg.model, cfg.compute, sharding)
    out = model.apply({"params": params}, batch["inputs"], positions=batch.get("positions"),
                      segment_ids=batch.get("segment_ids"), with_mtp=True)
    head = params["lm_head"]
    shards = 1 if sharding is None else sharding.batch_shards
    main = head_cross_entropy(out["hidden"], head, batch["targets"], target_mask(batch), shards)
    mtp_losses = [head_cross_entropy(h, head, batch["targets"][:, k:], target_mask(batch, k), shards)
                  for k, h in enumerate(out["mtp_hidden"], start=1)]
    mtp = jnp.mean(jnp.stack(mtp_losses)) if mtp_losses else jnp.zeros(())
    balance = jnp.zeros(())
    if out["moe"]:
        balance += out["moe"]["balance_loss"].sum()
    for stats in out["mtp_moe"]:
        balance += stats["balance_loss"]
    total = main + mtp_lambda * mtp + cfg.train.balance_alpha * balance
    counts = {"moe_layers": out["moe"].get("expert_counts")} if out["moe"] else {}
    for k, stats in enumerate(out["mtp_moe"]):
        counts[f"mtp_{k}"] = stats["expert_counts"]
    return total, {"loss": main, "mtp_loss": mtp, "balance_loss": balance, "expert_counts": counts}


def aux_zeros(cfg: Config) -> dict:
    """Zeros in the structure of `objective`'s aux: the accumulator the train step starts from, built from
    the config instead of tracing the model once more for its shapes."""
    mc = cfg.model
    e = mc.n_routed_experts
    counts = {"moe_layers": jnp.zeros((mc.num_moe_layers, e), jnp.int32)} if mc.num_moe_layers else {}
    for k in range(mc.num_mtp_layers):
        counts[f"mtp_{k}"] = jnp.zeros((e,), jnp.int32)
    scalar = jnp.zeros((), jnp.float32)
    return {"loss": scalar, "mtp_loss": scalar, "balance_loss": scalar, "expert_counts": counts}
