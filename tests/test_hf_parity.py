"""Parity with Hugging Face transformers (DeepseekV3ForCausalLM, MtpModel, DeepseekV2ForCausalLM) on random tiny
models whose weights travel through `eva_jax.from_hf`: max |Δlogit| ≤ 1e-4 · max |logit| in float32."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the hf extra (torch, transformers) is needed for parity tests")

import eva_jax  # noqa: E402
from tests import hf_reference as ref  # noqa: E402

YARN_FULL = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
             "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.8, "mscale_all_dim": 0.6}
YARN_FACTOR_ONLY = {"rope_type": "yarn", "rope_theta": 5000.0, "factor": 8.0, "original_max_position_embeddings": 16}

# Together these cover: rope_interleave true/false, YaRN on/off (and the cos/sin-only form), q_lora_rank null,
# n_group 1 and > 1, first_k_dense_replace 0 and > 0, norm_topk_prob true/false, MTP depths 1 and 2.
V3_VARIANTS = {
    "interleave_yarn_groups_mtp2": dict(rope_interleave=True, rope_parameters=YARN_FULL, num_mtp_layers=2),
    "rotate_half_noq_lora_ungrouped": dict(rope_interleave=False, q_lora_rank=None, n_group=1, topk_group=1,
                                           first_k_dense_replace=0, norm_topk_prob=False),
    "yarn_cos_sin_two_dense": dict(rope_parameters=YARN_FACTOR_ONLY, first_k_dense_replace=2, n_group=2,
                                   topk_group=1, num_mtp_layers=0, num_hidden_layers=4),
}


def assert_close(ours, theirs, rel=1e-4):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    err = np.abs(ours - theirs).max()
    assert err <= rel * np.abs(theirs).max(), f"max |Δ| {err:.3g} vs max |logit| {np.abs(theirs).max():.3g}"


def tokens_for(vocab: int, seed: int, shape=(2, 13)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=shape)


@pytest.fixture(scope="module", params=sorted(V3_VARIANTS))
def v3_case(request, tmp_path_factory):
    overrides = V3_VARIANTS[request.param]
    model, mtp = ref.build_v3(seed=len(request.param), **overrides)
    directory = ref.save_checkpoint(model, mtp, tmp_path_factory.mktemp(request.param))
    cfg, params = eva_jax.from_hf(directory)
    return model, mtp, cfg, params, directory


def test_main_logits_match_transformers(v3_case):
    model, _, cfg, params, _ = v3_case
    tokens = tokens_for(cfg.model.vocab_size, 1)
    assert_close(eva_jax.logits(cfg, params, tokens), ref.hf_logits(model, tokens))


def test_every_mtp_depth_matches_transformers(v3_case):
    model, mtp, cfg, params, _ = v3_case
    if mtp is None:
        assert cfg.model.num_mtp_layers == 0
        return
    tokens = tokens_for(cfg.model.vocab_size, 2)
    ours = eva_jax.mtp_logits(cfg, params, tokens)
    theirs = ref.hf_mtp_logits(model, mtp, tokens)
    assert len(ours) == len(theirs) == cfg.model.num_mtp_layers
    for depth, (a, b) in enumerate(zip(ours, theirs), start=1):
        assert a.shape == (2, 13 - depth, cfg.model.vocab_size)
        assert_close(a, b)


def test_export_reloads_in_transformers(v3_case, tmp_path):
    from transformers import DeepseekV3ForCausalLM

    model, _, cfg, params, _ = v3_case
    eva_jax.to_hf(cfg, params, tmp_path / "export", dtype="float32")
    reloaded = DeepseekV3ForCausalLM.from_pretrained(tmp_path / "export", attn_implementation="eager",
                                                     experts_implementation="eager").eval()
    tokens = tokens_for(cfg.model.vocab_size, 3)
    assert_close(ref.hf_logits(reloaded, tokens), ref.hf_logits(model, tokens), rel=1e-6)


@pytest.mark.parametrize("topk_method", ["greedy", "group_limited_greedy"])
def test_deepseek_v2_matches_transformers(topk_method, tmp_path):
    groups = dict(n_group=4, topk_group=2) if topk_method == "group_limited_greedy" else {}
    model = ref.build_v2(seed=5, topk_method=topk_method, **groups)
    model.save_pretrained(tmp_path)
    cfg, params = eva_jax.from_hf(tmp_path)
    assert cfg.model.scoring_func == "softmax" and cfg.model.q_lora_rank is None
    tokens = tokens_for(cfg.model.vocab_size, 4)
    assert_close(eva_jax.logits(cfg, params, tokens), ref.hf_logits(model, tokens))
