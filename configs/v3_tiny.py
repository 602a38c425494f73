"""A few-thousand-parameter V3 for unit tests: every structural feature present, compiles in seconds."""

from eva_jax.config import ComputeConfig, Config, ModelConfig, OptimConfig, TrainConfig

CONFIG = Config(
    name="v3_tiny",
    model=ModelConfig(
        vocab_size=512,  # the 256 bytes, 7 specials and a few hundred merges of the default tokenizer
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        intermediate_size=128,
        moe_intermediate_size=32,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        num_mtp_layers=1,
        max_position_embeddings=512,
    ),
    compute=ComputeConfig(dtype="float32", remat_policy="none"),
    # Its own run (`python -m eva_jax.train --config=v3_tiny`) takes about a minute on a laptop CPU.
    optim=OptimConfig(lr_peak=3e-3, lr_decayed=3e-4, lr_final=1e-4, warmup_frac=0.05),
    train=TrainConfig(steps=60, seq_len=128, global_batch=8, batch_start=8, micro_batch=8, checkpoint_every=30,
                      eval_every=30, eval_batches=2),
)
