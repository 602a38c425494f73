"""The decode-time attention through the Pallas paged kernel (pallas_kernels.latent_attention_decode), the
alternative to decode.py's XLA absorbed form when model.attention_impl asks for Pallas.

The kernel reads keys only from the cache: a step's new tokens are written to their pages first, and the kernel
then attends over each row's first positions[0] + T cached entries, causally among the T new ones (T = 1 plain
decode, D + 1 speculative verification, 2D + 1 an MTP window). Unlike the XLA form it never gathers a row's
pages into one contiguous copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxtyping import Array, Float, Int

from eva_jax.config import ModelConfig
from eva_jax.infer import cache

if TYPE_CHECKING:
    from pallas_kernels.backend import KernelChoice


def _power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def uses_pallas(cfg: ModelConfig) -> bool:
    """Whether model.attention_impl resolves to a Pallas kernel here (prefill then takes the flash kernel)."""
    from pallas_kernels.backend import resolve

    return resolve("attention", cfg.attention_impl, interpret=cfg.kernel_interpret).use_pallas


def kernel_choice(cfg: ModelConfig, page_size: int) -> KernelChoice | None:
    """The backend's KernelChoice for decode steps, or None for the XLA form.

    "pallas" always takes the kernel (errors that it cannot compile come from the kernel, with the reason);
    "auto" takes it only where it compiles: natively, and on GPU only for power-of-two latent, rope and page
    sizes (Triton's block shapes)."""
    from pallas_kernels.backend import resolve

    choice = resolve("attention", cfg.attention_impl, interpret=cfg.kernel_interpret)
    if not choice.use_pallas:
        return None
    sizes = (cfg.kv_lora_rank, cfg.qk_rope_head_dim, page_size)
    if (cfg.attention_impl == "auto" and not choice.interpret and choice.flavour == "triton"
            and not all(map(_power_of_two, sizes))):
        return None
    return choice


def attend(cfg: ModelConfig, choice: KernelChoice, q_latent_BTHC: Float[Array, "B T H C"],
           q_rope_BTHR: Float[Array, "B T H R"], pages: cache.Pages, positions: Int[Array, "B T"],
           page_table: Int[Array, "B P"]) -> Float[Array, "B T H C"]:
    """softmax over the cached latents of each row (new tokens already written), output in latent space.
    `positions` [B, T] are contiguous per row, so the row's length is its first position plus T."""
    from pallas_kernels.latent_attention import mla_decode

    lengths = positions[:, 0] + q_latent_BTHC.shape[1]
    return mla_decode(q_latent_BTHC, q_rope_BTHR, pages.latent, pages.rope, page_table, lengths, cfg.softmax_scale,
                      interpret=choice.interpret, flavour=choice.flavour)
