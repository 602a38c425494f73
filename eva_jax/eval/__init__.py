"""Evaluation: log-likelihoods and perplexity, GSM8K, multiple choice (MMLU's format), HumanEval.

`python -m eva_jax.eval --checkpoint=DIR --tasks=perplexity,gsm8k,humaneval,mmlu` runs them (see __main__.py);
`eva_jax.eval.loglik.Scorer` is the one scoring path, which the server's `echo`/`logprobs` use as well.
"""
