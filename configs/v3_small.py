"""DeepSeek-V3's structure at ~80M parameters, trainable on a CPU: the benchmark shape (docs/performance.md)
plus one MTP module."""

from eva_jax.config import Config, ModelConfig, OptimConfig, TrainConfig

CONFIG = Config(
    name="v3_small",
    model=ModelConfig(
        vocab_size=8192,
        hidden_size=512,
        num_layers=6,
        num_heads=8,
        q_lora_rank=256,
        kv_lora_rank=128,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        intermediate_size=1408,
        moe_intermediate_size=256,
        n_routed_experts=32,
        n_shared_experts=1,
        num_experts_per_tok=4,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        num_mtp_layers=1,
    ),
    # DeepSeek's schedule shape at CPU scale: a larger peak rate and a visible warm-up for a short run.
    optim=OptimConfig(lr_peak=1e-3, lr_decayed=1e-4, lr_final=3.3e-5, warmup_frac=0.03),
    train=TrainConfig(steps=300, global_batch=8, checkpoint_every=25, eval_every=25),
)
