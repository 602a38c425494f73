"""Post-training: supervised fine-tuning and GRPO on the pre-training loop."""
