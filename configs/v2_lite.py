"""DeepSeek-V2-Lite (16B): no q compression, softmax gating, no routing bias (reference §1.2)."""

from eva_jax.config import Config, ModelConfig, YarnConfig

CONFIG = Config(
    name="v2_lite",
    model=ModelConfig(
        vocab_size=102400,
        hidden_size=2048,
        num_layers=27,
        num_heads=16,
        q_lora_rank=None,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        intermediate_size=10944,
        moe_intermediate_size=1408,
        n_routed_experts=64,
        n_shared_experts=2,
        num_experts_per_tok=6,
        n_group=1,
        topk_group=1,
        first_k_dense_replace=1,
        norm_topk_prob=False,
        scoring_func="softmax",
        topk_method="greedy",
        max_position_embeddings=163840,
        rope_scaling=YarnConfig(factor=40.0, original_max_position_embeddings=4096, mscale=0.707,
                                mscale_all_dim=0.707),
        bos_token_id=100000,
        eos_token_id=100001,
    ),
)
