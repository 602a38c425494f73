"""Pallas kernels (FP8 block-scaled matmul, latent attention) with pure-jnp references.

- `quant`: FP8 (E4M3) block and tile quantisation, shared by checkpoint loading and the kernels.
- `fp8_matmul` (+ `fp8_matmul_ref`): DeepGEMM-style GEMM with 1×128 activation tiles and 128×128 weight blocks,
  trainable (FP8 dgrad and wgrad).
- `latent_attention` (+ `latent_attention_ref`): MLA flash attention for training/prefill and absorbed paged decode.
- `backend`: which implementation runs on which backend, with clear errors.
The package imports no submodule itself, so checkpoint code can use `pallas_kernels.quant` without loading Pallas.
"""
