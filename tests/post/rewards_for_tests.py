"""Rewards named by dotted path in the GRPO tests (what a user's own reward module looks like)."""


def digits(completion: str, answer: str) -> float:
    """The share of the completion's characters that are digits: a dense reward a random policy already earns
    a little of, so GRPO has something to raise."""
    text = completion.strip()
    return sum(c.isdigit() for c in text) / max(len(text), 1)


def not_a_number(completion: str, answer: str):
    return "high"
