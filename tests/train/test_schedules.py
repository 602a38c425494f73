"""DeepSeek's schedules (reference §8) at chosen token counts of the v3_671b plan, and their shape at CPU scale."""

import numpy as np
import pytest

import eva_jax
from eva_jax.train import schedules


@pytest.fixture(scope="module")
def v3_plan():
    return schedules.plan(eva_jax.load_config("v3_671b"))


def at(plan, tokens: float, field: str):
    return getattr(plan, field)[np.searchsorted(plan.tokens_before, tokens)]


def test_run_is_14_8t_tokens(v3_plan):
    assert v3_plan.total_tokens == pytest.approx(14.8e12, rel=2e-3)


def test_batch_ramps_3072_to_15360_over_469b_tokens(v3_plan):
    assert v3_plan.batch[0] == 3072
    assert 8000 < at(v3_plan, 230e9, "batch") < 10000  # about half-way through the ramp
    assert at(v3_plan, 500e9, "batch") == 15360
    assert (np.diff(v3_plan.batch) >= 0).all()


@pytest.mark.parametrize("tokens, lr", [
    (1e12, 2.2e-4), (9.9e12, 2.2e-4),  # constant after warm-up until 10T
    (12.15e12, (2.2e-4 + 2.2e-5) / 2),  # half-way down the cosine (10T -> 14.3T)
    (14.45e12, 2.2e-5),  # 333B at 2.2e-5
    (14.75e12, 7.3e-6),  # the last 167B
])
def test_learning_rate_phases(v3_plan, tokens, lr):
    assert at(v3_plan, tokens, "lr") == pytest.approx(lr, rel=0.02)


def test_warmup_is_linear_in_tokens_and_lasts_about_2k_steps(v3_plan):
    lr, after = v3_plan.lr, v3_plan.tokens_before + v3_plan.batch * 4096
    assert lr[0] == pytest.approx(2.2e-4 * after[0] / (0.00182 * v3_plan.total_tokens), rel=1e-3)
    assert lr[999] == pytest.approx(lr[0] * after[999] / after[0], rel=1e-3)
    first_peak = int(np.argmax(lr >= 2.2e-4 * 0.9999))
    assert 1950 <= first_peak <= 2050


def test_mtp_weight_and_bias_speed(v3_plan):
    assert at(v3_plan, 9.9e12, "mtp_lambda") == pytest.approx(0.3)
    assert at(v3_plan, 10.1e12, "mtp_lambda") == pytest.approx(0.1)
    assert at(v3_plan, 14.2e12, "gamma") == pytest.approx(0.001)
    assert at(v3_plan, 14.4e12, "gamma") == 0.0


def test_small_run_has_the_same_shape():
    plan = schedules.plan(eva_jax.load_config("v3_small"))
    assert plan.batch[0] == 4 and plan.batch[-1] == 8
    peak = plan.lr.max()
    assert plan.lr[0] < peak and plan.lr[-1] == pytest.approx(3.3e-5)
    assert sorted(set(plan.mtp_lambda.round(3).tolist())) == pytest.approx([0.1, 0.3])


def test_bias_update_can_be_switched_off():
    plan = schedules.plan(eva_jax.load_config("v3_small", **{"train.bias_update": False}))
    assert not plan.gamma.any()
