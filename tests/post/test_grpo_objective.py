"""GRPO's objective against a NumPy reference of DeepSeekMath eq. 3: advantages normalised per group (zero for a
group of equal rewards), k3 ≥ 0 and 0 at the reference, the clipped surrogate's value and gradient (zero for
clipped tokens), and — through the model — with μ = 1 and β = 0 the gradient is that of mean_i 1/|o_i| Σ_t Â_i log π."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eva_jax.overrides import apply_overrides
from eva_jax.post.grpo_loss import STD_FLOOR, group_advantages, grpo_loss, k3, token_logprobs, token_objective


def reference_objective(logp, old, ref, adv, mask, w, eps, beta):
    """DeepSeekMath eq. 3, token by token, in float64 loops."""
    total = 0.0
    for i in range(logp.shape[0]):
        terms = []
        for t in range(logp.shape[1]):
            if not mask[i, t]:
                continue
            ratio = np.exp(logp[i, t] - old[i, t])
            surrogate = min(ratio * adv[i], np.clip(ratio, 1 - eps, 1 + eps) * adv[i])
            kl = np.exp(ref[i, t] - logp[i, t]) - (ref[i, t] - logp[i, t]) - 1
            terms.append(w[i, t] * surrogate - beta * kl)
        total += np.sum(terms) / max(len(terms), 1)
    return -total / logp.shape[0]


def random_case(seed, b=6, t=9):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.1, 3.0, (b, t)).astype(np.float32)
    old = (logp + rng.normal(0, 0.3, (b, t))).astype(np.float32)
    ref = (logp + rng.normal(0, 0.5, (b, t))).astype(np.float32)
    adv = rng.normal(0, 1, b).astype(np.float32)
    mask = (rng.uniform(size=(b, t)) < 0.7).astype(np.float32)
    mask[:, 0] = 1.0
    w = rng.uniform(0.5, 1.5, (b, t)).astype(np.float32)
    return logp, old, ref, adv, mask, w


def test_advantages_are_normalised_per_group_and_zero_for_equal_rewards():
    rewards = np.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [3.0, 1.0, 2.0, 0.0]])
    adv = group_advantages(rewards)
    for row, a in zip(rewards, adv):
        np.testing.assert_allclose(a, (row - row.mean()) / (row.std() + STD_FLOOR), rtol=1e-6)
    assert np.all(adv[1] == 0.0)
    np.testing.assert_allclose(adv.mean(axis=1), 0.0, atol=1e-6)


def test_k3_is_non_negative_and_zero_at_the_reference():
    rng = np.random.default_rng(0)
    logp, ref = -rng.uniform(0, 5, (4, 50)), -rng.uniform(0, 5, (4, 50))
    kl = np.asarray(k3(jnp.asarray(logp), ref))
    assert np.all(kl >= 0.0) and kl.max() > 0.1
    assert np.all(np.asarray(k3(jnp.asarray(logp), logp)) == 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_equals_the_reference(seed):
    logp, old, ref, adv, mask, w = random_case(seed)
    loss, metrics = token_objective(jnp.asarray(logp), old, ref, adv, mask, w, 0.2, 0.04)
    np.testing.assert_allclose(float(loss), reference_objective(logp, old, ref, adv, mask, w, 0.2, 0.04),
                               rtol=1e-5)
    ratio = np.exp(logp - old)
    clipped = ((adv[:, None] > 0) & (ratio > 1.2)) | ((adv[:, None] < 0) & (ratio < 0.8))
    np.testing.assert_allclose(float(metrics["clip_fraction"]), (clipped * mask).sum() / mask.sum(), rtol=1e-6)


def test_clipped_tokens_get_zero_gradient_and_the_rest_the_ratio_times_advantage():
    logp, old, ref, adv, mask, w = random_case(3)
    eps = 0.2
    grad = np.asarray(jax.grad(lambda lp: token_objective(lp, old, ref, adv, mask, w, eps, 0.0)[0])(
        jnp.asarray(logp)))
    ratio = np.exp(logp - old)
    a = adv[:, None]
    clipped = ((a > 0) & (ratio > 1 + eps)) | ((a < 0) & (ratio < 1 - eps))
    assert clipped.sum() > 3 and (~clipped & (mask > 0)).sum() > 3
    expected = -w * ratio * a * mask / mask.sum(axis=1, keepdims=True) / logp.shape[0]
    np.testing.assert_allclose(grad, np.where(clipped, 0.0, expected), rtol=1e-5, atol=1e-9)
    assert np.all(grad[clipped] == 0.0)


def test_with_one_inner_step_the_model_gradient_is_advantage_times_grad_log_prob(tiny_model):
    cfg, params = tiny_model
    params = jax.jit(lambda p: p)(params)
    cfg = apply_overrides(cfg, {"grpo.kl_beta": 0.0})
    rng = np.random.default_rng(0)
    b, t = 4, 12
    inputs = rng.integers(0, cfg.model.vocab_size, (b, t)).astype(np.int32)
    targets = rng.integers(0, cfg.model.vocab_size, (b, t)).astype(np.int32)
    mask = np.zeros((b, t), np.float32)
    mask[:, 5:] = 1.0
    mask[0, 9:] = 0.0
    adv = np.array([1.0, -0.5, 2.0, -1.5], np.float32)
    old = np.asarray(token_logprobs(params, inputs, targets, cfg)[0])
    micro = {"inputs": inputs, "targets": targets, "mask": mask, "advantages": adv, "old_logp": old,
             "ref_logp": old, "weights": np.ones((b, t), np.float32)}
    got = jax.grad(lambda p: grpo_loss(p, micro, cfg)[0])(params)

    def policy_gradient_surrogate(p):
        logp = token_logprobs(p, inputs, targets, cfg)[0]
        return -jnp.mean((adv[:, None] * logp * mask).sum(axis=1) / mask.sum(axis=1))

    want = jax.grad(policy_gradient_surrogate)(params)
    flat_got, flat_want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    scale = max(float(jnp.abs(x).max()) for x in flat_want)
    assert scale > 0
    for g, w in zip(flat_got, flat_want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6 * scale, rtol=1e-5)
