"""The kernels lower for the accelerators they target, at DeepSeek-V3 shapes, without the hardware.

Cross-platform lowering runs the Pallas → Triton IR (CUDA) and Pallas → Mosaic (TPU) passes on this CPU machine,
so unsupported primitives, bad block shapes and non-power-of-two Triton tensors fail here. It stops short of the
backend compilers (PTX, Mosaic layout passes), which only the benchmark on real hardware exercises.
"""

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.fp8_matmul import fp8_matmul
from pallas_kernels.latent_attention import flash_mla, mla_decode

TARGETS = [("triton", "cuda", "__gpu$xla.gpu.triton"), ("mosaic", "tpu", "tpu_custom_call")]
bf16 = jnp.bfloat16


def _lower(platform: str, fn, *shapes) -> str:
    args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
    return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("flavour,platform,target", TARGETS)
def test_fp8_matmul_and_its_gradients_lower(flavour, platform, target):
    def loss(x, w):
        return fp8_matmul(x, w, interpret=False, flavour=flavour).astype(jnp.float32).sum()

    text = _lower(platform, jax.grad(loss, (0, 1)), ((512, 7168), bf16), ((7168, 2048), jnp.float32))
    assert text.count(target) >= 3  # forward, dgrad, wgrad


@pytest.mark.parametrize("flavour,platform,target", TARGETS)
def test_flash_mla_and_its_gradients_lower(flavour, platform, target):
    b, t, h = 1, 4096, 16

    def loss(*a):
        return flash_mla(*a[:5], a[5], 0.135, interpret=False, flavour=flavour).astype(jnp.float32).sum()

    shapes = [((b, t, h, 128), bf16), ((b, t, h, 64), bf16), ((b, t, h, 128), bf16), ((b, t, 64), bf16),
              ((b, t, h, 128), bf16), ((b, t), jnp.int32)]
    text = _lower(platform, jax.grad(loss, tuple(range(5))), *shapes)
    assert text.count(target) >= 3  # forward, dK/dV, dQ


@pytest.mark.parametrize("flavour,platform,target", TARGETS)
def test_paged_decode_lowers(flavour, platform, target):
    b, t, h, pages, page = 2, 2, 128, 64, 64

    def decode(*a):
        return mla_decode(*a, 0.135, interpret=False, flavour=flavour, num_splits=4)

    shapes = [((b, t, h, 512), bf16), ((b, t, h, 64), bf16), ((b * pages, page, 512), bf16),
              ((b * pages, page, 64), bf16), ((b, pages), jnp.int32), ((b,), jnp.int32)]
    assert target in _lower(platform, decode, *shapes)
