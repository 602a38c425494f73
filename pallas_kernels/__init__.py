"""Pallas kernels (FP8 block-scaled matmul, latent attention) with pure-jnp references.

Present now: `quant`, the FP8 block-quantisation helpers shared by checkpoint loading and the kernels.
"""
