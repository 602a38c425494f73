"""Latent (MLA) attention kernels: the public entry points.

- `flash_mla`: training / prefill flash attention for MLA shapes (latent_attention_flash.py).
- `mla_decode`: absorbed decode over a paged latent cache, split over the key axis (latent_attention_decode.py).
Their pure-jnp references are in latent_attention_ref.py; `pallas_kernels.backend.resolve` picks one or the other.
"""

from pallas_kernels.latent_attention_decode import mla_decode
from pallas_kernels.latent_attention_flash import flash_mla

__all__ = ["flash_mla", "mla_decode"]
