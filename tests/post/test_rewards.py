"""The reward registry: GSM8K's final-answer convention, the format check, dotted paths, weights, bad specs."""

import pytest

from eva_jax.config import ConfigError
from eva_jax.data.answers import final_answer
from eva_jax.post.rewards import Rewards, exact, format_reward


@pytest.mark.parametrize("text,answer", [
    ("so 3 + 4 = 7.\n#### 7", "7"),
    ("She pays $1,200 in total. #### $1,200.", "1200"),
    ("first 12, then 30, so the answer is 42.", "42"),  # no ####: the last number
    ("#### -3.5", "-3.5"),
    ("  Paris ", "Paris"),  # no number: the stripped text
    ("#### seven", "seven"),
])
def test_final_answer_follows_gsm8k(text, answer):
    assert final_answer(text) == answer


def test_exact_compares_final_answers_of_both_sides():
    gsm8k_answer = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert exact("48 + 24 = 72\n#### 72", gsm8k_answer) == 1.0
    assert exact("the answer is 72", "72") == 1.0
    assert exact("#### 71", gsm8k_answer) == 0.0
    assert format_reward("... #### 12", "") == 1.0 and format_reward("12", "") == 0.0


def test_weighted_combination_and_components():
    rewards = Rewards.parse(["exact:1.0,format:0.25", "tests.post.rewards_for_tests.digits:2"])
    assert rewards.names == ("exact", "format", "tests.post.rewards_for_tests.digits")
    total, parts = rewards.score("#### 12", "12")
    assert parts["exact"] == 1.0 and parts["format"] == 1.0
    assert parts["tests.post.rewards_for_tests.digits"] == pytest.approx(2 / 7)
    assert total == pytest.approx(1.0 + 0.25 + 2 * 2 / 7)
    assert Rewards.parse("exact").spec == "exact:1"


@pytest.mark.parametrize("spec,message", [
    ("exactly", "no such reward"),
    ("nowhere.to.be.found", "cannot import nowhere.to.be"),
    ("tests.post.rewards_for_tests.missing", "has no function missing"),
    ("exact:heavy", "must be a number"),
    ("exact,exact", "twice"),
    ("", "empty"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        Rewards.parse(spec)


def test_a_reward_that_returns_no_number_is_named():
    rewards = Rewards.parse("tests.post.rewards_for_tests.not_a_number")
    with pytest.raises(ValueError, match="not_a_number returned 'high'"):
        rewards.score("x", "y")
