"""Backend selection and its errors, and the interpret-mode poisoning the kernel tests rely on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl

from pallas_kernels.backend import KernelChoice, resolve


def test_reference_is_always_available():
    assert resolve("attention", "xla") == KernelChoice(use_pallas=False)
    assert resolve("fp8_matmul", "reference", plat="cpu") == KernelChoice(use_pallas=False)


def test_pallas_on_cpu_needs_interpret_mode_and_says_so():
    with pytest.raises(ValueError, match=r"attention_impl='pallas' needs a GPU or TPU, or interpret mode; "
                                         r"backend 'cpu'.*interpret=True"):
        resolve("attention", "pallas", plat="cpu")
    assert resolve("attention", "pallas", interpret=True, plat="cpu") == KernelChoice(True, True, "triton")


def test_auto_picks_the_native_kernel_or_falls_back():
    assert resolve("attention", "auto", plat="cpu") == KernelChoice(use_pallas=False)
    assert resolve("attention", "auto", plat="tpu") == KernelChoice(True, False, "mosaic")
    assert resolve("attention", "pallas", plat="gpu") == KernelChoice(True, False, "triton")
    assert resolve("fp8_matmul", "auto", interpret=True, plat="cpu") == KernelChoice(True, True, "triton")


def test_unknown_requests_are_named():
    with pytest.raises(ValueError, match="attention_impl='flash'"):
        resolve("attention", "flash")
    with pytest.raises(ValueError, match="unknown kernel kind"):
        resolve("softmax", "pallas")


def test_interpret_mode_poisons_outputs_so_unwritten_elements_show():
    """The kernel tests assert finite outputs; that catches unwritten elements only because interpret mode fills
    fresh outputs with NaN. If a JAX upgrade changes that, this fails and the tests need explicit poisoning."""

    def half_writer(o_ref):
        @pl.when(pl.program_id(0) == 0)
        def _():
            o_ref[...] = jnp.ones(o_ref.shape, o_ref.dtype)

    out = pl.pallas_call(half_writer, grid=(2,), out_specs=pl.BlockSpec((8, 128), lambda i: (i, 0)),
                         out_shape=jax.ShapeDtypeStruct((16, 128), jnp.float32), interpret=True)()
    out = np.asarray(out)
    assert np.all(out[:8] == 1) and np.all(np.isnan(out[8:]))
