"""DeepSeek-V3 671B, exactly as published (reference §1.1). Its optimizer defaults are DeepSeek's pre-training
recipe (reference §8)."""

from eva_jax.config import Config, MeshConfig, ModelConfig, TrainConfig, YarnConfig

CONFIG = Config(
    name="v3_671b",
    model=ModelConfig(
        vocab_size=129280,
        hidden_size=7168,
        num_layers=61,
        num_heads=128,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        intermediate_size=18432,
        moe_intermediate_size=2048,
        n_routed_experts=256,
        n_shared_experts=1,
        num_experts_per_tok=8,
        n_group=8,
        topk_group=4,
        first_k_dense_replace=3,
        routed_scaling_factor=2.5,
        num_mtp_layers=1,
        max_position_embeddings=163840,
        rope_scaling=YarnConfig(factor=40.0, original_max_position_embeddings=4096, mscale_all_dim=1.0),
        # DeepSeek's node limit M = 4 (reference §4.3) is n_group=8 / topk_group=4 with the top-2 group score:
        # compute.max_route_nodes=4 routes identically (tests/parallel/test_node_routing.py), so it stays 0 here
        # and the config keeps round-tripping through the published config.json.
    ),
    # DeepSeek's pre-training run (reference §8): 14.8T tokens of 4K sequences, batch 3072 -> 15360.
    train=TrainConfig(steps=243_300, seq_len=4096, global_batch=15360, batch_start=3072, micro_batch=256,
                      checkpoint_every=1000, eval_every=1000),
    # DeepSeek's deployment (reference §8) without its 16-way pipeline: 64-way expert parallelism, ZeRO-1 data
    # parallelism over the rest, no tensor parallelism. Without DeepSeek's pipeline the replicated dense weights
    # do not fit 95 GB chips; `--dry-run --set mesh.rules=fsdp ...` reports other layouts.
    mesh=MeshConfig(expert=64),
)
