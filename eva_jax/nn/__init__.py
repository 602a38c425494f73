"""The DeepSeek-V3 model as pure-functional Flax Linen modules over small pure math functions."""
