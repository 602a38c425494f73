"""The chunked head cross-entropy equals cross_entropy of the full logits: loss and gradients, several chunks
with a padded last one, a mask with holes, and inside a larger differentiated expression."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eva_jax.train import head_loss
from eva_jax.train.loss import cross_entropy


def setup(b=3, t=13, d=16, v=40, dtype=jnp.float32):
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    h = jax.random.normal(k[0], (b, t, d)).astype(dtype)
    w = (jax.random.normal(k[1], (d, v)) / 3).astype(dtype)
    targets = jax.random.randint(k[2], (b, t), 0, v)
    mask = (jax.random.uniform(k[3], (b, t)) > 0.3).astype(jnp.float32)
    return h, w, targets, mask


def reference(h, w, targets, mask):
    logits = jnp.einsum("BTD,DV->BTV", h, w.astype(h.dtype), preferred_element_type=jnp.float32)
    return cross_entropy(logits, targets, mask)


@pytest.mark.parametrize("chunk_logits", [3 * 2 * 40, 1 << 22])  # chunks of 2 along T (7, last padded), one chunk
def test_loss_and_gradients_equal_the_full_logits_form(monkeypatch, chunk_logits):
    monkeypatch.setattr(head_loss, "CHUNK_LOGITS", chunk_logits)
    h, w, targets, mask = setup()

    def outer(fn):  # the loss inside a larger expression, so the cotangent is not 1
        return lambda h, w: 3.0 * fn(jnp.tanh(h), w, targets, mask) ** 2

    ours = jax.value_and_grad(outer(head_loss.head_cross_entropy), argnums=(0, 1))(h, w)
    want = jax.value_and_grad(outer(reference), argnums=(0, 1))(h, w)
    np.testing.assert_allclose(ours[0], want[0], rtol=1e-6)
    for got, exp in zip(ours[1], want[1]):
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.jit(head_loss.head_cross_entropy)(h, w, targets, mask),
                               reference(h, w, targets, mask), rtol=1e-6)


def test_all_masked_is_zero_and_bf16_is_close():
    h, w, targets, mask = setup()
    assert float(head_loss.head_cross_entropy(h, w, targets, jnp.zeros_like(mask))) == 0.0
    hb, wb = h.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    g = jax.grad(head_loss.head_cross_entropy, argnums=(0, 1))(hb, wb, targets, mask)
    g_ref = jax.grad(reference, argnums=(0, 1))(hb, wb, targets, mask)
    assert g[0].dtype == jnp.bfloat16 and g[1].dtype == jnp.bfloat16
    for got, exp in zip(g, g_ref):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(exp, np.float32), rtol=2e-2, atol=2e-3)


def test_a_batch_sharded_over_the_mesh_stays_sharded():
    """Under a data=8 mesh each device computes the loss of its own rows: the compiled step gathers no hidden
    states, and the values equal the unsharded ones."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    h, w, targets, mask = setup(b=8, t=12)
    # Auto axes, as eva_jax.parallel.mesh makes them.
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rows = NamedSharding(mesh, P("data"))
    # The chunk length is sized by the rows one device holds: 8 ways here.
    fn = jax.jit(jax.value_and_grad(lambda *a: head_loss.head_cross_entropy(*a, batch_shards=8), argnums=(0, 1)))
    args = (jax.device_put(h, rows), jax.device_put(w, NamedSharding(mesh, P())),
            jax.device_put(targets, rows), jax.device_put(mask, rows))
    hlo = fn.lower(*args).compile().as_text()
    loss, (d_h, d_w) = fn(*args)
    assert "all-gather" not in hlo
    want_loss, (want_h, want_w) = jax.value_and_grad(reference, argnums=(0, 1))(h, w, targets, mask)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(d_h, want_h, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_w, want_w, rtol=1e-5, atol=1e-7)
