"""Token selection: greedy, temperature, top-k, top-p, each row with its own settings and seed.

Randomness is a pure function of (seed, stream, position, purpose), never of the batch a request shares, so a
request gives the same tokens alone or among others. Draws use the Gumbel-max trick, which is exact
categorical sampling (DeepSeek's generate.py does the same with exponential noise, reference §6.4).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.arrays import HostOrDevice

# What a random draw is for; separate streams so speculative decoding never reuses a draw.
SAMPLE, DRAFT, ACCEPT, RESIDUAL = 0, 1, 2, 3
MAX_TEMPERATURE = 2.0


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """temperature 0 is greedy; top_k 0 keeps every token; top_p 1 keeps every token."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature={self.temperature} must lie in [0, {MAX_TEMPERATURE}]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 keeps every token)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0




@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RowSampling:
    """Per-row settings on device: temperature [B] (0 = greedy), top_k [B], top_p [B], seed [B], stream [B]."""

    temperature: Float[HostOrDevice, " B"]
    top_k: Int[HostOrDevice, " B"]
    top_p: Float[HostOrDevice, " B"]
    seed: Int[HostOrDevice, " B"]
    stream: Int[HostOrDevice, " B"]


def nucleus_size(probs: Float[Array, "B V"], top_p: Float[HostOrDevice, " B"]) -> Int[Array, " B"]:
    """How many of the sorted (descending) tokens the top-p nucleus holds: a token stays when the mass
    strictly before it is below top_p, so the most likely one always stays.

    An fp32 running sum from the top loses the tail: over 129K tokens it reaches 1.0 while tens of thousands of
    tokens remain, so a nucleus near 1 would drop them. Each row compares the smaller of the two masses
    instead, each summed from its own small end: the mass before a token for top_p <= 1/2, the mass from it
    to the end of the tail (before < p  <=>  from > (1 - p) · total) above. 1 - p is exact in fp32 there.
    """
    p = top_p[:, None]
    total = jnp.sum(probs, axis=-1, keepdims=True)
    before = jnp.cumsum(probs, axis=-1) - probs
    from_here = jax.lax.cumsum(probs, axis=probs.ndim - 1, reverse=True)
    stays = jnp.where(p <= 0.5, before < p * total, from_here > (1.0 - p) * total)
    return jnp.maximum(jnp.sum(stays, axis=-1), 1)


def filtered_logits(logits: Float[Array, "B V"], s: RowSampling) -> Float[Array, "B V"]:
    """logits / temperature with tokens outside the top-k and the top-p nucleus set to -inf."""
    vocab = logits.shape[-1]
    z = logits.astype(jnp.float32) / jnp.where(s.temperature > 0, s.temperature, 1.0)[:, None]
    desc = -jnp.sort(-z, axis=-1)
    kth = jnp.take_along_axis(desc, jnp.clip(s.top_k - 1, 0, vocab - 1)[:, None], axis=-1)
    kth = jnp.where(s.top_k[:, None] > 0, kth, -jnp.inf)
    desc = jnp.where(desc >= kth, desc, -jnp.inf)
    # top_p = 1 keeps every token, also those whose probability underflows to 0.
    kept = jnp.where(s.top_p >= 1.0, vocab, nucleus_size(jax.nn.softmax(desc, axis=-1), s.top_p))
    cutoff = jnp.take_along_axis(desc, (kept - 1)[:, None], axis=-1)
    return jnp.where((z >= kth) & (z >= cutoff), z, -jnp.inf)


def distribution(logits: Float[Array, "B V"], s: RowSampling) -> Float[Array, "B V"]:
    """The distribution a row samples from: one-hot on the argmax for greedy rows."""
    greedy = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    sampled = jax.nn.softmax(filtered_logits(logits, s), axis=-1)
    return jnp.where((s.temperature > 0)[:, None], sampled, greedy)


def row_keys(s: RowSampling, positions: Int[Array, " B"], purpose: int) -> Array:
    def key(seed, stream, position):
        k = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), stream), position)
        return jax.random.fold_in(k, purpose)

    return jax.vmap(key)(s.seed, s.stream, positions)


def draw(probs: Float[Array, "B V"], keys: Array) -> Int[Array, " B"]:
    """One token per row from `probs` (rows may be one-hot); zero-probability tokens are never drawn."""
    gumbel = jax.vmap(lambda k: jax.random.gumbel(k, probs.shape[-1:], jnp.float32))(keys)
    return jnp.argmax(jnp.where(probs > 0, jnp.log(probs) + gumbel, -jnp.inf), axis=-1).astype(jnp.int32)


def uniform(keys: Array) -> Float[Array, " B"]:
    return jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)


def sample(logits: Float[Array, "B V"], s: RowSampling, positions: Int[Array, " B"]
           ) -> tuple[Int[Array, " B"], Float[Array, " B"]]:
    """The token at `positions` for each row, and its log-probability under the distribution it was drawn from:
    logits / temperature after top-k and top-p for a sampling row (what a policy-gradient trainer recomputes
    with the same temperature), the model's own log-softmax for a greedy row. The sort and the draws run only
    when some row samples (a runtime branch, so greedy and sampling batches share one compiled step)."""
    z = logits.astype(jnp.float32)
    greedy = jnp.argmax(z, axis=-1).astype(jnp.int32)

    def logprob(scores, tokens):
        return jnp.take_along_axis(jax.nn.log_softmax(scores, axis=-1), tokens[:, None], axis=-1)[:, 0]

    def drawn(_):
        filtered = filtered_logits(z, s)
        tokens = draw(jax.nn.softmax(filtered, axis=-1), row_keys(s, positions, SAMPLE))
        hot = s.temperature > 0
        tokens = jnp.where(hot, tokens, greedy)
        return tokens, logprob(jnp.where(hot[:, None], filtered, z), tokens)

    return jax.lax.cond(jnp.any(s.temperature > 0), drawn, lambda _: (greedy, logprob(z, greedy)), None)
