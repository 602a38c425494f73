"""The functions the model and the engine call inside jitted steps compute the same with and without jit
(chex.variants): routing, the loss head, the paged cache and sampling. Each also checks its result against a
plain statement of what it must be, so the two variants cannot agree on something wrong."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

import eva_jax
from eva_jax.infer.sampling import RowSampling, sample
from eva_jax.nn import kv_cache
from eva_jax.nn.router import route
from eva_jax.train.head_loss import head_cross_entropy

MODEL = eva_jax.load_config("v3_tiny").model


class JitInvarianceTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_route_picks_the_top_k_of_the_allowed_groups(self):
        logits = jax.random.normal(jax.random.PRNGKey(0), (16, MODEL.n_routed_experts))
        bias = jnp.linspace(-0.5, 0.5, MODEL.n_routed_experts)
        routing = self.variant(lambda x, b: route(x, b, MODEL))(logits, bias)
        chex.assert_shape(routing.experts, (16, MODEL.num_experts_per_tok))
        chex.assert_shape(routing.weights, (16, MODEL.num_experts_per_tok))
        # Normalised weights times the scaling factor; every pick inside the topk_group best groups.
        np.testing.assert_allclose(routing.weights.sum(-1), MODEL.routed_scaling_factor, rtol=1e-6)
        groups = np.asarray(routing.experts) // (MODEL.n_routed_experts // MODEL.n_group)
        assert all(len(set(row)) <= MODEL.topk_group for row in groups)

    @chex.variants(with_jit=True, without_jit=True)
    def test_head_cross_entropy_is_the_masked_mean_nll(self):
        k = jax.random.split(jax.random.PRNGKey(1), 3)
        h = jax.random.normal(k[0], (2, 7, 16))
        w = jax.random.normal(k[1], (16, 40)) * 0.3
        targets = jax.random.randint(k[2], (2, 7), 0, 40)
        mask = jnp.ones((2, 7)).at[1, 4:].set(0.0)
        loss, grads = self.variant(jax.value_and_grad(head_cross_entropy, argnums=(0, 1)))(h, w, targets, mask)

        def plain(h, w):
            logp = jax.nn.log_softmax(h @ w, axis=-1)
            nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
            return (nll * mask).sum() / mask.sum()

        chex.assert_trees_all_close((loss, grads), jax.value_and_grad(plain, argnums=(0, 1))(h, w),
                                    rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_paged_cache_write_then_read_returns_the_entries_in_order(self):
        pages = kv_cache.Pages(jnp.full((5, 4, 3), jnp.nan), jnp.full((5, 4, 2), jnp.nan))
        table = jnp.array([[3, 1], [2, 4]], jnp.int32)
        latent = jnp.arange(2 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 3)
        rope = -jnp.arange(2 * 6 * 2, dtype=jnp.float32).reshape(2, 6, 2)
        positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
        valid = jnp.array([[True] * 6, [True] * 5 + [False]])

        def write_read(pages, latent, rope):
            stored = kv_cache.write(pages, latent, rope, positions, valid, table)
            return kv_cache.read(stored, table, jnp.array([6, 5]))

        got_latent, got_rope = self.variant(write_read)(pages, latent, rope)
        chex.assert_shape(got_latent, (2, 8, 3))
        want_latent = jnp.zeros((2, 8, 3)).at[0, :6].set(latent[0]).at[1, :5].set(latent[1, :5])
        want_rope = jnp.zeros((2, 8, 2)).at[0, :6].set(rope[0]).at[1, :5].set(rope[1, :5])
        chex.assert_trees_all_equal((got_latent, got_rope), (want_latent, want_rope))

    @chex.variants(with_jit=True, without_jit=True)
    def test_sampling_is_greedy_at_temperature_0_and_top_k_1(self):
        logits = jax.random.normal(jax.random.PRNGKey(2), (4, 50))
        rows = RowSampling(temperature=np.array([0.0, 1.0, 1.0, 0.7], np.float32),
                           top_k=np.array([0, 1, 0, 0], np.int32), top_p=np.array([1.0, 1.0, 1e-6, 1.0], np.float32),
                           seed=np.arange(4, dtype=np.int32), stream=np.zeros(4, np.int32))
        draw = self.variant(sample)
        tokens, logprobs = draw(logits, rows, jnp.arange(4, dtype=jnp.int32))
        chex.assert_shape(tokens, (4,))
        best = np.asarray(jnp.argmax(logits, -1))
        np.testing.assert_array_equal(np.asarray(tokens)[:3], best[:3])  # greedy, top_k 1, a tiny nucleus
        # greedy: the model's own log-softmax; one token left by the filters: probability 1
        np.testing.assert_allclose(float(logprobs[0]), float(jax.nn.log_softmax(logits[0])[best[0]]), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(logprobs)[1:3], 0.0, atol=1e-6)
        again, _ = draw(logits, rows, jnp.arange(4, dtype=jnp.int32))
        chex.assert_trees_all_equal(tokens, again)  # the draw is a function of (seed, stream, position)
