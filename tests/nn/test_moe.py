"""The dropless grouped matmul: ragged, padded and tiled layouts equal the dense one-hot reference, values and grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.nn import grouped
from eva_jax.nn.moe import routed_experts
from eva_jax.nn.router import route
from tests.nn.moe_reference import dense_moe


def setup(n=40, d=16, f=8, seed=0, skew=0.0):
    m = eva_jax.load_config("v3_tiny").model
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    e = m.n_routed_experts
    x = jax.random.normal(keys[0], (n, d))
    logits = jax.random.normal(keys[1], (n, e)) + skew * jnp.arange(e)  # skew piles tokens onto few experts
    r = route(logits, None, m)
    ws = [jax.random.normal(k, s) / 4 for k, s in zip(keys[2:], [(e, d, f), (e, d, f), (e, f, d)])]
    return x, r, ws


@pytest.mark.parametrize("impl", ["ragged", "padded", "tiled", "slab"])
@pytest.mark.parametrize("skew", [0.0, 5.0])
def test_grouped_equals_dense_reference(impl, skew):
    x, r, (wg, wu, wd) = setup(skew=skew)
    ours = routed_experts(x, r, wg, wu, wd, impl, layout="grouped")
    np.testing.assert_allclose(ours, dense_moe(x, r.weights, r.experts, wg, wu, wd), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["ragged", "padded", "tiled", "slab"])
def test_grouped_gradients_equal_dense_reference(impl):
    x, r, ws = setup(n=24)

    def loss(fn, x, ws):
        return (fn(x, ws) ** 2).sum()

    ours = jax.grad(loss, argnums=(1, 2))(lambda x, w: routed_experts(x, r, *w, impl, layout="grouped"), x, ws)
    want = jax.grad(loss, argnums=(1, 2))(lambda x, w: dense_moe(x, r.weights, r.experts, *w), x, ws)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_padded_layout_keeps_every_assignment():
    x, r, _ = setup(n=33, skew=5.0)
    layout = grouped.plan(r.experts, 8, "padded")
    rows = np.asarray(layout.slot_row).ravel()
    assert len(set(rows)) == rows.size  # no two assignments share a row: nothing dropped or merged
    assert np.asarray(layout.row_valid)[rows].all()
    np.testing.assert_array_equal(np.asarray(layout.row_token)[np.asarray(layout.slot_row)],
                                  np.broadcast_to(np.arange(33)[:, None], r.experts.shape))
    tile_experts = np.asarray(layout.tile_expert)[rows // layout.tile]
    np.testing.assert_array_equal(tile_experts, np.asarray(r.experts).ravel())


@pytest.mark.parametrize("impl", ["ragged", "padded", "tiled", "slab"])
def test_null_expert_rows_are_zero_and_skipped(impl):
    """Expert parallelism's padding: choices of expert E (one past the weights) come out zero, the rest are
    the plain grouped matmul, forward and backward; "tiled" computes no tile past the real experts."""
    x, r, (wg, _, _) = setup(n=30)
    e = wg.shape[0]
    experts = jnp.where(jnp.arange(30)[:, None] % 3 == 0, e, r.experts)  # a third of the tokens are padding
    layout = grouped.plan(experts, e + 1, impl, null_expert=True)

    def f(x, w):
        return grouped.grouped_matmul(grouped.gather_rows(x, layout), w, layout)

    out = f(x, wg)
    picked = np.asarray(out)[np.asarray(layout.slot_row)]  # [N, K, F]
    null = np.asarray(experts) == e
    assert np.all(picked[null] == 0)
    want = np.einsum("nd,nkdf->nkf", np.asarray(x), np.asarray(wg)[np.minimum(np.asarray(experts), e - 1)])
    np.testing.assert_allclose(picked[~null], want[~null], rtol=1e-5, atol=1e-6)
    if impl != "ragged":
        real_rows = int(np.asarray(layout.used_tiles)) * layout.tile
        assert layout.looped == (impl in ("tiled", "slab"))  # expert parallelism's "slab" is the tile loop
        assert real_rows < out.shape[0] and np.asarray(layout.row_valid)[real_rows:].sum() == 0
    d_x, d_w = jax.grad(lambda x, w: (f(x, w) ** 2).sum(), argnums=(0, 1))(x, wg)
    keep = jnp.asarray(~null, jnp.float32)[..., None]
    ref = lambda x, w: (jnp.einsum("nd,nkdf->nkf", x, w[jnp.minimum(experts, e - 1)]) ** 2 * keep).sum()  # noqa: E731
    for got, want in zip((d_x, d_w), jax.grad(ref, argnums=(0, 1))(x, wg)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unknown_impl_is_named():
    _, r, _ = setup()
    with pytest.raises(ValueError, match="compute.moe_impl='fast'"):
        grouped.plan(r.experts, 8, "fast")
