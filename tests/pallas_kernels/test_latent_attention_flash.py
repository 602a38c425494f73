"""MLA flash attention (interpret mode) against the T×T reference: forward and all five gradients, packed segments,
sequence lengths that are not multiples of the blocks, block_q above and below block_k, V ≠ N + R."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eva_jax.nn.attention import attention_mask, mla_attention
from pallas_kernels.latent_attention import flash_mla
from pallas_kernels.latent_attention_ref import flash_mla_ref
from tests.pallas_kernels.helpers import jit

B, H, N, R, V = 2, 3, 12, 6, 10  # not powers of two: the Triton path pads feature widths


def _inputs(check, t, dtype, segments):
    q_nope, q_rope = check.normal(B, t, H, N), check.normal(B, t, H, R)
    k_nope, k_rope, v = check.normal(B, t, H, N), check.normal(B, t, R), check.normal(B, t, H, V)
    args = [jnp.asarray(a).astype(dtype) for a in (q_nope, q_rope, k_nope, k_rope, v)]
    seg = None
    if segments:  # packed rows: a few documents per row, starting at random places
        seg = jnp.asarray(np.cumsum(check.rng.random((B, t)) < 0.15, axis=1), jnp.int32)
    return args, seg


def test_reference_is_eva_mla_attention_with_a_causal_segment_mask(check):
    args, seg = _inputs(check, 19, jnp.float32, segments=True)
    scale = 0.17
    mask = attention_mask(19, 19, seg, seg)
    ours = jit(flash_mla_ref, static_argnums=6)(*args, seg, scale)
    check.close(ours, jit(mla_attention, static_argnums=6)(*args, mask, scale), 1e-6, "reference vs eva")


@pytest.mark.parametrize("flavour,dtype,t,segments,blocks,tol", [  # blocks: q, k, q backward, k backward
    ("triton", jnp.float32, 37, True, (16, 16, 16, 32), 1e-5),
    ("mosaic", jnp.float32, 20, False, (32, 16, 16, 32), 1e-5),
    ("triton", jnp.bfloat16, 29, True, (16, 32, 32, 16), 2e-2),
])
def test_forward_and_gradients_match_the_reference(check, flavour, dtype, t, segments, blocks, tol):
    args, seg = _inputs(check, t, dtype, segments)
    d_out = jnp.asarray(check.normal(B, t, H, V)).astype(dtype)
    scale = 1.87 / np.sqrt(N + R)  # a YaRN-style corrected scale, passed in as is

    def run(attn):
        @jit
        def go(*a):
            out, vjp = jax.vjp(lambda *x: attn(*x, seg, scale), *a)
            return out, vjp(d_out)
        return go(*args)

    sizes = dict(zip(("block_q", "block_k", "block_q_bwd", "block_k_bwd"), blocks))
    out, grads = run(lambda *x: flash_mla(*x, interpret=True, flavour=flavour, **sizes))
    want_out, want_grads = run(flash_mla_ref)
    assert out.dtype == dtype
    what = f"{flavour}/{jnp.dtype(dtype).name}/T={t}"
    check.close(out.astype(jnp.float32), want_out.astype(jnp.float32), tol, f"{what} output")
    for name, g, w in zip(("dq_nope", "dq_rope", "dk_nope", "dk_rope", "dv"), grads, want_grads):
        assert g.dtype == dtype and g.shape == w.shape
        check.close(g.astype(jnp.float32), w.astype(jnp.float32), tol, f"{what} {name}")


def test_mismatched_key_length_is_refused():
    q = jnp.zeros((1, 8, 2, 4))
    with pytest.raises(ValueError, match="S = T"):
        flash_mla(q, q[..., :2], jnp.zeros((1, 9, 2, 4)), jnp.zeros((1, 9, 2)), jnp.zeros((1, 9, 2, 4)), None, 1.0,
                  interpret=True)
