"""model.attention_impl="pallas" in generation (interpret mode on CPU): prefill through the flash kernel, decode
and speculative verification through the paged decode kernel, token-identical to the XLA forms.

The engine runs five requests of different lengths in four slots, so one joins when another leaves and reuses
its pages (stale latents past its length, which the kernel must not see)."""

import dataclasses

import pytest

import eva_jax
from eva_jax.infer.batching import Engine
from tests.infer.conftest import ENGINE, MAIN, ragged_prompts, random_params

# MAIN's model with two MTP depths: verification feeds D + 1 = 3 tokens a row, MTP windows 2D + 1 = 5.
MODEL = {**MAIN, "model.num_mtp_layers": 2}
PALLAS = {"model.attention_impl": "pallas", "model.kernel_interpret": True}
LENGTHS, MAX_TOKENS = (5, 17, 9, 3, 11), (3, 4, 5, 3, 4)


@pytest.fixture(scope="module")
def model():
    cfg = eva_jax.load_config("v3_tiny", **MODEL)
    return cfg, random_params(cfg, 3)


def serve(cfg, params, speculative: bool) -> tuple[list[list[int]], dict]:
    engine = Engine(cfg, params, dataclasses.replace(ENGINE, speculative=speculative))
    prompts = ragged_prompts(cfg.model.vocab_size, LENGTHS, seed=1)
    requests = [engine.submit(p, n) for p, n in zip(prompts, MAX_TOKENS)]
    engine.run()
    assert engine.pages.free == engine.pages.num_pages
    return [r.output for r in requests], engine.stats()


@pytest.fixture(scope="module")
def kernel_calls():
    """New-token counts T of every decode-kernel trace and the number of flash-kernel traces."""
    import pallas_kernels.latent_attention as kernels

    calls = {"decode": [], "flash": 0}
    decode, flash = kernels.mla_decode, kernels.flash_mla

    def spy_decode(q_latent, *args, **kwargs):
        calls["decode"].append(q_latent.shape[1])
        return decode(q_latent, *args, **kwargs)

    def spy_flash(*args, **kwargs):
        calls["flash"] += 1
        return flash(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "mla_decode", spy_decode)
        patch.setattr(kernels, "flash_mla", spy_flash)
        yield calls


@pytest.fixture(scope="module")
def xla_tokens(model):
    cfg, params = model
    return serve(cfg, params, speculative=False)[0]


def test_pallas_decode_is_token_identical_to_xla(model, xla_tokens, kernel_calls):
    cfg, params = model
    tokens, _ = serve(eva_jax.load_config("v3_tiny", **MODEL, **PALLAS), params, speculative=False)
    assert tokens == xla_tokens and [len(t) for t in tokens] == list(MAX_TOKENS)
    assert set(kernel_calls["decode"]) == {1} and kernel_calls["flash"] > 0


def test_pallas_speculative_verification_is_token_identical_to_xla(model, xla_tokens, kernel_calls):
    """Greedy speculative decoding gives the plain greedy tokens; here every verify (T = 3) and MTP draft
    window (T = 5) attends through the kernel."""
    _, params = model
    tokens, stats = serve(eva_jax.load_config("v3_tiny", **MODEL, **PALLAS), params, speculative=True)
    assert tokens == xla_tokens and "acceptance_rate" in stats
    assert {3, 5} <= set(kernel_calls["decode"])
